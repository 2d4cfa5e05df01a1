"""BELLE-EVAL: open questions answered by the model, scored by an LLM judge (or offline overlap)."""

from __future__ import annotations

from cqia_nb.eval.belle.data import (  # noqa: F401
    ANSWER_SCHEMA,
    BENCHMARK,
    EVAL_SET_FILE,
    GENERATION_VERSION,
    ITEM_SCHEMA,
    PROMPT_FILE,
    REFERENCE_FREE_CLASSES,
    SCORE_SCHEMA,
    SUMMARY_SCHEMA,
    BelleData,
    BelleEvalError,
    load_belle,
    load_eval_set,
    load_judge_prompts,
    normalize_class,
    sample_items,
)
from cqia_nb.eval.belle.generate import (  # noqa: F401
    GenerationSettings,
    generate_answers,
    model_identity,
)
from cqia_nb.eval.belle.run import (  # noqa: F401
    BelleEvalConfig,
    BelleEvalResult,
    BelleRunConfig,
    judge_from,
    run_belle,
    run_belle_eval,
)
from cqia_nb.eval.belle.score import (  # noqa: F401
    JUDGE_INPUT,
    JUDGE_INPUT_REFERENCE_FREE,
    build_judge_prompt,
    judge_answers,
    overlap_f1,
    overlap_scores,
    summarize_scores,
)
