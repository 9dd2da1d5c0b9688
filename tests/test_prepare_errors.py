"""Bad input to `python -m training.prepare` is a one-line error naming the column or path,
and no output folder (finished or half-written) is left behind."""
from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from tests.conftest import PYTHON, ROOT
from training import prepare
from training.data import prepared
from training.data.events import EventsError

MAPPING = "session: sid\nuser: uid\nitem: item\ntime: ts\ncategorical: [cat]\ncontinuous: [price]\n"


def _good_events(n_days=4):
    rows = []
    for session in range(40):
        for position in range(4):
            rows.append(
                {"sid": session, "uid": session % 7, "item": f"i{(session + position) % 9}",
                 "ts": f"2024-01-{1 + session % n_days:02d} 10:{position:02d}:00", "cat": "c", "price": 1.5}
            )
    return pd.DataFrame(rows)


def _run(tmp_path, events_file, mapping=MAPPING, out_name="out"):
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(mapping)
    out = tmp_path / out_name
    result = subprocess.run(
        [PYTHON, "-m", "training.prepare", "--dataset", str(events_file), "--mapping", str(mapping_file),
         "--out", str(out), "--min-item-count", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    return result, out


def _assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prepare: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert not list(tmp_path.glob(f".{out.name}.partial-*"))


def _csv(tmp_path, frame, name="events.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


CASES = {
    "missing column": (lambda f: f.drop(columns="price"), MAPPING, ["'price' (continuous) not found"]),
    "misnamed column": (lambda f: f.rename(columns={"item": "item_id"}), MAPPING, ["'item' (item) not found", "item_id"]),
    "misnamed mapping key": (lambda f: f, MAPPING.replace("item:", "itme:"), ["unknown key(s) ['itme']"]),
    "NaN ids": (lambda f: f.assign(item=f["item"].where(f.index != 5)), MAPPING, ["column 'item' (item id) has 1 missing"]),
    "unparsable timestamps": (lambda f: f.assign(ts=f["ts"].where(f.index != 3, "not a date")), MAPPING,
                              ["column 'ts' (time)", "'not a date'"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_events_file(tmp_path, case):
    change, mapping, fragments = CASES[case]
    result, out = _run(tmp_path, _csv(tmp_path, change(_good_events())), mapping)
    _assert_one_line_error(result, *fragments)
    _assert_nothing_written(tmp_path, out)


def test_empty_file(tmp_path):
    empty = tmp_path / "events.csv"
    empty.write_text("")
    result, out = _run(tmp_path, empty)
    _assert_one_line_error(result, str(empty), "is empty")
    _assert_nothing_written(tmp_path, out)


def test_missing_file(tmp_path):
    result, out = _run(tmp_path, tmp_path / "nope.parquet")
    _assert_one_line_error(result, "nope.parquet does not exist")


def test_existing_output_folder_is_not_touched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result, _ = _run(tmp_path, _csv(tmp_path, _good_events()))
    _assert_one_line_error(result, str(out), "exists")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_good_file_prepares(tmp_path):
    result, out = _run(tmp_path, _csv(tmp_path, _good_events()))
    assert result.returncode == 0, result.stderr
    summary = prepared.load_summary(out)
    assert summary["windows"] == {"train": [0, 1], "valid": [2], "test": [3]}
    assert summary["counts"]["per_split"] == {"train": 20, "valid": 10, "test": 10}


def test_failure_while_writing_leaves_no_folder(tmp_path, monkeypatch):
    calls = []

    def fail_on_second_split(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(*args, **kwargs)

    original = prepared.write_split
    monkeypatch.setattr(prepared, "write_split", fail_on_second_split)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        prepare.run(prepare.PrepareArgs(dataset="synthetic", out=out, synthetic_events=5_000))
    assert len(calls) == 2
    _assert_nothing_written(tmp_path, out)


def test_session_aware_leave_one_out_needs_a_user_with_three_sessions(tmp_path):
    events = _good_events()
    events[events["sid"] < 4].assign(uid=lambda frame: frame["sid"] % 2).to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    with pytest.raises(EventsError, match="no user has 3 or more sessions"):
        prepare.run(prepare.PrepareArgs(dataset=str(tmp_path / "events.csv"), mapping=tmp_path / "mapping.yaml",
                                        out=tmp_path / "o", view="session-aware", split="loo"))
    assert not (tmp_path / "o").exists()


def test_only_movielens_drops_rare_items_by_default():
    """--min-item-count: 5 is the MovieLens protocol; elsewhere every item is kept unless asked."""
    assert prepare.PrepareArgs(dataset="ml-1m", out=ROOT).item_count_floor == 5
    assert prepare.PrepareArgs(dataset="synthetic", out=ROOT).item_count_floor == 1
    assert prepare.PrepareArgs(dataset="events.csv", out=ROOT).item_count_floor == 1
    assert prepare.PrepareArgs(dataset="events.csv", out=ROOT, min_item_count=3).item_count_floor == 3
