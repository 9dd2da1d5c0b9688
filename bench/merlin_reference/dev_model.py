"""A stand-in `model.pt` for developing the reference before `export` writes one: the run's
best model traced on right-padded inputs, one forward argument per model input.

    forward(<list columns>, <context columns>) -> scores [B, catalog] float32

List arguments are [B, L] right-padded (0 = padding), L <= max_length; context arguments
[B, 1]. Under those promises `next_item_scores` takes fixed branches (nothing to compact or
cut), so one traced graph holds for every batch size and width.

    PYTHONPATH=. .venv/bin/python -m bench.merlin_reference.dev_model RUN OUT/model.pt
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from training import run_dir as runs


def _serving_module(model) -> torch.nn.Module:
    spec = model.spec
    names = [*spec.list_columns, *spec.context_columns]

    class Serving(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def scores(self, *inputs):
            batch = {n: (v if n in spec.list_columns else v.reshape(-1)) for n, v in zip(names, inputs)}
            return self.model.next_item_scores(batch).float()

    # the argument names are the contract: exec writes a forward that names them
    namespace: dict = {}
    exec(f"def forward(self, {', '.join(names)}):\n    return self.scores({', '.join(names)})\n", namespace)
    Serving.forward = namespace["forward"]
    return Serving().eval()


def _right_padded(model, lengths: list[int], generator: torch.Generator) -> tuple:
    spec = model.spec
    width = max(lengths)
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    inputs = []
    for name in spec.list_columns:
        if name in spec.continuous:
            values = torch.randn(len(lengths), width, generator=generator)
        else:
            cardinality = spec.item_cardinality if name == spec.item else spec.categorical[name]
            values = torch.randint(3, cardinality, (len(lengths), width), generator=generator)
        inputs.append(torch.where(real, values, torch.zeros_like(values)))
    for name, cardinality in spec.context_categorical.items():
        inputs.append(torch.randint(0, cardinality, (len(lengths), 1), generator=generator))
    for name in spec.context_continuous:
        inputs.append(torch.randn(len(lengths), 1, generator=generator))
    return tuple(inputs)


def write_model_pt(run: Path, path: Path) -> Path:
    model, config = runs.load_model(Path(run))
    serving = _serving_module(model)
    generator = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(serving, _right_padded(model, [5, 3], generator), check_trace=False)
        for lengths in ([1], [config.model.max_length, 2, 9], [7] * 4):
            inputs = _right_padded(model, lengths, generator)
            expected, got = serving(*inputs), traced(*inputs)
            if not (torch.equal(expected.isinf(), got.isinf())
                    and torch.allclose(expected.nan_to_num(0, 0, 0), got.nan_to_num(0, 0, 0), atol=1e-5)):
                raise ValueError(f"{run}: traced model differs from eager on lengths {lengths}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path))
    return path


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(write_model_pt(Path(sys.argv[1]), Path(sys.argv[2])))
