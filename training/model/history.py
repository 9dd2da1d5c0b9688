"""Session-aware input: the user's earlier sessions (`history_item_list`, prepared by the
session-aware view) enter the model beside the current session, for any body.

Encodings (`model.history`):
- none: the session only (no parameter added: the session-only model).
- prefix: the last `history_length` history items, then a learned boundary marker, then the
  session, as one sequence; history events carry a learned segment vector. Causal bodies stay
  causal (the session sees its history; history never sees the session); the body returns the
  session's states only, so losses and predictions stay on the session's events.
- pooled: the mean of the history items' input vectors, projected (from zero, so training starts
  at the session-only model) and added to every session event's input.
History items enter through the model's own inputs (the item table shared with the output layer),
their side features unknown (codes 0, values 0.0) and the session's context. History may be padded anywhere; it is compacted and its last `history_length` items kept, no value read on the host.
"""
from __future__ import annotations

import torch
from torch import nn

from training.model.sequence import compact, keep_last

HISTORY_ENCODINGS = ("none", "prefix", "pooled")


def compact_history(history: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """History codes [B, any] with padding anywhere -> the last `length` real codes, right-padded
    [B, <= length], and their mask."""
    kept, mask = keep_last(*compact({"h": history}, "h", ["h"]), length, ["h"])
    return kept["h"], mask


class HistoryEncoder(nn.Module):
    def __init__(self, encoding: str, length: int, d_model: int):
        super().__init__()
        self.encoding, self.length = encoding, length
        if encoding == "prefix":
            self.segment = nn.Parameter(torch.zeros(d_model))
            self.boundary = nn.Parameter(torch.randn(d_model) * 0.02)
        elif encoding == "pooled":
            self.project = nn.Linear(d_model, d_model)
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)

    def history_embeds(self, inputs: nn.Module, batch: dict[str, torch.Tensor], history: torch.Tensor) -> torch.Tensor:
        """Input vectors [B, H, D] of history codes [B, H], through the session's input module."""
        spec = inputs.spec
        events = {spec.item: history}
        events.update({name: torch.zeros_like(history) for name in spec.categorical})
        events.update({name: torch.zeros(history.shape, dtype=torch.float32, device=history.device) for name in spec.continuous})
        events.update({name: batch[name] for name in spec.context_columns})
        return inputs(events)

    def forward(self, body: nn.Module, inputs: nn.Module, batch: dict[str, torch.Tensor], embeds: torch.Tensor,
                mask: torch.Tensor, history: torch.Tensor, whole: torch.Tensor | None = None):
        """Session states [B, L, D] of a right-padded session (`embeds`, `mask`) given its history codes.
        whole (prefix only): the session's true item codes [B, L]; returns the states of the whole
        [history, boundary, session] sequence, right-padded, and its item codes (the boundary's and
        padding's 0), for training on history positions too."""
        history, history_mask = compact_history(history, self.length)
        vectors = self.history_embeds(inputs, batch, history)
        if self.encoding == "pooled":
            weights = history_mask.unsqueeze(-1).to(vectors.dtype)
            pooled = (vectors * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return body(embeds + self.project(pooled).unsqueeze(1), mask)
        h = history_mask.sum(1, keepdim=True)  # [B, 1]
        n = mask.sum(1, keepdim=True)
        index, real = self._prefix_order(h, n, history.shape[1], embeds.shape[1])
        source = torch.cat([vectors + self.segment, self.boundary.to(embeds.dtype).expand(embeds.shape[0], 1, embeds.shape[-1]), embeds], dim=1)
        hidden = body(torch.gather(source, 1, index.unsqueeze(-1).expand(-1, -1, source.shape[-1])), real)
        if whole is not None:
            codes = torch.cat([history, history.new_zeros(history.shape[0], 1), whole], dim=1)
            return hidden, torch.gather(codes, 1, index).masked_fill(~real, 0)
        back = (h + 1 + torch.arange(embeds.shape[1], device=embeds.device)[None, :]).clamp(max=hidden.shape[1] - 1)
        return torch.gather(hidden, 1, back.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))

    @staticmethod
    def _prefix_order(h: torch.Tensor, n: torch.Tensor, width_h: int, width_s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each slot of [history, boundary, session], compacted per row, reads from in
        cat([history, boundary, session]) [B, width_h + 1 + width_s], and which slots are real."""
        slots = torch.arange(width_h + 1 + width_s, device=h.device)[None, :]
        index = torch.where(slots < h, slots, torch.where(slots == h, width_h, width_h + slots - h))
        return index.clamp(max=width_h + width_s), slots < h + 1 + n
