"""Raw events -> request batches for the served ensemble (model_repository/README.md, its contract).

Pure functions, no server: the client reads the ensemble's metadata and config into a
`RequestSpec`, then `session_batches` groups events by the sequence key, sorts each session
by time (stable), carries context values from the earliest event, keeps the last
`max_events` and pads sessions into `[sessions, events]` arrays, each request within the server's
bounds: `max_batch_size` sessions and `max_request_events` padded events (sessions x the longest).

That ordering rule is defined for the served and offline paths in
model_repository/transform/compiled.py (`time_order`, `last_events`); this is a copy, so that the
client imports nothing but the contract, and tests/test_ordering_rule.py holds the two equal on the
same events (ties in time, any file order, sessions longer than max_events, context that changes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from tritonclient.utils import triton_to_np_dtype

from model_repository.contract import EVENT_COUNT, HISTORY_COUNT, K, EnsembleParameters, history_inputs


@dataclass(frozen=True, kw_only=True)
class RequestSpec(EnsembleParameters):
    """What the served ensemble expects, read from its metadata and config (one source of truth):
    its parameters, and"""
    datatypes: dict[str, str]  # every input -> Triton datatype (BYTES, INT64, FP64, INT32)
    max_batch_size: int  # sessions per request

    @property
    def history_inputs(self) -> dict[str, str]:
        """role -> input name of the history inputs (none for a session-only model)."""
        if not self.history_events:
            return {}
        return history_inputs(self.item_column, self.time_column)

    @property
    def event_columns(self) -> list[str]:
        return [name for name in self.datatypes if name not in (EVENT_COUNT, K, *self.history_inputs.values())]

    @classmethod
    def from_server(cls, metadata: Mapping, config: Mapping) -> "RequestSpec":
        """`metadata`/`config`: the model's JSON dicts (HTTP as returned, gRPC `as_json`, config unwrapped)."""
        parameters = {name: value.get("string_value", "") for name, value in config.get("parameters", {}).items()}
        datatypes = {tensor["name"]: _datatype(tensor["datatype"]) for tensor in metadata["inputs"]}
        values = EnsembleParameters.config_values(parameters, history=HISTORY_COUNT in datatypes)
        for name in (EVENT_COUNT, K):
            if name not in datatypes:
                raise ValueError(f"model inputs: expected {name!r} among them, got {sorted(datatypes)}")
        max_batch_size = int(config.get("max_batch_size", 0))
        if max_batch_size < 1:
            raise ValueError(f"model config max_batch_size: expected >= 1 (sessions are the batch), got {max_batch_size}")
        if values["max_events"] < 1:
            raise ValueError(f"model config max_events: expected >= 1, got {values['max_events']!r}")
        return cls(datatypes=datatypes, max_batch_size=max_batch_size, **values)


@dataclass(frozen=True)
class SessionBatch:
    session_ids: list  # the sequence key's values, one per row, in order of first appearance
    inputs: dict[str, np.ndarray]  # input name -> [sessions, events] (event columns) or [sessions, 1]


def _datatype(name: str) -> str:
    """Metadata says BYTES/INT64, configs say TYPE_STRING/TYPE_INT64: one vocabulary (metadata's)."""
    name = name.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def events_frame(events) -> pd.DataFrame:
    """A DataFrame, or a dict of equal-length arrays."""
    return events if isinstance(events, pd.DataFrame) else pd.DataFrame(dict(events))


def session_batches(events, spec: RequestSpec, k: int) -> list[SessionBatch]:
    """Events (DataFrame or dict of arrays) -> request batches of at most `spec.max_batch_size` sessions.
    A session-aware model (`spec.history_events`): one row per user, keyed by the user, for their
    current session (`current_sessions`) with their earlier events as history."""
    frame = events_frame(events)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= spec.max_k:
        raise ValueError(f"k: expected an integer in 1..{spec.max_k} (max_k), got {k!r}")
    key, history = spec.sequence_key, None
    if spec.history_events:
        frame, history = current_sessions(frame, spec)
        key = spec.user_column  # one session per user left
    needed = [key, spec.time_column, *spec.event_columns]
    missing = [column for column in dict.fromkeys(needed) if column not in frame.columns]
    if missing:
        raise ValueError(f"events lack columns {missing}: the model needs {list(dict.fromkeys(needed))}, "
                         f"the events have {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError("events: expected at least one event, got an empty input")
    if frame[key].isna().any():
        raise ValueError(f"column {key!r} (sequence key): expected a value on every event, got missing ones")
    columns = {name: _wire_values(frame[name], name, spec.datatypes.get(name, "INT64"))
               for name in dict.fromkeys([spec.time_column, *spec.event_columns])}

    sessions, session_ids = pd.factorize(frame[key], sort=False)  # codes in order of first appearance
    by_time = np.argsort(columns[spec.time_column], kind="stable")
    order = by_time[np.argsort(sessions[by_time], kind="stable")]  # by session, then time, then input order
    sessions = sessions[order]
    lengths = np.bincount(sessions, minlength=len(session_ids))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    earliest = starts[sessions]  # each event's session's earliest event, before truncation
    position = np.arange(len(order)) - earliest
    kept = position >= lengths[sessions] - spec.max_events
    event_values = {}
    for name in spec.event_columns:
        values = columns[name][order]
        if name in spec.context_columns:
            values = values[earliest]
        event_values[name] = values[kept]
    sessions, kept_lengths = sessions[kept], np.minimum(lengths, spec.max_events)
    kept_starts = np.concatenate([[0], np.cumsum(kept_lengths)[:-1]])
    columns_in_session = np.arange(len(sessions)) - kept_starts[sessions]
    widths = kept_lengths
    if history is not None:
        history = history.reindex(session_ids)
        widths = np.maximum(kept_lengths, history["count"].to_numpy())

    batches = []
    for first, last in _batch_bounds(widths, spec.max_batch_size, spec.max_request_events):
        rows = slice(kept_starts[first], kept_starts[last - 1] + kept_lengths[last - 1])
        batch_lengths = kept_lengths[first:last]
        shape = (last - first, int(batch_lengths.max()))
        inputs = {}
        for name in spec.event_columns:
            padded = _padding(shape, spec.datatypes[name])
            padded[sessions[rows] - first, columns_in_session[rows]] = event_values[name][rows]
            inputs[name] = padded
        inputs[EVENT_COUNT] = batch_lengths.reshape(-1, 1).astype(triton_to_np_dtype(spec.datatypes[EVENT_COUNT]))
        inputs[K] = np.full((shape[0], 1), k, dtype=triton_to_np_dtype(spec.datatypes[K]))
        if history is not None:
            inputs.update(_history_inputs(history.iloc[first:last], spec))
        batches.append(SessionBatch(session_ids=session_ids[first:last].tolist(), inputs=inputs))
    return batches


def cut_sessions(frame: pd.DataFrame, user: str, time: str, gap_s: int) -> np.ndarray:
    """Session numbers of the events (training.data.views.cut_sessions' rule): by user then time (stable),
    a new session where the user changes or is inactive for more than `gap_s` seconds."""
    times = frame[time].to_numpy()
    users, _ = pd.factorize(frame[user], sort=True)
    order = np.lexsort((times, users))
    new_session = np.ones(len(order), dtype=bool)
    new_session[1:] = (users[order][1:] != users[order][:-1]) | (times[order][1:] - times[order][:-1] > gap_s)
    numbers = np.empty(len(order), dtype=np.int64)
    numbers[order] = np.cumsum(new_session) - 1
    return numbers


def current_sessions(frame: pd.DataFrame, spec: RequestSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's current session (the one that starts last, ties to the later session key) and
    history (the user's events before that session started: the last `spec.history_events`, by
    time, ties in input order). Sessions: the sequence key column, or cut by inactivity when the
    model's were (`session_gap_s`). -> (the current sessions' events, per user: history items,
    times and count)."""
    user, time, key = spec.user_column, spec.time_column, spec.sequence_key
    needed = [user, time, spec.item_column] + ([] if spec.session_gap_s else [key])
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise ValueError(f"events lack columns {missing}: a session-aware model needs the user, time and item "
                         f"and {'nothing else to cut sessions' if spec.session_gap_s else 'the session column'}; "
                         f"the events have {list(frame.columns)}")
    if frame[user].isna().any():
        raise ValueError(f"column {user!r} (user): expected a value on every event, got missing ones")
    frame = frame.reset_index(drop=True)
    times = _wire_values(frame[time], time, spec.datatypes.get(time, "INT64")).astype(np.int64)
    sessions = frame[key] if key in frame.columns else pd.Series(cut_sessions(frame.assign(**{time: times}), user, time,
                                                                              spec.session_gap_s))
    table = pd.DataFrame({"user": frame[user], "key": sessions, "time": times}).groupby("key", sort=False)
    starts = table.agg(user=("user", "first"), start=("time", "min")).reset_index()
    starts = starts.iloc[np.lexsort((starts["key"].to_numpy(), starts["start"].to_numpy()))]
    current = starts.drop_duplicates("user", keep="last").set_index("user")
    in_current = sessions.to_numpy() == current["key"].reindex(frame[user]).to_numpy()
    before = times < current["start"].reindex(frame[user]).to_numpy()
    earlier = frame[before].assign(_time=times[before], _order=np.arange(int(before.sum())))
    earlier = earlier.sort_values(["_time", "_order"], kind="stable").groupby(user, sort=False).tail(spec.history_events)
    grouped = earlier.groupby(user, sort=False)
    history = pd.DataFrame({"items": grouped[spec.item_column].agg(list), "times": grouped["_time"].agg(list)})
    history = history.reindex(pd.unique(frame[user]))
    history["items"] = [value if isinstance(value, list) else [] for value in history["items"]]
    history["times"] = [value if isinstance(value, list) else [] for value in history["times"]]
    history["count"] = history["items"].map(len)
    return frame[in_current], history


def _history_inputs(history: pd.DataFrame, spec: RequestSpec) -> dict[str, np.ndarray]:
    """The history inputs of a batch's users: items and times [users, longest (at least 1)] right-padded, counts."""
    names, counts = spec.history_inputs, history["count"].to_numpy()
    shape = (len(history), max(int(counts.max(initial=0)), 1))
    items, times = _padding(shape, spec.datatypes[names["item"]]), _padding(shape, spec.datatypes[names["time"]])
    rows = np.repeat(np.arange(len(history)), counts)
    places = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    flat = pd.Series([item for row in history["items"] for item in row], dtype=object)
    items[rows, places] = _wire_values(flat, spec.item_column, spec.datatypes[names["item"]]) if len(flat) else []
    times[rows, places] = [time for row in history["times"] for time in row]
    return {names["item"]: items, names["time"]: times,
            names["count"]: counts.reshape(-1, 1).astype(triton_to_np_dtype(spec.datatypes[names["count"]]))}


def _batch_bounds(lengths: np.ndarray, max_sessions: int, max_events: int) -> list[tuple[int, int]]:
    """[first, last) session ranges, in order: at most `max_sessions` sessions and at most
    `max_events` padded events (sessions x the longest one) per request, the server's bounds."""
    bounds, first, width = [], 0, 0
    for index, length in enumerate(lengths.tolist()):
        wider = max(width, length)
        if index > first and (index - first == max_sessions or (index - first + 1) * wider > max_events):
            bounds.append((first, index))
            first, wider = index, length
        width = wider
    return bounds + [(first, len(lengths))] if len(lengths) else bounds


def _padding(shape: tuple[int, int], datatype: str) -> np.ndarray:
    """Right padding: b"" for text, 0 for numbers."""
    if datatype == "BYTES":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=triton_to_np_dtype(datatype))


def _wire_values(series: pd.Series, name: str, datatype: str) -> np.ndarray:
    """One column as the server receives it: bytes, integers (datetimes as unix seconds) or floats."""
    if datatype == "BYTES":
        return np.array([_text(value) for value in series.tolist()], dtype=object)
    if pd.api.types.is_datetime64_any_dtype(series):
        series = (series - pd.Timestamp(0, tz=series.dt.tz)) // pd.Timedelta(seconds=1)
    numbers = pd.to_numeric(series, errors="coerce")
    bad = (numbers.isna() & series.notna()).to_numpy()
    if bad.any():
        raise ValueError(f"column {name!r}: expected numbers ({datatype}), got {series[bad].iloc[0]!r}")
    dtype = triton_to_np_dtype(datatype)
    if not datatype.startswith(("INT", "UINT")):
        return numbers.to_numpy(dtype=np.float64, na_value=np.nan).astype(dtype)
    if numbers.isna().any():
        raise ValueError(f"column {name!r}: expected integers ({datatype}) on every event, got a missing value")
    if numbers.dtype.kind == "f":  # never through float64 otherwise: 64-bit ids would lose digits
        floats = numbers.to_numpy(dtype=np.float64)
        fractional = ~np.isfinite(floats) | (floats != np.floor(floats))
        if fractional.any():
            raise ValueError(f"column {name!r}: expected integers ({datatype}), got {series[fractional].iloc[0]!r}")
    return numbers.to_numpy(dtype=dtype)


def _text(value) -> bytes:
    """UTF-8 bytes; whole floats (ids read through a column with missing values) lose their `.0`."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return b""  # a missing category: the server maps what it does not know
    if isinstance(value, float) and value.is_integer():
        return str(int(value)).encode()
    return str(value).encode()
