"""BELLE-EVAL open generation: a model answers every question, an LLM judge scores each answer 0–1.

::

    data = load_belle("../shared/benchmarks/belle_eval")          # eval_set.json + eval_prompt.json
    cfg = BelleEvalConfig(generation=GenerationSettings(max_new_tokens=512, batch_size=16, device="cuda"),
                          judge=JudgeConfig.belle_eval(base_url="http://127.0.0.1:8000/v1", model="judge"))
    res = run_belle_eval("runs/yi-6b-cqia/merged", data, cfg, out_dir="build/belle/yi-6b-cqia")
    res.summary                       # per class + overall + macro: n, scored, empty, failed, mean, CI
    append_results(res.results_rows("Yi-6B + CQIA", base_model="Yi-6B", train_subset="mix-groups"))

The data (LianjiaTech/BELLE ``eval/``; see the NOTICE beside the files)
    ``eval_set.json`` is JSON Lines of ``{"question", "std_answer", "class"}`` (``std_answer`` is
    empty where no reference exists: generation, brainstorming, most rewrite); a JSON array is
    accepted too. ``eval_prompt.json`` is JSON Lines of ``{"class", "prompt"}``: one judge
    instruction per class, each asking for ``得分:`` and a score in [0, 1]. Class names differ
    between the files ("open qa" vs "open QA", with a NO-BREAK SPACE in "closed qa"), so they are
    matched by :func:`normalize_class` (NFKC — which maps U+00A0 and the full-width space U+3000
    to a space —, whitespace runs collapsed, trimmed, case-folded). A class of the test set with
    no judge prompt fails at load time naming the class and line (``on_missing_prompt="record"``
    keeps going and records those questions as ``no_judge_prompt``); judge prompts without
    questions (translation, in the 1k set) are listed in ``BelleData.unused_prompts``.

The judge prompt
    Composed as BELLE's own scorer does (``eval/template_html/ChatGPT_Score.html.temp`` in
    LianjiaTech/BELLE): the class's judge instruction, the question, the reference answer (not for
    the reference-free classes generation, brainstorming and rewrite — decided by class, as
    upstream does), the model's answer, and a request for the score with a reason (see
    :func:`build_judge_prompt`). It goes through :func:`cqia_nb.models.judge.judge_prompts` with
    ``JudgeConfig.belle_eval()`` — the same backends (any OpenAI-compatible endpoint, or a local
    HF model), retries, timeouts and sqlite reply cache as the filtering judge.

Generation
    :func:`generate_answers` loads the model once (a full model or a LoRA/QLoRA adapter folder,
    safetensors, no remote code), applies its chat template (or ``chatml``/``qwen``/a Jinja
    source) and generates in batches (:func:`cqia_nb.core.generation.generate_batch`; greedy by default).
    Every batch's answers are written to a sqlite cache (``<cache_dir>/generations.sqlite``)
    before the next batch starts, keyed by ``sha256(model fingerprint, question, settings that
    change the answer)`` (batch size and device are not part of the key), so a rerun — or a run
    that was killed — regenerates nothing that was already answered. A batch that fails (e.g.
    out of memory) is recorded as ``generation_error`` for its questions and not cached.

Nothing is dropped
    One row per question in ``BelleEvalResult.per_item`` with a ``status``: ``scored``;
    ``empty_answer`` — the model produced nothing but whitespace: scored **0 without asking the
    judge** (``empty_answers="zero"``, the default; ``"judge"`` sends them like any answer);
    ``generation_error``; ``no_judge_prompt``; ``not_judged`` (``judge=None``: generation only);
    or the judge's error kind (``timeout``, ``unparseable``, ``http_500``, ``endpoint_down`` …,
    see :mod:`cqia_nb.models.judge`). Means are over scored and empty answers; failures are counted
    in ``failed`` and left out of the mean (their judge replies are kept: a rerun retries
    transport failures, and a changed score pattern re-parses cached replies).

Scores
    :func:`summarize_scores` gives per-class means with seeded percentile-bootstrap CIs,
    ``overall`` (the mean over all scored questions) and ``macro`` (the mean of the class means,
    bootstrapped within classes).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import polars as pl

from cqia_nb.core.overrides import apply_overrides, config_from_mapping, read_yaml_mapping
from cqia_nb.eval.belle.data import (
    BENCHMARK,
    REFERENCE_FREE_CLASSES,
    BelleData,
    BelleEvalError,
    load_belle,
    sample_items,
)
from cqia_nb.eval.belle.generate import GenerationSettings, generate_answers, model_identity
from cqia_nb.eval.belle.score import judge_answers, overlap_scores, summarize_scores
from cqia_nb.models.judge import JudgeConfig
from cqia_nb.models.tiny import resolve_model


@dataclass
class BelleEvalConfig:
    """One BELLE-EVAL run. ``judge`` None: generate only (judge later with :func:`judge_answers`).
    ``judge_model_path``: the local judge model (``JudgeConfig.belle_eval(backend="local")``).
    ``limit``: a seeded class-stratified sample of that many questions (:func:`sample_items`).
    ``scorer="overlap"``: no judge; scores are :func:`overlap_f1` (metric ``overlap_f1``, not ``mean_score``)."""

    def __post_init__(self) -> None:
        if self.scorer not in ("judge", "overlap"):
            raise BelleEvalError(f"scorer must be 'judge' or 'overlap', got {self.scorer!r}")

    generation: GenerationSettings = field(default_factory=GenerationSettings)
    judge: JudgeConfig | None = field(default_factory=JudgeConfig.belle_eval)
    #: "judge": the LLM judge in ``judge``; "overlap": :func:`overlap_f1` against the reference, offline
    scorer: Literal["judge", "overlap"] = "judge"
    judge_model_path: str | None = None
    empty_answers: Literal["zero", "judge"] = "zero"
    reference_free_classes: tuple[str, ...] = REFERENCE_FREE_CLASSES
    limit: int | None = None
    seed: int = 0
    ci: float = 0.95
    n_boot: int = 2000
    cache: bool = True
    cache_path: str | None = None
    progress: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The settings for run records (the judge's API key left out)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("generation", "judge")}
        d["generation"] = dataclasses.asdict(self.generation)
        d["judge"] = None if self.judge is None else self.judge.to_dict()
        d["reference_free_classes"] = list(self.reference_free_classes)
        return d


@dataclass
class BelleEvalResult:
    """``per_item``: one row per question (items + answer + score columns); ``summary``: from
    :func:`summarize_scores`."""

    model: str
    model_id: str
    per_item: pl.DataFrame
    summary: pl.DataFrame
    config: BelleEvalConfig
    data: BelleData

    def counts(self) -> dict[str, int]:
        """Questions per status (every question is in exactly one)."""
        return dict(self.per_item.group_by("status").len().sort("status").iter_rows())

    def results_rows(self, model_name: str, base_model: str | None = None, train_subset: str | None = None,
                     notes: str = "") -> list[dict[str, Any]]:
        """Rows for :func:`cqia_nb.eval.results.append_results`: per class, overall and macro
        (benchmark ``belle_eval``, metric ``mean_score``, n = questions with a score)."""
        judge = self.config.judge
        metric = "mean_score"
        if self.config.scorer == "overlap":
            jdesc, metric = "overlap F1 with the reference (offline stand-in, not a judge)", "overlap_f1"
        elif judge is None:
            jdesc = "no judge"
        elif judge.backend == "local":
            jdesc = f"judge local:{self.config.judge_model_path or judge.model}"
        else:
            jdesc = f"judge {judge.resolved_model()}"
        extra = f"{jdesc}; {self.per_item.height} questions; empty answers {self.config.empty_answers}"
        out = []
        for r in self.summary.iter_rows(named=True):
            if r["mean"] is None:
                continue
            out.append({"model": model_name, "benchmark": BENCHMARK, "subset": r["class"], "metric": metric,
                        "value": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                        "n": r["scored"] + r["empty"], "shots": None, "base_model": base_model,
                        "train_subset": train_subset,
                        "notes": "; ".join(x for x in (notes, extra, f"{r['failed']} failed") if x)})
        return out

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``per_item.jsonl``, ``summary.csv`` and ``run.json`` (settings and counts) in ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"per_item": out / "per_item.jsonl", "summary": out / "summary.csv", "run": out / "run.json"}
        self.per_item.write_ndjson(paths["per_item"])
        self.summary.write_csv(paths["summary"])
        paths["run"].write_text(json.dumps({
            "model": self.model, "model_id": self.model_id, "eval_set": str(self.data.eval_set_path),
            "judge_prompts": str(self.data.prompt_path), "config": self.config.to_dict(), "counts": self.counts(),
            "missing_prompts": self.data.missing_prompts, "unused_prompts": self.data.unused_prompts,
        }, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
        return paths


def judge_from(spec: str | None, model: str | None = None, *, concurrency: int = 4, timeout_s: float = 60.0,
               device: str = "cpu") -> tuple[JudgeConfig | None, str | None]:
    """``(judge config, local judge path)`` from one setting: None / "none" / "overlap" (no LLM
    judge), an ``http(s)://…/v1`` OpenAI-compatible endpoint (``model``: its model name), or a local
    model folder (or "tiny")."""
    if spec is None or spec in ("none", "overlap"):
        return None, None
    if spec.startswith(("http://", "https://")):
        return JudgeConfig.belle_eval(base_url=spec, model=model, concurrency=concurrency, timeout_s=timeout_s), None
    if spec != "tiny" and not Path(spec).expanduser().exists():
        raise BelleEvalError(f"judge {spec!r}: not an http(s) URL and no such model folder; give an OpenAI-compatible "
                             "endpoint (…/v1), a local model folder, or 'overlap' for the offline stand-in")
    return JudgeConfig.belle_eval(backend="local", model=spec, device=device), spec


def run_belle_eval(model: str | Path, data: BelleData | str | Path, config: BelleEvalConfig = BelleEvalConfig(),
                   out_dir: str | Path | None = None) -> BelleEvalResult:
    """Generate (cached), judge (cached), summarise; write the outputs when ``out_dir`` is given."""
    if not isinstance(data, BelleData):
        data = load_belle(data)
    items = sample_items(data.items, config.limit, config.seed)
    answers = generate_answers(model, items["question"].to_list(), items["item_id"].to_list(), config.generation,
                               cache=config.cache, cache_path=config.cache_path, progress=config.progress)
    judge = config.judge
    if judge is not None and config.progress and not judge.progress:
        judge = dataclasses.replace(judge, progress=True)
    if config.scorer == "overlap":
        scores = overlap_scores(items, answers)
    else:
        scores = judge_answers(items, answers, data.prompts, judge, config.empty_answers,
                               config.reference_free_classes, config.judge_model_path)
    per_item = items.join(answers, on="item_id", how="left", maintain_order="left").join(
        scores, on="item_id", how="left", maintain_order="left")
    summary = summarize_scores(per_item, ci=config.ci, n_boot=config.n_boot, seed=config.seed,
                               classes=list(dict.fromkeys(items["class"].to_list())))
    res = BelleEvalResult(model=str(model), model_id=model_identity(model), per_item=per_item, summary=summary,
                          config=config, data=data)
    if out_dir is not None:
        res.write(out_dir)
    return res


# ----------------------------------------------------------------------------- one run as a recipe

@dataclass
class BelleRunConfig:
    """A ``cqia-nb eval belle`` run, as one flat mapping (``recipes/eval-belle.yaml``): what to
    evaluate and where the outputs go, the judge, :class:`GenerationSettings`' keys
    (``max_new_tokens``, ``batch_size``, ``chat_template``, ``device``, …) and
    :class:`BelleEvalConfig`'s (``limit``, ``seed``, ``empty_answers``, …).

    ``judge``: an ``http(s)://…/v1`` OpenAI-compatible endpoint, a local model folder (or "tiny"),
    ``overlap`` (offline character-bigram F1 with the reference: a stand-in, not a judge), ``none``
    (generate and cache answers only), or null: ``$CQIA_JUDGE_URL``.
    """

    model: str                               # a model folder, a LoRA/QLoRA adapter folder, or "tiny"
    data: str                                # a BELLE-EVAL folder (eval_set.json + eval_prompt.json) or file
    prompts: str | None = None               # judge prompts (default: eval_prompt.json beside the set)
    judge: str | None = None
    judge_model: str | None = None           # the endpoint's model name (default $CQIA_JUDGE_MODEL)
    judge_concurrency: int = 4
    judge_timeout: float = 60.0
    out: str | None = None                   # default build/belle_eval/<name>
    name: str | None = None                  # in the results store (default: the model folder's name)
    base_model: str | None = None            # results store: the base this model was tuned from
    train_subset: str | None = None          # results store: the CQIA subset it was tuned on
    results: str | None = None               # results store (default build/results/results.jsonl)
    no_results: bool = False                 # true: do not append to the results store
    empty_answers: Literal["zero", "judge"] = "zero"
    limit: int | None = None                 # a seeded, class-stratified sample of N questions
    seed: int = 0                            # the sample, the bootstrap and generation
    ci: float = 0.95
    n_boot: int = 2000
    cache: bool = True
    cache_path: str | None = None
    progress: bool = True
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self) -> None:
        for key in ("model", "data"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise BelleEvalError(f"{key}: a path, got {getattr(self, key)!r}")
        if self.empty_answers not in ("zero", "judge"):
            raise BelleEvalError(f"empty_answers: zero or judge, got {self.empty_answers!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise BelleEvalError(f"limit: a positive integer or null, got {self.limit!r}")
        for key in ("no_results", "cache", "progress"):
            if not isinstance(getattr(self, key), bool):
                raise BelleEvalError(f"{key}: true or false, got {getattr(self, key)!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "BelleRunConfig":
        """From one flat mapping (unknown keys fail with a "did you mean")."""
        return config_from_mapping(cls, d, where=where, error=BelleEvalError,
                                   parts={"generation": GenerationSettings})

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: Sequence[str] | Mapping[str, Any] = (), *,
                  defaults: Mapping[str, Any] | None = None) -> "BelleRunConfig":
        """A recipe (None: none, the overrides alone) over ``defaults``, then ``overrides``."""
        d = dict(defaults or {})
        if path is not None:
            d.update(read_yaml_mapping(path, what="eval recipe", error=BelleEvalError,
                                       missing_hint=" (see recipes/eval-belle.yaml)"))
        d = apply_overrides(d, overrides, error=BelleEvalError)
        return cls.from_dict(d, where=str(path) if path is not None else "eval belle")

    @property
    def model_name(self) -> str:
        return self.name or Path(self.model).name

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("build") / "belle_eval" / self.model_name

    @property
    def scored(self) -> bool:
        """Whether the run scores answers (an LLM judge or the overlap stand-in), not only generates."""
        return str(self.judge).lower() != "none"

    def eval_config(self) -> BelleEvalConfig:
        """The :class:`BelleEvalConfig` of this run (the judge resolved: ``judge_from``)."""
        gen = self.generation
        template = gen.chat_template
        if template and "{" not in template and Path(template).is_file():  # a Jinja file
            gen = dataclasses.replace(gen, chat_template=Path(template).read_text(encoding="utf-8"))
        spec = self.judge if self.judge is not None else (os.environ.get("CQIA_JUDGE_URL", "").strip() or None)
        if spec is None:
            raise BelleEvalError("no judge: give --judge-url URL (or set $CQIA_JUDGE_URL), --judge-local PATH, "
                                 "--overlap for the offline stand-in, or --no-judge to generate answers only "
                                 "(as keys: judge: URL | PATH | overlap | none)")
        judge, local = judge_from(str(spec), self.judge_model, concurrency=self.judge_concurrency,
                                  timeout_s=self.judge_timeout, device=gen.device)
        return BelleEvalConfig(generation=gen, judge=judge, judge_model_path=local, empty_answers=self.empty_answers,
                               limit=self.limit, seed=self.seed, ci=self.ci, n_boot=self.n_boot, cache=self.cache,
                               cache_path=self.cache_path, progress=self.progress,
                               scorer="overlap" if str(spec).lower() == "overlap" else "judge")


def run_belle(config: BelleRunConfig) -> BelleEvalResult:
    """What ``cqia-nb eval belle`` runs: ``run_belle_eval`` with the config's model (``"tiny"``: the
    cpu-tiny model), data, settings and ``out_dir``."""
    cfg = config.eval_config()  # no judge fails here, before anything is read
    data = load_belle(config.data, config.prompts)
    return run_belle_eval(resolve_model(config.model), data, cfg, out_dir=config.out_dir)
