"""Held-out sequences of a run's dataset as a client sends them: the run's prepared folder names the
raw events it was made from, reloaded and keyed as prepare keyed them; each chosen sequence loses
its last event, which is what a served model should recommend (leave-one-out's test rows)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training import run_dir
from training.data.events import EventColumns
from training.data.views import held_out


@dataclass(frozen=True)
class HeldOut:
    events: pd.DataFrame  # the chosen sequences' raw events, each without its last, in time order
    last: pd.DataFrame  # their last events, indexed by the sequence key
    columns: EventColumns  # which raw column plays which role
    key: str  # the sequence key column


def held_out_sequences(run: Path, n: int | None = None, seed: int = 0) -> HeldOut:
    """`n` random sequences of 3 or more events (None: all) of the run's dataset, `seed` choosing."""
    from training.prepare import raw_events  # reads the raw dataset (NVTabular-free, but prepare's reader)

    events, columns, key = raw_events(run_dir.data_dir(run))
    chosen, last = held_out(events, key, columns.time, n, seed)
    return HeldOut(chosen, last, columns, key)
