"""A sweep's recipe (``recipes/sweep-*.yaml``): :class:`SweepConfig`, checked before any work, and
the time and memory per run it states for each profile (:func:`expected_cost`)."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import polars as pl

from cqia_nb.core.overrides import apply_overrides, config_from_mapping, read_yaml_mapping, unknown_keys_message
from cqia_nb.core.paths import project_root
from cqia_nb.train.config import TrainConfig
from cqia_nb.train.session import profile

RECIPES = project_root() / "recipes"
RESULT_FILE = "result.json"
MANIFEST_FILE = "sweep.json"
BENCHMARK = "heldout_loss"
BASE_RUN = "base"
#: bump when what a run computes changes: older results are then re-run, never mixed in
SWEEP_VERSION = "1"

#: The TrainConfig keys a sweep sets on every run (one place, should the names change).
_RUN_KEYS = dict(epochs="num_train_epochs", max_steps="max_steps", data="data", val_data="val_data",
                 val_fraction="val_fraction", eval_steps="eval_steps", eval_on_start="eval_on_start",
                 output_dir="output_dir", seed="seed", base_model="base_model")


class SweepError(ValueError):
    """A sweep setting that cannot work; the message names the key and what to change."""


# --------------------------------------------------------------------------------------------- config

@dataclass
class BaseSettings:
    """The shared tiny base (profile ``base_model: tiny``): built on the train split's text and
    LM-pretrained ``steps`` steps (default: the recipe's ``tiny_pretrain_steps``) of ``batch_size``
    windows of ``seq_len`` tokens, cosine schedule peaking at ``lr``. ``text``: ``plain`` (each record
    as ``user turn + newline + answer``: a base model that has never seen the chat format) or
    ``chat`` (ChatML conversations)."""

    steps: int | None = None
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 3e-3
    text: str = "plain"
    seed: int = 0


@dataclass
class EvalSettings:
    """What every run is evaluated on. Paths are relative to the sweep recipe's folder."""

    heldout: bool = True
    benchmarks: str | None = "../data/benchmarks-mini"   # a folder with ceval/, cmmlu/, safetybench/ (None: no MC)
    mc: tuple[str, ...] = ("ceval", "cmmlu", "safetybench")
    shots: int = 0
    mc_limit: int | None = None
    belle: bool = True                                   # BELLE-EVAL from <benchmarks>/belle_eval (or belle_dir)
    belle_dir: str | None = None
    judge: str = "overlap"                               # overlap | an OpenAI-compatible URL | a local model folder
    judge_model: str | None = None
    belle_limit: int | None = None
    max_new_tokens: int = 32
    batch_size: int = 8
    probes: int = 2                                      # held-out prompts per subset answered by every run
    probe_max_chars: int = 60
    repetition_penalty: float = 1.0                      # probes and BELLE answers (1.0: plain greedy)
    device: str = "auto"                                 # auto: cuda when there is a GPU, else cpu
    dtype: str | None = "auto"                           # auto: bfloat16 on a GPU, float32 on the CPU


@dataclass
class SweepConfig:
    """One sweep (see the module docstring and ``recipes/sweep-cpu-tiny.yaml``)."""

    name: str = "sweep"
    profile: str = "cpu-sweep"                   # a training profile / recipes/train-<profile>.yaml
    subsets: Any = "groups"                      # groups | configs | a list of subset or mixture names
    min_train_records: int = 12
    seeds: tuple[int, ...] = (0, 1, 2)
    budget_tokens: int = 12000
    spec: str = "subsets-paper.yaml"
    build_seed: int = 42
    validation: float = 0.25
    base: BaseSettings = field(default_factory=BaseSettings)
    train: dict[str, Any] = field(default_factory=dict)   # TrainConfig overrides for every run
    eval: EvalSettings = field(default_factory=EvalSettings)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: str = "auto"
    path: str | None = None                      # the recipe file (relative paths resolve beside it)

    # ---- construction
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "sweep") -> "SweepConfig":
        """A checked config from a mapping: unknown keys (top level, ``base:``, ``eval:``) fail with
        a "did you mean" hint, then :meth:`validate`."""
        d = dict(d or {})
        for key, part in (("base", BaseSettings), ("eval", EvalSettings)):
            v = d.get(key)
            if v is None:
                d.pop(key, None)
            elif not isinstance(v, Mapping):
                raise SweepError(f"{where}: {key}: expected a mapping of settings, got {v!r}")
            else:
                d[key] = config_from_mapping(part, v, where=f"{where}: {key}", error=SweepError)
        if "path" in d:
            raise SweepError(f"{where}: {unknown_keys_message(['path'], [f.name for f in dataclasses.fields(cls)])}")
        cfg = config_from_mapping(cls, d, where=where, error=SweepError)
        cfg.validate(where)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> "SweepConfig":
        """A sweep recipe (a path, or a name: ``cpu-tiny``) plus ``key=value`` overrides (dotted keys
        reach nested settings: ``eval.judge=http://…/v1``, ``base.steps=100``; values parsed as YAML)."""
        p = sweep_recipe(path)
        d = read_yaml_mapping(p, what="sweep recipe", error=SweepError)
        cfg = cls.from_dict(apply_overrides(d, overrides, error=SweepError), str(p))
        cfg.path = str(p)
        return cfg

    def validate(self, where: str = "sweep") -> None:
        """Check every setting (a count of seeds becomes ``(0, …, n-1)``); a :class:`SweepError`
        names the first bad key and what it accepts."""
        def bad(key: str, msg: str) -> None:
            raise SweepError(f"{where}: {key}: {msg}")

        def pos_int(key: str, v: Any, allow_none: bool = False) -> None:
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(key, f"must be a positive integer{' or null' if allow_none else ''}, got {v!r}")

        if not isinstance(self.name, str) or not self.name.strip() or "/" in self.name:
            bad("name", f"must be a non-empty name without '/', got {self.name!r}")
        if not isinstance(self.profile, str) or not self.profile:
            bad("profile", f"must name a training profile or recipe, got {self.profile!r}")
        s = self.subsets
        if isinstance(s, str):
            if s not in ("groups", "configs"):
                bad("subsets", f"'groups', 'configs' or a list of subset names, got {s!r}")
        elif not (isinstance(s, (list, tuple)) and len(s) >= 2 and all(isinstance(x, str) and x for x in s)):
            bad("subsets", f"a list of at least two subset names (a sweep compares subsets), got {s!r}")
        elif len(set(s)) != len(s):
            bad("subsets", f"names repeat: {sorted({x for x in s if list(s).count(x) > 1})}")
        seeds = self.seeds
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = list(range(seeds))
        if not (isinstance(seeds, (list, tuple)) and seeds and all(isinstance(x, int) and not isinstance(x, bool)
                                                                    and x >= 0 for x in seeds)):
            bad("seeds", f"a list of non-negative integers (or a count), got {self.seeds!r}")
        if len(set(seeds)) != len(seeds):
            bad("seeds", f"seeds repeat: {list(seeds)}")
        self.seeds = tuple(seeds)
        if len(self.seeds) < 2:
            print(f"note: {where}: one seed gives no interval (seed-to-seed spread unknown)", file=sys.stderr)
        pos_int("budget_tokens", self.budget_tokens)
        pos_int("min_train_records", self.min_train_records)
        if isinstance(self.build_seed, bool) or not isinstance(self.build_seed, int) or self.build_seed < 0:
            bad("build_seed", f"must be a non-negative integer, got {self.build_seed!r}")
        if isinstance(self.validation, bool) or not isinstance(self.validation, (int, float)) \
                or not 0 < self.validation < 1:
            bad("validation", f"the held-out share of every subset, in (0, 1), got {self.validation!r}")
        if not isinstance(self.train, dict):
            bad("train", f"a mapping of TrainConfig settings for every run, got {self.train!r}")
        reserved = sorted(set(self.train) & set(_RUN_KEYS.values()) - {"base_model"})
        if reserved:
            bad("train", f"{reserved} are set by the sweep for every run (data, seed, output folder, one epoch "
                         "of the budget); remove them")
        b = self.base
        pos_int("base.steps", b.steps, allow_none=True)
        pos_int("base.batch_size", b.batch_size)
        pos_int("base.seq_len", b.seq_len)
        if isinstance(b.lr, bool) or not isinstance(b.lr, (int, float)) or b.lr <= 0:
            bad("base.lr", f"must be > 0, got {b.lr!r}")
        if b.text not in ("plain", "chat"):
            bad("base.text", f"'plain' or 'chat', got {b.text!r}")
        e = self.eval
        e.mc = tuple(e.mc or ())
        unknown = [m for m in e.mc if m not in ("ceval", "cmmlu", "safetybench")]
        if unknown:
            bad("eval.mc", f"unknown benchmark(s) {unknown}; use some of ceval, cmmlu, safetybench")
        for key in ("max_new_tokens", "batch_size"):
            pos_int(f"eval.{key}", getattr(e, key))
        for key in ("mc_limit", "belle_limit"):
            pos_int(f"eval.{key}", getattr(e, key), allow_none=True)
        if isinstance(e.shots, bool) or not isinstance(e.shots, int) or e.shots < 0:
            bad("eval.shots", f"must be an integer >= 0, got {e.shots!r}")
        if isinstance(e.probes, bool) or not isinstance(e.probes, int) or e.probes < 0:
            bad("eval.probes", f"must be an integer >= 0, got {e.probes!r}")
        if e.dtype not in (None, "auto", "float32", "bfloat16", "float16"):
            bad("eval.dtype", f"auto, null, float32, bfloat16 or float16, got {e.dtype!r}")
        if not isinstance(e.device, str) or not e.device:
            bad("eval.device", f"auto, cpu, cuda, ... got {e.device!r}")
        if isinstance(e.repetition_penalty, bool) or not isinstance(e.repetition_penalty, (int, float)) \
                or e.repetition_penalty < 1:
            bad("eval.repetition_penalty", f"a number >= 1 (1: plain greedy), got {e.repetition_penalty!r}")
        if not (e.heldout or (e.benchmarks and (e.mc or e.belle))):
            bad("eval", "nothing to evaluate: set heldout: true, or benchmarks with mc / belle")
        if not isinstance(self.expected, dict):
            bad("expected", "a mapping profile -> {tokens_per_s, peak_memory_gb, hardware}")
        if not isinstance(self.results, str) or not self.results:
            bad("results", f"'auto' or a path, got {self.results!r}")
        try:  # the profile and the train: overrides, checked now rather than after the data is built
            self.train_config()
        except (ValueError, FileNotFoundError) as e:
            key = "profile" if "PROFILE" in str(e) else "train"
            bad(key, str(e))

    # ---- derived
    def resolve(self, p: str | None) -> Path | None:
        """A path of the recipe: absolute, else relative to the recipe's folder (``recipes/``)."""
        if p is None:
            return None
        q = Path(p).expanduser()
        if q.is_absolute():
            return q
        return (Path(self.path).resolve().parent if self.path else RECIPES) / q

    def train_config(self, **run: Any) -> TrainConfig:
        """The profile's recipe with the sweep's ``train:`` overrides and ``run`` settings (sweep keys)."""
        return TrainConfig.from_yaml(profile(self.profile).recipe,
                                     {**self.train, **{_RUN_KEYS[k]: v for k, v in run.items()}})

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able data (written to the sweep's ``sweep.json``)."""
        d = dataclasses.asdict(self)
        d.pop("path")
        d["seeds"] = list(self.seeds)
        d["eval"]["mc"] = list(self.eval.mc)
        return d


def sweep_recipe(name: str | Path) -> Path:
    """A sweep recipe by path, or by name: ``cpu-tiny`` -> ``recipes/sweep-cpu-tiny.yaml``."""
    p = Path(name)
    if p.is_file():
        return p
    q = RECIPES / f"sweep-{name}.yaml"
    if q.is_file():
        return q
    known = ", ".join(sorted(r.stem.removeprefix("sweep-") for r in RECIPES.glob("sweep-*.yaml")))
    raise FileNotFoundError(f"sweep recipe {str(name)!r} not found; give a path or one of: {known}")


# ------------------------------------------------------------------------------------- expected cost

def expected_cost(config: SweepConfig, profile_name: str | None = None) -> dict[str, Any]:
    """Time and memory per run and for the whole sweep, from the recipe's ``expected:`` entry for
    the profile (``tokens_per_s``, ``peak_memory_gb``, ``hardware``, ``eval_s`` per run, ``source``
    of the figures): training seconds = ``budget_tokens / tokens_per_s``."""
    name = profile_name or config.profile
    exp = config.expected.get(name)
    if not exp:
        raise SweepError(f"expected: no entry for profile {name!r}; entries: {', '.join(config.expected) or 'none'}")
    tps = float(exp["tokens_per_s"])
    train_s = config.budget_tokens / tps
    per_run = train_s + float(exp.get("eval_s", 0))
    n_subsets = len(config.subsets) if isinstance(config.subsets, (list, tuple)) else None
    runs = n_subsets * len(config.seeds) if n_subsets else None
    return {"profile": name, "hardware": exp.get("hardware", ""), "peak_memory_gb": exp.get("peak_memory_gb"),
            "tokens_per_s": tps, "train_s_per_run": train_s, "eval_s_per_run": float(exp.get("eval_s", 0)),
            "s_per_run": per_run, "runs": runs, "total_h": per_run * runs / 3600 if runs else None,
            "source": exp.get("source", "")}


def cost_table(config: SweepConfig) -> pl.DataFrame:
    """:func:`expected_cost` for every profile of the recipe's ``expected:`` block."""
    rows = []
    for name in config.expected:
        c = expected_cost(config, name)
        rows.append({"profile": name, "hardware": c["hardware"], "peak memory (GB)": c["peak_memory_gb"],
                     "tokens/s": c["tokens_per_s"], "train min/run": round(c["train_s_per_run"] / 60, 2),
                     "eval min/run": round(c["eval_s_per_run"] / 60, 2), "source": c["source"]})
    return pl.DataFrame(rows)
