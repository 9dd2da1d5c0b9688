"""The next-item recommender: feature inputs -> sequence body -> next-item scores over the catalog.

A batch is a dict of tensors named like the prepared columns: list features [B, L] (item
codes, categorical codes, continuous values; 0 / 0.0 at padding) and context features [B].
Padding may sit left, right or anywhere: `compact` moves the real events to the front, so
every body sees right-padded sequences with positions 0..n-1, and the last real event is at
n-1. What the model predicts is the item after the last real event; how, is its task's
(training.model.tasks): causal bodies (CLM) read the hidden state of the last real event,
bidirectional ones (MLM, PLM, RTD) that of a [MASK] slot appended after it.

The model's contract: `next_item_scores(batch)` (inference, traced for serving) and
`loss(batch, loss, settings, generator)` (training), both through its task object.
"""
from __future__ import annotations

import torch
from torch import nn

from training.model.bodies import BodyConfig, BodyError, SequenceBody, positions_like
from training.model.configuration import ModelConfig, ModelConfigError, body_positions, check_config
from training.model.features import FeatureSpec
from training.model.history import HistoryEncoder
from training.model.inputs import SequenceInputs
from training.model.losses import NextItemLoss
from training.model.outputs import FIRST_ITEM_CODE, OutputLayer, SequenceStates, WholeSequenceStates
from training.model.sequence import compact, keep_last
from training.model.tasks import TaskConfig, make_task

# logits per unit of a repeat weight: a weight moves about a learning rate per step, and the best
# repeat scores are several logits (a 6-minute probe at lr 0.005 had learned 0.3-0.6 unscaled)
REPEAT_SCALE = 10.0


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (embeddings, projections); not biases, norms or other 1-D parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class NextItemModel(nn.Module):
    def __init__(self, spec: FeatureSpec, config: ModelConfig, pretrained: torch.Tensor | None = None):
        """`pretrained` [catalog, dim]: item content vectors by code (see training.model.pretrained)."""
        super().__init__()
        check_config(config)
        self.spec, self.config = spec, config
        self.inputs = SequenceInputs(spec, config, pretrained)
        body_config = BodyConfig(
            d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads, dropout=config.dropout,
            attention_dropout=config.dropout if config.attention_dropout is None else config.attention_dropout,
            attention=config.attention, positions=config.positions,
            max_positions=body_positions(config), causal=config.task == "clm",
        )
        try:
            self.body = SequenceBody(config.architecture, body_config)
        except BodyError as error:
            raise ModelConfigError(str(error)) from None
        self.history = None
        if config.history != "none":
            if spec.history is None:
                raise ModelConfigError(f"history {config.history!r}: the data has no session history; prepare it with "
                                       "--view session-aware (or set model.history=none)")
            self.history = HistoryEncoder(config.history, config.history_length, config.d_model)
        # the training objective and the inference that agrees with it (rtd: its generator and detection head)
        self.task = make_task(config.task, config.architecture, body_config, config.rtd_generator_layers)
        self.output_bias = nn.Parameter(torch.zeros(spec.item_cardinality))
        # the score added to an item for each earlier event of the session that holds it, by distance
        self.repeat_weights = nn.Parameter(torch.zeros(config.repeat_window)) if config.repeat_window else None
        if config.tie_weights:
            self.output_weight = None  # scores use inputs.item_embedding.weight: one storage
        else:
            self.output_weight = nn.Parameter(torch.empty(spec.item_cardinality, config.d_model))
            nn.init.normal_(self.output_weight, std=0.02)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Weights saved before RTD's generator and head moved into its task object load as they did."""
        for old in ("generator_body.", "replaced_head."):
            for key in [key for key in state_dict if key.startswith(prefix + old)]:
                state_dict[prefix + "task." + key[len(prefix):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def appends_mask(self) -> bool:
        """Inference scores a [MASK] slot after the last event, which takes one of max_length's positions."""
        return self.task.appends_mask

    def item_weights(self) -> torch.Tensor:
        weight = self.inputs.item_embedding.weight if self.output_weight is None else self.output_weight
        return weight[: self.spec.item_cardinality]

    def encode(self, batch: dict[str, torch.Tensor]) -> SequenceStates:
        """Hidden states [B, L, D] of a right-padded batch and its mask (with history: the session's)."""
        mask = batch[self.spec.item] != 0
        if self.history is None:
            return SequenceStates(self.body(self.inputs(batch), mask), mask)
        return SequenceStates(self.history(self.body, self.inputs, batch, self.inputs(batch), mask, batch[self.spec.history]), mask)

    def encode_with_history(self, batch: dict[str, torch.Tensor], items: torch.Tensor) -> WholeSequenceStates:
        """A prefix-history model's states of the whole [history, boundary, session] sequence and its
        item codes (boundary and padding 0; `items`: the session's true items, the inputs may hide
        some): its history positions can learn their next events too."""
        mask = batch[self.spec.item] != 0
        return WholeSequenceStates(*self.history(self.body, self.inputs, batch, self.inputs(batch), mask, batch[self.spec.history],
                                                 whole=items))

    def output_layer(self) -> OutputLayer:
        """The scores' parameters, passed to the losses (the model's own scores use them too)."""
        return OutputLayer(self.item_weights(), self.output_bias, self.config.temperature)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW's parameter groups: decay on matrices (embeddings, projections); not on biases, norms or
        other 1-D parameters."""
        return parameter_groups(self, weight_decay)

    def scores(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item scores [N, catalog] of the states `hidden` [N, D]; special codes get -inf.
        `out`: a [N, catalog] buffer to write them into (see training.evaluate.score_workspace)."""
        output = self.output_layer()
        hidden, bias = output.tempered(hidden, output.bias)
        logits = torch.addmm(bias, hidden, output.weights.T, out=out)  # one pass over [N, catalog], not three
        logits[..., :FIRST_ITEM_CODE] = float("-inf")
        return logits

    def repeat_scores(self) -> torch.Tensor:
        """The score an earlier event adds to its item, by distance - 1 (REPEAT_SCALE logits per unit)."""
        return self.repeat_weights * REPEAT_SCALE

    def repeat_entries(self, items: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For prefixes whose events are `items` [R, L] (0: none) and whose last event sits at `last` [R]:
        the codes [R, L] of the events at or before `last` (0 elsewhere) and the score each adds to its
        item, repeat_scores()[distance - 1] (distance 1: the last event; beyond the window, the last weight)."""
        distance = last[:, None] - positions_like(items) + 1
        codes = items.masked_fill(distance < 1, 0)
        return codes, self.repeat_scores()[distance.clamp(min=1, max=len(self.repeat_weights)) - 1] * (codes != 0)

    def add_repeat_scores(self, scores: torch.Tensor, items: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """`scores` [R, catalog] of those prefixes plus their repeat_entries; unchanged when off."""
        if self.repeat_weights is None:
            return scores
        codes, added = self.repeat_entries(items, last)
        return scores.scatter_add_(1, codes, added.to(scores.dtype))  # in place: [rows, catalog] is large

    def next_item_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores [B, catalog] for the item after each row's last real event (the task's inference). No
        branch on the data and no tensor pinned to a device: a trace holds for any padding, width and device."""
        return self.task.next_item_scores(self, *self._right_padded(batch, self.config.max_length - int(self.appends_mask)))

    def loss(self, batch: dict[str, torch.Tensor], loss: NextItemLoss, settings: TaskConfig, generator: torch.Generator) -> torch.Tensor:
        """The task's training loss of a batch (padding anywhere; rows cut to their last max_length events)."""
        return self.task.loss(self, *self._right_padded(batch, self.config.max_length), loss, settings, generator)

    def _right_padded(self, batch: dict[str, torch.Tensor], length: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each row's real events moved to the front, the last `length` of them kept; and their mask."""
        batch, mask = compact(batch, self.spec.item, self.spec.list_columns)
        return keep_last(batch, mask, length, self.spec.list_columns)

    # the rest of what the tasks use (TaskModel in training.model.tasks), besides encode, output_layer, scores and repeats

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The input layer's vectors [B, L, D] of a batch's events (shared by RTD's generator)."""
        return self.inputs(batch)

    def query_states(self, batch: dict[str, torch.Tensor], perm_mask: torch.Tensor, target_mapping: torch.Tensor) -> torch.Tensor:
        """XLNet's query-stream states [B, T, D] of the targets `target_mapping` [B, T, L] under `perm_mask`
        [B, L, L] (event i does not see event j where set)."""
        return self.body(self.inputs(batch), batch[self.spec.item] != 0, perm_mask, target_mapping)

    def hide(self, batch: dict[str, torch.Tensor], where: torch.Tensor, features: bool = True) -> dict[str, torch.Tensor]:
        """The batch with [MASK] as the item at `where` [B, L], and (`features`) those events' side features zeroed."""
        out = {**batch, self.spec.item: batch[self.spec.item].masked_fill(where, self.inputs.mask_code)}
        if features:
            out.update({name: batch[name].masked_fill(where, 0) for name in self.spec.list_columns[1:]})
        return out
