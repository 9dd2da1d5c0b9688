"""Sequence views and splits of raw events, before the workflow sees them.

Views (what one row of prepared data is):
- sequential: a user's events in time order (sequential recommendation);
- session: one session's events; sessions come from the session column, or are cut where
  a user is inactive for longer than `session_gap_s` (session-based recommendation);
- session-aware: a session plus the items of the same user's earlier sessions
  (`history_item_list`, computed after the workflow from the encoded sessions).

Splits (which rows train, validate and test):
- loo: per sequence leave-one-out, the MovieLens protocol: the test sequence is the whole
  sequence (its last item is the target), validation drops the last item, training drops
  the last two. Training events are what the workflow is fit on. In the session-aware view,
  per user: the last session tests, the one before validates (`leave_one_session_out`).
- time: fixed windows of `window_days` (day-based, for incremental training): the last
  window tests, the one before validates, the earlier ones train. In the sequential view a
  validation or test row also holds the user's earlier events (`with_history`), as the
  client sends a user's whole history at serving time; its target, the last event, is the window's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from training.data.events import EventColumns, EventsError

VIEWS = ("sequential", "session", "session-aware")
SPLITS = ("loo", "time")
DERIVED_SESSION = "session_id"  # name of the session column cut by inactivity gap


def sequence_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index and length of each run of equal keys (events sorted by sequence)."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, np.diff(np.r_[starts, len(keys)])


def filter_items(events: pd.DataFrame, columns: EventColumns, min_count: int, within: np.ndarray | None = None) -> pd.DataFrame:
    """Drop the events of items with fewer than `min_count` interactions, counted and dropped
    among the events where `within` is True (None: every event, counted before the split as in
    SASRec/BERT4Rec); the other events are kept whatever their item."""
    if min_count <= 1:
        return events
    within = np.ones(len(events), dtype=bool) if within is None else np.asarray(within, dtype=bool)
    items = events[columns.item]
    counts = items[within].value_counts()
    frequent = items.map(counts).fillna(0).to_numpy() >= min_count
    return events[frequent | ~within]


def split_long_sequences(events: pd.DataFrame, key: str, time: str, max_length: int) -> tuple[pd.DataFrame, pd.Series]:
    """`--long-sequences split`: every sequence longer than `max_length` cut into windows of at
    most `max_length` events, from its end; each window starts on the previous window's last
    event, so every event after a sequence's first is a training target exactly once (one event
    per cut is repeated, as an input). Windows keep the events' order (ties in time included).
    -> (events keyed by window: `key` holds a window id of the key's own dtype, and the
    original key of each window id)."""
    if max_length < 2:
        raise EventsError(f"--long-sequences split: expected --max-length >= 2, got {max_length}")
    events = sort_events(events, key, time)
    keys = events[key].to_numpy()
    n = len(keys)
    if n == 0:
        return events, pd.Series([], dtype=events[key].dtype)
    starts, lengths = sequence_bounds(keys)
    length = np.repeat(lengths, lengths)
    from_end = np.repeat(starts + lengths, lengths) - np.arange(n) - 1  # 0: the last event
    stride = max_length - 1
    windows = np.maximum(-(-(length - 1) // stride), 1)  # per sequence, a single event included
    window = np.minimum(from_end // stride, windows - 1)
    repeated = np.flatnonzero((from_end > 0) & (from_end % stride == 0) & (from_end // stride <= windows - 1))
    rows = np.r_[np.arange(n), repeated]
    row_window = np.r_[window, from_end[repeated] // stride - 1]
    sequence = np.repeat(np.arange(len(starts)), lengths)[rows]
    order = np.lexsort((rows, -row_window, sequence))  # a sequence's windows oldest first, events in order
    rows, row_window, sequence = rows[order], row_window[order], sequence[order]
    window_id = np.cumsum(np.r_[True, (sequence[1:] != sequence[:-1]) | (row_window[1:] != row_window[:-1])]) - 1
    count = int(window_id[-1]) + 1
    dtype = events[key].dtype
    values = np.arange(count)
    surrogate = pd.Series(values if pd.api.types.is_integer_dtype(dtype) else values.astype(str)).astype(dtype)
    if surrogate.nunique() != count:
        raise EventsError(f"--long-sequences split: column {key!r} ({dtype}) cannot hold {count:,} window ids")
    first_rows = np.r_[0, np.flatnonzero(np.diff(window_id)) + 1]
    out = events.iloc[rows].reset_index(drop=True)
    out[key] = surrogate.to_numpy()[window_id]
    return out, pd.Series(keys[starts[sequence[first_rows]]], index=surrogate.to_numpy())


def sort_events(events: pd.DataFrame, key: str, time: str) -> pd.DataFrame:
    """Stable sort by sequence key then time: ties in time keep the file's order."""
    order = np.lexsort((events[time].to_numpy(), events[key].to_numpy()))
    return events.iloc[order].reset_index(drop=True)


def cut_sessions(events: pd.DataFrame, columns: EventColumns, gap_s: int) -> pd.DataFrame:
    """Add DERIVED_SESSION: a new session starts where a user is inactive for more than gap_s."""
    if not columns.user:
        raise EventsError("session view without a session column needs a user column to cut sessions by inactivity")
    events = sort_events(events, columns.user, columns.time)
    users = events[columns.user].to_numpy()
    times = events[columns.time].to_numpy()
    new_session = np.ones(len(events), dtype=bool)
    new_session[1:] = (users[1:] != users[:-1]) | (times[1:] - times[:-1] > gap_s)
    events[DERIVED_SESSION] = np.cumsum(new_session) - 1
    return events


def sequence_key(events: pd.DataFrame, columns: EventColumns, view: str, session_gap_s: int) -> tuple[pd.DataFrame, str]:
    """The events with the column rows are grouped by, and that column's name."""
    if view not in VIEWS:
        raise EventsError(f"view: expected one of {list(VIEWS)}, got {view!r}")
    if view == "sequential":
        if not columns.user:
            raise EventsError("sequential view: the mapping names no user column")
        return events, columns.user
    if columns.session:
        return events, columns.session
    if DERIVED_SESSION in events.columns:
        raise EventsError(f"column {DERIVED_SESSION!r} exists but is not mapped as the session column")
    return cut_sessions(events, columns, session_gap_s), DERIVED_SESSION


def leave_one_out(events: pd.DataFrame, key: str, time: str) -> dict[str, pd.DataFrame]:
    """Events per split; sequences with fewer than 3 events are dropped (nothing to train on)."""
    events = sort_events(events, key, time)
    keys = events[key].to_numpy()
    starts, lengths = sequence_bounds(keys)
    position_from_end = np.repeat(starts + lengths, lengths) - np.arange(len(keys))  # 1 = last event
    long_enough = np.repeat(lengths >= 3, lengths)
    if not long_enough.any():
        raise EventsError("leave-one-out split: no sequence has 3 or more events")
    return {
        "train": events[long_enough & (position_from_end > 2)],
        "valid": events[long_enough & (position_from_end > 1)],
        "test": events[long_enough],
    }


def leave_one_session_out(events: pd.DataFrame, user: str, key: str, time: str) -> dict[str, pd.DataFrame]:
    """The session-aware protocol: per user, the last session (by start time) tests, the one before
    validates, the earlier ones train; users with fewer than 3 sessions only train."""
    starts = events.groupby(key, sort=False)[time].min()
    users = events.groupby(key, sort=False)[user].first()
    sessions = pd.DataFrame({"user": users, "start": starts}).reset_index(names="key")
    sessions = sessions.iloc[np.lexsort((sessions["key"].to_numpy(), sessions["start"].to_numpy(), sessions["user"].to_numpy()))]
    from_end = sessions.groupby("user", sort=False).cumcount(ascending=False).to_numpy()  # 0: the user's last session
    count = sessions.groupby("user", sort=False)["key"].transform("size").to_numpy()
    role = np.where(count < 3, "train", np.select([from_end == 0, from_end == 1], ["test", "valid"], "train"))
    if not (role == "test").any():
        raise EventsError("leave-one-session-out split: no user has 3 or more sessions")
    role_of = pd.Series(role, index=sessions["key"].to_numpy())
    roles = role_of.reindex(events[key].to_numpy()).to_numpy()
    events = events.assign(_role=roles)
    return {name: sort_events(events[roles == name].drop(columns="_role"), key, time) for name in ("train", "valid", "test")}


def held_out(events: pd.DataFrame, key: str, time: str, n: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave-one-out's test rows as requests: `n` random sequences (None: all) of 3 or more events
    (what leave-one-out tests) in time order without their last event, and those last events
    (indexed by `key`)."""
    if n is not None:
        sizes = events[key].value_counts(sort=False)
        candidates = pd.Series(sizes.index[sizes.to_numpy() >= 3]).sort_values(kind="stable")
        events = events[events[key].isin(candidates.sample(min(n, len(candidates)), random_state=seed))]
    splits = leave_one_out(events, key, time)
    return splits["valid"].reset_index(drop=True), splits["test"].drop(splits["valid"].index).set_index(key)


def window_index(events: pd.DataFrame, key: str, time: str, window_days: float, per_event: bool) -> np.ndarray:
    """Window of each event: its own (sequential view, a user's events split by window) or
    its sequence's first event (sessions stay whole)."""
    times = events[time].to_numpy()
    if not per_event:
        times = events.groupby(key, sort=False)[time].transform("min").to_numpy()
    window_s = int(window_days * 86_400)
    if window_s <= 0:
        raise EventsError(f"window_days: expected > 0, got {window_days}")
    return ((times - times.min()) // window_s).astype(np.int64)


def time_split(windows: np.ndarray) -> dict[str, list[int]]:
    present = sorted(set(windows.tolist()))
    if len(present) < 3:
        raise EventsError(f"time split: needs at least 3 windows with events, got {len(present)}; use a shorter --window-days")
    return {"train": present[:-2], "valid": [present[-2]], "test": [present[-1]]}


def with_history(events: pd.DataFrame, key: str, windows: np.ndarray, window: int) -> pd.DataFrame:
    """The sequences with events in `window`, each with all its events up to the window's end
    (the workflow keeps the last max_length): earlier windows are context, never targets."""
    held_out = pd.unique(events[key].to_numpy()[windows == window])
    return events[(windows <= window) & events[key].isin(held_out).to_numpy()]


def session_history(events: pd.DataFrame, user: str, key: str, time: str, item: str, n: int) -> pd.Series:
    """For each sequence (index: `key`): the items of its user's events before its first event
    (strictly earlier in time: earlier sessions, never its own), the last `n`, in time order (ties
    in file order); empty for a user's first session. What a served request sends as history."""
    users, user_codes = pd.factorize(events[user], sort=False)
    times = events[time].to_numpy().astype(np.int64)
    order = np.lexsort((times, users))  # stable: ties keep file order
    users_sorted, times_sorted = users[order], times[order] - times.min() if len(times) else times
    span = int(times_sorted.max()) + 1 if len(times) else 1
    combined = users_sorted.astype(np.int64) * span + times_sorted
    first_of_user = np.searchsorted(combined, users_sorted.astype(np.int64) * span, side="left")
    starts = events.groupby(key, sort=False).agg(u=(user, "first"), t=(time, "min"))
    session_user = pd.Index(user_codes).get_indexer(starts["u"])
    end = np.searchsorted(combined, session_user.astype(np.int64) * span + (starts["t"].to_numpy() - times.min()), side="left")
    begin = np.maximum(np.searchsorted(combined, session_user.astype(np.int64) * span, side="left"), end - n)
    counts = end - begin
    offsets = np.r_[0, np.cumsum(counts)]
    taken = order[np.arange(offsets[-1]) + np.repeat(begin - offsets[:-1], counts)]
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(events[item].to_numpy()[taken]))
    return pd.Series(list(lists.to_pandas()), index=starts.index)
