"""Training tasks, each with the inference that agrees with it: what a position learns to predict
in training (`loss`), and how the item after a row's last real event is scored (`next_item_scores`).
Padding is ignored and nothing from the future is visible.

- clm (`CausalLM`): every position predicts the next event's item (with `horizon` > 1, also the
  items a few events further, with decaying weights); inference reads the last real event's state.
- mlm (`MaskedLM`): random events (and, in a share of batches, only the last one, as BERT4Rec
  fine-tunes) are replaced by [MASK] with their side features hidden; the body, bidirectional,
  predicts them. Inference appends a [MASK] after the last event.
- plm (`PermutationLM`): XLNet's permutation LM; inference asks the query stream for a slot
  appended after the last event that no event sees.
- rtd (`ReplacedItemDetection`): ELECTRA-style replaced-item detection with a small generator
  body (the task's own parameters), plus the masked next-item objective; inference as MLM.
Targets that can never be recommended (null, OOV codes) are left out of the loss.

A task reaches the model only through `TaskModel`, the part of `NextItemModel` written for them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from training.model.bodies import BodyConfig, SequenceBody, positions_like
from training.model.configuration import ModelConfig
from training.model.features import FeatureSpec
from training.model.losses import NextItemLoss
from training.model.outputs import FIRST_ITEM_CODE, OutputLayer, SequenceStates, WholeSequenceStates
from training.model.sequence import at_positions


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


class TaskModel(Protocol):
    """What a task may use of the model (`training.model.next_item.NextItemModel` implements it)."""
    spec: FeatureSpec
    config: ModelConfig
    repeat_weights: torch.Tensor | None  # None: no repeat scores

    def encode(self, batch: dict) -> SequenceStates: ...
    def encode_with_history(self, batch: dict, items: torch.Tensor) -> WholeSequenceStates: ...
    def embed(self, batch: dict) -> torch.Tensor: ...
    def query_states(self, batch: dict, perm_mask: torch.Tensor, target_mapping: torch.Tensor) -> torch.Tensor: ...
    def hide(self, batch: dict, where: torch.Tensor, features: bool = True) -> dict: ...
    def output_layer(self) -> OutputLayer: ...
    def scores(self, hidden: torch.Tensor) -> torch.Tensor: ...
    def repeat_entries(self, items: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def add_repeat_scores(self, scores: torch.Tensor, items: torch.Tensor, last: torch.Tensor) -> torch.Tensor: ...


class Task(nn.Module):
    """One task's two halves. The model calls them on right-padded batches whose real events are
    marked by `mask` [B, L] (compacted and cut to the model's length). A module, so that a task's own
    parameters (RTD's generator) live, train and save with the model."""
    appends_mask = False  # inference scores a [MASK] slot after the last event (one position of max_length)

    def loss(self, model: TaskModel, batch: dict, mask: torch.Tensor, loss: NextItemLoss, settings: TaskConfig,
             generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def next_item_scores(self, model: TaskModel, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        """Scores [B, catalog] for the item after each row's last real event. No branch on the data."""
        raise NotImplementedError


class CausalLM(Task):
    def loss(self, model, batch, mask, loss, settings, generator):
        items = batch[model.spec.item]
        batch = _item_dropout(model, batch, mask, generator)
        if settings.history_targets:  # the boundary's state learns the session's first item
            whole = model.encode_with_history(batch, items)
            hidden, items = whole.hidden, whole.items
        else:
            hidden = model.encode(batch).hidden
        return _clm_loss(model, items, hidden, loss, settings, generator)

    def next_item_scores(self, model, batch, mask):
        hidden = model.encode(batch).hidden
        last = (mask.sum(1) - 1).clamp(min=0)
        return model.add_repeat_scores(model.scores(at_positions(hidden, last)), batch[model.spec.item], last)


class MaskedLM(Task):
    appends_mask = True

    def loss(self, model, batch, mask, loss, settings, generator):
        items = batch[model.spec.item]
        masked = _mlm_positions(mask, settings, generator)
        hidden = model.encode(model.hide(batch, masked)).hidden
        use = masked & (items >= FIRST_ITEM_CODE)
        return loss(model.output_layer(), hidden[use], items[use], generator, sequences=_sequences(use))

    def next_item_scores(self, model, batch, mask):
        batch, slot = with_mask_slot(model, batch, mask)
        return model.scores(at_positions(model.encode(batch).hidden, slot))


class PermutationLM(Task):
    appends_mask = True

    def loss(self, model, batch, mask, loss, settings, generator):
        permuted = permuted_targets(model, batch, mask, settings, generator)
        use = permuted.use
        return loss(model.output_layer(), permuted.hidden[use], permuted.targets[use], generator, sequences=_sequences(use))

    def next_item_scores(self, model, batch, mask):
        """XLNet's query stream at the appended slot, which no event sees."""
        batch, slot = with_mask_slot(model, batch, mask)
        at_slot = (positions_like(batch[model.spec.item]) == slot[:, None]).float()[:, None, :]  # target_mapping [B, 1, L]
        perm_mask = at_slot.expand(-1, at_slot.shape[2], -1)  # [B, L, L]: no event sees the slot
        return model.scores(model.query_states(batch, perm_mask, at_slot)[:, 0])


class ReplacedItemDetection(MaskedLM):
    """ELECTRA-style: a small generator body fills masked events with sampled items; the main body
    learns the masked next-item objective and to tell replaced events from real ones (`replaced_head`).
    The generator shares the model's input layer and output layer."""

    def __init__(self, architecture: str, generator_config: BodyConfig):
        super().__init__()
        self.generator_body = SequenceBody(architecture, generator_config)
        self.replaced_head = nn.Linear(generator_config.d_model, 1)

    def loss(self, model, batch, mask, loss, settings, generator):
        items = batch[model.spec.item]
        masked = _mlm_positions(mask, settings, generator)
        use = masked & (items >= FIRST_ITEM_CODE)
        inputs = model.hide(batch, masked)
        generator_hidden = self.generator_body(model.embed(inputs), mask)
        generator_loss = loss(model.output_layer(), generator_hidden[use], items[use], generator, sequences=_sequences(use))
        with torch.no_grad():
            probabilities = torch.softmax(model.scores(generator_hidden[masked]).float(), dim=-1)
            sampled = torch.multinomial(probabilities.cpu(), 1, generator=generator).squeeze(1).to(items.device)
        corrupted = items.clone()
        corrupted[masked] = sampled
        hidden = model.encode(inputs).hidden
        next_item_loss = loss(model.output_layer(), hidden[use], items[use], generator, sequences=_sequences(use))
        logits = self.replaced_logits(model.encode({**batch, model.spec.item: corrupted}).hidden)
        detection_loss = F.binary_cross_entropy_with_logits(logits[mask].float(), (corrupted != items)[mask].float())
        return next_item_loss + generator_loss + settings.rtd_weight * detection_loss

    def replaced_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logit [B, L] that each event of states `hidden` [B, L, D] was replaced."""
        return self.replaced_head(hidden).squeeze(-1)


def make_task(name: str, architecture: str, body_config: BodyConfig, generator_layers: int) -> Task:
    """The task object of `ModelConfig.task` (checked there)."""
    if name == "rtd":
        return ReplacedItemDetection(architecture, BodyConfig(**{**body_config.__dict__, "n_layers": generator_layers}))
    return {"clm": CausalLM, "mlm": MaskedLM, "plm": PermutationLM}[name]()


def with_mask_slot(model: TaskModel, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Append a [MASK] event after each row's last real event, its side features zeroed (the next
    event's are unknown). Returns the batch and each row's slot position."""
    lengths = mask.sum(1)
    out = {name: torch.cat([batch[name], torch.zeros_like(batch[name][:, :1])], dim=1) for name in model.spec.list_columns}
    at_slot = positions_like(out[model.spec.item]) == lengths[:, None]
    return model.hide({**batch, **out}, at_slot), lengths


def _clm_loss(model: TaskModel, items: torch.Tensor, hidden: torch.Tensor, loss: NextItemLoss, settings: TaskConfig,
              generator: torch.Generator) -> torch.Tensor:
    """The state after event p learns the item at p + 1 and, with a horizon, those at p + 2 .. p + horizon,
    the k-th ahead weighted horizon_decay ** (k - 1), in the same scores (a session's next events rarely
    follow one order: a state that ranks the near future high ranks the next event high); the weighted
    mean over the horizons. `hidden`: the states of every event of `items`."""
    length = items.shape[1]
    total, weights = 0.0, 0.0
    for ahead in range(1, max(1, min(settings.horizon, length - 1)) + 1):
        later, states = items[:, ahead:], hidden[:, : length - ahead]
        use = later >= FIRST_ITEM_CODE
        repeat = None
        if model.repeat_weights is not None:  # each prediction's prefix: events 0..p of its row
            rows, positions = use.nonzero(as_tuple=True)
            repeat = model.repeat_entries(items[rows], positions)
        weight = settings.horizon_decay ** (ahead - 1)
        step = loss(model.output_layer(), states[use], later[use], generator, repeat=repeat, sequences=_sequences(use))
        total, weights = total + weight * step, weights + weight
    return total / weights


def _sequences(use: torch.Tensor) -> torch.Tensor:
    """The batch row of each prediction `x[use]` selects (row-major, so sorted): a sampled softmax
    leaves a row's own sequence out of its in-batch negatives (NextItemLoss._sampled_softmax)."""
    return use.nonzero(as_tuple=True)[0]


def _item_dropout(model: TaskModel, batch: dict, mask: torch.Tensor, generator: torch.Generator) -> dict:
    """Inputs with a share `item_dropout` of the real events' items hidden as [MASK] (their side
    features kept): a state cannot lean on one event's item alone, as it must when that item is
    rare or noise. The targets are the true items."""
    share = model.config.item_dropout
    if not share:
        return batch
    return model.hide(batch, (torch.rand(mask.shape, generator=generator).to(mask.device) < share) & mask, features=False)


@dataclass(frozen=True)
class PermutedTargets:
    """XLNet's query-stream states of the masked targets, as many slots a row as its most-masked row."""
    hidden: torch.Tensor  # [B, slots, D]
    targets: torch.Tensor  # [B, slots] the masked items
    use: torch.Tensor  # [B, slots] a real slot whose target can be recommended
    positions: torch.Tensor  # [B, slots] each slot's position in the sequence


def permuted_targets(model: TaskModel, batch: dict, mask: torch.Tensor, settings: TaskConfig,
                     generator: torch.Generator) -> PermutedTargets:
    """XLNet's permutation LM: targets chosen as in MLM, a random factorisation order per row;
    an event does not see a target placed at or after it in that order, and each target is
    predicted by the query stream, which never sees its own content."""
    targets_mask = _mlm_positions(mask, settings, generator)
    order = torch.rand(mask.shape, generator=generator).to(mask.device).argsort(1).argsort(1)
    perm_mask = targets_mask[:, None, :] & (order[:, None, :] >= order[:, :, None])
    per_row = targets_mask.sum(1)
    slots = int(per_row.max())
    # row b's k-th target position -> target_mapping[b, k]
    positions = torch.sort((~targets_mask).to(torch.int8), dim=1, stable=True).indices[:, :slots]
    valid = torch.arange(slots, device=mask.device)[None, :] < per_row[:, None]
    target_mapping = torch.zeros(mask.shape[0], slots, mask.shape[1], device=mask.device)
    target_mapping.scatter_(2, positions[:, :, None], valid[:, :, None].float())
    hidden = model.query_states(batch, perm_mask, target_mapping)
    targets = batch[model.spec.item].gather(1, positions)
    return PermutedTargets(hidden, targets, valid & (targets >= FIRST_ITEM_CODE), positions)


def _mlm_positions(mask: torch.Tensor, settings: TaskConfig, generator: torch.Generator) -> torch.Tensor:
    rows = torch.arange(mask.shape[0], device=mask.device)
    last = torch.zeros_like(mask)
    last[rows, (mask.sum(1) - 1).clamp(min=0)] = True
    last &= mask
    if torch.rand((), generator=generator).item() < settings.mask_last_share:
        return last
    masked = (torch.rand(mask.shape, generator=generator).to(mask.device) < settings.mlm_probability) & mask  # CPU generator: same draws on any device
    none = ~masked.any(1)
    return masked | (last & none[:, None])  # every row predicts at least one event
