"""Training tasks: what each position learns to predict, agreeing with inference (the item
after the last real event, padding ignored, nothing from the future visible).

- clm: causal language modelling: every position predicts the next event's item (with
  `horizon` > 1, also the items a few events further, with decaying weights).
- plm: XLNet's permutation LM (see `_plm`); inference asks the query stream for a slot
  appended after the last event that no event sees.
- mlm: masked: random events (and, in a share of batches, only the last one, as BERT4Rec
  fine-tunes) are replaced by [MASK] with their side features hidden; the body, bidirectional,
  predicts them. Inference appends a [MASK] after the last event.
- rtd: ELECTRA-style replaced-item detection with a small generator (see `_rtd`), plus the
  masked next-item objective; inference as MLM.
Targets that can never be recommended (null, OOV codes) are left out of the loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.model.losses import NextItemLoss
from training.model.next_item import FIRST_ITEM_CODE, NextItemModel
from training.model.sequence import compact, keep_last


@dataclass(frozen=True)
class TaskConfig:
    mlm_probability: float = 0.2  # share of events masked in an MLM batch (targets of PLM and RTD too)
    mask_last_share: float = 0.1  # share of MLM batches that mask only each row's last event
    rtd_weight: float = 10.0  # rtd: weight of the replaced-item detection loss
    horizon: int = 1  # clm: each position also learns the items up to this many events ahead
    horizon_decay: float = 0.5  # clm: the k-th event ahead weighs horizon_decay ** (k - 1) in the loss
    history_targets: bool = False  # clm with a prefix history: its events (and the boundary) learn their next events too


class TaskConfigError(ValueError):
    pass


def task_loss(model: NextItemModel, batch: dict, loss: NextItemLoss, task: TaskConfig, generator: torch.Generator) -> torch.Tensor:
    spec = model.spec
    batch, mask = compact(batch, spec.item, spec.list_columns)
    batch, mask = keep_last(batch, mask, model.config.max_length, spec.list_columns)
    items = batch[spec.item]
    if model.config.task == "clm":
        batch = _item_dropout(model, batch, mask, generator)
        if task.history_targets:  # the boundary's state learns the session's first item
            whole = model.encode_with_history(batch, items)
            hidden, items = whole.hidden, whole.items
        else:
            hidden = model.encode(batch).hidden
        return _clm_loss(model, items, hidden, loss, task, generator)
    if model.config.task == "plm":
        permuted = _plm(model, batch, mask, task, generator)
        hidden, targets, use = permuted.hidden, permuted.targets, permuted.use
    elif model.config.task == "rtd":
        return _rtd(model, batch, mask, loss, task, generator)
    else:
        masked = _mlm_positions(mask, task, generator)
        hidden = model.encode(_masked_inputs(model, batch, masked)).hidden
        targets, use = items, masked & (items >= FIRST_ITEM_CODE)
    return loss(model.output_layer(), hidden[use], targets[use], generator, sequences=_sequences(use))


def _clm_loss(model: NextItemModel, items: torch.Tensor, hidden: torch.Tensor, loss: NextItemLoss, task: TaskConfig,
              generator: torch.Generator) -> torch.Tensor:
    """The state after event p learns the item at p + 1 and, with a horizon, those at p + 2 .. p + horizon,
    the k-th ahead weighted horizon_decay ** (k - 1), in the same scores (a session's next events rarely
    follow one order: a state that ranks the near future high ranks the next event high); the weighted
    mean over the horizons. `hidden`: the states of every event of `items`."""
    length = items.shape[1]
    total, weights = 0.0, 0.0
    for ahead in range(1, max(1, min(task.horizon, length - 1)) + 1):
        later, states = items[:, ahead:], hidden[:, : length - ahead]
        use = later >= FIRST_ITEM_CODE
        repeat = None
        if model.repeat_weights is not None:  # each prediction's prefix: events 0..p of its row
            rows, positions = use.nonzero(as_tuple=True)
            repeat = model.repeat_entries(items[rows], positions)
        weight = task.horizon_decay ** (ahead - 1)
        step = loss(model.output_layer(), states[use], later[use], generator, repeat=repeat, sequences=_sequences(use))
        total, weights = total + weight * step, weights + weight
    return total / weights


def _sequences(use: torch.Tensor) -> torch.Tensor:
    """The batch row of each prediction `x[use]` selects (row-major, so sorted): a sampled softmax
    leaves a row's own sequence out of its in-batch negatives (NextItemLoss._sampled_softmax)."""
    return use.nonzero(as_tuple=True)[0]


def check_task(task: TaskConfig, model_task: str, history: str = "none", repeat_window: int = 0) -> None:
    """One-line errors for task settings that cannot train."""
    if task.history_targets and (model_task != "clm" or history != "prefix" or repeat_window):
        raise TaskConfigError("task.history_targets: history positions learn with task 'clm', model.history 'prefix' and no "
                              f"repeat_window, got task {model_task!r}, history {history!r}, repeat_window {repeat_window}")
    if task.horizon < 1:
        raise TaskConfigError(f"task.horizon: expected 1 or more events ahead, got {task.horizon}")
    if task.horizon > 1 and model_task != "clm":
        raise TaskConfigError(f"task.horizon: events ahead train the clm task only, got horizon {task.horizon} with task {model_task!r}")
    if not 0.0 < task.horizon_decay <= 1.0:
        raise TaskConfigError(f"task.horizon_decay: expected a weight in (0, 1], got {task.horizon_decay}")


def _item_dropout(model: NextItemModel, batch: dict, mask: torch.Tensor, generator: torch.Generator) -> dict:
    """Inputs with a share `item_dropout` of the real events' items hidden as [MASK] (their side
    features kept): a state cannot lean on one event's item alone, as it must when that item is
    rare or noise. The targets are the true items."""
    share = model.config.item_dropout
    if not share:
        return batch
    hide = (torch.rand(mask.shape, generator=generator).to(mask.device) < share) & mask
    return {**batch, model.spec.item: batch[model.spec.item].masked_fill(hide, model.inputs.mask_code)}


def _masked_inputs(model: NextItemModel, batch: dict, masked: torch.Tensor) -> dict:
    """[MASK] at the masked events, their side features hidden."""
    inputs = dict(batch)
    inputs[model.spec.item] = batch[model.spec.item].masked_fill(masked, model.inputs.mask_code)
    for name in model.spec.list_columns[1:]:
        inputs[name] = batch[name].masked_fill(masked, 0)
    return inputs


def _rtd(model: NextItemModel, batch: dict, mask: torch.Tensor, loss: NextItemLoss, task: TaskConfig,
         generator: torch.Generator) -> torch.Tensor:
    """ELECTRA-style: a small generator body fills masked events with sampled items; the main body
    learns the masked next-item objective and to tell replaced events from real ones."""
    items = batch[model.spec.item]
    masked = _mlm_positions(mask, task, generator)
    use = masked & (items >= FIRST_ITEM_CODE)
    inputs = _masked_inputs(model, batch, masked)
    generator_hidden = model.generator_body(model.inputs(inputs), mask)
    generator_loss = loss(model.output_layer(), generator_hidden[use], items[use], generator, sequences=_sequences(use))
    with torch.no_grad():
        probabilities = torch.softmax(model.scores(generator_hidden[masked]).float(), dim=-1)
        sampled = torch.multinomial(probabilities.cpu(), 1, generator=generator).squeeze(1).to(items.device)
    corrupted = items.clone()
    corrupted[masked] = sampled
    hidden = model.encode(inputs).hidden
    next_item_loss = loss(model.output_layer(), hidden[use], items[use], generator, sequences=_sequences(use))
    detected = model.encode({**batch, model.spec.item: corrupted}).hidden
    logits = model.replaced_head(detected).squeeze(-1)
    detection_loss = F.binary_cross_entropy_with_logits(logits[mask].float(), (corrupted != items)[mask].float())
    return next_item_loss + generator_loss + task.rtd_weight * detection_loss


def _plm(model: NextItemModel, batch: dict, mask: torch.Tensor, task: TaskConfig, generator: torch.Generator) -> PermutedTargets:
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
    return PermutedTargets(hidden, targets, valid & (targets >= FIRST_ITEM_CODE), positions)


@dataclass(frozen=True)
class PermutedTargets:
    """XLNet's query-stream states of the masked targets, as many slots a row as its most-masked row."""
    hidden: torch.Tensor  # [B, slots, D]
    targets: torch.Tensor  # [B, slots] the masked items
    use: torch.Tensor  # [B, slots] a real slot whose target can be recommended
    positions: torch.Tensor  # [B, slots] each slot's position in the sequence


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
