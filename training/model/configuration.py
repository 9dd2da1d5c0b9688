"""The model's configuration (the YAML's `model:` section), apart from the model as HuggingFace keeps
`configuration_*.py` apart from `modeling_*.py`: every field with why, and every check of it."""
from __future__ import annotations

from dataclasses import dataclass, field

from training.model.bodies import BODIES
from training.model.history import HISTORY_ENCODINGS


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "gpt2"  # body name, one of training.model.bodies.BODIES
    task: str = "clm"  # clm | mlm | plm (XLNet) | rtd (ELECTRA-style): what training predicts (the body must support it)
    rtd_generator_layers: int = 1  # rtd: layers of the small generator body (shares inputs and item table)
    d_model: int = 64  # hidden size of inputs, body and item table
    n_layers: int = 2  # transformer blocks
    n_heads: int = 2  # attention heads
    dropout: float = 0.1  # inputs and body dropout
    item_dropout: float = 0.0  # training: share of input events whose item is hidden ([MASK]), so states learn from context
    repeat_window: int = 0  # clm, > 0: a learned score for items already in the session, by how many events back (the last bucket open-ended)
    attention_dropout: float | None = None  # on attention probabilities; None: same as dropout
    attention: str = "sdpa"  # sdpa (scaled-dot-product, default) or eager (can be faster under bf16 on CPUs)
    max_length: int = 200  # input events per sequence (the mask slot of MLM included)
    max_positions: int | None = None  # body position table; None: max_length
    aggregation: str = "concat"  # concat (then project to d_model) | element-wise-sum
    feature_dim: int = 16  # embedding size of side features under concat
    positions: str = "from_start"  # absolute position ids (bodies that take them): from_start | from_end (recency)
    input_norm: bool = True  # layer norm on the aggregated inputs (before the body's position embeddings)
    continuous_encoding: str = "linear"  # linear projection | soft-one-hot
    soft_one_hot_bins: int = 16  # bins of the soft one-hot encoding
    tie_weights: bool = True  # output layer shares the item embedding table
    temperature: float = 1.0  # scores are divided by it
    exclude_features: tuple[str, ...] = field(default_factory=tuple)  # prepared columns not to use
    pretrained_item_embeddings: str | None = None  # .npy [catalog, dim] by item code, or .parquet (item id, embedding)
    freeze_pretrained: bool = True  # keep the pretrained vectors fixed (their projection still trains)
    history: str = "none"  # the user's earlier sessions (session-aware view): none | prefix | pooled (training.model.history)
    history_length: int = 50  # history items read, the last ones


class ModelConfigError(ValueError):
    pass


def check_config(config: ModelConfig) -> None:
    if config.architecture not in BODIES:
        raise ModelConfigError(f"architecture: unknown {config.architecture!r}; expected one of {sorted(BODIES)}")
    tasks = BODIES[config.architecture].tasks
    if config.task not in tasks:
        hint = "CLM needs a causal (decoder) body" if config.task == "clm" else (
            "PLM needs XLNet" if config.task == "plm" else "MLM/RTD need a bidirectional (encoder) body")
        raise ModelConfigError(f"task {config.task!r} does not fit architecture {config.architecture!r} ({hint}); it supports {list(tasks)}")
    if config.aggregation not in ("concat", "element-wise-sum"):
        raise ModelConfigError(f"aggregation: expected 'concat' or 'element-wise-sum', got {config.aggregation!r}")
    if config.continuous_encoding not in ("linear", "soft-one-hot"):
        raise ModelConfigError(f"continuous_encoding: expected 'linear' or 'soft-one-hot', got {config.continuous_encoding!r}")
    if config.attention not in ("sdpa", "eager"):
        raise ModelConfigError(f"attention: expected 'sdpa' or 'eager', got {config.attention!r}")
    if config.repeat_window < 0:
        raise ModelConfigError(f"repeat_window: expected 0 (off) or more events, got {config.repeat_window}")
    if config.repeat_window and config.task != "clm":
        raise ModelConfigError(f"repeat_window: the repeat score needs task 'clm' (a prefix of each session), got task {config.task!r}")
    if not 0.0 <= config.item_dropout < 1.0:
        raise ModelConfigError(f"item_dropout: expected a share in [0, 1), got {config.item_dropout}")
    if config.d_model % config.n_heads:
        raise ModelConfigError(f"d_model {config.d_model} must be a multiple of n_heads {config.n_heads}")
    if config.max_positions is not None and config.max_length > config.max_positions:
        raise ModelConfigError(f"max_length {config.max_length} is above the body's max_positions {config.max_positions}")
    if config.history not in HISTORY_ENCODINGS:
        raise ModelConfigError(f"history: expected one of {list(HISTORY_ENCODINGS)}, got {config.history!r}")
    if config.history != "none" and config.task not in ("clm", "mlm"):
        raise ModelConfigError(f"history {config.history!r}: needs task 'clm' or 'mlm', got task {config.task!r}")
    if config.history_length < 1:
        raise ModelConfigError(f"history_length: expected 1 or more items, got {config.history_length}")


def body_positions(config: ModelConfig) -> int:
    """The body's position table: the session's events, and with a prefix history its items and marker."""
    session = config.max_positions or config.max_length
    return session + (config.history_length + 1 if config.history == "prefix" else 0)
