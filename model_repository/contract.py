"""The ensemble's names, defined once: its steps, tensors and parameters (model_repository/README.md).

`export` writes them into the configs; the client and the offline paths read them from here;
the python steps read their own tensor names from their `model_config` (a step runs inside
Triton with only its version folder, so it imports nothing of this tree). Plain constants:
the client installs without torch or NVTabular and imports this file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DEFAULT_NAME = "hf4rec"  # the ensemble's name unless `--name` says otherwise
STEPS = ("transform", "model", "topk")  # in data order; step models are NAME_<step>


def step_name(ensemble: str, step: str) -> str:
    if step not in STEPS:
        raise ValueError(f"step: expected one of {list(STEPS)}, got {step!r}")
    return f"{ensemble}_{step}"


# what a client sends per session beside the raw event columns, and gets back, best first
EVENT_COUNT = "event_count"  # how many of the row's events are real
K = "k"  # items to return
OUTPUTS = ("item_ids", "scores")  # original item ids and their scores

# inside the ensemble: the model step's best codes and scores (the libtorch backend names outputs
# <name>__<index>), the tensors that carry them to the top-k step, and what top-k answers
MODEL_OUTPUTS = ("item_codes__0", "item_scores__1")
BEST = ("best_codes", "best_scores")
TOPK_INPUTS = ("codes", "scores", K)  # the top-k step reads its inputs in this order
TOPK_OUTPUTS = ("item_ids", "item_scores")
SEEN = "seen_items"  # the transform's extra output when the seen items are more than the model's events

# a session-aware model: the user's earlier events, per session
HISTORY_PREFIX = "history_"  # history_<item column>, history_<time column>
HISTORY_COUNT = "history_count"  # real history events per session


def history_inputs(item_column: str, time_column: str) -> dict[str, str]:
    """role -> request input name of a session's earlier events."""
    return {"item": HISTORY_PREFIX + item_column, "time": HISTORY_PREFIX + time_column, "count": HISTORY_COUNT}


# the transform step's parameters: its request bounds (INVALID_ARG above them), RequestTransform's keyword arguments
TRANSFORM_LIMITS = ("max_request_events", "max_id_bytes")


@dataclass(frozen=True)
class EnsembleParameters:
    """The ensemble config's parameters (strings there): what a client reads to build requests."""
    sequence_key: str  # the column that groups events into sessions (not sent)
    time_column: str  # events are ordered by it (unix seconds)
    item_column: str  # the returned ids are this column's values
    context_columns: tuple[str, ...]  # per-session values the server takes from the earliest event
    max_events: int  # the last events of a session the workflow keeps (and the server reads)
    max_k: int  # the most items one session may ask for
    exclude_seen: bool  # whether the session's own items are left out of the answer
    max_request_events: int  # the server refuses requests with more events (sessions x row width)
    # a session-aware model: each request row is a user's current session plus their earlier events
    user_column: str | None = None  # whose events are history
    session_gap_s: int = 0  # sessions are cut where the user is inactive longer (0: the sequence key column)
    history_events: int = 0  # the last events before the current session the server reads (0: no history)

    def to_config(self) -> dict[str, str]:
        """As config.pbtxt's parameters; the history's only for a session-aware model."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(EnsembleParameters)
                  if field.name not in HISTORY_PARAMETERS or self.history_events}
        return {name: ",".join(value) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool)
                else str(value) for name, value in values.items()}

    @staticmethod
    def config_values(parameters: dict[str, str], history: bool) -> dict:
        """The fields' values read from config parameters (`history`: the model takes history inputs);
        a missing one is named."""
        expected = [*PARAMETERS, *(HISTORY_PARAMETERS if history else ())]
        missing = [name for name in expected if name not in parameters]
        if missing:
            raise ValueError(f"model config parameters: expected {expected}, missing {missing}")
        values = {}
        for field in dataclasses.fields(EnsembleParameters):
            if field.name not in expected:
                continue
            text = parameters[field.name]
            values[field.name] = (tuple(c.strip() for c in text.split(",") if c.strip()) if field.name == "context_columns"
                                  else text.strip().lower() in ("true", "1", "yes") if field.name == "exclude_seen"
                                  else int(text) if field.type.startswith("int") else text)
        return values


_FIELDS = dataclasses.fields(EnsembleParameters)
HISTORY_PARAMETERS = tuple(field.name for field in _FIELDS if field.default is not dataclasses.MISSING)  # a session-aware model's
PARAMETERS = tuple(field.name for field in _FIELDS if field.name not in HISTORY_PARAMETERS)
