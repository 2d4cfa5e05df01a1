"""One multiple-choice run as a config: ``cqia-nb eval mc --config recipes/eval-ceval.yaml --set …``.

``MCRunConfig`` holds what the run reads and writes (model, benchmark files, subjects, limit, the
predictions file) and an :class:`MCConfig` (how to evaluate: shots, mode, prompts, batching, device,
bootstrap). A recipe (``recipes/eval-*.yaml``) writes all of them flat, as the keys of one mapping::

    model: tiny
    benchmark: ceval
    data: data/benchmarks-mini/ceval/val
    shots: 5

:func:`run_mc` does what the command does, so a notebook gets the same run from the same recipe.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

from cqia_nb.core.distributed import Shard, current_shard, main_first
from cqia_nb.core.overrides import ConfigError, apply_overrides, config_from_mapping, read_yaml_mapping
from cqia_nb.eval.mc.harness import MCResult, evaluate_mc
from cqia_nb.eval.mc.loading import load_benchmark
from cqia_nb.eval.mc.questions import BENCHMARKS, MCBenchmark, format_problems
from cqia_nb.eval.mc.scoring import MCConfig
from cqia_nb.models.loading import load_causal_lm
from cqia_nb.models.tiny import resolve_model


@dataclass
class MCRunConfig:
    """A ``cqia-nb eval mc`` run. Paths are relative to the folder the command runs in."""

    model: str                          # a local folder (safetensors), a hub name in the local cache, or "tiny"
    benchmark: str                      # ceval | cmmlu | safetybench
    data: str                           # per-subject CSV folder, or SafetyBench's JSON file
    dev: str | None = None              # few-shot pool (default: dev/ or dev_zh.json beside data)
    answers: str | None = None          # SafetyBench answer key for a test file
    mapping: str | None = None          # subject_mapping.json / categories.py when not beside data
    subjects: list[str] | None = None   # only these subjects (SafetyBench: categories); "a,b" also works
    limit: int | None = None            # the first N questions of each subject
    out: str | None = None              # one JSON line per question
    mc: MCConfig = field(default_factory=MCConfig)  # shots, mode, prompt_style, batch_size, device, seed, …

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model: a model folder, a hub name or 'tiny', got {self.model!r}")
        if self.benchmark not in BENCHMARKS:
            raise ConfigError(f"benchmark: one of {', '.join(BENCHMARKS)}, got {self.benchmark!r}")
        for key in ("data", "dev", "answers", "mapping", "out"):
            v = getattr(self, key)
            if isinstance(v, Path):
                setattr(self, key, str(v))
            elif v is None and key != "data":
                continue
            elif not isinstance(v, str) or not v:
                raise ConfigError(f"{key}: a path{'' if key == 'data' else ' or null'}, got {v!r}")
        if isinstance(self.subjects, str):
            self.subjects = [s.strip() for s in self.subjects.split(",") if s.strip()]
        if self.subjects is not None:
            if not isinstance(self.subjects, (list, tuple)) or not all(isinstance(s, str) for s in self.subjects):
                raise ConfigError(f"subjects: a list of subject names (or 'a,b'), got {self.subjects!r}")
            self.subjects = list(self.subjects) or None
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise ConfigError(f"limit: a positive integer or null, got {self.limit!r}")

    @property
    def device(self) -> str | None:
        return self.mc.device

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "MCRunConfig":
        """From one flat mapping: this class's keys and :class:`MCConfig`'s (unknown keys fail with a hint)."""
        return config_from_mapping(cls, d, where=where, parts={"mc": MCConfig})

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: Sequence[str] | Mapping[str, Any] = (), *,
                  defaults: Mapping[str, Any] | None = None) -> "MCRunConfig":
        """A recipe (None: none, the overrides alone) over ``defaults``, then ``overrides``
        (``KEY=VALUE`` strings or a parsed mapping)."""
        d = dict(defaults or {})
        if path is not None:
            d.update(read_yaml_mapping(path, what="eval recipe", missing_hint=" (see recipes/eval-*.yaml)"))
        return cls.from_dict(apply_overrides(d, overrides), where=str(path) if path is not None else "eval mc")

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping ``from_dict`` reads (a recipe that reproduces this run)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "mc"}
        return {**d, **dataclasses.asdict(self.mc)}

    def load_benchmark(self) -> MCBenchmark:
        return load_benchmark(self.benchmark, self.data, self.dev, self.answers, subjects=self.subjects,
                              limit=self.limit, mapping=self.mapping)


def run_mc(config: MCRunConfig, model: Any = None, *, log: IO[str] | None = None,
           shard: Shard | None = None) -> MCResult:
    """Read the benchmark, load ``config.model`` (or use ``model``: a (model, tokenizer) pair),
    evaluate, write ``config.out``. Notes and problems go to ``log`` (default stderr); a benchmark
    with no question to evaluate, or a model that cannot be loaded, raises ``ValueError``.

    Under ``accelerate launch`` / ``torchrun`` (``shard`` None: found from the environment) every process
    loads the model (the main process first: it may build the cached tiny model), scores its share of
    the questions, and the main process alone writes ``config.out``, identical to a one-process run's."""
    log = log if log is not None else sys.stderr
    shard = shard if shard is not None else current_shard(config.device)
    bench = config.load_benchmark()
    for note in bench.notes if shard.is_main else ():
        print(f"note: {note}", file=log)
    if not bench.questions:
        print(format_problems(bench.problems), file=log)
        raise ValueError(f"{config.data}: no question could be evaluated ({bench.n_excluded} excluded, "
                         f"problems listed above)")
    if model is None:
        try:
            with main_first(shard):
                model = load_causal_lm(resolve_model(config.model), device=shard.device or config.device or "cpu")
        except OSError as e:  # a missing/unsafe checkpoint is a usage error, not a crash
            raise ValueError(str(e)) from e
    result = evaluate_mc(model, bench, config.mc, shard)
    if config.out and shard.is_main:
        print(f"per-question predictions: {result.to_jsonl(config.out)}", file=log)
    return result
