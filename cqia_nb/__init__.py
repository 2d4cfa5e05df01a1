"""cqia-notebooks: rebuild and study the COIG-CQIA Chinese instruction-tuning dataset.

One straight pipeline, a subpackage per notebook, with ``core`` under all of them and ``ui`` beside:

=====================  =========  =================================================================
subpackage             notebook   what it does
=====================  =========  =================================================================
``cqia_nb.core``       —          the chat turn and templates, generation, intervals, hashing, logs
``cqia_nb.data``       01         load, validate and cache the records; the dataset card
``cqia_nb.models``     02–05      the tiny model, SmolLM2, safe loading, the LLM judge
``cqia_nb.filter``     02         rules, dedup, model scores, review labels, the noise benchmark
``cqia_nb.build``      03         subsets, mixtures, split, chat formatting, contamination, exports
``cqia_nb.train``      04         full / LoRA / QLoRA fine-tuning, multi-GPU launch
``cqia_nb.eval``       05–06      C-Eval / CMMLU / SafetyBench, BELLE-EVAL, human A/B, results, subset sweep
``cqia_nb.ui``         01–06      widgets and figures (they read frames; no stage imports them)
=====================  =========  =================================================================

``import cqia_nb`` is fast: the names below are loaded on first use.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

# bitsandbytes >= 0.49, on CPUs with AVX512-BF16, tries at import (peft and transformers' Trainer
# import it) to fetch an optional 4-bit kernel from the Hub and, offline or with the publisher
# untrusted (we never pass trust_remote_code), falls back to its built-in path, logging two
# warnings that concern no user's run and make stderr depend on the CPU. Errors still show.
for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_name).setLevel(logging.ERROR)
del _name

__version__ = "0.2.0"

#: Public name -> "module:attribute" (or "module" for a subpackage), imported on first access.
_API: dict[str, str] = {
    **{name: f"cqia_nb.{name}" for name in ("core", "data", "models", "filter", "build", "train", "eval", "ui")},
    # 01
    "load": "cqia_nb.data.load:load", "LoadConfig": "cqia_nb.data.load:LoadConfig",
    "SCHEMA": "cqia_nb.data.schema:SCHEMA",
    # 02
    "PipelineConfig": "cqia_nb.filter.framework:PipelineConfig", "run_pipeline": "cqia_nb.filter.framework:run_pipeline",
    "write_outputs": "cqia_nb.filter.outputs:write_outputs", "read_kept": "cqia_nb.filter.outputs:read_kept",
    # 03
    "BuildSpec": "cqia_nb.build.spec:BuildSpec", "run_build": "cqia_nb.build.run:run_build",
    "export_all": "cqia_nb.build.exports:export_all",
    # 04
    "TrainConfig": "cqia_nb.train.config:TrainConfig", "train_model": "cqia_nb.train.trainer:train",
    # 05
    "MCConfig": "cqia_nb.eval.mc.scoring:MCConfig", "load_benchmark": "cqia_nb.eval.mc.loading:load_benchmark",
    "evaluate_mc": "cqia_nb.eval.mc.harness:evaluate_mc", "run_belle_eval": "cqia_nb.eval.belle.run:run_belle_eval",
    # 06
    "SweepConfig": "cqia_nb.eval.sweep:SweepConfig", "run_sweep": "cqia_nb.eval.sweep:run_sweep",
    # widgets
    "browse": "cqia_nb.ui.browser:browse",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'cqia_nb' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
