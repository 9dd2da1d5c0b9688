"""Next-item losses over hidden states [N, D] and target codes [N] (all real catalog items).

- full cross-entropy over the whole catalog, with optional label smoothing;
- sampled softmax with logQ correction: in-batch targets of the other sequences plus uniform or
  popularity-sampled negatives, each candidate's logit corrected by the log of its sampling
  probability (for catalogs too large for a full softmax);
- gBCE (gSASRec, Petrov & Macdonald 2023): binary cross-entropy with k sampled negatives,
  the positive's probability raised to beta to undo the sampling's overconfidence.
Special codes (pad, null, OOV) are never candidates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.model.outputs import FIRST_ITEM_CODE, OutputLayer

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


def check_loss(config: LossConfig, repeat_window: int = 0) -> None:
    """`repeat_window`: the model's (the repeat score trains through ce and sampled only)."""
    if config.loss not in LOSSES:
        raise LossError(f"loss: expected one of {list(LOSSES)}, got {config.loss!r}")
    if config.negatives not in ("uniform", "popularity"):
        raise LossError(f"negatives: expected 'uniform' or 'popularity', got {config.negatives!r}")
    if repeat_window and config.loss == "gbce":
        raise LossError("the repeat score (model.repeat_window) trains with loss ce or sampled, not gbce")


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

    def __call__(self, output: OutputLayer, hidden: torch.Tensor, targets: torch.Tensor, generator=None,
                 repeat: tuple[torch.Tensor, torch.Tensor] | None = None, sequences: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of states `hidden` [N, D] whose next items are `targets` [N], scored by the
        `output` layer. `repeat` (codes [N, L], scores [N, L]): added to each row's logit of each code (code 0: none),
        as NextItemModel.add_repeat_scores adds them at inference. `sequences` [N]: the batch row each
        prediction comes from (sampled softmax: see _sampled_softmax)."""
        if repeat is not None:
            check_loss(self.config, repeat_window=repeat[0].shape[1])
        if self.config.loss == "ce":
            return self._full(output, hidden, targets, repeat)
        negatives, log_q = self._sample(output, hidden.device, generator)
        if self.config.loss == "sampled":
            return self._sampled_softmax(output, hidden, targets, negatives, log_q, repeat, sequences)
        return self._gbce(output, hidden, targets, negatives)

    def _full(self, output, hidden, targets, repeat=None):
        weights = output.weights[FIRST_ITEM_CODE:]
        hidden, bias = output.tempered(hidden, output.bias[FIRST_ITEM_CODE:])
        extra = _repeat_entries(repeat, torch.arange(FIRST_ITEM_CODE, output.catalog, device=hidden.device))
        return ChunkedCrossEntropy.apply(hidden, weights, bias, targets - FIRST_ITEM_CODE, self.config.label_smoothing, None, None, *extra)

    def _sample(self, output, device, generator):
        """Negatives drawn on the CPU generator (the same draws on any device), with their log q."""
        catalog = output.catalog
        n = self.config.n_negatives
        if self.config.negatives == "popularity":
            if self.popularity is None:
                raise LossError("negatives 'popularity' needs item counts from the training data")
            negatives = torch.multinomial(self.popularity, n, replacement=True, generator=generator)
            return negatives.to(device), torch.log(self.popularity[negatives]).to(device)
        negatives = torch.randint(FIRST_ITEM_CODE, catalog, (n,), generator=generator)
        log_q = torch.full((n,), -torch.log(torch.tensor(float(catalog - FIRST_ITEM_CODE))).item())
        return negatives.to(device), log_q.to(device)

    def _sampled_softmax(self, output, hidden, targets, negatives, negative_log_q, repeat=None, sequences=None):
        """The in-batch targets of other sequences follow the item popularity that log q corrects for;
        those of the row's own sequence do not (its other events are drawn with it, with probability 1,
        and its earlier items are the repeat candidates): with `sequences`, a row leaves them out."""
        candidates = torch.cat([targets, negatives])
        if self.popularity is not None:
            in_batch_log_q = torch.log(self.popularity.to(hidden.device)[targets])
        else:  # without counts, in-batch positives are taken as uniform too
            in_batch_log_q = negative_log_q[:1].expand(len(targets))
        weights = output.weights[candidates]
        bias = output.bias[candidates] - torch.cat([in_batch_log_q, negative_log_q]) * output.temperature
        hidden, bias = output.tempered(hidden, bias)
        own = torch.arange(len(targets), device=hidden.device)
        # a candidate that is some other row's copy of this row's target is not a negative
        return ChunkedCrossEntropy.apply(hidden, weights, bias, own, 0.0, targets, candidates, *_repeat_entries(repeat, candidates),
                                         sequences)

    def _gbce(self, output, hidden, targets, negatives):
        catalog = output.catalog - FIRST_ITEM_CODE
        alpha = self.config.n_negatives / (catalog - 1)
        t = self.config.gbce_t
        beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
        positive = ((hidden * output.weights[targets]).sum(-1) + output.bias[targets]) / output.temperature
        negative = output.logits(hidden, negatives)
        negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        loss = -beta * F.logsigmoid(positive) - F.logsigmoid(-negative).sum(-1)
        return loss.mean()


def _repeat_entries(repeat, column_codes: torch.Tensor):
    """(rows, columns, values) of every logit that a repeat score adds to, sorted by row: each
    (row, code, score) of `repeat` goes to every column whose code it is; (None, None, None) without."""
    if repeat is None:
        return None, None, None
    codes, values = repeat
    order = torch.argsort(column_codes, stable=True)
    sorted_codes = column_codes[order]
    first = torch.searchsorted(sorted_codes, codes)
    counts = (torch.searchsorted(sorted_codes, codes, right=True) - first) * (codes != 0)
    counts, first, values = counts.flatten(), first.flatten(), values.flatten()
    rows = torch.arange(codes.shape[0], device=codes.device).repeat_interleave(codes.shape[1]).repeat_interleave(counts)
    starts = torch.cumsum(counts, 0) - counts  # each entry's first pair
    within = torch.arange(int(counts.sum()), device=codes.device) - starts.repeat_interleave(counts)
    columns = order[first.repeat_interleave(counts) + within]
    return rows, columns, values.repeat_interleave(counts)


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of `hidden @ weight.T + bias` against `targets`, with label
    smoothing, computed over chunks of rows: the [N, catalog] logits never exist whole (the
    backward pass recomputes each chunk's). Each chunk's logits are written in place into one
    workspace kept across steps: a fresh [rows, catalog] buffer per chunk would be a new mapping
    that the kernel faults in page by page (at 100k+ items that was a third of the step's CPU).
    Same value and gradients as F.cross_entropy on the full logits.
    `row_codes`/`column_codes` (sampled softmax): a column whose code equals the row's code, other
    than the row's target column, is left out of the row's softmax (an accidental hit).
    `extra_rows`/`extra_columns`/`extra_values` (sorted by row): added to those logits (the repeat
    score), with their gradient. `groups` [rows] (sorted; the first `rows` columns are the rows' own,
    the i-th in row i's group): a column of the row's group, other than its target column, is left out too."""

    ROWS = 512  # rows per chunk: the item weights are read once per this many rows

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, label_smoothing, row_codes=None, column_codes=None,
                extra_rows=None, extra_columns=None, extra_values=None, groups=None):
        # under autocast the matrix products run in its low precision, the softmax in float32
        device = hidden.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        exact = torch.float64 if compute == torch.float64 else torch.float32
        n_rows, n_columns = hidden.shape[0], weight.shape[0]
        low_weight = weight.to(compute)
        log_normalisers = torch.empty(n_rows, dtype=exact, device=hidden.device)
        total = log_normalisers.new_zeros(())
        for start, stop in _spans(n_rows, ChunkedCrossEntropy.ROWS):
            logits = ChunkedCrossEntropy._logits(hidden[start:stop], low_weight, bias, exact, compute)
            _add_extra(logits, start, extra_rows, extra_columns, extra_values)
            ChunkedCrossEntropy._mask_hits(logits, start, targets, row_codes, column_codes, groups)
            target_logits = logits.gather(1, targets[start:stop, None]).squeeze(1)
            smoothed = logits.sum(1) / n_columns if label_smoothing else None
            largest = logits.amax(1)
            log_normaliser = largest + logits.sub_(largest[:, None]).exp_().sum(1).log_()
            log_normalisers[start:stop] = log_normaliser
            losses = log_normaliser - (1 - label_smoothing) * target_logits
            if label_smoothing:
                losses = losses - label_smoothing * smoothed
            total = total + losses.sum()
        ctx.save_for_backward(hidden, weight, bias, targets, log_normalisers, extra_values)
        ctx.compute, ctx.label_smoothing, ctx.row_codes, ctx.column_codes = compute, label_smoothing, row_codes, column_codes
        ctx.extra_rows, ctx.extra_columns, ctx.groups = extra_rows, extra_columns, groups
        return total / max(n_rows, 1)

    @staticmethod
    def backward(ctx, grad_output):
        hidden, weight, bias, targets, log_normalisers, extra_values = ctx.saved_tensors
        extra_rows, extra_columns = ctx.extra_rows, ctx.extra_columns
        grad_extra = None if extra_values is None else torch.zeros_like(extra_values)
        smoothing, compute = ctx.label_smoothing, ctx.compute
        exact = log_normalisers.dtype
        n_rows, n_columns = hidden.shape[0], weight.shape[0]
        scale = grad_output / max(n_rows, 1)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        grad_bias = torch.zeros_like(bias)
        low_weight = weight.to(compute)
        in_place = compute == exact == weight.dtype == hidden.dtype  # products accumulate straight into the gradients
        for start, stop in _spans(n_rows, ChunkedCrossEntropy.ROWS):
            rows = hidden[start:stop]
            probabilities = ChunkedCrossEntropy._logits(rows, low_weight, bias, exact, compute)
            _add_extra(probabilities, start, extra_rows, extra_columns, extra_values)
            ChunkedCrossEntropy._mask_hits(probabilities, start, targets, ctx.row_codes, ctx.column_codes, ctx.groups)
            logits_grad = probabilities.sub_(log_normalisers[start:stop, None]).exp_()
            logits_grad[torch.arange(stop - start, device=hidden.device), targets[start:stop]] -= 1 - smoothing
            if smoothing:
                logits_grad.sub_(smoothing / n_columns)
            logits_grad.mul_(scale)
            grad_bias.add_(logits_grad.sum(0).to(grad_bias.dtype))
            if grad_extra is not None:
                lo, hi = _extra_span(extra_rows, start, stop)
                grad_extra[lo:hi] = logits_grad[extra_rows[lo:hi] - start, extra_columns[lo:hi]].to(grad_extra.dtype)
            if in_place:
                torch.mm(logits_grad, low_weight, out=grad_hidden[start:stop])
                grad_weight.addmm_(logits_grad.T, rows)
            else:
                low_grad = _workspace(logits_grad.shape, compute, hidden.device, "low").copy_(logits_grad)
                grad_hidden[start:stop] = (low_grad @ low_weight).to(grad_hidden.dtype)
                grad_weight.add_((low_grad.T @ rows.to(compute)).to(grad_weight.dtype))
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None, grad_extra, None

    @staticmethod
    def _logits(rows, low_weight, bias, exact, compute):
        """The chunk's logits in float32 (float64 stays float64), in the shared workspace."""
        shape = (rows.shape[0], low_weight.shape[0])
        logits = _workspace(shape, exact, rows.device, "exact")
        if compute == exact:
            torch.mm(rows.to(compute), low_weight.T, out=logits)
        else:  # the low-precision product, then widened into the workspace
            logits.copy_(torch.mm(rows.to(compute), low_weight.T, out=_workspace(shape, compute, rows.device, "low")))
        return logits.add_(bias.to(exact))

    @staticmethod
    def _mask_hits(logits, start, targets, row_codes, column_codes, groups=None):
        if row_codes is None:
            return
        stop = start + logits.shape[0]
        hits = column_codes[None, :] == row_codes[start:stop, None]
        if groups is not None:  # the chunk's groups fill one span of the rows' own columns
            lo = int(torch.searchsorted(groups, groups[start]))
            hi = int(torch.searchsorted(groups, groups[stop - 1], side="right"))
            hits[:, lo:hi] |= groups[None, lo:hi] == groups[start:stop, None]
        hits[torch.arange(stop - start, device=logits.device), targets[start:stop]] = False
        logits.masked_fill_(hits, float("-inf"))


def _extra_span(extra_rows: torch.Tensor, start: int, stop: int) -> tuple[int, int]:
    """The entries of rows start..stop - 1 (extra_rows is sorted)."""
    bounds = torch.searchsorted(extra_rows, torch.tensor([start, stop], device=extra_rows.device))
    return int(bounds[0]), int(bounds[1])


def _add_extra(logits, start, extra_rows, extra_columns, extra_values):
    if extra_rows is None:
        return
    lo, hi = _extra_span(extra_rows, start, start + logits.shape[0])
    logits.index_put_((extra_rows[lo:hi] - start, extra_columns[lo:hi]), extra_values[lo:hi].to(logits.dtype), accumulate=True)


_WORKSPACES: dict[tuple, torch.Tensor] = {}


def _workspace(shape: tuple[int, int], dtype: torch.dtype, device: torch.device, role: str) -> torch.Tensor:
    """A [rows, columns] buffer kept across calls (grown when a call needs more): its pages are
    faulted in once per process, not once per chunk."""
    key = (role, dtype, str(device))
    size = shape[0] * shape[1]
    buffer = _WORKSPACES.get(key)
    if buffer is None or buffer.numel() < size:
        buffer = _WORKSPACES[key] = torch.empty(size, dtype=dtype, device=device)
    return buffer[:size].view(shape)


def _spans(total: int, size: int):
    return ((start, min(start + size, total)) for start in range(0, total, size))
