"""lm-evaluation-harness on the same files and model, for parity checks and the benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cqia_nb.core.paths import cache_dir as _cqia_cache
from cqia_nb.eval.mc.questions import LETTERS, MCBenchmark, Question


def _harness_task(bench: MCBenchmark, subject: str, cache_dir: Path) -> dict[str, Any]:
    """lm-evaluation-harness's own task for one subject, reading our local CSVs."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    tasks = Path(lm_eval.__file__).parent / "tasks"
    if bench.name == "ceval":
        cfg = load_yaml(tasks / "ceval" / f"ceval-valid_{subject}.yaml")
        cols = ["id", "question", "A", "B", "C", "D", "answer"]
        split, dev_split = cfg["validation_split"], cfg["fewshot_split"]
    elif bench.name == "cmmlu":
        cfg = load_yaml(tasks / "cmmlu" / f"cmmlu_{subject}.yaml")
        cols = ["Question", "A", "B", "C", "D", "Answer"]  # the unnamed index column is not needed
        split, dev_split = cfg["test_split"], cfg["fewshot_split"]
    else:
        raise ValueError(f"lm-evaluation-harness has no {bench.name} task")
    files = {split: str(bench.files[subject])}
    files[dev_split] = str(bench.dev_files.get(subject, bench.files[subject]))
    # every cell as the raw string (the hub's parquet has strings; pandas would turn "3.10" into 3.1)
    conv = {c: str for c in cols}
    cfg.update(dataset_path="csv", dataset_name=None,
               dataset_kwargs={"data_files": files, "usecols": cols, "converters": conv,
                               "keep_default_na": False, "na_filter": False, "cache_dir": str(cache_dir)})
    return cfg


def harness_predictions(model, tokenizer, bench: MCBenchmark, shots: int = 0, batch_size: int = 1,
                        limit: int | None = None, cache_dir: str | Path | None = None) -> pl.DataFrame:
    """Run lm-evaluation-harness's ``ceval-valid_*`` / ``cmmlu_*`` tasks on the same files and model.

    Returns id, pred (its ``acc`` arg-max), logprob_A..D and context (its prompt). For parity checks
    and the benchmark; needs ``lm_eval`` (the ``test`` extra) and files without problems. Its
    ``datasets`` cache goes to ``cache_dir`` (default ``<cqia cache>/lm_eval``), not ~/.cache.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    bad = {f for f in bench.problems.filter(pl.col("role") != "shot")["file"].to_list()} if bench.problems.height else set()
    if bad:
        raise ValueError(f"harness comparison needs files without problems; fix {', '.join(sorted(bad))}")
    subjects = bench.subjects
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    if cache_dir is None:

        cache_dir = _cqia_cache() / "lm_eval"
    tasks = [_harness_task(bench, s, Path(cache_dir)) for s in subjects]
    import logging

    log = logging.getLogger("lm_eval")
    level = log.level
    log.setLevel(logging.ERROR)  # one "Overwriting default num_fewshot" warning per subject otherwise
    try:
        res = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots, bootstrap_iters=0,
                                      log_samples=True, limit=limit)
    finally:
        log.setLevel(level)
    by_subject: dict[str, list[Question]] = {}
    for q in bench.questions:
        by_subject.setdefault(q.subject, []).append(q)
    rows = []
    prefix = "ceval-valid_" if bench.name == "ceval" else "cmmlu_"
    for s in subjects:
        for smp in res["samples"][prefix + s]:
            q = by_subject[s][int(smp["doc_id"])]
            doc_q = smp["doc"]["question" if bench.name == "ceval" else "Question"]
            if doc_q != q.question:
                raise RuntimeError(f"{q.id}: lm-evaluation-harness doc {smp['doc_id']} is a different question")
            ll = [float(r[0]) for r in smp["filtered_resps"]]
            rows.append({"id": q.id, "pred": LETTERS[int(np.argmax(ll))],
                         **{f"logprob_{c}": ll[j] for j, c in enumerate(LETTERS)},
                         "context": smp["arguments"][0][0]})
    return pl.DataFrame(rows)
