"""Stage 2 (notebook 02): the audited filter pipeline — rules, deduplication, model scores, human
review labels — and the noise benchmark that measures it.

Importing this package imports every module that registers a filter, so recipes find them all."""

from __future__ import annotations

from cqia_nb.filter import rules  # noqa: F401
from cqia_nb.filter.dedup import (  # noqa: F401
    CLUSTER_SCHEMA,
    DEDUP_SEPARATOR,
    DEFAULT_FIELDS,
    KEEP_RULES,
    PAIR_SCHEMA,
    DedupResult,
    ExactDedup,
    NearDedup,
    exact_duplicates,
    near_duplicates,
    text_keys,
)
from cqia_nb.filter.framework import (  # noqa: F401
    AUDIT_COLUMNS,
    FILTERS,
    STEPS_SCHEMA,
    Filter,
    FilterRun,
    Measured,
    PipelineConfig,
    PipelineResult,
    Rewritten,
    StepConfig,
    Transform,
    available_filters,
    check_columns,
    make_filter,
    measure_all,
    register,
    run_pipeline,
)
from cqia_nb.filter.judge_filter import (  # noqa: F401
    JudgeFilter,
)
from cqia_nb.filter.minhash import (  # noqa: F401
    FIELD_SEP,
    MinHashConfig,
    candidate_pairs,
    connected_components,
    minhash_signatures,
    optimal_bands_rows,
    shingles,
    similar_pairs,
    similar_texts,
)
from cqia_nb.filter.noise import (  # noqa: F401
    ALL,
    CLEAN,
    DUPLICATE_KINDS,
    MAKERS,
    NOISE_COLUMNS,
    NOISE_KINDS,
    REPAIRABLE_KINDS,
    S2T,
    SCORE_SCHEMA,
    Maker,
    NoiseConfig,
    Row,
    attribute_drops,
    caught_by_kind,
    inject_noise,
    noise_counts,
    repaired,
    score_auc,
    score_filters,
    to_traditional,
)
from cqia_nb.filter.outputs import (  # noqa: F401
    CQIA_FIELDS,
    OUTPUT_FILES,
    read_kept,
    to_cqia_jsonl,
    write_outputs,
)
from cqia_nb.filter.review_labels import (  # noqa: F401
    ReviewEditsTransform,
    ReviewLabelsFilter,
)
from cqia_nb.filter.scores import (  # noqa: F401
    SCORE_VERSION,
    STATS,
    IFDFilter,
    PerplexityFilter,
    ifd,
    ifd_scores,
    perplexity,
    prompt_texts,
    sequence_nll,
)
