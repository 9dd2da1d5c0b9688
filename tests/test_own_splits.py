"""training.prepare on one's own train/valid/test files: the workflow is fitted on the training
file only and transforms the others with it (items it never saw become OOV)."""
from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from tests.conftest import PYTHON, ROOT
from training.data import prepared
from training.data.codes import SPECIAL_CODES
from training.data.parquet import read_parquet

MAPPING = "session: sid\nitem: item\ntime: ts\ncategorical: [cat]\ncontinuous: [price]\n"


def _events(sessions: range, items: list[str], day: int) -> pd.DataFrame:
    return pd.DataFrame([{"sid": s, "item": items[(s + p) % len(items)], "ts": f"2024-01-{day:02d} 10:{p:02d}:00",
                          "cat": f"c{p % 2}", "price": 1.0 + s} for s in sessions for p in range(4)])


def _prepare(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    return subprocess.run([PYTHON, "-m", "training.prepare", "--dataset", str(tmp_path / "train.csv"), "--mapping",
                           str(tmp_path / "mapping.yaml"), "--out", str(tmp_path / "out"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture
def files(tmp_path):
    train_items = [f"i{n}" for n in range(8)]
    _events(range(0, 40), train_items, 1).to_csv(tmp_path / "train.csv", index=False)
    _events(range(40, 50), train_items, 2).to_parquet(tmp_path / "valid.parquet", index=False)
    _events(range(50, 60), train_items[:3] + ["new1", "new2"], 3).to_csv(tmp_path / "test.csv", index=False)
    return tmp_path


def test_the_workflow_is_fitted_on_the_training_file_and_unknown_test_items_are_oov(files):
    result = _prepare(files, "--valid-events", str(files / "valid.parquet"), "--test-events", str(files / "test.csv"),
                      "--min-item-count", "1")
    assert result.returncode == 0, result.stderr
    out = files / "out"
    summary = prepared.load_summary(out)
    assert summary["split"] == "files" and summary["counts"]["per_split"] == {"train": 40, "valid": 10, "test": 10}
    vocabulary = prepared.item_vocabulary(out)
    assert set(vocabulary.dropna()) == {f"i{n}" for n in range(8)}  # only the training file's items
    item = f"{summary['columns']['item']}_list"
    test = read_parquet(out / "test" / "part_0.parquet")
    codes = [code for row in test[item] for code in row]
    expected_oov = sum(1 for s in range(50, 60) for p in range(4) if (s + p) % 5 >= 3)
    assert codes.count(SPECIAL_CODES["oov"]) == expected_oov > 0
    train = read_parquet(out / "train" / "part_0.parquet")
    assert SPECIAL_CODES["oov"] not in {code for row in train[item] for code in row}


def test_own_splits_are_refused_in_one_line_when_incomplete_or_mixed(files):
    for extra, message in [(["--test-events", str(files / "test.csv")], "give both --valid-events and --test-events"),
                           (["--valid-events", str(files / "valid.parquet"), "--test-events", str(files / "test.csv"),
                             "--split", "time"], "--split is not used"),
                           (["--valid-events", str(files / "nothing.csv"), "--test-events", str(files / "test.csv")],
                            "nothing.csv does not exist")]:
        result = _prepare(files, *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr
        assert not (files / "out").exists()


def test_own_splits_keep_every_training_item_unless_a_min_item_count_is_given(files):
    from training.prepare import PrepareArgs, run

    train = pd.read_csv(files / "train.csv")
    pd.concat([train, train.iloc[[0]].assign(item="rare")]).to_csv(files / "train.csv", index=False)  # one event
    (files / "mapping.yaml").write_text(MAPPING)
    splits = {"dataset": str(files / "train.csv"), "mapping": files / "mapping.yaml",
              "valid_events": files / "valid.parquet", "test_events": files / "test.csv"}
    default = run(PrepareArgs(out=files / "default", **splits))
    assert "rare" in set(prepared.item_vocabulary(files / "default").dropna())
    assert default["options"]["min_item_count"] == 1  # recorded resolved: raw_events filters alike
    run(PrepareArgs(out=files / "explicit", min_item_count=5, **splits))
    assert "rare" not in set(prepared.item_vocabulary(files / "explicit").dropna())
