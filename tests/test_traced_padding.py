"""model.pt answers as the eager model does wherever a session's padding sits (right, left,
inside) and however wide the request is, for a causal and a bidirectional body: tracing must
not freeze a branch taken on the example's padding or width."""
from __future__ import annotations

import pytest
import torch

from export.torchscript import PADDINGS, best_items, example_inputs, kept_events, trace
from training.model.features import FeatureSpec
from training.model.configuration import ModelConfig
from training.model.next_item import NextItemModel

SPEC = FeatureSpec(item="items", item_cardinality=60, categorical={"category": 8}, continuous=("price",),
                   context_categorical={"device": 4}, context_continuous=("age",))
TOP_K = 5


@pytest.fixture(scope="module", params=[("gpt2", "clm", 0), ("bert", "mlm", 0), ("gpt2", "clm", 3)],
                ids=lambda body: body[0] + ("-repeat" if body[2] else ""))
def shipped(request, tmp_path_factory):
    """(eager model, model.pt as saved and loaded back)."""
    architecture, task, repeat_window = request.param
    torch.manual_seed(0)
    config = ModelConfig(architecture=architecture, task=task, d_model=16, n_layers=2, n_heads=2, max_length=10,
                         repeat_window=repeat_window)
    model = NextItemModel(SPEC, config).eval()
    if repeat_window:  # large enough to reorder the top items
        with torch.no_grad():
            model.repeat_weights.copy_(torch.tensor([3.0, 2.0, 1.0]))
    path = tmp_path_factory.mktemp(f"{architecture}{repeat_window}") / "model.pt"
    trace(model, TOP_K, exclude_seen=False).save(str(path))
    return model, torch.jit.load(str(path))


@pytest.mark.parametrize("padding", PADDINGS)
def test_model_pt_ranks_like_eager_next_item_scores_wherever_the_padding_sits(shipped, padding):
    model, traced = shipped
    kept = kept_events(model)
    generator = torch.Generator().manual_seed(7)
    names = [*SPEC.list_columns, *SPEC.context_columns]
    # full rows, short rows, single events; wider than the model keeps, with longer sessions than it keeps
    for lengths, width in (([kept, 3, 1, 6], kept), ([2, 1], kept), ([4, 2, 7], kept + 4), ([kept + 3, 2], kept + 4)):
        inputs = example_inputs(model, lengths, generator, width=width, padding=padding)
        batch = {name: value if name in SPEC.list_columns else value.reshape(-1) for name, value in zip(names, inputs)}
        with torch.no_grad():
            want_codes, want_scores = best_items(model.next_item_scores(batch).float(), TOP_K)
            codes, scores = traced(*inputs)
        assert torch.equal(codes, want_codes), (lengths, width, codes.tolist(), want_codes.tolist())
        torch.testing.assert_close(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_example_sessions_keep_their_events_in_order_wherever_the_padding_sits():
    model = NextItemModel(SPEC, ModelConfig(d_model=16, max_length=10)).eval()
    rows = {padding: example_inputs(model, [4, 1, 6], torch.Generator().manual_seed(1), width=6, padding=padding)[0]
            for padding in PADDINGS}
    real = rows["right"] != 0
    assert real.sum(1).tolist() == [4, 1, 6]
    for padding in ("left", "inside"):
        assert [row[row != 0].tolist() for row in rows[padding]] == [row[row != 0].tolist() for row in rows["right"]]
    assert (rows["left"][:, -1] != 0).all() and (rows["left"][0, :2] == 0).all()
    assert rows["inside"][0].tolist()[2:4] == [0, 0] and (rows["inside"][0, [0, 1, 4, 5]] != 0).all()
