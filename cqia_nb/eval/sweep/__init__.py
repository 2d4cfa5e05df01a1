"""The subset sweep: which COIG-CQIA subsets make the best instruction data (the paper's design, small).

The paper tunes one base model on each source subset and compares the results. A sweep does the
same at any scale, from one recipe (``recipes/sweep-*.yaml``, :class:`SweepConfig`):

1. **Data** (:func:`prepare_data`): notebook 03's build spec (``recipes/subsets-paper.yaml``) on the
   filtered records, with the sweep's own validation share (the paper spec's 5 % leaves a handful of
   held-out records per subset on the bundled set). One train/validation assignment per record for
   the whole build, so no subset's held-out record is in any run's training data. ``subsets:`` is
   ``groups`` (every card group with at least ``min_train_records`` training records), ``configs``,
   or a list of subset / mixture names.
2. **Base** (:func:`prepare_base`): the profile's base model, the same for every run. For the CPU
   profile (``base_model: tiny``) one tiny Llama is built on the training text and LM-pretrained on
   the *train* split of every record (plain text, no chat template; ``base:``), once, cached by
   content hash: the instruction format and each subset's style are what fine-tuning adds.
3. **Runs** (:func:`plan_runs`): one per (training subset, seed), seed-major. Every run gets the same
   token budget (``budget_tokens``: tokens of the rendered conversations, counted with the base's
   tokenizer and ``max_length``), filled from its subset's train split in a seeded order, the subset
   repeated when it is smaller than the budget; one epoch over that file with the profile's recipe.
4. **Evaluation** (:func:`evaluate_model`): every run, and the base, on every subset's held-out split
   (loss on the assistant turns, :mod:`cqia_nb.eval.heldout`), on the multiple-choice benchmarks
   (:func:`cqia_nb.eval.mc.evaluate_mc`), on BELLE-EVAL with the configured scorer
   (:func:`cqia_nb.eval.belle.run_belle_eval`), and on a few held-out prompts per subset whose answers
   are kept for reading (``probes``).
5. **Statistics** (:class:`SweepResult`): per training subset the mean over seeds with a Student-t
   interval (:func:`cqia_nb.core.intervals.t_interval`); a train × eval matrix, a ranking, and a mark
   where two subsets' intervals overlap ("within noise"); the seed-to-seed spread against the
   between-subset spread. Every number also goes to the results store (per run and per subset).

Resumable: a finished run writes ``runs/<subset>/seed<k>/result.json`` (atomically, last) carrying a
fingerprint of everything that decides its numbers; a restarted sweep skips the runs whose result is
there with the same fingerprint and continues the others (a run killed mid-training continues from
its last checkpoint when its recipe saves checkpoints). Adding seeds adds runs; changing the data,
the budget, the recipe or the evaluation re-runs them.

The same sweep runs on a GPU by changing one setting, ``profile`` (``yi-6b-qlora``,
``qwen2.5-7b-qlora``): :func:`expected_cost` states the time and memory per run from the recipe's
``expected:`` block. Not measured here: no GPU was available to this project.
"""


from __future__ import annotations

from cqia_nb.eval.sweep.config import (  # noqa: F401
    BASE_RUN,
    BENCHMARK,
    MANIFEST_FILE,
    RECIPES,
    RESULT_FILE,
    SWEEP_VERSION,
    BaseSettings,
    EvalSettings,
    SweepConfig,
    SweepError,
    cost_table,
    expected_cost,
    sweep_recipe,
)
from cqia_nb.eval.sweep.data import (  # noqa: F401
    Run,
    SweepData,
    budget_sample,
    plan_runs,
    prepare_base,
    prepare_data,
    pretrain_texts,
    token_lengths,
)
from cqia_nb.eval.sweep.run import (  # noqa: F401
    EvalContext,
    eval_context,
    evaluate_model,
    results_store,
    run_sweep,
)
from cqia_nb.eval.sweep.stats import (  # noqa: F401
    SweepResult,
    summarize,
)
