"""Incremental time-window training: windows with nothing to learn or predict are skipped and
reported; its outputs are replaced whole, never left half-written."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from training.data import prepared
from training.config import load_config
from training.incremental import EMPTY_WINDOW, run_incremental, write_outputs

FAST = ["train.epochs=1", "train.warmup_steps=2", "model.d_model=16", "model.max_length=12", "train.batch_size=256"]


def _with_single_event_window(source: Path, folder: Path, window: str) -> Path:
    """A copy of `source` whose `window` keeps only each sequence's first event."""
    shutil.copytree(source, folder)
    frame = prepared.read_split(folder, window)
    lists = [name for name in frame.columns if name.endswith("_list")]
    frame[lists] = frame[lists].apply(lambda column: column.map(lambda values: values[:1]))
    frame.to_parquet(folder / window / prepared.SPLIT_FILE, index=False)
    return folder


def test_a_window_without_a_sequence_of_two_events_is_skipped_and_reported(prepared_synthetic, tmp_path, capsys):
    empty = f"{prepared.WINDOWS_DIR}/0003"
    data = _with_single_event_window(prepared_synthetic, tmp_path / "prepared", empty)
    result = run_incremental(load_config(ROOT / "training/configs/gpt2_clm.yaml", FAST), data, tmp_path / "run")
    assert result["skipped_windows"] == [{"window": empty, "reason": EMPTY_WINDOW}]
    assert f"{empty}: skipped, {EMPTY_WINDOW}" in capsys.readouterr().err
    pairs = [(row["train_window"], row["eval_window"]) for row in result["windows"]]
    assert (f"{prepared.WINDOWS_DIR}/0002", f"{prepared.WINDOWS_DIR}/0004") in pairs  # the window after follows the one before
    assert all(empty not in pair for pair in pairs)
    assert json.loads((tmp_path / "run" / "incremental.json").read_text()) == json.loads(json.dumps(result))


def _crash_halfway(monkeypatch, name: str):
    """Writing `name`'s kind (JSON text or CSV rows) stops halfway with an error, as a killed process would."""
    write_text = Path.write_text

    def half_text(path, text, *args, **kwargs):
        write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError("killed while writing")

    def half_rows(writer, rows):
        writer.writerow(rows[0])
        raise OSError("killed while writing")
    if name.endswith(".json"):
        monkeypatch.setattr(Path, "write_text", half_text)
    else:
        monkeypatch.setattr(csv.DictWriter, "writerows", half_rows)


@pytest.mark.parametrize("name", ["incremental.json", "incremental.csv"])
def test_a_crash_while_writing_the_outputs_leaves_the_previous_ones_whole(tmp_path, monkeypatch, name):
    rows = [{"train_window": "windows/0000", "eval_window": f"windows/{w:04d}", "ndcg@10": 0.5} for w in (1, 2)]
    old = {"windows": rows, "average": {"ndcg@10": 0.5}, "skipped_windows": []}
    write_outputs(tmp_path, old)
    before = (tmp_path / name).read_bytes()
    _crash_halfway(monkeypatch, name)
    with pytest.raises(OSError, match="killed while writing"):
        write_outputs(tmp_path, {**old, "average": {"ndcg@10": 0.75}, "windows": rows * 2})
    assert (tmp_path / name).read_bytes() == before
