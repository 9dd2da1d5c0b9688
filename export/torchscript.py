"""The trained model as TorchScript (`model.pt`): one argument per model input, scores out.

    forward(item_id_list, genres_list, ..., age_first, ...) -> scores [B, catalog] float32

List inputs are [B, L] right-padded (0 = padding) with L <= the events the model keeps;
context inputs are [B, 1]. Under those two promises `NextItemModel.next_item_scores` takes
fixed branches (nothing to compact, nothing to cut), so tracing it records one graph that
holds for every batch size and width; `trace` checks that on other shapes before returning.
The transform step sends every session padded to the kept events (one shape, so requests
batch); `trim_padding`, a script function the trace calls, first cuts the padding columns
all rows share, so a short session costs what its length costs.
Special codes (pad, null, OOV) score -inf, as offline.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from training.model import FIRST_ITEM_CODE, NextItemModel

OUTPUT = "scores__0"  # the libtorch backend names outputs <name>__<index>


class ExportError(ValueError):
    pass


def input_names(model: NextItemModel) -> list[str]:
    return [*model.spec.list_columns, *model.spec.context_columns]


def kept_events(model: NextItemModel) -> int:
    """Events per session the model reads (MLM-style models append a [MASK] slot)."""
    return model.config.max_length - int(model.appends_mask)


@torch.jit.script
def trim_padding(item: torch.Tensor, lists: list[torch.Tensor]) -> list[torch.Tensor]:
    """Drop the trailing columns that are padding in every row (inputs are right-padded with 0)."""
    columns = torch.arange(1, item.shape[1] + 1, device=item.device)
    width = max(int(((item != 0).any(dim=0).long() * columns).max()), 1)
    return [values[:, :width] for values in lists]


class _Serving(nn.Module):
    def __init__(self, model: NextItemModel):
        super().__init__()
        self.model = model
        self.names = input_names(model)
        self.lists = set(model.spec.list_columns)

    def scores(self, *inputs: torch.Tensor) -> torch.Tensor:
        lists = [name for name in self.names if name in self.lists]
        trimmed = dict(zip(lists, trim_padding(inputs[self.names.index(self.model.spec.item)],
                                               [value for name, value in zip(self.names, inputs) if name in self.lists])))
        batch = {name: trimmed[name] if name in self.lists else value.reshape(-1) for name, value in zip(self.names, inputs)}
        return self.model.next_item_scores(batch).float()


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


def example_inputs(model: NextItemModel, lengths: list[int], generator: torch.Generator, device="cpu",
                   width: int | None = None) -> tuple:
    """Random inputs with the given real lengths, right-padded to `width` (default: the longest)
    (valid codes, finite values)."""
    spec = model.spec
    width = width or max(lengths)
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
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
    for name in spec.context_categorical:
        inputs.append(torch.randint(0, spec.context_categorical[name], (batch, 1), generator=generator))
    for name in spec.context_continuous:
        inputs.append(torch.randn(batch, 1, generator=generator))
    return tuple(value.to(device) for value in inputs)


def trace(model: NextItemModel, device: str = "cpu") -> torch.jit.ScriptModule:
    """Trace the serving forward on a small example and check it against eager on other
    batch sizes and widths (up to the kept events)."""
    model = model.eval().to(device)
    serving = _serving_class(input_names(model))(model).eval()
    generator = torch.Generator().manual_seed(0)
    kept = kept_events(model)
    example = example_inputs(model, [min(5, kept), min(3, kept)], generator, device, width=kept)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(serving, example, check_trace=False)
    for lengths, width in (([1], None), ([kept, 1, 2], None), ([min(7, kept)] * 9, None), ([kept] * 2, None),
                           ([1], kept), ([min(4, kept), 2, 1], kept)):  # as the transform step sends them
        inputs = example_inputs(model, lengths, generator, device, width)
        with torch.no_grad():
            expected, got = serving(*inputs), traced(*inputs)
        if not (torch.equal(expected.isinf(), got.isinf()) and
                torch.allclose(expected.nan_to_num(0, 0, 0), got.nan_to_num(0, 0, 0), atol=1e-5, rtol=1e-5)):
            raise ExportError(f"traced model differs from the eager model on sessions of lengths {lengths}; "
                              f"{model.config.architecture} does not trace over variable shapes")
    return traced
