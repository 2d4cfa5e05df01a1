"""Models every later stage uses: the tiny local Llama, SmolLM2, safe loading of any HF causal LM,
and the LLM judge (an OpenAI-compatible endpoint or a local model)."""

from __future__ import annotations

from cqia_nb.models.judge import (  # noqa: F401
    BELLE_SCORE_PATTERN,
    JUDGE_PROMPT,
    JUDGE_SYSTEM,
    JUDGE_VERSION,
    RESULT_SCHEMA,
    SCORE_PATTERN,
    STATS,
    JudgeConfig,
    format_prompt,
    judge_frame,
    judge_prompts,
    messages_for,
    parse_score,
    request_key,
    summarize,
)
from cqia_nb.models.loading import (  # noqa: F401
    LOAD_COUNT,
    is_adapter,
    load_causal_lm,
    load_for_inference,
    model_fingerprint,
    torch_dtype,
)
from cqia_nb.models.smollm2 import (  # noqa: F401
    SMOLLM2_GGUF,
    find_smollm2_gguf,
    load_smollm2,
    smollm2_cached,
    smollm2_folder,
)
from cqia_nb.models.store import (  # noqa: F401
    MARKER,
    MODEL_VERSION,
    is_complete,
    models_dir,
    quiet_transformers,
    save_model,
)
from cqia_nb.models.tiny import (  # noqa: F401
    TinyModelConfig,
    build_tiny_model,
    resolve_model,
    tiny_lm,
    tiny_training_texts,
    train_tiny_lm,
    wrap_tokenizer,
)
