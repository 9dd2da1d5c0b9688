"""Raw events -> fitted NVTabular workflow + parquet splits with the Merlin schema.

    python -m training.prepare --dataset ml-1m|ml-100k|synthetic|PATH [--mapping FILE] --out DIR
        [--dask-scheduler ADDRESS|local:N]
    python -m training.prepare --dataset TRAIN --valid-events VALID --test-events TEST --mapping FILE --out DIR

With --valid-events and --test-events (your own splits, parquet or csv, one mapping) the
workflow is fitted on TRAIN only and transforms the other two with it: their items unknown in
training become the OOV code, which the metrics count as misses.

--min-item-count N drops the events of items with fewer than N events (default 5 for MovieLens,
its protocol, counted before the split; 1 otherwise: every item kept). With a time split or your
own splits it counts and drops training events only: held-out events keep their items (unknown
ones are OOV, as at serving time). --long-sequences split cuts training sequences longer than
--max-length into several (`training.data.views.split_long_sequences`) instead of keeping their last
events; held-out rows always keep the last --max-length events, as requests do.

Writes DIR (the contract every later stage reads; see `training.data.prepared`):
    prepared.json          what was prepared: dataset, view, split, columns and their roles, max length, counts
    transform.json         the fitted workflow's request-time part as plain data (what export and
                           offline prediction read: `training.data.request_transform`)
    workflow/              the fitted workflow (`nvtabular.Workflow.load`, for one's own data), categories included
    train/ valid/ test/    one row per sequence: part_0.parquet + schema.pbtxt
    windows/NNNN/          time split only: every window's sequences, for incremental training
DIR is built in a temporary sibling folder and renamed into place: never half-written.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training import cli
from training.data import distributed, prepared, request_transform, views
from training.data.codes import SPECIAL_CODES
from training.data.events import EventColumns, EventsError, check_continuous, read_event_file, validate_events
from training.model.features import column_roles
from training.progress import note
from training.data.workflow import CONTINUOUS, WorkflowOptions, build_workflow, fit_workflow, save_workflow
from model_repository.transform.compiled import ITEM_FEATURES, ITEM_TIMES, TIME_FEATURES, ItemTimes, fit_item_times, time_features

BUILTIN = ("ml-1m", "ml-100k", "synthetic")
# (view, split, max_length) when not given: the published protocol per dataset
DEFAULTS = {
    "ml-1m": ("sequential", "loo", 200),
    "ml-100k": ("sequential", "loo", 200),
    "synthetic": ("session", "time", 50),
    "file": ("session", "time", 50),
}
MOVIELENS_MIN_ITEM_COUNT = 5  # the MovieLens protocol (SASRec, BERT4Rec): rarer items dropped, counted before the split
MIN_ITEM_COUNT = 1  # any other data: every item kept (rare items are most of a session catalog; the baselines keep them)
LONG_SEQUENCES = ("last", "split")  # a training sequence longer than --max-length: its last events, or cut into several


@dataclass
class PrepareArgs:
    dataset: str
    out: Path
    mapping: Path | None = None
    view: str | None = None
    split: str | None = None
    max_length: int | None = None
    min_item_count: int | None = None  # None: MOVIELENS_MIN_ITEM_COUNT for MovieLens, else MIN_ITEM_COUNT
    min_item_frequency: int = 0
    long_sequences: str = "last"  # one of LONG_SEQUENCES
    time_features: tuple[str, ...] = ()  # of TIME_FEATURES: columns derived from event times, here and when served
    timezone: str = "UTC"  # where hour and weekday are read
    continuous: str = "log-normalize"
    buckets: int = 10
    window_days: float = 1.0
    session_gap_minutes: float = 30.0
    synthetic_events: int = 100_000
    seed: int = 0
    dask_scheduler: str | None = None  # a Dask scheduler address, or local:N workers; None: this process
    valid_events: Path | None = None  # your own splits: the validation events file (with test_events)
    test_events: Path | None = None  # your own splits: the test events file; --dataset is then the training file

    @property
    def defaults(self) -> tuple[str, str, int]:
        return DEFAULTS[self.dataset if self.dataset in BUILTIN else "file"]

    @property
    def item_count_floor(self) -> int:
        """--min-item-count, or its default for the dataset."""
        if self.min_item_count is not None:
            return self.min_item_count
        return MOVIELENS_MIN_ITEM_COUNT if self.dataset in ("ml-1m", "ml-100k") else MIN_ITEM_COUNT


def load(args: PrepareArgs) -> tuple[pd.DataFrame, EventColumns]:
    if args.dataset in ("ml-1m", "ml-100k"):
        from training.data.datasets import movielens

        return validate_events(movielens.load_events(args.dataset), movielens.COLUMNS, args.dataset), movielens.COLUMNS
    if args.dataset == "synthetic":
        from training.data.datasets import synthetic

        config = synthetic.SyntheticConfig(n_events=args.synthetic_events, seed=args.seed)
        return validate_events(synthetic.generate_events(config), synthetic.COLUMNS, "synthetic"), synthetic.COLUMNS
    return load_file(args.dataset, args.mapping)


def load_file(path, mapping: Path | None, flag: str = "--dataset") -> tuple[pd.DataFrame, EventColumns]:
    if not Path(path).is_file():
        known = f"one of {sorted(BUILTIN)} or " if flag == "--dataset" else ""
        raise EventsError(f"{flag}: expected {known}an events file (.parquet or .csv), got {str(path)!r}: {path} does not exist")
    if mapping is None:
        raise EventsError(f"dataset {path}: an events file needs --mapping (role -> column, YAML or JSON)")
    columns = EventColumns.load(mapping)
    return validate_events(read_event_file(path), columns, f"events file {path}"), columns


def own_splits(args: PrepareArgs, train: pd.DataFrame, columns: EventColumns, view: str) -> tuple[dict, str]:
    """--valid-events/--test-events: each file keyed alike, filtered by nothing (the training
    file's filter decides the catalog; unknown items become OOV). -> ({split: events}, key)."""
    per_split = {"train": train}
    for name, path in (("valid", args.valid_events), ("test", args.test_events)):
        events, _ = load_file(path, args.mapping, f"--{name}-events")
        check_continuous(events, columns, log_transform=args.continuous == "log-normalize")
        per_split[name], _ = views.sequence_key(events, columns, view, int(args.session_gap_minutes * 60))
    train, key = views.sequence_key(train, columns, view, int(args.session_gap_minutes * 60))
    return {**per_split, "train": train}, key


def raw_events(prepared_dir: Path) -> tuple[pd.DataFrame, EventColumns, str]:
    """The events a prepared folder was made from (filtered and keyed as then; with own splits,
    the training file's): for requests to a served model. -> (events, columns, sequence key)."""
    summary = prepared.load_summary(prepared_dir)
    options = summary["options"]
    args = PrepareArgs(**{**options, "out": Path(options["out"]), "mapping": Path(options["mapping"]) if options["mapping"] else None})
    events, columns = load(args)
    split = summary["split"]
    if split != "time":
        events = views.filter_items(events, columns, args.item_count_floor)
    events, key = views.sequence_key(events, columns, summary["view"], int(args.session_gap_minutes * 60))
    if split == "time":
        events = split_events(events, key, columns, args, split, summary["view"])[0]
    return events, columns, key


def add_time_features(events: pd.DataFrame, key: str, time: str, features, timezone: str, max_length: int,
                      item: str | None = None, item_times: ItemTimes | None = None) -> pd.DataFrame:
    """The events (sorted by sequence, then time) with their time features' columns, computed over
    each sequence's last `max_length` events (the events a request keeps; the first of them starts
    the sequence for gap and elapsed), as the served transform computes them; the item features
    (age, recent) from the events' `item` by the training statistics `item_times`."""
    events = views.sort_events(events, key, time)
    keys = events[key].to_numpy()
    starts, lengths = views.sequence_bounds(keys)
    first = np.zeros(len(keys), dtype=bool)
    first[starts + np.maximum(lengths - max_length, 0)] = True
    columns = time_features(features, events[time].to_numpy(), first, timezone)
    if item_times is not None:
        items = events[item].to_numpy()
        if item_times.rows.text:  # the lookup takes values as requests carry them
            items = np.array([str(v).encode() for v in items], dtype=object)
        columns.update(item_times.features(features, items, events[time].to_numpy()))
    return events.assign(**columns)


def check_time_features(args: PrepareArgs, columns: EventColumns) -> tuple[str, ...]:
    features = tuple(args.time_features)
    unknown = [name for name in features if name not in TIME_FEATURES]
    if unknown:
        raise EventsError(f"--time-features: expected some of {list(TIME_FEATURES)}, got {unknown[0]!r}")
    try:
        pd.Timestamp(0, unit="s", tz="UTC").tz_convert(args.timezone)
    except Exception:  # pytz and zoneinfo raise different types
        raise EventsError(f"--timezone: expected a time zone name such as UTC or Europe/Berlin, got {args.timezone!r}") from None
    taken = sorted({c for f in features for c in TIME_FEATURES[f]} & set(columns.roles()))
    if taken:
        raise EventsError(f"--time-features: column {taken[0]!r} is already an events column; rename it")
    return features


def bucket_boundaries(train_events: pd.DataFrame, columns: EventColumns, buckets: int) -> dict[str, list[float]]:
    quantiles = np.linspace(0, 1, buckets + 1)[1:-1]
    return {
        column: sorted(set(np.nanquantile(train_events[column].to_numpy(dtype=float), quantiles).tolist()))
        for column in (*columns.continuous, *columns.context_continuous)
    }


def split_events(events: pd.DataFrame, key: str, columns: EventColumns, args: PrepareArgs, split: str, view: str):
    """-> (the events kept, events per split, events per window or None, split -> windows or None).
    A time split drops the training events of items rarer than --min-item-count in training."""
    if split == "loo" and view == "session-aware":  # per user: the last session tests, the one before validates
        return events, views.leave_one_session_out(events, columns.user, key, columns.time), None, None
    if split == "loo":
        return events, views.leave_one_out(events, key, columns.time), None, None
    if split != "time":
        raise EventsError(f"split: expected one of {list(views.SPLITS)}, got {split!r}")
    events = views.sort_events(events, key, columns.time)
    windows = views.window_index(events, key, columns.time, args.window_days, per_event=view == "sequential")
    plan = views.time_split(windows)
    kept = views.filter_items(events.assign(_window=windows), columns, args.item_count_floor,
                              within=np.isin(windows, plan["train"]))
    events, windows = kept.drop(columns="_window").reset_index(drop=True), kept["_window"].to_numpy()
    per_window = {w: events[windows == w] for w in sorted({w for ws in plan.values() for w in ws})}
    per_split = {name: pd.concat([per_window[w] for w in ws]) for name, ws in plan.items()}
    if view == "sequential":  # a user's window rows carry the earlier events, as requests do
        per_split.update({name: views.with_history(events, key, windows, plan[name][0]) for name in ("valid", "test")})
    return events, per_split, per_window, plan


def add_session_history(frames, events, key, columns: EventColumns, max_length: int, folder: Path) -> None:
    """Session-aware view: give every session row the item codes of its user's events before it
    (`views.session_history`, the last max_length; a test session's history includes training
    sessions), encoded by the served transform's own lookup of the fitted categories."""
    from model_repository.transform.compiled import _Categories

    history = views.session_history(events, columns.user, key, columns.time, columns.item, max_length)
    lookup = _Categories(prepared.category_file(folder, columns.item), SPECIAL_CODES["oov"])
    flat = np.concatenate([*history.to_numpy(), np.zeros(0, dtype=events[columns.item].dtype)])
    codes = lookup.encode(np.array([str(v).encode() for v in flat], dtype=object) if lookup.text else flat)
    lengths = history.map(len).to_numpy()
    by_key = pd.Series(np.split(codes.astype(np.int64), np.cumsum(lengths)[:-1]) if len(lengths) else [], index=history.index)
    for frame in frames:
        frame[prepared.HISTORY_COLUMN] = by_key.reindex(frame[key].to_numpy()).to_numpy()


def run(args: PrepareArgs) -> dict:
    out = args.out.resolve()
    if out.exists():
        raise EventsError(f"output folder {out} exists: remove it or choose another --out")
    view = args.view or args.defaults[0]
    split = args.split or args.defaults[1]
    max_length = args.max_length or args.defaults[2]
    if max_length < 2:
        raise EventsError(f"--max-length: expected >= 2, got {max_length}")
    if args.long_sequences not in LONG_SEQUENCES:
        raise EventsError(f"--long-sequences: expected one of {list(LONG_SEQUENCES)}, got {args.long_sequences!r}")
    if (args.valid_events is None) != (args.test_events is None):
        raise EventsError("own splits: give both --valid-events and --test-events (the training file is --dataset)")
    own = args.test_events is not None
    if own and (args.dataset in BUILTIN or args.split is not None):
        raise EventsError(f"own splits: --dataset is the training events file (got {args.dataset!r}) and --split is not "
                          f"used (got {args.split!r})")
    if own and view == "session-aware":
        raise EventsError("own splits: the session-aware view needs --split time (a user's earlier sessions across windows)")
    split = "files" if own else split
    started = time.perf_counter()
    events, columns = load(args)
    if events.empty:
        raise EventsError(f"dataset {args.dataset} has no events")
    if view == "session-aware" and not columns.user:
        raise EventsError("session-aware view: the mapping names no user column")
    check_continuous(events, columns, log_transform=args.continuous == "log-normalize")
    if split != "time":  # the MovieLens protocol counts before the split; own splits: the training file
        events = views.filter_items(events, columns, args.item_count_floor)
    if own:
        per_split, key = own_splits(args, events, columns, view)
        events, per_window, plan = per_split["train"], None, None
    else:
        events, key = views.sequence_key(events, columns, view, int(args.session_gap_minutes * 60))
    cut_by_gap = view != "sequential" and not columns.session  # sessions cut by inactivity (the mapping names none)
    if cut_by_gap:
        columns = EventColumns(**{**columns.to_dict(), "session": key})
    if not own:
        events, per_split, per_window, plan = split_events(events, key, columns, args, split, view)
    if per_split["train"].empty:
        raise EventsError(f"dataset {args.dataset}: the training split is empty")
    derived = check_time_features(args, columns)
    training_rows, window_keys = per_split["train"], None
    if args.long_sequences == "split":
        training_rows, window_keys = views.split_long_sequences(per_split["train"], key, columns.time, max_length)
    item_table = None  # the items' first time and recent events, of training events only
    if set(derived) & set(ITEM_FEATURES):
        item_table = fit_item_times(per_split["train"][columns.item], per_split["train"][columns.time].to_numpy())
    if derived:  # per row as a request holds it: a sequence's last max_length events (a split row: its own)
        item_times = ItemTimes(None, item_table) if item_table is not None else None

        def timed(frame):
            return add_time_features(frame, key, columns.time, derived, args.timezone, max_length, columns.item, item_times)

        per_split = {name: timed(frame) for name, frame in per_split.items()}
        training_rows = per_split["train"] if window_keys is None else timed(training_rows)
        per_window = {w: timed(frame) for w, frame in per_window.items()} if per_window else per_window

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        options = WorkflowOptions(
            sequence_key=key,
            max_length=max_length,
            min_item_frequency=args.min_item_frequency,
            continuous=args.continuous,
            buckets=args.buckets,
            time_columns=tuple(c for f in derived for c in TIME_FEATURES[f]),
        )
        boundaries = bucket_boundaries(per_split["train"], columns, args.buckets) if args.continuous == "bucketize" else None
        workflow = build_workflow(columns, options, staging / "fit", boundaries)
        note("prepare", f"fitting the workflow on {len(per_split['train']):,} training events")
        with distributed.cluster(args.dask_scheduler) as partitions:  # 1: no cluster, this process
            fit_workflow(workflow, distributed.by_sequence(per_split["train"], key, partitions))
            note("prepare", f"transforming {', '.join(per_split)}{' and the windows' if per_window else ''}")
            outputs = {name: distributed.transform(workflow, training_rows if name == "train" else frame, key, partitions)
                       for name, frame in per_split.items()}
            window_outputs = {w: distributed.transform(workflow, frame, key, partitions)
                              for w, frame in (per_window or {}).items()}
        if window_keys is not None:  # the training rows keyed by their sequence again
            outputs["train"][key] = window_keys.reindex(outputs["train"][key].to_numpy()).to_numpy()
        save_workflow(workflow, staging / prepared.WORKFLOW_DIR)
        if item_table is not None:
            item_table.to_parquet(staging / prepared.WORKFLOW_DIR / ITEM_TIMES, index=False)
        shutil.rmtree(staging / "fit")
        schema = workflow.output_schema
        if view == "session-aware":
            schema = prepared.with_history_column(schema, columns)
            add_session_history([*outputs.values(), *window_outputs.values()], events, key, columns, max_length,
                                staging)
        features = column_roles(schema, prepared.item_list_column(columns), key)
        continuous = {name for name, column in features.items() if column["role"] in ("continuous", "context_continuous")}
        request_transform.write(request_transform.compile_workflow(
            workflow, staging / prepared.CATEGORIES_DIR, continuous,
            {"features": list(derived), "timezone": args.timezone,
             **({"item_column": columns.item} if item_table is not None else {})},  # the item features read it
            {"source": columns.item, "user_column": columns.user,  # requests carry the user's earlier events
             "session_gap_s": int(args.session_gap_minutes * 60) if cut_by_gap else 0}
            if view == "session-aware" else None), staging)
        for name, frame in outputs.items():
            prepared.write_split(frame, schema, staging / name)
        for window, frame in window_outputs.items():
            prepared.write_split(frame, schema, staging / prepared.WINDOWS_DIR / f"{window:04d}")
        summary = prepared.describe(
            dataset=args.dataset, view=view, split=split, columns=columns, sequence_key=key,
            max_length=max_length, events=events, outputs=outputs, plan=plan, schema=schema, features=features,
            options={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            | {"min_item_count": args.item_count_floor},
        )
        prepared.write_summary(summary, staging)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def parse_args(argv: list[str] | None) -> PrepareArgs:
    parser = cli.Parser(prog="python -m training.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="ml-1m, ml-100k, synthetic, or a parquet/csv events file")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    parser.add_argument("--mapping", type=Path, help="YAML/JSON role -> column mapping for an events file")
    parser.add_argument("--view", choices=views.VIEWS, help="default: sequential for MovieLens, session otherwise")
    parser.add_argument("--split", choices=views.SPLITS, help="default: loo for MovieLens, time otherwise")
    parser.add_argument("--max-length", type=int, help="events kept per sequence, the last ones (default 200 MovieLens, 50 otherwise)")
    parser.add_argument("--min-item-count", type=int, help=f"drop items with fewer interactions (1: keep all; default "
                        f"{MOVIELENS_MIN_ITEM_COUNT} for MovieLens (its protocol, counted before the split), "
                        f"{MIN_ITEM_COUNT} otherwise; time and own splits count and drop training events only)")
    parser.add_argument("--long-sequences", choices=LONG_SEQUENCES, default="last", help="a training sequence longer than "
                        "--max-length: keep its last events (last), or cut it into several from its end (split)")
    parser.add_argument("--time-features", type=lambda text: tuple(t for t in text.split(",") if t), default=(),
                        metavar="LIST", help=f"comma-separated, of {', '.join(TIME_FEATURES)}: per-event columns derived from "
                        "the event times (fitted on training, computed alike by the served transform)")
    parser.add_argument("--timezone", default="UTC", help="time zone of the hour and weekday features (e.g. Europe/Berlin)")
    parser.add_argument("--min-item-frequency", type=int, default=0, help="items rarer than this in training map to the OOV code")
    parser.add_argument("--continuous", choices=CONTINUOUS, default="log-normalize", help="transform of continuous features")
    parser.add_argument("--buckets", type=int, default=10, help="quantile buckets for --continuous bucketize")
    parser.add_argument("--window-days", type=float, default=1.0, help="time split window length")
    parser.add_argument("--session-gap-minutes", type=float, default=30.0, help="inactivity that ends a session")
    parser.add_argument("--synthetic-events", type=int, default=100_000, help="events to generate for --dataset synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--valid-events", type=Path, help="your own splits: validation events (parquet/csv), with --test-events")
    parser.add_argument("--test-events", type=Path, help="your own splits: test events; --dataset is the training file")
    parser.add_argument("--dask-scheduler", help="fit and transform on a Dask cluster: a scheduler address "
                        "(tcp://HOST:8786) or local:N (N worker processes here); default: this process")
    return PrepareArgs(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (EventsError, FileNotFoundError) as error:
        cli.refuse("prepare", error)
    counts = summary["counts"]
    print(
        f"prepared {summary['dataset']} ({summary['view']} view, {summary['split']} split) in {summary['seconds']} s -> {args.out}\n"
        f"  {counts['sequences']:,} sequences, {counts['events']:,} events, {counts['items']:,} items "
        f"(vocabulary {summary['item_cardinality']:,} codes incl. 3 reserved)\n"
        + "".join(f"  {name}: {n:,} sequences\n" for name, n in counts["per_split"].items()),
        end="",
    )


if __name__ == "__main__":
    main()
