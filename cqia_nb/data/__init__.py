"""Stage 1 (notebook 01): load COIG-CQIA from a local copy, the hub or the bundled miniature into one
frame with a fixed schema; validate every line; cache; the dataset card; token counts."""

from __future__ import annotations

from cqia_nb.data.cache import (  # noqa: F401
    cache_get,
    cache_put,
    combined_key,
    file_sha,
    read_index,
    stat_key,
    stat_sha,
    write_index,
)
from cqia_nb.data.card import (  # noqa: F401
    CARD_SCHEMA,
    card_file_map,
    card_summary,
    compare_with_card,
    parse_card_tables,
)
from cqia_nb.data.load import (  # noqa: F401
    LoadConfig,
    LoadResult,
    bundled_path,
    config_counts,
    data_cache_dir,
    discover_files,
    format_notes,
    format_problems,
    hub_load_kwargs,
    load,
    load_hub,
    load_path,
    read_card_configs,
    resolve_source,
)
from cqia_nb.data.parse import (  # noqa: F401
    EMPTY_VALUES,
    Columns,
    FileResult,
    check_record,
    excerpt,
    parse_jsonl_bytes,
    validate_record,
)
from cqia_nb.data.schema import (  # noqa: F401
    ARROW_TYPES,
    CONFIGS,
    DATA_SUFFIXES,
    FILE_SCHEMA,
    HUB_REPO,
    LFS_PREFIX,
    NOTE_SCHEMA,
    PARSER_VERSION,
    PROBLEM_SCHEMA,
    RECORD_FIELDS,
    SCHEMA,
    DataQualityWarning,
    DataValidationError,
)
from cqia_nb.data.tokens import (  # noqa: F401
    SPECIAL_TOKENS,
    TEXT_FIELDS,
    Encoder,
    TokenizerConfig,
    count_tokens,
    load_encoder,
    tiny_tokenizer,
    train_tiny_tokenizer,
)
