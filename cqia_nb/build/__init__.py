"""Stage 3 (notebook 03): subsets, seeded mixtures, the split, chat formatting, the contamination
check and every export format."""

from __future__ import annotations

from cqia_nb.build.contamination import (  # noqa: F401
    DEFAULT_MAX_ITEM_FREQUENCY,
    DEFAULT_N,
    EVAL_SCHEMA,
    RECORD_SCHEMA,
    SKIPPED_SCHEMA,
    TRAIN_FIELDS,
    UNIT_SEPARATOR,
    ContaminationReport,
    EvalIndex,
    EvalSets,
    build_index,
    check,
    detect_format,
    load_eval_sets,
    read_eval_file,
    remove_contaminated,
)
from cqia_nb.build.exports import (  # noqa: F401
    MANIFEST,
    SPLITS,
    alpaca_frame,
    card_text,
    export_all,
    export_hf,
    export_jsonl,
    export_llamafactory,
    export_parquet,
    export_trl,
    json_lines,
    llamafactory_entries,
    manifest,
    read_hf,
    read_jsonl,
    read_llamafactory,
    record_frame,
    sha256_file,
    sharegpt_frame,
    trl_frame,
    write_card,
)
from cqia_nb.build.formatting import (  # noqa: F401
    TRUNCATION_POLICIES,
    FormatConfig,
    FormatResult,
    FormattingError,
    TruncationReport,
    add_messages,
    chat_template_of,
    count_tokens_cached,
    encode_lengths,
    format_records,
    load_tokenizer,
    render,
    render_jinja,
    token_stats,
)
from cqia_nb.build.mixture import (  # noqa: F401
    PartReport,
    assign_split,
    build_mixture,
    rng_for,
)
from cqia_nb.build.run import (  # noqa: F401
    TARGET_COLUMNS,
    Build,
    InputData,
    Target,
    load_input,
    parquet_input,
    run_build,
)
from cqia_nb.build.spec import (  # noqa: F401
    EXPORT_FORMATS,
    GROUPS,
    LAW_FILES,
    MEDICAL_FILES,
    BuildSpec,
    ContaminationSpec,
    Group,
    MixtureSpec,
    PartSpec,
    SpecError,
    SubsetSpec,
    builtin_subsets,
    where_expr,
)
from cqia_nb.build.streaming import (  # noqa: F401
    STREAM_ABOVE_BYTES,
    StreamBuild,
    input_bytes,
    run_build_streaming,
)
from cqia_nb.build.subsets import (  # noqa: F401
    DERIVED_COLUMNS,
    add_derived,
    check_elementwise,
    group_of,
    quality_tier,
    select,
    subset_mask,
)
