"""Running a sweep: evaluate the base once, then every run not finished yet (train, evaluate,
record ``result.json`` last); a restarted sweep skips what is finished."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cqia_nb.core.chat import CHATML_TEMPLATE
from cqia_nb.core.generation import generate_batch
from cqia_nb.core.paths import project_root
from cqia_nb.eval.belle import BelleEvalConfig, GenerationSettings, judge_from, load_belle, run_belle_eval
from cqia_nb.eval.heldout import heldout_loss
from cqia_nb.eval.mc import MCConfig, evaluate_mc, standard_benchmarks
from cqia_nb.eval.results import append_results
from cqia_nb.eval.sweep.config import BASE_RUN, BENCHMARK, MANIFEST_FILE, RESULT_FILE, EvalSettings, SweepConfig
from cqia_nb.eval.sweep.data import (
    Conversation,
    SweepData,
    _run_fingerprint,
    _write_text,
    budget_sample,
    token_lengths,
    plan_runs,
    prepare_base,
    prepare_data,
)
from cqia_nb.eval.sweep.stats import SweepResult
from cqia_nb.models.loading import load_for_inference, torch_dtype
from cqia_nb.train.config import cuda_available
from cqia_nb.train.data import load_tokenizer
from cqia_nb.train.trainer import last_checkpoint, train

# ------------------------------------------------------------------------------------------ evaluation

@dataclass
class EvalContext:
    """What :func:`evaluate_model` needs, loaded once per sweep."""

    validation: dict[str, list[Conversation]]
    max_length: int
    benches: dict[str, Any]
    belle: Any
    belle_config: BelleEvalConfig | None
    probes: list[dict[str, str]]                 # {"subset", "prompt", "reference"}
    settings: EvalSettings                       # device and dtype resolved
    chat_template: str | None = None             # the recipe's (e.g. chatml for Yi base models)


def _device_dtype(e: EvalSettings) -> tuple[str, str | None]:
    device = ("cuda" if cuda_available() else "cpu") if e.device == "auto" else e.device
    dtype = e.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else None
    return device, dtype


def eval_context(config: SweepConfig, data: SweepData, out_dir: str | Path) -> EvalContext:
    """Load once what every evaluation needs: the held-out splits, the benchmarks, BELLE-EVAL with
    its judge, the probe prompts; ``auto`` device and dtype resolved for this machine."""
    tc = config.train_config()
    device, dtype = _device_dtype(config.eval)
    e = dataclasses.replace(config.eval, device=device, dtype=dtype)
    max_length = tc.max_length
    benches: dict[str, Any] = {}
    belle = belle_cfg = None
    root = config.resolve(e.benchmarks)
    if root is not None and e.mc:
        benches = standard_benchmarks(root, limit=e.mc_limit, names=e.mc)
    if e.belle and (e.belle_dir or root is not None):
        belle = load_belle(config.resolve(e.belle_dir) if e.belle_dir else root / "belle_eval")
        judge, judge_path = judge_from(e.judge, e.judge_model, device=e.device)
        belle_cfg = BelleEvalConfig(
            generation=GenerationSettings(max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, device=e.device,
                                          dtype=e.dtype, repetition_penalty=float(e.repetition_penalty),
                                          chat_template=tc.chat_template),
            judge=judge, judge_model_path=judge_path, scorer="overlap" if e.judge == "overlap" else "judge",
            limit=e.belle_limit, cache_path=str(Path(out_dir) / "generations.sqlite"))
    probes = []
    for s in data.names:
        n = 0
        for c in data.validation[s]:
            user = next((m["content"] for m in c if m["role"] == "user"), "")
            ref = next((m["content"] for m in c if m["role"] == "assistant"), "")
            if user and len(user) <= e.probe_max_chars and n < e.probes:
                probes.append({"subset": s, "prompt": user, "reference": ref})
                n += 1
    return EvalContext(data.validation, max_length, benches, belle, belle_cfg, probes, e, tc.chat_template)


def evaluate_model(model_dir: str | Path, ctx: EvalContext, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Held-out losses, multiple-choice accuracies, the BELLE-EVAL score and the probe answers of one
    model folder (full model or adapter). Returns a JSON-able dict; ``rows`` holds the MC and BELLE
    results-store rows without a model name."""
    e = ctx.settings
    dtype = torch_dtype(e.dtype) if e.dtype else None
    model, tok = load_for_inference(model_dir, dtype=dtype, device=e.device)
    if ctx.chat_template:  # a base model's tokenizer may have none (Yi); tuned folders saved the recipe's
        tok.chat_template = CHATML_TEMPLATE if ctx.chat_template == "chatml" else ctx.chat_template
    out: dict[str, Any] = {"heldout": {}, "mc": {}, "belle": None, "probes": [], "rows": []}
    if e.heldout:
        for s, convs in ctx.validation.items():
            h = heldout_loss(model, tok, convs, max_length=ctx.max_length, batch_size=e.batch_size)
            out["heldout"][s] = {"loss": h.loss, "tokens": h.tokens, "examples": h.examples}
    for name, bench in ctx.benches.items():
        r = evaluate_mc((model, tok), bench, MCConfig(shots=e.shots, progress=False, device=e.device))
        o = r.overall
        out["mc"][name] = {"accuracy": o["accuracy"], "ci_low": o["ci_low"], "ci_high": o["ci_high"], "n": o["n"]}
        out["rows"] += [x for x in r.results_rows("") if x["subset"] == "overall"]
    if ctx.probes:
        gen = generate_batch(model, tok, [p["prompt"] for p in ctx.probes], max_new_tokens=e.max_new_tokens,
                             batch_size=e.batch_size, repetition_penalty=float(e.repetition_penalty))
        out["probes"] = [{**p, "answer": g["answer"]} for p, g in zip(ctx.probes, gen)]
    del model
    if ctx.belle is not None and ctx.belle_config is not None:
        res = run_belle_eval(model_dir, ctx.belle, ctx.belle_config,
                             out_dir=Path(out_dir) / "belle" if out_dir is not None else None)
        row = next(r for r in res.summary.iter_rows(named=True) if r["class"] == "overall")
        answers = [a or "" for a in res.per_item["answer"].to_list()] if "answer" in res.per_item.columns else []
        out["belle"] = {"metric": "overlap_f1" if ctx.belle_config.scorer == "overlap" else "mean_score",
                        "value": row["mean"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                        "n": row["scored"] + row["empty"], "failed": row["failed"],
                        "answer_chars": float(np.mean([len(a) for a in answers])) if answers else None}
        out["rows"] += [x for x in res.results_rows("") if x["subset"] in ("overall", "macro")]
    return out


def results_store(config: SweepConfig, out_dir: str | Path) -> Path | None:
    """Where the sweep's rows go: ``results: auto`` -> ``<out_dir>/results-mini.jsonl`` for the
    project's mini benchmarks (never mixed with real numbers), else the default store; or a path."""
    if config.results != "auto":
        return Path(config.results)
    root = config.resolve(config.eval.benchmarks)
    mini = project_root() / "data" / "benchmarks-mini"
    if root is None or root.resolve() == mini.resolve():
        return Path(out_dir) / "results-mini.jsonl"
    return None  # append_results' default: $CQIA_RESULTS or build/results/results.jsonl


def _atomic_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, ensure_ascii=False, indent=1, default=str) + "\n")


def _read_result(path: Path, fingerprint: str) -> dict[str, Any] | None:
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return r if r.get("fingerprint") == fingerprint else None


def run_sweep(config: SweepConfig, out_dir: str | Path, *, source: str = "auto",
              filter_dir: str | Path = "../build/02_filter", data_source: str = "auto", progress: bool = False,
              log: Callable[[str], None] | None = print, stop_after: int | None = None,
              store: bool = True, data: SweepData | None = None, base: Path | str | None = None) -> SweepResult:
    """Run (or continue) the sweep in ``out_dir``: data, base, base evaluation, then every run not
    finished yet, each trained, evaluated and recorded (``result.json`` last). ``log`` gets one line
    per step (None: silent). ``stop_after=N`` stops after N newly trained runs (the rest stay
    pending; calling again continues). ``store``: append the rows to the results store. ``data`` and
    ``base``: what :func:`prepare_data` / :func:`prepare_base` returned for this config and out_dir."""
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _m: None)
    secs: dict[str, float] = {}
    t = time.perf_counter()
    if data is None:
        data = prepare_data(config, out, source=source, filter_dir=filter_dir, data_source=data_source)
    secs["data"] = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    if base is None:
        base = prepare_base(config, data, progress=progress)
    secs["base"] = time.perf_counter() - t
    secs["base_cpu"] = time.process_time() - c
    base_name = "tiny-pretrained" if config.train_config().base_model == "tiny" else str(config.train_config().base_model)
    ctx = eval_context(config, data, out)
    store_path = results_store(config, out)
    _atomic_json(out / MANIFEST_FILE, {"name": config.name, "config": config.to_dict(), "base_model": str(base),
                                       "subsets": data.names, "skipped_subsets": data.skipped})
    # the base, evaluated once (every drop is measured against it)
    t = time.perf_counter()
    fp_base = _run_fingerprint(config, data, base, None)
    base_file = out / "runs" / BASE_RUN / RESULT_FILE
    base_res = _read_result(base_file, fp_base)
    if base_res is None:
        ev = evaluate_model(base, ctx, out_dir=base_file.parent)
        base_res = {"run": BASE_RUN, "fingerprint": fp_base, "model": str(base), **ev}
        if store:
            _append(store_path, ev["rows"], f"{config.name}/base", None, None, config)
        _atomic_json(base_file, base_res)
    secs["base_eval"] = time.perf_counter() - t
    say(f"base {base_name}: evaluated on {len(data.names)} held-out splits"
        + (f", {', '.join(ctx.benches)}" if ctx.benches else "") + (", BELLE-EVAL" if ctx.belle is not None else ""))
    runs = plan_runs(config, data, out)
    finished: list[dict[str, Any]] = []
    trained: list[str] = []
    skipped: list[str] = []
    pending: list[str] = []
    tok = load_tokenizer(base, config.train_config().chat_template)
    max_length = config.train_config().max_length
    for run in runs:
        fp = _run_fingerprint(config, data, base, run)
        done = _read_result(run.dir / RESULT_FILE, fp)
        if done is not None:
            finished.append(done)
            skipped.append(run.id)
            say(f"{run.id}: finished before, skipped")
            continue
        if stop_after is not None and len(trained) >= stop_after:
            pending.append(run.id)
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        model_dir = run.dir / "model"
        if (run.dir / RESULT_FILE).exists() or (model_dir.exists() and last_checkpoint(model_dir) is None):
            shutil.rmtree(run.dir, ignore_errors=True)  # stale settings, or killed before any checkpoint
        picked, tokens = budget_sample(data.train[run.train_subset], tok, config.budget_tokens, run.seed, max_length)
        train_file = run.dir / "train.jsonl"
        _write_text(train_file, "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in picked))
        run_over = dict(data=str(train_file), output_dir=str(model_dir), seed=run.seed, max_steps=-1, epochs=1,
                        val_data=None, val_fraction=0.0, eval_steps=None, eval_on_start=False)
        if config.train_config().base_model == "tiny":
            run_over["base_model"] = str(base)
        tc = config.train_config(**run_over)
        res = train(tc, resume=last_checkpoint(model_dir) is not None, progress=progress)
        t_train = time.perf_counter() - t0
        t1 = time.perf_counter()
        ev = evaluate_model(res.model_dir, ctx, out_dir=run.dir)
        t_eval = time.perf_counter() - t1
        subset_tokens = sum(n for n in token_lengths(data.train[run.train_subset], tok, max_length) if n)
        result = {"run": run.id, "fingerprint": fp, "train_subset": run.train_subset, "seed": run.seed,
                  "model": str(res.model_dir),
                  "train": {"steps": res.global_step, "conversations": len(picked), "tokens": tokens,
                            "tokens_seen": res.train_tokens, "epochs": tokens / subset_tokens if subset_tokens else None,
                            "seconds": t_train, "resumed_from": str(res.resumed_from) if res.resumed_from else None,
                            "first_loss": res.losses[0] if res.losses else None,
                            "last_loss": res.losses[-1] if res.losses else None},
                  **{k: v for k, v in ev.items() if k != "rows"},
                  "eval_seconds": t_eval, "wall_seconds": time.perf_counter() - t0,
                  "cpu_seconds": time.process_time() - c0}
        if store:
            rows = ev["rows"] + [{"benchmark": BENCHMARK, "subset": s, "metric": "loss", "value": v["loss"],
                                  "n": v["tokens"]} for s, v in ev["heldout"].items()]
            _append(store_path, rows, f"{config.name}/{run.id}", base_name, run.train_subset, config,
                    f"seed {run.seed}")
        _atomic_json(run.dir / RESULT_FILE, result)
        finished.append(result)
        trained.append(run.id)
        own = ev["heldout"].get(run.train_subset, {}).get("loss")
        before = base_res["heldout"].get(run.train_subset, {}).get("loss")
        say(f"{run.id}: {res.global_step} steps, {tokens} tokens, held-out loss on {run.train_subset} "
            + (f"{before:.3f} -> {own:.3f}" if own is not None and before is not None else "n/a")
            + f" ({t_train:.1f} s train + {t_eval:.1f} s eval)")
    secs["runs"] = sum(r["wall_seconds"] for r in finished if r["run"] in trained)
    secs["runs_cpu"] = sum(r.get("cpu_seconds", 0.0) for r in finished if r["run"] in trained)
    result = SweepResult(config, out, data, base_name, base_res, finished, trained, skipped, pending, secs, store_path)
    if store and finished and not pending:
        append_results(result.results_rows(), store_path)
    secs["total"] = time.perf_counter() - t_start
    return result


def _append(store_path: Path | None, rows: Sequence[Mapping[str, Any]], model: str, base_model: str | None,
            train_subset: str | None, config: SweepConfig, note: str = "") -> None:
    out = []
    for r in rows:
        r = dict(r)
        r.update(model=model, base_model=base_model, train_subset=train_subset)
        r["notes"] = "; ".join(x for x in (f"sweep {config.name}", note, r.get("notes") or "") if x)
        out.append(r)
    if out:
        append_results(out, store_path)
