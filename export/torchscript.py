"""The trained model as TorchScript (`model.pt`): model inputs in, the best items out.

    forward(item_id_list, genres_list, ..., age_first, ..., [seen_items]) ->
        (item_codes [B, max_k] int64, item_scores [B, max_k] float32), best first

List inputs are [B, L] (0 = padding), padded anywhere (right, left, inside a session), of any
width L (a session longer than the model keeps is cut to its last events); context inputs are
[B, 1]. `NextItemModel.next_item_scores` branches on no data (compaction is always a sort) and
its one branch on the width (`keep_last`) is a script function, so tracing it records one
graph that holds for every batch size, width and padding; `trace` checks right-, left- and
inside-padded batches, also wider than the kept events, against eager before returning.
`follow_input_device` turns the devices the tracer records into the inputs' device: a model
traced on the CPU or cuda:0 runs on whichever device Triton places it (any GPU of a KIND_GPU
instance group). The transform step sends every session right-padded to the kept events (one
shape, so requests batch); `trim_padding`, a script function the trace calls, first cuts the
padding columns all rows share, so a short session costs what its length costs (the one step that
reads a value on the host; `serving_module(trim_padding=False)` leaves it out, for a CUDA graph).
The top-k runs here, where the scores are (on the GPU: no [B, catalog] matrix leaves it):
special codes (pad, null, OOV) score -inf, as offline; with exclude_seen the session's items
too (`seen_items` [B, S] when the workflow keeps more events than the model reads, else the
item list itself); `best_items` orders by score, ties to the lower code, as offline ranking,
in fixed shapes and without synchronising with the host.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn

from model_repository.contract import SEEN
from training.model.next_item import FIRST_ITEM_CODE, NextItemModel

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCES = {"fp32": 1e-5, "bf16": 3e-2, "fp16": 5e-3}  # traced vs eager scores, by the precision's rounding


class ExportError(ValueError):
    pass


def input_names(model: NextItemModel) -> list[str]:
    """The model step's inputs in order: the session's lists, its context, the history's item codes
    when the model reads a user's earlier sessions."""
    return [*model.spec.list_columns, *model.spec.context_columns, *([model.spec.history] if model.history is not None else [])]


def history_events(model: NextItemModel) -> int | None:
    """History items the model reads (None: a session-only model)."""
    return model.config.history_length if model.history is not None else None


def kept_events(model: NextItemModel) -> int:
    """Events per session the model reads (MLM-style models append a [MASK] slot)."""
    return model.config.max_length - int(model.appends_mask)


def follow_input_device(traced: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Make a traced module run on its inputs' device. The tracer records every `device=x.device`
    and `.to(x.device)` (the HF bodies' masks and positions, torch's GRU state) as a constant
    device, which would pin the model to the device it was traced on (cuda:0 for any GPU): in
    each traced forward, such constants become the device of its first tensor input."""
    for module in traced.modules():
        if not module._c._has_method("forward"):  # a submodule the trace never called
            continue
        graph = module.graph
        pinned = [node for node in graph.findAllNodes("prim::Constant") if node.output().type().kind() == "DeviceObjType"]
        tensors = [value for value in graph.inputs() if value.type().kind() == "TensorType"]
        if not pinned:
            continue
        if not tensors:
            raise ExportError(f"{module.original_name}: a traced forward without tensor inputs pins a device")
        device = graph.create("prim::device", [tensors[0]])
        device.output().setType(torch._C.DeviceObjType.get())
        device.insertBefore(next(iter(graph.nodes())))
        for node in pinned:
            node.output().replaceAllUsesWith(device.output())
            node.destroy()
    return traced


@torch.jit.script
def trim_padding(item: torch.Tensor, lists: list[torch.Tensor]) -> list[torch.Tensor]:
    """Drop the trailing columns that are padding (0) in every row (the transform pads on the right)."""
    columns = torch.arange(1, item.shape[1] + 1, device=item.device)
    width = max(int(((item != 0).any(dim=0).long() * columns).max()), 1)
    return [values[:, :width] for values in lists]


@torch.jit.script
def top_candidates(scores: torch.Tensor, k: int, chunk: int = 32768) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(scores, k) (values best first, codes), in two stages for catalogs over two
    chunks: every chunk's k best, then the k best of those (many short top-k's run in parallel
    on a GPU, where one top-k over a long row does not). No host synchronisation: CUDA graphs
    can capture it. Which of equal scores it keeps is arbitrary; `best_items` settles that."""
    rows, items = scores.shape[0], scores.shape[1]
    if items <= 2 * chunk or k > chunk:
        return torch.topk(scores, k, dim=1)
    whole = items // chunk
    values, codes = torch.topk(scores[:, : whole * chunk].reshape(rows, whole, chunk), k, dim=2)
    codes = codes + (torch.arange(whole, device=scores.device) * chunk).view(1, whole, 1)
    values, codes = [values.reshape(rows, whole * k)], [codes.reshape(rows, whole * k)]
    if items > whole * chunk:
        tail_values, tail_codes = torch.topk(scores[:, whole * chunk :], min(k, items - whole * chunk), dim=1)
        values.append(tail_values)
        codes.append(tail_codes + whole * chunk)
    values, picked = torch.topk(torch.cat(values, dim=1), k, dim=1)
    return values, torch.gather(torch.cat(codes, dim=1), 1, picked)


@torch.jit.script
def best_items(scores: torch.Tensor, k: int, chunk: int = 32768) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best codes of each row and their scores, best first; equal scores go to the lower
    code (what a stable full sort gives), also at the k-th place. Two top-k's and no host
    synchronisation or data-dependent shape (a CUDA graph can capture it): the first finds the
    k-th best score (exact whichever equal scores it kept), the second picks every score above
    it and, of those equal to it, the lowest codes. Scores are never NaN for finite weights; a
    NaN has no defined place."""
    kth = top_candidates(scores, k, chunk)[0][:, k - 1 : k]
    items = scores.shape[1]
    lower_first = -torch.arange(items, dtype=torch.int32, device=scores.device)  # codes < 2**31
    preference = torch.where(scores > kth, items, torch.where(scores == kth, lower_first, -items))
    codes, _ = torch.sort(top_candidates(preference, k, chunk)[1], dim=1)
    values, order = torch.sort(torch.gather(scores, 1, codes), dim=1, descending=True, stable=True)
    return torch.gather(codes, 1, order), values


class _Serving(nn.Module):
    def __init__(self, model: NextItemModel, max_k: int, exclude_seen: bool, seen_input: bool, dtype: torch.dtype,
                 trim_padding: bool = True):
        super().__init__()
        self.model = model
        self.names = input_names(model)
        self.lists = set(model.spec.list_columns)
        self.history = model.spec.history if model.history is not None else ""  # [B, H] codes, padded anywhere
        self.floats = {*model.spec.continuous, *model.spec.context_continuous}
        self.max_k, self.exclude_seen, self.seen_input, self.dtype = max_k, exclude_seen, seen_input, dtype
        self.trims_padding = trim_padding

    def scores(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, seen = (inputs[:-1], inputs[-1]) if self.seen_input else (inputs, None)
        item = features[self.names.index(self.model.spec.item)]
        lists = [name for name in self.names if name in self.lists]
        values = [value for name, value in zip(self.names, features) if name in self.lists]
        trimmed = dict(zip(lists, trim_padding(item, values) if self.trims_padding else values))
        batch = {name: trimmed[name] if name in self.lists else value if name == self.history else value.reshape(-1)
                 for name, value in zip(self.names, features)}
        batch = {name: value.to(self.dtype) if name in self.floats else value for name, value in batch.items()}
        scores = self.model.next_item_scores(batch).float()
        if self.exclude_seen:
            scores = scores.scatter(1, item if seen is None else seen, float("-inf"))  # padding: code 0, already -inf
        return best_items(scores, self.max_k)


def _serving_class(names: list[str]) -> type:
    """A subclass whose forward names its arguments like the model inputs (the libtorch
    backend binds config inputs to forward's argument names)."""
    for name in names:
        if not name.isidentifier():
            raise ExportError(f"model input {name!r} is not a valid argument name; rename the column before preparing")
    args = ", ".join(names)
    namespace: dict = {}
    exec(f"def forward(self, {args}):\n    return self.scores({args})\n", namespace)
    return type("ServingModel", (_Serving,), {"forward": namespace["forward"]})


def serving_module(model: NextItemModel, max_k: int, exclude_seen: bool, seen_input: bool = False, precision: str = "fp32",
                   trim_padding: bool = True) -> _Serving:
    """The module `trace` turns into model.pt, in eager PyTorch. `trim_padding=False` keeps every
    shape the inputs' (cutting needs the host, which a CUDA graph cannot hold) and gives the same
    items: padding columns change no score (tests/test_traced_padding.py holds model.pt to the
    untrimmed computation on wider batches)."""
    names = input_names(model) + ([SEEN] if seen_input else [])
    return _serving_class(names)(model, max_k, exclude_seen, seen_input, PRECISIONS[precision], trim_padding).eval()


PADDINGS = ("right", "left", "inside")  # where example sessions put their padding


def _padded_order(lengths: torch.Tensor, width: int, padding: str) -> torch.Tensor:
    """Source columns [B, width] that move right-padded rows' events to `padding`'s places:
    events keep their order, the first `head` of them stay at the front, the rest go to the end."""
    if padding not in PADDINGS:
        raise ValueError(f"padding: expected one of {list(PADDINGS)}, got {padding!r}")
    n = lengths[:, None]
    head = {"right": n, "left": torch.zeros_like(n), "inside": (n + 1) // 2}[padding]
    column = torch.arange(width)[None, :]
    return torch.where(column < head, column, torch.where(column < width - (n - head), column + n - head, column - (width - n)))


def example_inputs(model: NextItemModel, lengths: list[int], generator: torch.Generator, device="cpu",
                   width: int | None = None, seen_width: int | None = None, padding: str = "right",
                   history: tuple[list[int], int] | None = None) -> tuple:
    """Random inputs with the given real lengths, padded to `width` (default: the longest) on the
    right, the left or inside the session (valid codes, finite values); for a model that reads
    history, `history` (lengths, width; default: a few, up to the history it reads) item codes padded
    as the session; with `seen_width`, seen items [B, seen_width] last."""
    spec = model.spec
    width = width or max(lengths)
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    order = _padded_order(torch.tensor(lengths), width, padding)
    batch = len(lengths)
    inputs = []
    for name in spec.list_columns:
        if name in spec.continuous:
            values = torch.randn(batch, width, generator=generator)
            inputs.append(torch.where(real, values, torch.zeros_like(values)))
        else:
            cardinality = spec.item_cardinality if name == spec.item else spec.categorical[name]
            codes = torch.randint(min(FIRST_ITEM_CODE, cardinality - 1), cardinality, (batch, width), generator=generator)
            inputs.append(torch.where(real, codes, torch.zeros_like(codes)))
    inputs = [torch.gather(values, 1, order) for values in inputs]
    for name in spec.context_categorical:
        inputs.append(torch.randint(0, spec.context_categorical[name], (batch, 1), generator=generator))
    for name in spec.context_continuous:
        inputs.append(torch.randn(batch, 1, generator=generator))
    if model.history is not None:
        read = model.config.history_length
        history_lengths, history_width = history or ([min(read, (3 * i) % (read + 1)) for i in range(batch)], read)
        codes = torch.randint(FIRST_ITEM_CODE, spec.item_cardinality, (batch, history_width), generator=generator)
        real = torch.arange(history_width)[None, :] < torch.tensor(history_lengths)[:, None]
        inputs.append(torch.gather(torch.where(real, codes, 0), 1, _padded_order(torch.tensor(history_lengths), history_width, padding)))
    if seen_width:
        seen = torch.randint(FIRST_ITEM_CODE, spec.item_cardinality, (batch, seen_width), generator=generator)
        inputs.append(torch.where(torch.arange(seen_width)[None, :] < torch.tensor(lengths)[:, None], seen, 0))
    return tuple(value.to(device) for value in inputs)


@contextmanager
def transformers_quiet():
    """transformers' own log at errors only (tracing trips its notices about the LM loss it never computes)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def trace(model: NextItemModel, max_k: int, exclude_seen: bool, seen_width: int | None = None, device: str = "cpu",
          precision: str = "fp32") -> torch.jit.ScriptModule:
    """Trace the serving forward on a small example and check it against eager on other
    batch sizes, widths and paddings. `seen_width`: the seen items come as an
    extra input that wide (exclude_seen, when the workflow keeps more events than the model)."""
    model = model.eval().to(device=device, dtype=PRECISIONS[precision])
    seen_input = bool(exclude_seen and seen_width)
    serving = serving_module(model, max_k, exclude_seen, seen_input, precision)
    generator = torch.Generator().manual_seed(0)
    kept = kept_events(model)
    seen = seen_width if seen_input else None
    example = example_inputs(model, [min(5, kept), min(3, kept)], generator, device, width=kept, seen_width=seen)
    with warnings.catch_warnings(), torch.no_grad(), transformers_quiet():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # tracing reads every attribute of the HF body, deprecated aliases and the unused loss included
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        traced = follow_input_device(torch.jit.trace(serving, example, check_trace=False))
    sent = (([1], None), ([kept, 1, 2], None), ([min(7, kept)] * 9, None), ([kept] * 2, None), ([1], kept), ([min(4, kept), 2, 1], kept))
    checks = [(lengths, width, "right") for lengths, width in sent]  # as the transform step sends them
    checks += [([kept, min(4, kept), 1, 2], kept, padding) for padding in ("left", "inside")]  # what other clients may send
    checks += [([kept + 2, 1, min(3, kept)], kept + 3, padding) for padding in PADDINGS]  # wider, and longer sessions, than kept
    checks = [(*check, None) for check in checks]
    if model.history is not None:  # no history, a full one, longer than read, in one request
        read = model.config.history_length
        checks += [([3, kept, 1], kept, padding, ([0, read, 2], read + 4)) for padding in PADDINGS]
        checks += [([2, 1], kept, "right", ([0, 0], read)), ([kept], kept, "right", ([1], 1))]
    for lengths, width, padding, history in checks:
        inputs = example_inputs(model, lengths, generator, device, width, seen, padding, history)
        with torch.no_grad():
            (want_codes, want_scores), (codes, scores) = serving(*inputs), traced(*inputs)
        # fp32: the same items; bf16/fp16 kernels round differently, so near-ties may swap: scores must agree
        tolerance = TOLERANCES[precision]
        if not ((precision != "fp32" or torch.equal(want_codes, codes)) and torch.equal(want_scores.isinf(), scores.isinf()) and
                torch.allclose(want_scores.nan_to_num(0, 0, 0), scores.nan_to_num(0, 0, 0), atol=tolerance, rtol=tolerance)):
            raise ExportError(f"traced model differs from the eager model on sessions of lengths {lengths} ({padding}-padded "
                              f"to {width or max(lengths)}); "
                              f"{model.config.architecture} does not trace over variable shapes")
    return traced
