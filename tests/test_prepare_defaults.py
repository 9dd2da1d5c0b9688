"""training.prepare's defaults on one's own data (time split): --min-item-count counts and drops
training events only (held-out events keep their items, unknown ones become OOV), and
--long-sequences split cuts long training sequences into several instead of dropping their start."""
from __future__ import annotations

import pandas as pd
import pytest

from training import prepare
from training.data import prepared
from training.data.codes import SPECIAL_CODES

MAPPING = "session: sid\nitem: item\ntime: ts\n"
MAX_LENGTH = 5


def _sessions(day: int, first: int, items: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame([{"sid": first + s, "item": item, "ts": pd.Timestamp(f"2024-01-{day:02d} 10:00") + pd.Timedelta(minutes=p)}
                         for s, session in enumerate(items) for p, item in enumerate(session)])


@pytest.fixture
def events_file(tmp_path):
    long = [f"i{n % 7}" for n in range(13)]  # longer than MAX_LENGTH: 3 windows of 5 sharing an event
    train = [long, ["i1", "i2", "rare", "i3"], ["i2", "i3", "i4"], ["i5", "twice", "i6"], ["twice", "i0"]]
    held_out = [["i1", "rare", "i2"], ["rare", "i3"]]  # "rare": once in training, 6 times over all
    events = pd.concat([_sessions(1, 0, train), _sessions(2, 10, held_out), _sessions(3, 20, held_out + [["rare", "i4"]])])
    events.to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    return tmp_path


def _prepare(folder, name: str, **options) -> tuple[dict, dict]:
    out = folder / name
    prepare.run(prepare.PrepareArgs(dataset=str(folder / "events.csv"), mapping=folder / "mapping.yaml", out=out,
                                    max_length=MAX_LENGTH, **options))
    vocabulary = prepared.item_vocabulary(out)
    rows = {split: [(sid, [vocabulary.get(code, code) for code in codes])
                    for sid, codes in zip(frame["sid"], frame["item_list"])]
            for split in ("train", "valid", "test") for frame in [prepared.read_split(out, split)]}
    return rows, set(vocabulary.dropna())


def test_min_item_count_counts_training_events_and_keeps_held_out_ones_as_oov(events_file):
    rows, items = _prepare(events_file, "floor", min_item_count=2)
    assert "rare" not in items and "twice" in items  # 1 training event (of 6 over all) / 2
    assert ["i1", "i2", "i3"] in [r for _, r in rows["train"]]  # the rare training event dropped
    held_out = [item for split in ("valid", "test") for _, row in rows[split] for item in row]
    assert held_out.count(SPECIAL_CODES["oov"]) == 5  # kept, as the OOV code: a miss, as at serving time
    events, _, _ = prepare.raw_events(events_file / "floor")  # the requests' events: filtered alike
    assert (events["item"] == "rare").sum() == 5


def test_long_training_sequences_are_cut_into_windows_with_split_and_truncated_with_last(events_file):
    last, _ = _prepare(events_file, "last", min_item_count=1)
    split, _ = _prepare(events_file, "split", min_item_count=1, long_sequences="split")
    long = [f"i{n % 7}" for n in range(13)]
    assert [row for sid, row in last["train"] if sid == 0] == [long[-MAX_LENGTH:]]
    assert [row for sid, row in split["train"] if sid == 0] == [long[:5], long[4:9], long[8:]]  # keyed by the session again
    assert [r for r in split["train"] if r[0] != 0] == [r for r in last["train"] if r[0] != 0]
    assert split["valid"] == last["valid"] and split["test"] == last["test"]  # held-out rows are requests: the last events
