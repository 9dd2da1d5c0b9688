"""The model's contract: the item after the last real event is predicted, padding is ignored,
no future event is visible to a causal body, special codes are never recommended, and tied
weights share one storage."""
from __future__ import annotations


import pytest
import torch

from training.model.bodies import BODIES, BodyConfig, SequenceBody
from training.model.features import FeatureSpec
from training.model.configuration import ModelConfig, ModelConfigError
from training.model.next_item import FIRST_ITEM_CODE, NextItemModel
from training.model.sequence import compact, keep_last
from training.model.tasks import with_mask_slot

SPEC = FeatureSpec(item="items", item_cardinality=60, categorical={"category": 8}, continuous=("price",),
                   context_categorical={"device": 4}, context_continuous=("age",))
CAUSAL = [(name, "clm") for name in BODIES if "clm" in BODIES[name].tasks]
ALL = CAUSAL + [(name, task) for name in BODIES for task in ("mlm", "plm", "rtd") if task in BODIES[name].tasks]


def _model(architecture, task, **overrides):
    torch.manual_seed(0)
    config = ModelConfig(architecture=architecture, task=task, d_model=16, n_layers=2, n_heads=2, max_length=10, **overrides)
    return NextItemModel(SPEC, config).eval()


def _batch(lengths, width=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return {
        "items": torch.randint(FIRST_ITEM_CODE, 60, (len(lengths), width), generator=generator) * mask,
        "category": torch.randint(3, 8, (len(lengths), width), generator=generator) * mask,
        "price": torch.randn(len(lengths), width, generator=generator) * mask,
        "device": torch.randint(0, 4, (len(lengths),), generator=generator),
        "age": torch.randn(len(lengths), generator=generator),
    }


def _left_padded(batch):
    out = dict(batch)
    lengths = (batch["items"] != 0).sum(1)
    for name in ("items", "category", "price"):
        out[name] = torch.stack([row.roll(int(row.shape[0] - n)) for row, n in zip(batch[name], lengths)])
    return out


@pytest.mark.parametrize("positions", ["from_start", "from_end"])
@pytest.mark.parametrize("architecture,task", ALL)
def test_left_and_right_padding_give_the_same_scores(architecture, task, positions):
    model = _model(architecture, task, positions=positions)
    batch = _batch([8, 3, 5])
    with torch.no_grad():
        right = model.next_item_scores(batch)
        left = model.next_item_scores(_left_padded(batch))
    torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5)
    assert torch.isinf(right[:, :FIRST_ITEM_CODE]).all() and torch.isfinite(right[:, FIRST_ITEM_CODE:]).all()


@pytest.mark.parametrize("positions", ["from_start", "from_end"])
def test_position_ids_count_from_the_first_or_back_from_the_last_event(positions):
    body = SequenceBody("gpt2", BodyConfig(d_model=16, n_layers=1, n_heads=2, max_positions=10, positions=positions))
    seen, forward = {}, body.model.forward
    body.model.forward = lambda **kwargs: (seen.update(kwargs), forward(**kwargs))[1]
    body(torch.randn(2, 4, 16), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool())
    expected = [[0, 1, 2, 3], [0, 1, 2, 3]] if positions == "from_start" else [[2, 1, 0, 0], [3, 2, 1, 0]]
    assert seen["position_ids"].tolist() == expected


@pytest.mark.parametrize("positions", ["from_start", "from_end"])
@pytest.mark.parametrize("architecture,task", CAUSAL)
def test_causal_bodies_do_not_see_the_future(architecture, task, positions):
    model = _model(architecture, task, positions=positions)
    batch = _batch([8, 8])
    changed = {k: v.clone() for k, v in batch.items()}
    changed["items"][:, 5:] = FIRST_ITEM_CODE + (changed["items"][:, 5:] + 7) % (60 - FIRST_ITEM_CODE)
    changed["category"][:, 5:] = 3
    changed["price"][:, 5:] += 5.0
    with torch.no_grad():
        hidden = model.encode(batch).hidden
        hidden_changed = model.encode(changed).hidden
    torch.testing.assert_close(hidden[:, :5], hidden_changed[:, :5], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(hidden[:, 5:], hidden_changed[:, 5:])


@pytest.mark.parametrize("architecture,task", ALL)
def test_padding_content_is_ignored(architecture, task):
    model = _model(architecture, task)
    batch = _batch([4, 6])
    noisy = {k: v.clone() for k, v in batch.items()}
    noisy["price"][noisy["items"] == 0] = 99.0  # garbage behind the padding of the item column
    with torch.no_grad():
        torch.testing.assert_close(model.next_item_scores(noisy), model.next_item_scores(batch))


def test_mlm_scores_a_mask_slot_after_the_last_event():
    model = _model("bert", "mlm")
    batch = _batch([3, 8])
    compacted, mask = compact(batch, "items", SPEC.list_columns)
    kept, mask = keep_last(compacted, mask, 9, SPEC.list_columns)
    slotted, positions = with_mask_slot(model, kept, mask)
    assert positions.tolist() == [3, 8]
    assert slotted["items"][0, 3] == slotted["items"][1, 8] == model.inputs.mask_code
    assert slotted["items"][0, :3].tolist() == batch["items"][0, :3].tolist()
    assert slotted["category"][0, 3] == 0 and slotted["price"][1, 8] == 0


@pytest.mark.parametrize("input_norm", [True, False])
def test_input_norm_switches_the_layer_norm_on_the_inputs(input_norm):
    spec = FeatureSpec(item="items", item_cardinality=60)
    model = NextItemModel(spec, ModelConfig(d_model=16, max_length=10, input_norm=input_norm)).eval()
    items = _batch([5, 3])["items"]
    inputs, raw = model.inputs({"items": items}), model.inputs.item_embedding(items)
    normalised = torch.nn.functional.layer_norm(raw, (16,))
    torch.testing.assert_close(inputs, normalised if input_norm else raw)


def test_a_masked_event_enters_as_the_mask_vector_whatever_its_features():
    model = _model("bert", "mlm")
    batch = _batch([5, 5])
    batch["items"][:, 2] = model.inputs.mask_code
    batch["category"][0, 2], batch["category"][1, 2] = 3, 7  # masked events' features differ
    inputs = model.inputs(batch)
    assert torch.equal(inputs[0, 2], model.inputs.mask_embedding) and torch.equal(inputs[1, 2], model.inputs.mask_embedding)
    assert not torch.allclose(inputs[0, 1], inputs[1, 1])


def test_keep_last_keeps_each_rows_last_events():
    batch = {"items": torch.tensor([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0]])}
    kept, mask = keep_last(batch, batch["items"] != 0, 3, ("items",))
    assert kept["items"].tolist() == [[6, 7, 8], [9, 10, 0]]
    assert mask.tolist() == [[True, True, True], [True, True, False]]


def test_sequences_longer_than_max_length_are_cut_to_the_last_events():
    model = _model("gpt2", "clm")  # max_length 10
    long = _batch([14], width=14)
    with torch.no_grad():
        torch.testing.assert_close(model.next_item_scores(long), model.next_item_scores({
            k: (v[:, -10:] if k in SPEC.list_columns else v) for k, v in long.items()}))


def test_tied_weights_share_one_storage():
    tied, untied = _model("gpt2", "clm"), _model("gpt2", "clm", tie_weights=False)
    assert tied.item_weights().data_ptr() == tied.inputs.item_embedding.weight.data_ptr()
    assert untied.item_weights().data_ptr() != untied.inputs.item_embedding.weight.data_ptr()
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 60 * 16


@pytest.mark.parametrize("aggregation,encoding", [("element-wise-sum", "linear"), ("concat", "soft-one-hot")])
def test_other_input_blocks(aggregation, encoding):
    model = _model("gpt2", "clm", aggregation=aggregation, continuous_encoding=encoding)
    assert model.inputs.project is None if aggregation == "element-wise-sum" else model.inputs.project is not None
    with torch.no_grad():
        scores = model.next_item_scores(_batch([2, 5]))
    assert scores.shape == (2, 60) and torch.isfinite(scores[:, FIRST_ITEM_CODE:]).all()


def test_every_feature_changes_the_output():
    model = _model("gpt2", "clm")
    batch = _batch([5, 5])
    with torch.no_grad():
        base = model.next_item_scores(batch)
        for name in ("category", "price", "device", "age"):
            changed = dict(batch)
            changed[name] = batch[name] + (1 if batch[name].dtype == torch.int64 else 0.5)
            if name == "category":
                changed[name] = torch.where(batch["items"] != 0, 3 + (batch[name] - 2) % 5, 0)
            if name == "device":
                changed[name] = (batch[name] + 1) % 4
            assert not torch.allclose(model.next_item_scores(changed), base), name


@pytest.mark.parametrize("overrides,message", [
    (dict(architecture="transformer-xl"), "architecture: unknown 'transformer-xl'"),
    (dict(architecture="bert", task="clm"), "task 'clm' does not fit architecture 'bert'"),
    (dict(architecture="gpt2", task="mlm"), "task 'mlm' does not fit architecture 'gpt2'"),
    (dict(architecture="llama", task="plm"), "PLM needs XLNet"),
    (dict(architecture="bert", task="mlm", max_length=600), "above bert's limit of 512"),
    (dict(max_length=300, max_positions=200), "max_length 300 is above the body's max_positions 200"),
    (dict(positions="reversed"), "positions: expected one of .*, got 'reversed'"),
    (dict(attention="flash"), "attention: expected .sdpa. or .eager., got .flash."),
    (dict(item_dropout=1.0), "item_dropout: expected a share in .0, 1., got 1.0"),
])
def test_bad_model_configs_are_refused(overrides, message):
    with pytest.raises(ModelConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NextItemModel(SPEC, ModelConfig(**{"d_model": 16, **overrides}))


def test_plm_target_is_predicted_without_its_own_content():
    """XLNet's query stream for a target never sees the target's item or side features."""
    from training.model.tasks import TaskConfig, permuted_targets

    model = _model("xlnet", "plm")
    batch = _batch([8, 6])
    mask = batch["items"] != 0
    task = TaskConfig(mlm_probability=0.4, mask_last_share=0.0)
    with torch.no_grad():
        permuted = permuted_targets(model, batch, mask, task, torch.Generator().manual_seed(3))
        hidden, targets, valid, positions = permuted.hidden, permuted.targets, permuted.use, permuted.positions
        assert valid.any()
        row, slot = (int(i) for i in valid.nonzero()[0])
        position = int(positions[row, slot])
        assert targets[row, slot] == batch["items"][row, position]
        changed = {k: v.clone() for k, v in batch.items()}
        changed["items"][row, position] = FIRST_ITEM_CODE + (changed["items"][row, position] + 1 - FIRST_ITEM_CODE) % 50
        changed["category"][row, position] = 3 if changed["category"][row, position] != 3 else 4
        hidden_changed = permuted_targets(model, changed, mask, task, torch.Generator().manual_seed(3)).hidden
    torch.testing.assert_close(hidden_changed[row, slot], hidden[row, slot])


@pytest.mark.parametrize("architecture,task", [(n, t) for n, t in ALL if n not in ("xlnet", "gru")])
def test_sdpa_and_eager_attention_agree(architecture, task):
    sdpa, eager = _model(architecture, task), _model(architecture, task, attention="eager")
    assert sdpa.body.model.config._attn_implementation == "sdpa"
    eager.load_state_dict(sdpa.state_dict())
    batch = _left_padded(_batch([8, 3, 5]))
    with torch.no_grad():
        torch.testing.assert_close(eager.next_item_scores(batch), sdpa.next_item_scores(batch), rtol=1e-4, atol=1e-5)


def test_item_dropout_hides_a_share_of_the_input_items_and_keeps_the_targets():
    from training.model.tasks import TaskConfig

    model = _model("gpt2", "clm", item_dropout=0.3).train()
    batch = _batch([8] * 40 + [5] * 40, width=8)
    seen, original = {}, model.encode
    model.encode = lambda inputs: (seen.setdefault("items", inputs["items"].clone()), original(inputs))[1]
    targets = []
    loss = lambda model, hidden, target, generator, **_: (targets.append(target), hidden.sum())[1]
    model.loss(batch, loss, TaskConfig(), torch.Generator().manual_seed(0))
    real = batch["items"] != 0
    hidden = seen["items"] == model.inputs.mask_code
    assert not (hidden & ~real).any(), "only real events are hidden"
    assert 0.25 < hidden[real].float().mean() < 0.35, hidden[real].float().mean()
    assert torch.equal(seen["items"][~hidden], batch["items"][~hidden]), "the other events are untouched"
    assert torch.equal(targets[0], batch["items"][:, 1:][real[:, 1:]]), "the targets are the true items"
    model = _model("gpt2", "clm").train()
    seen.clear(), targets.clear()
    original = model.encode
    model.encode = lambda inputs: (seen.setdefault("items", inputs["items"].clone()), original(inputs))[1]
    model.loss(batch, loss, TaskConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(seen["items"], batch["items"]), "no item dropout by default"



def test_horizon_trains_each_state_on_the_next_events_with_decaying_weights():
    from training.model.tasks import TaskConfig

    model = _model("gpt2", "clm")  # eval mode: no dropout, the states are the encoder's
    batch = _batch([8, 5, 3, 2], width=8)
    items = batch["items"]
    calls = []
    loss = lambda model, hidden, target, generator, **_: (calls.append((hidden, target)), torch.tensor(float(len(calls))))[1]
    value = model.loss(batch, loss, TaskConfig(horizon=3, horizon_decay=0.5), torch.Generator().manual_seed(0))
    assert len(calls) == 3
    torch.testing.assert_close(value, torch.tensor((1 + 0.5 * 2 + 0.25 * 3) / 1.75))
    with torch.no_grad():
        hidden = model.encode(batch).hidden
    for ahead, (states, targets) in enumerate(calls, 1):
        use = items[:, ahead:] != 0  # the state after event p learns the item at p + ahead
        assert torch.equal(targets, items[:, ahead:][use])
        torch.testing.assert_close(states.detach(), hidden[:, : 8 - ahead][use])
    calls.clear()
    model.loss(batch, loss, TaskConfig(), torch.Generator().manual_seed(0))
    assert len(calls) == 1, "horizon 1: the next event only"


def test_continuous_inputs_start_at_the_item_vectors_scale():
    """Six unit-variance time features must not drown the item at initialisation (torch's default
    linear init, weights up to 1, made them ~50x the 0.02 item vectors and stalled training)."""
    spec = FeatureSpec(item="items", item_cardinality=500, continuous=tuple(f"time_{i}" for i in range(6)))
    torch.manual_seed(0)
    inputs = NextItemModel(spec, ModelConfig(architecture="gpt2", task="clm", d_model=64, n_layers=1, n_heads=1,
                                             max_length=10, dropout=0.0)).inputs.eval()
    generator = torch.Generator().manual_seed(1)
    items = torch.randint(FIRST_ITEM_CODE, 500, (256, 8), generator=generator)
    times = {name: torch.randn(256, 8, generator=generator) for name in spec.continuous}
    other_items = torch.randint(FIRST_ITEM_CODE, 500, (256, 8), generator=generator)
    other_times = {name: torch.randn(256, 8, generator=generator) for name in spec.continuous}
    with torch.no_grad():
        base = inputs({spec.item: items, **times})
        by_item = (inputs({spec.item: other_items, **times}) - base).norm(dim=-1).mean()
        by_time = (inputs({spec.item: items, **other_times}) - base).norm(dim=-1).mean()
    assert by_time < 1.5 * by_item, (float(by_time), float(by_item))  # comparable; the default init: by_time ~ 30 x by_item


def test_rtd_weights_saved_before_the_task_object_held_them_still_load():
    model = _model("electra", "rtd")
    old = {(key.removeprefix("task.") if key.startswith("task.") else key): value.clone() + 1
           for key, value in model.state_dict().items()}
    assert any(key.startswith("generator_body.") for key in old) and any(key.startswith("replaced_head.") for key in old)
    fresh = _model("electra", "rtd")
    fresh.load_state_dict(old)  # strict: every key found
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, old[key.removeprefix("task.")], msg=key)
