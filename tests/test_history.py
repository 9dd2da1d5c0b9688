"""Session-aware input (training.model.history): the user's earlier sessions change the scores, a
model with history off is the session-only model, padding anywhere in history or session gives
the same scores, a causal session state sees its history but never a later event, and the
prepared history holds only sessions that ended before the current one started."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_model import ALL, CAUSAL, SPEC, _batch, _left_padded
from training import prepare
from training.data import prepared
from training.data.datasets import synthetic
from training.batches import SequenceData
from training.model.features import FeatureSpec, feature_spec
from training.model.losses import NextItemLoss, LossConfig
from training.model.configuration import ModelConfig, ModelConfigError
from training.model.next_item import FIRST_ITEM_CODE, NextItemModel
from training.model.tasks import TaskConfig

HISTORY_SPEC = FeatureSpec(**{**SPEC.__dict__, "history": "history"})
WITH_HISTORY = [(name, task) for name, task in ALL if task in ("clm", "mlm")]


def _model(architecture, task, history, spec=HISTORY_SPEC, **overrides):
    torch.manual_seed(0)
    config = ModelConfig(architecture=architecture, task=task, d_model=16, n_layers=2, n_heads=2, max_length=10,
                         history=history, history_length=6, **overrides)
    model = NextItemModel(spec, config).eval()
    if history != "none":  # at the initial scale (0.02) another history moves a score by 1e-6: weights to show
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if weight.dim() == 2 and "norm" not in name:
                    weight.normal_(std=0.3)
    return model


def _with_history(batch, lengths, width=9, seed=1):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return {**batch, "history": torch.randint(FIRST_ITEM_CODE, 60, (len(lengths), width), generator=generator) * mask}


def _scores(model, batch):
    with torch.no_grad():
        return model.next_item_scores(batch)


@pytest.mark.parametrize("architecture,task", ALL)
def test_history_none_is_the_session_only_model(architecture, task):
    session_only = _model(architecture, task, "none", spec=SPEC)
    with_column = _model(architecture, task, "none")
    assert session_only.state_dict().keys() == with_column.state_dict().keys()
    batch = _batch([8, 3, 5])
    torch.testing.assert_close(_scores(with_column, _with_history(batch, [4, 0, 9])), _scores(session_only, batch))


@pytest.mark.parametrize("history", ["prefix", "pooled"])
@pytest.mark.parametrize("architecture,task", WITH_HISTORY)
def test_history_changes_the_scores_and_padding_anywhere_does_not(architecture, task, history):
    model = _model(architecture, task, history)
    batch = _with_history(_batch([8, 3, 5]), [4, 0, 9])
    scores = _scores(model, batch)
    other = _scores(model, _with_history(batch, [4, 0, 9], seed=2))
    assert not torch.allclose(scores[[0, 2]], other[[0, 2]], atol=1e-4)  # another history, other scores
    torch.testing.assert_close(scores[1], other[1])  # no history: nothing changes
    left_history = {**batch, "history": torch.stack([row.roll(int((row == 0).sum())) for row in batch["history"]])}
    middle = torch.cat([batch["history"][:, :2], torch.zeros(3, 3, dtype=torch.long), batch["history"][:, 2:]], dim=1)
    for padded in (_left_padded(left_history), {**batch, "history": middle}):
        torch.testing.assert_close(_scores(model, padded), scores, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(scores[:, FIRST_ITEM_CODE:]).all()


@pytest.mark.parametrize("history", ["prefix", "pooled"])
def test_only_the_last_history_length_items_are_read(history):
    model = _model("gpt2", "clm", history)
    batch = _with_history(_batch([8, 3, 5]), [9, 9, 9])
    last = {**batch, "history": batch["history"][:, -6:]}  # history_length 6
    torch.testing.assert_close(_scores(model, batch), _scores(model, last))


@pytest.mark.parametrize("architecture", [name for name, _ in CAUSAL])
def test_a_causal_session_state_sees_its_history_but_no_later_event(architecture):
    model = _model(architecture, "clm", "prefix")
    batch = _with_history(_batch([8, 8, 8]), [4, 0, 9])
    with torch.no_grad():
        hidden = model.encode(batch).hidden
        later = dict(batch, items=batch["items"].clone())
        later["items"][:, 5:] = FIRST_ITEM_CODE  # events after position 4 changed
        changed = model.encode(later).hidden
        other_history = model.encode(_with_history(batch, [4, 0, 9], seed=2)).hidden
    torch.testing.assert_close(changed[:, :5], hidden[:, :5])
    assert not torch.allclose(other_history[0, 0], hidden[0, 0], atol=1e-4)  # the first event sees the history


@pytest.mark.parametrize("history", ["prefix", "pooled"])
@pytest.mark.parametrize("task", ["clm", "mlm"])
def test_the_history_parameters_learn(task, history):
    architecture = "gpt2" if task == "clm" else "bert"
    model = _model(architecture, task, history).train()
    batch = _with_history(_batch([8, 3, 5]), [4, 0, 9])
    loss = model.loss(batch, NextItemLoss(LossConfig()), TaskConfig(),
                     torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in model.history.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_history_targets_train_the_history_events_and_the_boundary_on_their_next_items():
    """task.history_targets: the whole [history, boundary, session] sequence's states (the session's
    those of the session-only path) learn each next real item, across the boundary too; off, the
    history's items are not targets."""
    model = _model("gpt2", "clm", "prefix", item_dropout=0.5).train()
    batch = _with_history(_batch([8, 3, 5]), [4, 0, 9])
    middle = torch.cat([batch["history"][:, :2], torch.zeros(3, 3, dtype=torch.long), batch["history"][:, 2:]], dim=1)
    model.eval()
    with torch.no_grad():
        whole = model.encode_with_history({**batch, "history": middle}, batch["items"])
        hidden, codes = whole.hidden, whole.items
        session = model.encode(batch).hidden
    for row, (history, events) in enumerate(zip(batch["history"], batch["items"])):
        history = history[history != 0][-6:]  # history_length 6
        events = events[events != 0]
        expected = torch.cat([history, torch.zeros(1, dtype=torch.long), events])
        torch.testing.assert_close(codes[row, :len(expected)], expected)
        assert (codes[row, len(expected):] == 0).all()
        torch.testing.assert_close(hidden[row, len(history) + 1:len(expected)], session[row, :len(events)], rtol=1e-4, atol=1e-5)

    plain = _model("gpt2", "clm", "prefix")  # no item dropout: the loss by hand sees the same inputs
    with torch.no_grad():
        whole = plain.encode_with_history(batch, batch["items"])
        hidden, codes = whole.hidden, whole.items
        states, targets = hidden[:, :-1], codes[:, 1:]
        use = targets >= FIRST_ITEM_CODE  # every next real item: history's, the boundary's (the session's first), the session's
        by_hand = torch.nn.functional.cross_entropy(plain.scores(states[use]), targets[use])
        loss = plain.loss(batch, NextItemLoss(LossConfig(loss="ce")), TaskConfig(history_targets=True), torch.Generator())
        session_only = plain.loss(batch, NextItemLoss(LossConfig(loss="ce")), TaskConfig(), torch.Generator())
    torch.testing.assert_close(loss, by_hand)
    assert use.sum() > sum(int((row != 0).sum()) - 1 for row in batch["items"]) + 3  # more than the session's targets
    assert not torch.isclose(loss, session_only)


def test_history_targets_need_a_prefix_history_and_clm():
    from training.model.tasks import TaskConfigError, check_task

    check_task(TaskConfig(history_targets=True), "clm", "prefix")
    for task, history, repeat in (("clm", "pooled", 0), ("mlm", "prefix", 0), ("clm", "prefix", 3)):
        with pytest.raises(TaskConfigError, match="history_targets"):
            check_task(TaskConfig(history_targets=True), task, history, repeat)


def test_history_needs_the_session_aware_view_and_a_clm_or_mlm_task():
    with pytest.raises(ModelConfigError, match="--view session-aware"):
        _model("gpt2", "clm", "prefix", spec=SPEC)
    with pytest.raises(ModelConfigError, match="needs task 'clm' or 'mlm'"):
        _model("xlnet", "plm", "prefix")
    with pytest.raises(ModelConfigError, match="history: expected one of"):
        _model("gpt2", "clm", "sessions")


@pytest.mark.parametrize("split", ["time", "loo"])
def test_prepared_history_holds_only_the_users_sessions_that_ended_before(tmp_path, split):
    out = tmp_path / "prepared"
    synthetic.generate_events(synthetic.SyntheticConfig(n_events=20_000, n_users=400, seed=5)).to_parquet(tmp_path / "events.parquet")
    (tmp_path / "mapping.yaml").write_text(synthetic.mapping_yaml())
    prepare.run(prepare.PrepareArgs(dataset=str(tmp_path / "events.parquet"), mapping=tmp_path / "mapping.yaml",
                                    view="session-aware", split=split, out=out))
    events, columns, key = prepare.raw_events(out)
    vocabulary = prepared.item_vocabulary(out)
    known = set(vocabulary.dropna())
    sessions = events.groupby(key).agg(user=(columns.user, "first"), start=(columns.time, "min"))
    by_user = {user: group.sort_values(columns.time, kind="stable") for user, group in events.groupby(columns.user)}
    max_length = prepared.load_summary(out)["max_length"]
    with_history = 0
    for split in ("train", "test"):
        frame = prepared.read_split(out, split)
        for session, history in zip(frame[key], frame[prepared.HISTORY_COLUMN]):
            user, start = sessions.loc[session, ["user", "start"]]
            before = by_user[user][by_user[user][columns.time] < start]
            assert not (before[key] == session).any()
            items = [item if item in known else None for item in before[columns.item]]  # unknown to training: OOV
            assert [vocabulary.get(code) for code in history] == items[-max_length:]
            with_history += bool(len(history))
    assert with_history > 100
    data = SequenceData(out, "test", feature_spec(out))
    batch = data.batch(np.arange(len(data)))
    stored = prepared.read_split(out, "test")[prepared.HISTORY_COLUMN]
    assert [row[row != 0].tolist() for row in batch[prepared.HISTORY_COLUMN]] == [list(h) for h in stored[data.rows]]


@pytest.mark.parametrize("history", ["prefix", "pooled"])
def test_history_models_trace_for_serving(history):
    """The served model step: traced on one batch size and checked against eager on others (a
    batch size read as a Python number is baked into the trace and fails there)."""
    from export.torchscript import trace

    for exclude_seen in (False, True):
        trace(_model("gpt2", "clm", history), 10, exclude_seen)
