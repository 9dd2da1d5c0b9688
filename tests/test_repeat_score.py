"""The repeat score (model.repeat_window): items already in the session get a learned score by
how many events back they were; training adds to each prefix's logits exactly what inference adds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.model.features import FeatureSpec
from training.model.losses import FIRST_ITEM_CODE, ChunkedCrossEntropy, LossConfig, LossError, NextItemLoss, _repeat_entries
from training.model.configuration import ModelConfig, ModelConfigError
from training.model.next_item import REPEAT_SCALE, NextItemModel
from training.model.tasks import TaskConfig

SPEC = FeatureSpec(item="items", item_cardinality=40)
WEIGHTS = [2.0, 0.5, 0.25]


def _model(**overrides):
    torch.manual_seed(0)
    model = NextItemModel(SPEC, ModelConfig(d_model=8, n_layers=1, n_heads=1, max_length=10, dropout=0.0, **overrides)).eval()
    if model.repeat_weights is not None:
        with torch.no_grad():
            model.repeat_weights.copy_(torch.tensor(WEIGHTS[: model.config.repeat_window]) / REPEAT_SCALE)
    return model


def test_an_item_gets_the_weight_of_each_event_that_holds_it_by_distance():
    model = _model(repeat_window=2)
    plain = _model()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "repeat_weights"})
    right = {"items": torch.tensor([[5, 7, 5, 9, 0, 0]])}  # 9 is 1 back, 5 is 2 and 4 back, 7 is 3 back
    left = {"items": torch.tensor([[0, 0, 5, 7, 5, 9]])}
    with torch.no_grad():
        added = model.next_item_scores(right) - plain.next_item_scores(right)
        assert torch.equal(model.next_item_scores(left), model.next_item_scores(right))
    expected = torch.zeros(40)
    expected[9], expected[5], expected[7] = 2.0, 0.5 + 0.5, 0.5  # beyond the window: its last weight
    finite = torch.arange(40) >= FIRST_ITEM_CODE
    torch.testing.assert_close(added[0, finite], expected[finite])


def test_training_adds_to_each_prefix_what_inference_adds_to_it():
    model = _model(repeat_window=3)
    items = torch.tensor([[5, 7, 5, 9, 6, 0], [8, 8, 8, 0, 0, 0]])
    passed, seen_sequences = [], []

    def loss(*args, repeat=None, sequences=None):
        passed.append(repeat)
        seen_sequences.append(sequences)
        return torch.zeros(())

    model.loss({"items": items}, loss, TaskConfig(horizon=3), torch.Generator().manual_seed(0))
    assert len(passed) == 3  # the next event, then 2 and 3 events ahead: all from the same prefix states
    for ahead, (codes, values) in enumerate(passed, 1):
        rows, positions = (items[:, ahead:] >= FIRST_ITEM_CODE).nonzero(as_tuple=True)
        assert torch.equal(seen_sequences[ahead - 1], rows)  # each prediction's sequence, for the sampled softmax's own-sequence rule
        trained = torch.zeros(len(rows), 40).scatter_add(1, codes, values)
        prefix = items[rows].masked_fill(torch.arange(6)[None, :] > positions[:, None], 0)
        with torch.no_grad():
            inferred = model.add_repeat_scores(torch.zeros(len(rows), 40), prefix, positions)
        assert trained[:, 1:].abs().sum() > 0
        torch.testing.assert_close(trained[:, 1:], inferred[:, 1:])  # code 0 (no event) collects the padding's zeros


def _dense_reference(hidden, weight, bias, targets, codes, values, column_codes, hits_masked):
    logits = hidden @ weight.T + bias
    added = (column_codes[None, None, :] == codes[:, :, None]) * (codes != 0)[:, :, None]  # [N, L, C]
    logits = logits + (added * values[:, :, None]).sum(1)
    if hits_masked:
        hits = column_codes[None, :] == column_codes[targets][:, None]
        hits[torch.arange(len(targets)), targets] = False
        logits = logits.masked_fill(hits, float("-inf"))
    return F.cross_entropy(logits, targets)


@pytest.mark.parametrize("sampled", [False, True], ids=["full", "sampled"])
def test_the_chunked_loss_with_repeat_scores_equals_the_dense_one_in_value_and_gradients(sampled, monkeypatch):
    monkeypatch.setattr(ChunkedCrossEntropy, "ROWS", 3)  # ragged chunks
    generator = torch.Generator().manual_seed(0)
    n, columns, dim = 10, 12, 4
    column_codes = (torch.tensor([5, 9, 5, 7, 11, 9, 5, 13, 14, 15, 16, 17]) if sampled
                    else torch.arange(FIRST_ITEM_CODE, FIRST_ITEM_CODE + columns))
    hidden = torch.randn(n, dim, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(columns, dim, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(columns, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.randint(0, columns, (n,), generator=generator)
    codes = torch.randint(FIRST_ITEM_CODE, FIRST_ITEM_CODE + columns, (n, 6), generator=generator)
    codes[:, 4:] = 0  # no event there
    values = torch.randn(n, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    row_codes = column_codes[targets] if sampled else None
    got = ChunkedCrossEntropy.apply(hidden, weight, bias, targets, 0.0, row_codes, column_codes if sampled else None,
                                    *_repeat_entries((codes, values), column_codes))
    want = _dense_reference(hidden, weight, bias, targets, codes, values, column_codes, sampled)
    torch.testing.assert_close(got, want)
    for mine, theirs in zip(torch.autograd.grad(got, [hidden, weight, bias, values]),
                            torch.autograd.grad(want, [hidden, weight, bias, values])):
        torch.testing.assert_close(mine, theirs)


def test_the_losses_train_the_repeat_weights():
    model = _model(repeat_window=2).train()
    hidden = torch.randn(6, 8)
    targets = torch.tensor([5, 6, 7, 5, 6, 7])
    codes = torch.tensor([[5, 0], [9, 6], [7, 7], [0, 0], [5, 6], [9, 9]])
    values = model.repeat_scores()[torch.tensor([[0, 1]]).expand(6, -1)] * (codes != 0)
    for loss in ("ce", "sampled"):
        model.zero_grad()
        NextItemLoss(LossConfig(loss=loss, n_negatives=8))(model.output_layer(), hidden, targets, torch.Generator().manual_seed(0),
                                                          repeat=(codes, values)).backward(retain_graph=True)
        assert model.repeat_weights.grad[0] < 0, loss  # targets that were in the session: raising their weight helps
    with pytest.raises(LossError, match="not gbce"):
        NextItemLoss(LossConfig(loss="gbce", n_negatives=8))(model.output_layer(), hidden, targets, None, repeat=(codes, values))


@pytest.mark.parametrize("overrides,message", [
    (dict(repeat_window=-1), "repeat_window: expected 0 .off. or more events, got -1"),
    (dict(architecture="bert", task="mlm", repeat_window=3), "repeat score needs task 'clm'.*got task 'mlm'"),
])
def test_bad_repeat_windows_are_refused(overrides, message):
    with pytest.raises(ModelConfigError, match=message):
        NextItemModel(SPEC, ModelConfig(d_model=8, n_heads=1, **overrides))
