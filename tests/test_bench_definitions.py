"""bench.compare_t4r compares like with like: both libraries record the settings they ran with
under one set of names, a reused result whose settings differ from this run's is refused before
anything trains, both report training time under one definition (wall and process CPU seconds
inside training epochs), and the T4R side's copies of hf4rec's schedule and decay groups equal
the originals. Transformers4Rec itself runs only where .venv-t4r exists (`make bench-t4r-env`)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from bench import compare_t4r
from bench.t4r import definitions
from training import config, train
from training.model import next_item


def compared(data, work, **changes):
    """compare_t4r's arguments for one small pair."""
    values = dict(data=data, minutes=0.05, pairs="gpt2:clm", d_model=16, batch_size=64, lr=0.001, amp="none",
                  libraries="hf4rec", work=work)
    return SimpleNamespace(**{**values, **changes})


def argv(args) -> list[str]:
    return ["--data", str(args.data), "--minutes", str(args.minutes), "--pairs", args.pairs, "--d-model", str(args.d_model),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--libraries", args.libraries, "--work", str(args.work)]


@pytest.mark.parametrize("change, named", [({"lr": 0.01}, "lr: 0.001, 0.01"), ({"minutes": 25.0}, "minutes: 0.05, 25.0"),
                                           ({"weights": "best validation every 5 epochs"}, "weights: 'last', 'best")])
def test_a_reused_result_with_other_settings_is_refused_before_anything_trains(prepared_synthetic, tmp_path, change, named):
    args = compared(prepared_synthetic, tmp_path)
    stale = tmp_path / "t4r_gpt2_clm.json"
    settings = compare_t4r.expected_settings(prepared_synthetic, "gpt2", "clm", args)
    stale.write_text(json.dumps({"library": "transformers4rec 23.12", "settings": {**settings, **change}}))
    with pytest.raises(SystemExit) as refused:
        compare_t4r.main(argv(args))
    message = str(refused.value)
    assert "\n" not in message and str(stale) in message and named in message
    assert not (tmp_path / "hf4rec_gpt2_clm").exists()  # refused before hf4rec trained


def test_a_reused_result_that_records_no_settings_is_refused(prepared_synthetic, tmp_path):
    args = compared(prepared_synthetic, tmp_path)
    (tmp_path / "t4r_gpt2_clm.json").write_text(json.dumps({"library": "transformers4rec 23.12", "test": {}}))
    with pytest.raises(SystemExit, match="t4r_gpt2_clm.json: records no settings"):
        compare_t4r.main(argv(args))


def test_both_sides_record_the_same_settings_schedule_and_weights(prepared_synthetic, tmp_path):
    settings = compare_t4r.expected_settings(prepared_synthetic, "gpt2", "clm", compared(prepared_synthetic, tmp_path))
    assert list(settings) == list(definitions.SETTINGS)
    assert (settings["schedule"], settings["warmup_steps"], settings["weights"]) == ("cosine", 100, "last")
    t4r_side = (compare_t4r.ROOT / "bench" / "t4r" / "train_t4r.py").read_text()
    assert "settings(" in t4r_side and "EpochClock()" in t4r_side and "lr_lambda(args.schedule" in t4r_side


def test_hf4rec_side_reports_wall_and_cpu_time_of_its_training_epochs(prepared_synthetic, tmp_path, monkeypatch):
    monkeypatch.setattr(compare_t4r, "RESULTS", tmp_path / "results")
    args = compared(prepared_synthetic, tmp_path / "work")
    compare_t4r.main(argv(args))
    result = json.loads((tmp_path / "work" / "hf4rec_gpt2_clm.json").read_text())
    assert result["settings"] == compare_t4r.expected_settings(prepared_synthetic, "gpt2", "clm", args)
    assert result["timing"] == definitions.TIMING and set(definitions.TIMING_FIELDS) <= set(result)
    assert result["train_steps"] >= 1 and result["train_sequences"] >= result["train_steps"]
    assert 0 < result["train_cpu_seconds"] and 0 < result["train_wall_seconds"]
    assert result["sequences_per_wall_s"] == pytest.approx(result["train_sequences"] / result["train_wall_seconds"])
    table = json.loads((tmp_path / "results" / "compare_t4r.json").read_text())
    assert table["definitions"]["timing"] == definitions.TIMING and table["definitions"]["weights"] == "last"
    (row,) = table["rows"]
    assert row["library"] == "hf4rec" and row["differs"] == []
    assert not [p.name for p in (tmp_path / "work").glob(".*")]  # no half-written result left behind


def test_epoch_clock_counts_only_inside_epochs():
    clock = definitions.EpochClock()
    clock.begin()
    sum(range(200_000))  # some CPU work inside the epoch
    clock.step(64)
    clock.step(10)
    clock.end()
    report = clock.report()
    assert list(report) == [*definitions.TIMING_FIELDS, "timing"]
    assert (report["train_sequences"], report["train_steps"]) == (74, 2) and report["train_cpu_seconds"] > 0
    with pytest.raises(RuntimeError, match="without begin"):
        clock.end()


@pytest.mark.parametrize("schedule", config.SCHEDULES)
@pytest.mark.parametrize("total", [200, 10_000])
def test_the_t4r_sides_schedule_is_hf4recs(schedule, total):
    spent = [0.0]  # the time budget's clock, the same for both
    ours = train.lr_lambda(schedule, 10, total, lambda: spent[0])
    theirs = definitions.lr_lambda(schedule, 10, total, lambda: spent[0])
    for step in range(0, 260, 3):
        spent[0] = (step % 7) / 5  # 0 .. 1.2: before, at and past the budget's end
        assert ours(step) == theirs(step), (step, spent[0])
    assert [train.lr_lambda(schedule, 10, total)(s) for s in range(260)] == \
        [definitions.lr_lambda(schedule, 10, total)(s) for s in range(260)]


def test_the_t4r_sides_decay_groups_are_hf4recs():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    ours, theirs = next_item.parameter_groups(model, 0.1), definitions.parameter_groups(model, 0.1)
    assert [[id(p) for p in g["params"]] for g in ours] == [[id(p) for p in g["params"]] for g in theirs]
    assert [g["weight_decay"] for g in ours] == [g["weight_decay"] for g in theirs]
