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
        temperature = model.config.temperature
        weights = model.item_weights()[FIRST_ITEM_CODE:]
        bias = model.output_bias[FIRST_ITEM_CODE:]
        if temperature != 1.0:  # scaling [N, D] and the bias is cheaper than scaling [N, catalog]
            hidden, bias = hidden / temperature, bias / temperature
        return ChunkedCrossEntropy.apply(hidden, weights, bias, targets - FIRST_ITEM_CODE, self.config.label_smoothing)

    def _sample(self, model, device, generator):
        """Negatives drawn on the CPU generator (the same draws on any device), with their log q."""
        catalog = model.spec.item_cardinality
        n = self.config.n_negatives
        if self.config.negatives == "popularity":
            if self.popularity is None:
                raise LossError("negatives 'popularity' needs item counts from the training data")
            negatives = torch.multinomial(self.popularity, n, replacement=True, generator=generator)
            return negatives.to(device), torch.log(self.popularity[negatives]).to(device)
        negatives = torch.randint(FIRST_ITEM_CODE, catalog, (n,), generator=generator)
        log_q = torch.full((n,), -torch.log(torch.tensor(float(catalog - FIRST_ITEM_CODE))).item())
        return negatives.to(device), log_q.to(device)

    def _logits(self, model, hidden, candidates):
        weights = model.item_weights()[candidates]
        return (hidden @ weights.T + model.output_bias[candidates]) / model.config.temperature

    def _sampled_softmax(self, model, hidden, targets, negatives, negative_log_q):
        candidates = torch.cat([targets, negatives])
        if self.popularity is not None:
            in_batch_log_q = torch.log(self.popularity.to(hidden.device)[targets])
        else:  # without counts, in-batch positives are taken as uniform too
            in_batch_log_q = negative_log_q[:1].expand(len(targets))
        temperature = model.config.temperature
        weights = model.item_weights()[candidates]
        bias = (model.output_bias[candidates] - torch.cat([in_batch_log_q, negative_log_q]) * temperature)
        if temperature != 1.0:
            hidden, bias = hidden / temperature, bias / temperature
        own = torch.arange(len(targets), device=hidden.device)
        # a candidate that is some other row's copy of this row's target is not a negative
        return ChunkedCrossEntropy.apply(hidden, weights, bias, own, 0.0, targets, candidates)

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


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of `hidden @ weight.T + bias` against `targets`, with label
    smoothing, computed block by block (rows x columns): the [N, catalog] logits never exist
    whole; each block's softmax terms are folded into running per-row maxima and sums (as flash
    attention does), and the backward pass recomputes each block. Same value and gradients as
    F.cross_entropy on the full logits. Blocks stay small, so they run near the caches and their
    buffers come back from the heap instead of fresh, page-faulted mappings.
    `row_codes`/`column_codes` (sampled softmax): a column whose code equals the row's code, other
    than the row's target column, is left out of the row's softmax (an accidental hit)."""

    ROWS = 512  # rows per block: each item-weight block is read once per this many rows
    COLUMNS = 4096  # columns per block: a 512 x 4096 float32 block is 8 MiB

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, label_smoothing, row_codes=None, column_codes=None):
        # under autocast the matrix products run in its low precision, the softmax in float32
        device = hidden.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        exact = torch.float64 if compute == torch.float64 else torch.float32
        n_rows, n_columns = hidden.shape[0], weight.shape[0]
        low_weight = weight.to(compute)
        log_normalisers = torch.empty(n_rows, dtype=exact, device=hidden.device)
        total = log_normalisers.new_zeros(())
        for r0, r1 in _spans(n_rows, ChunkedCrossEntropy.ROWS):
            rows = hidden[r0:r1].to(compute)
            row_targets = targets[r0:r1]
            running_max = torch.full((r1 - r0,), torch.finfo(exact).min, dtype=exact, device=hidden.device)
            running_sum, target_logits, logit_sums = torch.zeros_like(running_max), torch.zeros_like(running_max), torch.zeros_like(running_max)
            for c0, c1 in _spans(n_columns, ChunkedCrossEntropy.COLUMNS):
                logits = ChunkedCrossEntropy._block(rows, low_weight, bias, r0, c0, c1, exact, targets, row_codes, column_codes)
                inside = (row_targets >= c0) & (row_targets < c1)
                picked = logits.gather(1, (row_targets - c0).clamp(0, c1 - c0 - 1)[:, None]).squeeze(1)
                target_logits += torch.where(inside, picked, torch.zeros((), dtype=exact, device=hidden.device))
                if label_smoothing:
                    logit_sums += logits.sum(1)
                block_max = torch.maximum(running_max, logits.max(1).values)
                running_sum = running_sum * torch.exp(running_max - block_max) + logits.sub_(block_max[:, None]).exp_().sum(1)
                running_max = block_max
            log_normaliser = running_max + torch.log(running_sum)
            log_normalisers[r0:r1] = log_normaliser
            losses = log_normaliser - (1 - label_smoothing) * target_logits
            if label_smoothing:
                losses = losses - label_smoothing * logit_sums / n_columns
            total = total + losses.sum()
        ctx.save_for_backward(hidden, weight, bias, targets, log_normalisers)
        ctx.compute, ctx.label_smoothing, ctx.row_codes, ctx.column_codes = compute, label_smoothing, row_codes, column_codes
        return total / max(n_rows, 1)

    @staticmethod
    def backward(ctx, grad_output):
        hidden, weight, bias, targets, log_normalisers = ctx.saved_tensors
        smoothing, compute = ctx.label_smoothing, ctx.compute
        exact = log_normalisers.dtype
        n_rows, n_columns = hidden.shape[0], weight.shape[0]
        scale = grad_output / max(n_rows, 1)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        grad_bias = torch.zeros_like(bias)
        low_weight = weight.to(compute)
        in_place = compute == exact == weight.dtype  # products accumulate straight into the gradients
        for r0, r1 in _spans(n_rows, ChunkedCrossEntropy.ROWS):
            rows = hidden[r0:r1].to(compute)
            row_targets = targets[r0:r1]
            row_grad = torch.zeros(r1 - r0, hidden.shape[1], dtype=exact, device=hidden.device)
            for c0, c1 in _spans(n_columns, ChunkedCrossEntropy.COLUMNS):
                block = ChunkedCrossEntropy._block(rows, low_weight, bias, r0, c0, c1, exact, targets, ctx.row_codes, ctx.column_codes)
                block = block.sub_(log_normalisers[r0:r1, None]).exp_()
                inside = torch.nonzero((row_targets >= c0) & (row_targets < c1)).squeeze(1)
                block[inside, row_targets[inside] - c0] -= 1 - smoothing
                if smoothing:
                    block.sub_(smoothing / n_columns)
                block.mul_(scale)
                grad_bias[c0:c1] += block.sum(0).to(grad_bias.dtype)
                if in_place:
                    row_grad.addmm_(block, low_weight[c0:c1])
                    grad_weight[c0:c1].addmm_(block.T, rows)
                else:
                    low_block = block.to(compute)
                    row_grad += (low_block @ low_weight[c0:c1]).to(exact)
                    grad_weight[c0:c1] += (low_block.T @ rows).to(grad_weight.dtype)
            grad_hidden[r0:r1] = row_grad.to(grad_hidden.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def _block(rows, low_weight, bias, r0, c0, c1, exact, targets, row_codes, column_codes):
        """Logits of rows x columns c0:c1 in float32 (float64 stays float64), accidental hits at -inf."""
        logits = (rows @ low_weight[c0:c1].T).to(exact).add_(bias[c0:c1].to(exact))
        if row_codes is not None:
            r1 = r0 + rows.shape[0]
            hits = column_codes[None, c0:c1] == row_codes[r0:r1, None]
            own = torch.nonzero((targets[r0:r1] >= c0) & (targets[r0:r1] < c1)).squeeze(1)
            hits[own, targets[r0:r1][own] - c0] = False
            logits.masked_fill_(hits, float("-inf"))
        return logits


def _spans(total: int, size: int):
    return ((start, min(start + size, total)) for start in range(0, total, size))
