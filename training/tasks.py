"""Training tasks: what each position learns to predict, agreeing with inference (the item
after the last real event, padding ignored, nothing from the future visible).

- clm: causal language modelling: every position predicts the next event's item.
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
    else:
        masked = _mlm_positions(mask, task, generator)
        inputs = dict(batch)
        inputs[spec.item] = items.masked_fill(masked, model.inputs.mask_code)
        for name in spec.list_columns[1:]:
            inputs[name] = batch[name].masked_fill(masked, 0)
        hidden, _ = model.encode(inputs)
        targets, use = items, masked & (items >= FIRST_ITEM_CODE)
    return loss(model, hidden[use], targets[use], generator)


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
