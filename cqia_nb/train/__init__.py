"""Stage 4 (notebook 04): full fine-tuning, LoRA and QLoRA from one config; launching on several GPUs."""

from __future__ import annotations

from cqia_nb.train.config import (  # noqa: F401
    ATTN_IMPLEMENTATIONS,
    COMPUTE_DTYPES,
    CONFIG_FILE,
    METHODS,
    METRICS_FILE,
    PRECISIONS,
    QUANT_TYPES,
    SCHEDULERS,
    TrainConfig,
    TrainConfigError,
    bnb_4bit_support,
    cuda_available,
    parse_overrides,
    runtime_problems,
)
from cqia_nb.train.data import (  # noqa: F401
    build_datasets,
    encode_conversation,
    load_conversations,
    load_tokenizer,
    tiny_base_model,
)
from cqia_nb.train.launch import (  # noqa: F401
    ACCELERATE_CONFIGS,
    accelerate_config_path,
    check_accelerate_config,
    launch_command,
)
from cqia_nb.train.session import (  # noqa: F401
    GPU_LAUNCH,
    GPU_SHAPE,
    METHOD_ORDER,
    PROFILES,
    RECIPES,
    ROOT,
    ModelSet,
    Profile,
    TrainingData,
    config_table,
    filtered_records,
    generations,
    gpu_launch_table,
    gpu_requirements,
    loss_fell,
    merged_matches_adapter,
    method_configs,
    models_for_evaluation,
    profile,
    prompts_from,
    run_table,
    saved_parameters,
    throughput_table,
    trained_models,
    training_data,
    training_target,
)
from cqia_nb.train.trainer import (  # noqa: F401
    TrainResult,
    generate,
    last_checkpoint,
    load_model,
    merge_adapter,
    read_metrics,
    resolve_base_model,
    train,
)
