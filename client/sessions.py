"""Raw events -> request batches for the served ensemble (model_repository/README.md, its contract).

Pure functions, no server: the client reads the ensemble's metadata and config into a
`RequestSpec`, then `session_batches` groups events by the sequence key, sorts each session
by time (stable), carries context values from the earliest event, keeps the last
`max_events` and pads sessions into `[sessions, events]` arrays, each request within the server's
bounds: `max_batch_size` sessions and `max_request_events` padded events (sessions x the longest).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from tritonclient.utils import triton_to_np_dtype

EVENT_COUNT = "event_count"  # the contract's per-session input: how many events are real
K = "k"  # the contract's per-session input: items to return
PARAMETERS = ("sequence_key", "time_column", "item_column", "context_columns",
              "max_events", "max_k", "exclude_seen", "max_request_events")


@dataclass(frozen=True)
class RequestSpec:
    """What the served ensemble expects, read from its metadata and config (one source of truth)."""
    datatypes: dict[str, str]  # every input -> Triton datatype (BYTES, INT64, FP64, INT32)
    max_batch_size: int  # sessions per request
    sequence_key: str  # the column that groups events into sessions (not sent)
    time_column: str  # events are ordered by it (unix seconds)
    item_column: str  # the returned ids are this column's values
    context_columns: tuple[str, ...]  # per-session values the server takes from the earliest event
    max_events: int  # the last events of a session the workflow keeps (and the server reads)
    max_k: int  # the most items one session may ask for
    exclude_seen: bool  # whether the session's own items are left out of the answer
    max_request_events: int  # the server refuses requests with more events (sessions x row width)

    @property
    def event_columns(self) -> list[str]:
        return [name for name in self.datatypes if name not in (EVENT_COUNT, K)]

    @classmethod
    def from_server(cls, metadata: Mapping, config: Mapping) -> "RequestSpec":
        """`metadata`/`config`: the model's JSON dicts (HTTP as returned, gRPC `as_json`, config unwrapped)."""
        parameters = {name: value.get("string_value", "") for name, value in config.get("parameters", {}).items()}
        missing = [name for name in PARAMETERS if name not in parameters]
        if missing:
            raise ValueError(f"model config parameters: expected {list(PARAMETERS)}, missing {missing}")
        datatypes = {tensor["name"]: _datatype(tensor["datatype"]) for tensor in metadata["inputs"]}
        for name in (EVENT_COUNT, K):
            if name not in datatypes:
                raise ValueError(f"model inputs: expected {name!r} among them, got {sorted(datatypes)}")
        max_batch_size = int(config.get("max_batch_size", 0))
        if max_batch_size < 1:
            raise ValueError(f"model config max_batch_size: expected >= 1 (sessions are the batch), got {max_batch_size}")
        if int(parameters["max_events"]) < 1:
            raise ValueError(f"model config max_events: expected >= 1, got {parameters['max_events']!r}")
        return cls(
            datatypes=datatypes,
            max_batch_size=max_batch_size,
            sequence_key=parameters["sequence_key"],
            time_column=parameters["time_column"],
            item_column=parameters["item_column"],
            context_columns=tuple(c.strip() for c in parameters["context_columns"].split(",") if c.strip()),
            max_events=int(parameters["max_events"]),
            max_k=int(parameters["max_k"]),
            exclude_seen=parameters["exclude_seen"].strip().lower() in ("true", "1", "yes"),
            max_request_events=int(parameters["max_request_events"]),
        )


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
    """Events (DataFrame or dict of arrays) -> request batches of at most `spec.max_batch_size` sessions."""
    frame = events_frame(events)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= spec.max_k:
        raise ValueError(f"k: expected an integer in 1..{spec.max_k} (max_k), got {k!r}")
    needed = [spec.sequence_key, spec.time_column, *spec.event_columns]
    missing = [column for column in dict.fromkeys(needed) if column not in frame.columns]
    if missing:
        raise ValueError(f"events lack columns {missing}: the model needs {list(dict.fromkeys(needed))}, "
                         f"the events have {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError("events: expected at least one event, got an empty input")
    if frame[spec.sequence_key].isna().any():
        raise ValueError(f"column {spec.sequence_key!r} (sequence key): expected a value on every event, got missing ones")
    columns = {name: _wire_values(frame[name], name, spec.datatypes.get(name, "INT64"))
               for name in dict.fromkeys([spec.time_column, *spec.event_columns])}

    sessions, session_ids = pd.factorize(frame[spec.sequence_key], sort=False)  # codes in order of first appearance
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

    batches = []
    for first, last in _batch_bounds(kept_lengths, spec.max_batch_size, spec.max_request_events):
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
        batches.append(SessionBatch(session_ids=session_ids[first:last].tolist(), inputs=inputs))
    return batches


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
