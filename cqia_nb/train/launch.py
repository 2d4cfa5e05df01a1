"""Several GPUs: the shipped accelerate configs and the checked ``accelerate launch`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cqia_nb.core.paths import here_or_root
from cqia_nb.train.config import TrainConfig, TrainConfigError

#: The shipped accelerate configs (``recipes/accelerate/*.yaml``), by short name.
ACCELERATE_CONFIGS = {"ddp": "recipes/accelerate/ddp.yaml", "fsdp": "recipes/accelerate/fsdp.yaml",
                      "zero3": "recipes/accelerate/zero3.yaml", "cpu": "recipes/accelerate/cpu.yaml"}


def accelerate_config_path(name_or_path: str | Path) -> Path:
    """``"ddp"`` / ``"fsdp"`` / ``"zero3"`` -> the shipped file (relative to the repository root);
    any other value is taken as a path."""
    return Path(ACCELERATE_CONFIGS.get(str(name_or_path), name_or_path))


def check_accelerate_config(name_or_path: str | Path):
    """Load an accelerate config with accelerate's own loader (unknown top-level keys fail there)
    and check that every ``deepspeed_config`` / ``fsdp_config`` key is an ``accelerate launch``
    option (accelerate itself would ignore a misspelt one). Returns accelerate's ``ClusterConfig``."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    path = here_or_root(accelerate_config_path(name_or_path))
    if not path.is_file():
        raise TrainConfigError(f"accelerate config {str(path)!r} not found (shipped: {', '.join(ACCELERATE_CONFIGS)})")
    try:
        cfg = load_config_from_file(str(path))
    except (ValueError, TypeError) as e:
        raise TrainConfigError(f"{path}: {e}") from None
    options = {a.dest for a in launch_command_parser()._actions}
    for section, prefix in (("deepspeed_config", ""), ("fsdp_config", "fsdp_")):
        for key in getattr(cfg, section) or {}:
            opt = key if key.startswith(prefix) else prefix + key
            if opt not in options:
                import difflib

                near = difflib.get_close_matches(opt, sorted(options), 1)
                raise TrainConfigError(f"{path}: {section}.{key} is not an accelerate option"
                                       + (f" (did you mean {near[0]!r}?)" if near else ""))
    return cfg


def launch_command(recipe: str | Path, accelerate_config: str | Path = "ddp", overrides: Sequence[str] = (), *,
                   num_processes: int | None = None, num_machines: int | None = None,
                   machine_rank: int | None = None, main_process_ip: str | None = None,
                   main_process_port: int | None = None) -> list[str]:
    """The ``accelerate launch … -m cqia_nb.train --config RECIPE`` argv for a multi-GPU run.

    Both files are checked first (``TrainConfig.from_yaml``, ``check_accelerate_config``) and so is
    the pair: QLoRA only with data parallel (each GPU holds the whole 4-bit base), the recipe's
    precision equal to the accelerate config's ``mixed_precision``, and not both FSDP activation
    checkpointing and ``gradient_checkpointing``. The argv is parsed with ``accelerate launch``'s own
    parser before it is returned; print it with ``shlex.join``.
    """
    cfg = TrainConfig.from_yaml(here_or_root(recipe), overrides)
    acc_given = accelerate_config_path(accelerate_config)
    acc_path = here_or_root(acc_given)
    acc = check_accelerate_config(acc_path)
    dist = getattr(acc.distributed_type, "value", str(acc.distributed_type))
    if cfg.method == "qlora" and dist in ("FSDP", "DEEPSPEED"):
        raise TrainConfigError(f"{recipe}: method qlora loads the whole 4-bit base on every GPU; launch it with "
                               f"the data-parallel config (ddp), not {acc_path.name} ({dist})")
    want = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.precision]
    if (acc.mixed_precision or "no") != want:
        raise TrainConfigError(f"{recipe}: precision {cfg.precision} but {acc_path.name} says mixed_precision: "
                               f"{acc.mixed_precision}; make them agree (--set precision=... or edit the config)")
    if dist == "FSDP" and cfg.gradient_checkpointing and (acc.fsdp_config or {}).get("fsdp_activation_checkpointing"):
        raise TrainConfigError(f"{acc_path.name}: fsdp_activation_checkpointing and the recipe's gradient_checkpointing "
                               "are both on (transformers refuses that); turn one off")
    if cfg.deepspeed is not None and dist != "DEEPSPEED":
        raise TrainConfigError(f"{recipe}: sets deepspeed but {acc_path.name} is {dist}; use the zero3 config")
    argv = ["accelerate", "launch", "--config_file", str(acc_given)]
    for flag, v in (("--num_processes", num_processes), ("--num_machines", num_machines),
                    ("--machine_rank", machine_rank), ("--main_process_ip", main_process_ip),
                    ("--main_process_port", main_process_port)):
        if v is not None:
            argv += [flag, str(v)]
    argv += ["-m", "cqia_nb.train", "--config", str(recipe)]
    for o in overrides:
        argv += ["--set", o]
    from accelerate.commands.launch import launch_command_parser

    try:
        ns = launch_command_parser().parse_args(argv[2:])
    except SystemExit:
        raise TrainConfigError(f"accelerate launch rejects the command: {' '.join(argv)}") from None
    if not ns.module or ns.training_script != "cqia_nb.train" or ns.training_script_args[:2] != ["--config", str(recipe)]:
        raise TrainConfigError(f"accelerate launch would not run cqia_nb.train with {recipe}")  # pragma: no cover
    return argv
