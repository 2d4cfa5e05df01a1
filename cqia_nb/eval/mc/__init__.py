"""Multiple-choice evaluation: C-Eval, CMMLU and SafetyBench with one harness (notebook 05)."""

from __future__ import annotations

from cqia_nb.eval.mc.csvbench import (  # noqa: F401
    load_csv_benchmark,
    read_ceval_mapping,
    read_cmmlu_categories,
)
from cqia_nb.eval.mc.harness import (  # noqa: F401
    MCResult,
    evaluate_mc,
)
from cqia_nb.eval.mc.loading import (  # noqa: F401
    load_benchmark,
    standard_benchmarks,
)
from cqia_nb.eval.mc.peer import (  # noqa: F401
    harness_predictions,
)
from cqia_nb.eval.mc.prompts import (  # noqa: F401
    Prompt,
    build_prompt,
    extract_choice,
    shots_for,
)
from cqia_nb.eval.mc.questions import (  # noqa: F401
    BENCHMARKS,
    LETTERS,
    PROBLEM_SCHEMA,
    MCBenchmark,
    Problems,
    Question,
    find_beside,
    format_problems,
)
from cqia_nb.eval.mc.run import (  # noqa: F401
    MCRunConfig,
    run_mc,
)
from cqia_nb.eval.mc.safetybench import (  # noqa: F401
    SAFETYBENCH_CATEGORIES,
    load_safetybench,
)
from cqia_nb.eval.mc.scoring import (  # noqa: F401
    MCConfig,
    chat_wrap,
    generate_replies,
    resolve_max_length,
    score_loglikelihood,
)
