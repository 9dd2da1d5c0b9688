"""Training tasks: what each position learns to predict, agreeing with inference (the item
after the last real event, padding ignored, nothing from the future visible).

- clm: causal language modelling: every position predicts the next event's item.
- plm: XLNet's permutation LM (see `_plm`); inference asks the query stream for a slot
  appended after the last event that no event sees.
- mlm: masked: random events (and, in a share of batches, only the last one, as BERT4Rec
  fine-tunes) are replaced by [MASK] with their side features hidden; the body, bidirectional,
  predicts them. Inference appends a [MASK] after the last event.
Targets that can never be recommended (null, OOV codes) are left out of the loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from training.losses import NextItemLoss
from training.model import FIRST_ITEM_CODE, NextItemModel, compact, keep_last


@dataclass(frozen=True)
class TaskConfig:
    mlm_probability: float = 0.2  # share of events masked in an MLM batch
    mask_last_share: float = 0.1  # share of MLM batches that mask only each row's last event


def task_loss(model: NextItemModel, batch: dict, loss: NextItemLoss, task: TaskConfig, generator: torch.Generator) -> torch.Tensor:
    spec = model.spec
    batch, mask = compact(batch, spec.item, spec.list_columns)
    batch, mask = keep_last(batch, mask, model.config.max_length, spec.list_columns)
    items = batch[spec.item]
    if model.config.task == "clm":
        hidden, _ = model.encode(batch)
        targets, hidden = items[:, 1:], hidden[:, :-1]
        use = targets >= FIRST_ITEM_CODE
    elif model.config.task == "plm":
        hidden, targets, use, _ = _plm(model, batch, mask, task, generator)
    else:
        masked = _mlm_positions(mask, task, generator)
        inputs = dict(batch)
        inputs[spec.item] = items.masked_fill(masked, model.inputs.mask_code)
        for name in spec.list_columns[1:]:
            inputs[name] = batch[name].masked_fill(masked, 0)
        hidden, _ = model.encode(inputs)
        targets, use = items, masked & (items >= FIRST_ITEM_CODE)
    return loss(model, hidden[use], targets[use], generator)


def _plm(model: NextItemModel, batch: dict, mask: torch.Tensor, task: TaskConfig, generator: torch.Generator):
    """XLNet's permutation LM: targets chosen as in MLM, a random factorisation order per row;
    an event does not see a target placed at or after it in that order, and each target is
    predicted by the query stream, which never sees its own content."""
    targets_mask = _mlm_positions(mask, task, generator)
    order = torch.rand(mask.shape, generator=generator).to(mask.device).argsort(1).argsort(1)
    perm_mask = targets_mask[:, None, :] & (order[:, None, :] >= order[:, :, None])
    per_row = targets_mask.sum(1)
    slots = int(per_row.max())
    # row b's k-th target position -> target_mapping[b, k]
    positions = torch.sort((~targets_mask).to(torch.int8), dim=1, stable=True).indices[:, :slots]
    valid = torch.arange(slots, device=mask.device)[None, :] < per_row[:, None]
    target_mapping = torch.zeros(mask.shape[0], slots, mask.shape[1], device=mask.device)
    target_mapping.scatter_(2, positions[:, :, None], valid[:, :, None].float())
    hidden = model.body(model.inputs(batch), mask, perm_mask, target_mapping)
    targets = batch[model.spec.item].gather(1, positions)
    return hidden, targets, valid & (targets >= FIRST_ITEM_CODE), positions


def _mlm_positions(mask: torch.Tensor, task: TaskConfig, generator: torch.Generator) -> torch.Tensor:
    rows = torch.arange(mask.shape[0], device=mask.device)
    last = torch.zeros_like(mask)
    last[rows, (mask.sum(1) - 1).clamp(min=0)] = True
    last &= mask
    if torch.rand((), generator=generator).item() < task.mask_last_share:
        return last
    masked = (torch.rand(mask.shape, generator=generator).to(mask.device) < task.mlm_probability) & mask  # CPU generator: same draws on any device
    none = ~masked.any(1)
    return masked | (last & none[:, None])  # every row predicts at least one event
