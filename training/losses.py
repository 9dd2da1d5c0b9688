"""Next-item losses over hidden states [N, D] and target codes [N] (all real catalog items).

- full cross-entropy over the whole catalog, with optional label smoothing;
- sampled softmax with logQ correction: in-batch targets plus uniform or popularity-sampled
  negatives, each candidate's logit corrected by the log of its sampling probability
  (for catalogs too large for a full softmax);
- gBCE (gSASRec, Petrov & Macdonald 2023): binary cross-entropy with k sampled negatives,
  the positive's probability raised to beta to undo the sampling's overconfidence.
Special codes (pad, null, OOV) are never candidates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.model import FIRST_ITEM_CODE, NextItemModel

LOSSES = ("ce", "sampled", "gbce")


@dataclass(frozen=True)
class LossConfig:
    loss: str = "ce"  # ce | sampled | gbce
    label_smoothing: float = 0.0  # ce only
    n_negatives: int = 256  # sampled and gbce: negatives drawn per batch
    negatives: str = "uniform"  # uniform | popularity: how sampled negatives are drawn
    gbce_t: float = 0.75  # gbce calibration (t=0: plain BCE, t=1: fully calibrated)


class LossError(ValueError):
    pass


def check_loss(config: LossConfig) -> None:
    if config.loss not in LOSSES:
        raise LossError(f"loss: expected one of {list(LOSSES)}, got {config.loss!r}")
    if config.negatives not in ("uniform", "popularity"):
        raise LossError(f"negatives: expected 'uniform' or 'popularity', got {config.negatives!r}")


class NextItemLoss:
    def __init__(self, config: LossConfig, item_counts: torch.Tensor | None = None):
        """`item_counts` [catalog]: training interactions per code, for popularity negatives and logQ."""
        check_loss(config)
        self.config = config
        self.popularity = None
        if item_counts is not None:
            counts = item_counts.double().clone() + 1e-3  # never-seen items stay sampleable
            counts[:FIRST_ITEM_CODE] = 0
            self.popularity = (counts / counts.sum()).float()

    def __call__(self, model: NextItemModel, hidden: torch.Tensor, targets: torch.Tensor, generator=None) -> torch.Tensor:
        if self.config.loss == "ce":
            return self._full(model, hidden, targets)
        negatives, log_q = self._sample(model, hidden.device, generator)
        if self.config.loss == "sampled":
            return self._sampled_softmax(model, hidden, targets, negatives, log_q)
        return self._gbce(model, hidden, targets, negatives)

    def _full(self, model, hidden, targets):
        weights = model.item_weights()[FIRST_ITEM_CODE:]
        logits = (hidden @ weights.T + model.output_bias[FIRST_ITEM_CODE:]) / model.config.temperature
        return F.cross_entropy(logits, targets - FIRST_ITEM_CODE, label_smoothing=self.config.label_smoothing)

    def _sample(self, model, device, generator):
        catalog = model.spec.item_cardinality
        n = self.config.n_negatives
        if self.config.negatives == "popularity":
            if self.popularity is None:
                raise LossError("negatives 'popularity' needs item counts from the training data")
            q = self.popularity.to(device)
            negatives = torch.multinomial(q, n, replacement=True, generator=generator)
            return negatives, torch.log(q[negatives])
        negatives = torch.randint(FIRST_ITEM_CODE, catalog, (n,), device=device, generator=generator)
        return negatives, torch.full((n,), -torch.log(torch.tensor(float(catalog - FIRST_ITEM_CODE))), device=device)

    def _logits(self, model, hidden, candidates):
        weights = model.item_weights()[candidates]
        return (hidden @ weights.T + model.output_bias[candidates]) / model.config.temperature

    def _sampled_softmax(self, model, hidden, targets, negatives, negative_log_q):
        candidates = torch.cat([targets, negatives])
        if self.popularity is not None:
            in_batch_log_q = torch.log(self.popularity.to(hidden.device)[targets])
        else:  # without counts, in-batch positives are taken as uniform too
            in_batch_log_q = negative_log_q[:1].expand(len(targets))
        logits = self._logits(model, hidden, candidates) - torch.cat([in_batch_log_q, negative_log_q])
        own = torch.arange(len(targets), device=hidden.device)
        accidental = candidates[None, :] == targets[:, None]
        accidental[own, own] = False
        logits = logits.masked_fill(accidental, float("-inf"))
        return F.cross_entropy(logits, own)

    def _gbce(self, model, hidden, targets, negatives):
        catalog = model.spec.item_cardinality - FIRST_ITEM_CODE
        alpha = self.config.n_negatives / (catalog - 1)
        t = self.config.gbce_t
        beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
        positive = (hidden * model.item_weights()[targets]).sum(-1) + model.output_bias[targets]
        positive = positive / model.config.temperature
        negative = self._logits(model, hidden, negatives)
        negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        loss = -beta * F.logsigmoid(positive) - F.logsigmoid(-negative).sum(-1)
        return loss.mean()
