"""The model's typed outputs: its states of a batch (what the tasks read) and its output layer (what
the losses read); and the first code a recommendation can be: codes below it (pad, null, OOV) are
never recommended nor learned as targets."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from training.data.codes import SPECIAL_CODES

FIRST_ITEM_CODE = SPECIAL_CODES["first_value"]


@dataclass(frozen=True)
class OutputLayer:
    """What turns states into next-item scores, as the losses read it: one vector and one bias per
    item code, and the temperature every score is divided by."""
    weights: torch.Tensor  # [catalog, D]: the item table itself when tied
    bias: torch.Tensor  # [catalog]
    temperature: float

    @property
    def catalog(self) -> int:
        return self.weights.shape[0]

    def tempered(self, hidden: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`hidden` and `bias` divided by the temperature, so their product and sum are the logits divided
        by it (cheaper than dividing [N, catalog] logits); unchanged at 1."""
        return (hidden, bias) if self.temperature == 1.0 else (hidden / self.temperature, bias / self.temperature)

    def logits(self, hidden: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Scores [N, C] of the states `hidden` [N, D] for the item codes `candidates` [C]."""
        return (hidden @ self.weights[candidates].T + self.bias[candidates]) / self.temperature


@dataclass(frozen=True)
class SequenceStates:
    """What the body makes of a batch: hidden states [B, L, D] and the real events' mask [B, L]
    (a history prefix's model: the session's)."""
    hidden: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class WholeSequenceStates:
    """A prefix-history model's states of the whole [history, boundary, session] sequence [B, L', D]
    and its item codes [B, L'] (boundary and padding 0)."""
    hidden: torch.Tensor
    items: torch.Tensor
