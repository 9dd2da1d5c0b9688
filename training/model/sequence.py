"""Sequence operations on padded batches, shared by the model, its tasks and the history encoder:
real events to the front (`compact`), the last n kept (`keep_last`), a state per row (`at_positions`).
No branch on the data and nothing read on the host: a traced model holds for any padding."""
from __future__ import annotations

import torch


def compact(batch: dict[str, torch.Tensor], item: str, list_columns) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Move each row's real events to the front, in order: left- or mid-padded rows become
    right-padded. Returns the batch and the mask of real events. Always the sort, no branch on
    the data: a trace records it for any padding, and nothing waits for the device."""
    mask = batch[item] != 0
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    out = dict(batch)
    for name in list_columns:
        out[name] = torch.gather(batch[name], 1, order)
    return out, torch.gather(mask, 1, order)


@torch.jit.script
def _last_events(columns: list[torch.Tensor], mask: torch.Tensor, n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`keep_last` on a list of columns; scripted so that a traced model keeps the test on the width."""
    if mask.shape[1] <= n:
        return columns, mask
    excess = (mask.sum(1) - n).clamp(min=0)  # at most width - n: the index stays inside the row
    index = torch.arange(n, device=mask.device)[None, :] + excess[:, None]
    kept = torch.gather(mask, 1, index)
    return [torch.gather(values, 1, index).masked_fill(~kept, 0) for values in columns], kept


def keep_last(batch: dict[str, torch.Tensor], mask: torch.Tensor, n: int, list_columns) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Keep each right-padded row's last `n` real events (right-padded, width <= n); no value is
    read on the host."""
    columns, kept = _last_events([batch[name] for name in list_columns], mask, n)
    return {**batch, **dict(zip(list_columns, columns))}, kept


def at_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Each row's state [B, D] at its position [B]."""
    return hidden.gather(1, positions[:, None, None].expand(-1, 1, hidden.shape[-1])).squeeze(1)
