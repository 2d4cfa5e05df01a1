"""cqia_nb.train.session's hand-over to notebook 05: which finished runs a folder holds."""

from __future__ import annotations

from pathlib import Path

import yaml

import cqia_nb.train.session as finetune
from cqia_nb.train.config import CONFIG_FILE


def _run(folder: Path, base: Path, weights: str, merged: bool = False, data: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump({"resolved_base_model": str(base), "data": data}))
    if weights:
        (folder / weights).write_bytes(b"x")
    if merged:
        (folder / "merged").mkdir()
        (folder / "merged" / "config.json").write_text("{}")
    return folder


def test_trained_models_lists_finished_runs_in_method_order_with_their_base(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    runs = tmp_path / "runs"
    data = str(tmp_path / "subsets" / "trl" / "mix-groups" / "train.jsonl")
    _run(runs / "qlora", base, "adapter_model.safetensors", merged=True, data=data)
    _run(runs / "lora", base, "adapter_model.safetensors", data=data)
    _run(runs / "full", base, "model.safetensors", data=data)
    _run(runs / "interrupted", base, "")  # a killed run has no final weights: not a model
    found = finetune.trained_models(runs)
    assert list(found) == ["base", "full", "lora", "qlora"]
    assert found["base"] == base and found["full"] == runs / "full"
    assert found["lora"] == runs / "lora" and found["qlora"] == runs / "qlora" / "merged"
    assert finetune.training_target(runs) == "mix-groups"
    ms = finetune.models_for_evaluation(runs, tmp_path / "unused")
    assert ms.models == found and ms.train_subset == "mix-groups" and "notebook 04" in ms.origin
    assert not (tmp_path / "unused").exists()  # nothing trained when 04's runs are there


def test_no_runs_no_models(tmp_path):
    assert finetune.trained_models(tmp_path / "missing") == {}
    assert finetune.training_target(tmp_path / "missing") is None
