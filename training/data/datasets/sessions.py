"""Seeded music-listening sessions calibrated to a real session dataset: train/valid/test by time.

How a session is made (what a model can learn from it):
- ordered playlists over a heavy-tailed item popularity; popular items sit in many playlists,
  so the last item alone is ambiguous and the session's earlier items tell which list plays;
- items belong to genres (700 items each on average, sizes heavy-tailed); a playlist keeps
  mostly to one genre, so items of a genre play in similar sessions and a model can generalise
  past the transitions it has seen (as the real data lets a Transformer beat sequential rules);
- a session plays a playlist from its start or from a random track, in order with skips,
  drifts to another playlist (often one holding the current track), repeats the previous or
  an earlier track, and mixes in random picks from the playing playlist's genre (most
  long-tail items occur once); session lengths are log-t distributed (median 7, heavy tail);
- sessions start uniformly over `n_days`; the last ones are test, the ones before validate;
  validation and test events of items never seen in training are dropped (as in the real data).

    python -m training.data.datasets.sessions --out DIR [--items N] [--train-sessions N]
        [--valid-sessions N] [--test-sessions N] [--days N] [--seed S]

writes DIR/train.parquet, valid.parquet, test.parquet and mapping.yaml for
`python -m training.prepare --dataset DIR/train.parquet --valid-events DIR/valid.parquet
--test-events DIR/test.parquet --mapping DIR/mapping.yaml --out PREPARED`.

Calibration at the defaults (seed 0), generated vs real; baselines by training.baselines on
the prepared own splits, test, every position, HR@20 / NDCG@20 / MRR@20:
    POP                                  0.027 / 0.012 / 0.008    0.027 / 0.012 / 0.008
    SR (10 steps)                        0.212 / 0.132 / 0.108    0.239 / 0.143 / 0.115
    V-SkNN (hf4rec's: no sampling)       0.312 / 0.153 / 0.107    0.310 / 0.141 / 0.094 (sample 500)
    items in training; played once, < 5 times    127,344; 46%, 83%    121,206; 51%, 82%
    training sessions, events; test sessions     48,961, 497k; 7,476  48,961, 489k; 7,476
    session length q1 / median / q3 / p99        5 / 7 / 10 / 50      5 / 7 / 11 / 51
    test targets equal to the previous / earlier 5.3% / 11.0%         5.7% / 10.5%
The genres are calibrated on a fourth number, the Transformer's: the real data's GPT-2 run
(issue 13) scored 0.94x V-SkNN's HR@20 and 1.22x SR's. Without genres (--set genre_items=0: playlists
of unrelated items, random picks from the whole catalog) the shipped gpt2_session scored 0.61x
and 0.80x (6-minute runs, validation, every position); at the defaults 0.81x and 1.17x.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.events import EventColumns
from training import cli

COLUMNS = EventColumns(session="session_id", item="item_id", time="timestamp")
FIRST_ITEM_ID = 1_000_000  # original item ids are not their codes
START_TIME = 1_700_000_000  # 2023-11-14, unix seconds
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SessionConfig:
    n_items: int = 210_000  # items the sessions draw from: about 121k occur in training, as in the real data
    n_train_sessions: int = 48_961  # the real training sessions
    n_valid_sessions: int = 7_476  # as many as test
    n_test_sessions: int = 7_476  # the real test sessions (after dropping items unseen in training)
    n_days: int = 60  # time span the sessions start in; the last sessions are valid and test
    pick_zipf: float = 0.5  # random picks ~ item rank^-pick_zipf: flat, so most long-tail items occur once
    membership_zipf: float = 0.6  # playlist tracks ~ the same rank^-membership_zipf: popular items in many lists
    playlist_catalog: float = 0.2  # share of the items, the most popular, in playlists: the rest occur as random picks
    playlists_per_item: float = 2.0  # playlist slots per playlist item: an item is in about this many lists
    playlist_median_length: float = 12.0  # lognormal playlist lengths: most short, some very long
    playlist_length_sigma: float = 0.8
    playlist_zipf: float = 0.5  # playlist popularity ~ rank^-playlist_zipf: some lists are played far more often
    length_median: float = 7.0  # session length exp(log median + scale * t(df)): the real median and IQR
    length_scale: float = 0.53
    length_df: float = 4.0  # the t's tail: the real p99 of 51
    max_length: int = 2_550  # the real longest session
    start_at_top: float = 0.5  # chance a playlist is played from its first track, else from a random one
    skip: float = 0.4  # chance each next track is skipped when advancing in the playlist (SR near its real score)
    repeat_previous: float = 0.03  # plus coincidences: the real share of targets equal to the previous item (5.7%)
    repeat_earlier: float = 0.03  # plus these: the real share of targets seen earlier in the session (10.5%)
    random_pick: float = 0.56  # a track off the playlist (noise, the long tail): POP and SR as low as real
    drift: float = 0.08  # intent drift: switch to another playlist (V-SkNN near its real score)
    segue: float = 0.5  # a drift goes to another playlist holding the current track (else any by popularity)
    genre_items: float = 700.0  # items per genre (0: no genres): playlists and random picks keep to one (the Transformer near its real score)
    genre_zipf: float = 1.0  # genre sizes ~ rank^-genre_zipf
    playlist_genre: float = 0.9  # share of a playlist's tracks drawn from its genre
    pick_genre: float = 1.0  # share of the random picks drawn from the playing playlist's genre (else the whole catalog)
    mean_gap_s: float = 180.0  # seconds between plays (a track)
    seed: int = 0


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def _draw(rng: np.random.Generator, cumulative: np.ndarray, n: int) -> np.ndarray:
    """`n` indices drawn by the weights whose cumulative sum is `cumulative` (fast for large catalogs)."""
    return np.minimum(np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right"), len(cumulative) - 1)


def _session_lengths(rng: np.random.Generator, config: SessionConfig, n: int) -> np.ndarray:
    log_length = np.log(config.length_median) + config.length_scale * rng.standard_t(config.length_df, n)
    return np.clip(np.round(np.exp(np.minimum(log_length, 20.0))), 2, config.max_length).astype(np.int64)


@dataclass
class _Genres:
    of_item: np.ndarray  # each item's genre
    order: np.ndarray  # the items sorted by genre
    bounds: np.ndarray  # [genres + 1] into order

    def cumulative(self, weights: np.ndarray) -> np.ndarray:
        """Per-item `weights` summed in genre order (from 0), for `draw`."""
        return np.concatenate([[0.0], np.cumsum(weights[self.order])])

    def draw(self, rng: np.random.Generator, cumulative: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """One item per entry of `wanted` (genres), drawn within that genre by the weights of `cumulative`."""
        start, end = cumulative[self.bounds[wanted]], cumulative[self.bounds[wanted + 1]]
        index = np.searchsorted(cumulative[1:], start + rng.random(len(wanted)) * (end - start), side="right")
        return self.order[np.clip(index, self.bounds[wanted], self.bounds[wanted + 1] - 1)]


def _genres(rng: np.random.Generator, config: SessionConfig) -> _Genres | None:
    if not config.genre_items:
        return None
    n_genres = max(1, round(config.n_items / config.genre_items))
    of_item = _draw(rng, np.cumsum(_zipf_weights(rng, n_genres, config.genre_zipf)), config.n_items)
    order = np.argsort(of_item, kind="stable")
    return _Genres(of_item, order, np.searchsorted(of_item[order], np.arange(n_genres + 1)))


@dataclass
class _Playlists:
    offsets: np.ndarray  # [playlists + 1] into tracks
    tracks: np.ndarray  # every playlist's items, in play order
    cumulative: np.ndarray  # cumulative playlist popularity
    holder_offsets: np.ndarray  # [items + 1] into holders: the track slots that hold each item
    holders: np.ndarray  # slot indices into tracks, grouped by item
    slot_playlist: np.ndarray  # each slot's playlist
    genre: np.ndarray | None  # each playlist's genre (None without genres)

    def lengths(self, playlists: np.ndarray) -> np.ndarray:
        return self.offsets[playlists + 1] - self.offsets[playlists]


def _playlists(rng: np.random.Generator, config: SessionConfig, item_rank: np.ndarray, genres: _Genres | None) -> _Playlists:
    n_items = len(item_rank)
    mean_length = config.playlist_median_length * np.exp(config.playlist_length_sigma ** 2 / 2)
    n_playlists = max(1, int(round(config.playlists_per_item * config.playlist_catalog * n_items / mean_length)))
    lengths = np.clip(np.round(rng.lognormal(np.log(config.playlist_median_length), config.playlist_length_sigma,
                                             n_playlists)), 2, None).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    in_playlists = item_rank <= config.playlist_catalog * n_items
    weights = np.where(in_playlists, item_rank ** -config.membership_zipf, 0.0)
    tracks = _draw(rng, np.cumsum(weights), int(offsets[-1]))
    genre = None
    if genres is not None:  # a playlist keeps mostly to its genre
        genre = _draw(rng, np.cumsum(np.bincount(genres.of_item, weights=weights, minlength=len(genres.bounds) - 1)), n_playlists)
        own = rng.random(len(tracks)) < config.playlist_genre
        tracks[own] = genres.draw(rng, genres.cumulative(weights), np.repeat(genre, lengths)[own])
    holders = np.argsort(tracks, kind="stable")
    holder_offsets = np.searchsorted(tracks[holders], np.arange(n_items + 1))
    slot_playlist = np.repeat(np.arange(n_playlists), lengths)
    cumulative = np.cumsum(_zipf_weights(rng, n_playlists, config.playlist_zipf))
    return _Playlists(offsets, tracks, cumulative, holder_offsets, holders, slot_playlist, genre)


def _play(rng: np.random.Generator, config: SessionConfig, lengths: np.ndarray, lists: _Playlists,
          pick_weights: np.ndarray, genres: _Genres | None) -> list[np.ndarray]:
    """The item of every session at every step: [step] -> items of the sessions still playing
    (sessions sorted by length, longest first, so those are a prefix)."""
    n = len(lengths)
    alive_at = np.searchsorted(-lengths, -np.arange(int(lengths.max())), side="left")  # [t] sessions longer than t
    playlist = _draw(rng, lists.cumulative, n)
    position = np.where(rng.random(n) < config.start_at_top, 0, (rng.random(n) * lists.lengths(playlist)).astype(np.int64))
    steps = [lists.tracks[lists.offsets[playlist] + position]]
    pick_cumulative = np.cumsum(pick_weights)
    genre_pick_cumulative = None if genres is None else genres.cumulative(pick_weights)
    thresholds = np.cumsum([config.repeat_previous, config.repeat_earlier, config.random_pick, config.drift])
    for t in range(1, len(alive_at)):
        alive = int(alive_at[t])
        playlist, position, previous = playlist[:alive], position[:alive], steps[-1][:alive]
        action = np.searchsorted(thresholds, rng.random(alive), side="right")  # 0 previous, 1 earlier, 2 random, 3 drift, 4 advance
        advance = rng.geometric(1.0 - config.skip, alive)  # 1 + the tracks skipped; past the playlist's end is a drift
        position = np.where(action == 4, position + advance, position)
        ended = position >= lists.lengths(playlist)
        drift = (action == 3) | ended
        if drift.any():
            playlist, position = _drift(rng, config, lists, playlist, position, previous, drift)
        item = lists.tracks[lists.offsets[playlist] + position]
        item = np.where(action == 0, previous, item)
        earlier = np.flatnonzero(action == 1)
        if len(earlier):
            back = (rng.random(len(earlier)) * t).astype(np.int64)  # any earlier step
            item[earlier] = _earlier_items(steps, back, earlier)
        random = action == 2
        if genres is not None:  # some random picks keep to the playing playlist's genre
            own = random & (rng.random(alive) < config.pick_genre)
            item[own] = genres.draw(rng, genre_pick_cumulative, lists.genre[playlist[own]])
            random &= ~own
        item[random] = _draw(rng, pick_cumulative, int(random.sum()))
        steps.append(item)
    return steps


def _earlier_items(steps: list[np.ndarray], back: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    out = np.empty(len(sessions), dtype=np.int64)
    for step in np.unique(back):
        chosen = back == step
        out[chosen] = steps[step][sessions[chosen]]
    return out


def _drift(rng, config: SessionConfig, lists: _Playlists, playlist, position, previous, drift):
    """Sessions in `drift` move to another playlist: with chance `segue` one that holds the
    previous track (played on from it), else any playlist by popularity (from its top)."""
    playlist, position = playlist.copy(), position.copy()
    moving = np.flatnonzero(drift)
    holders = lists.holder_offsets[previous[moving] + 1] - lists.holder_offsets[previous[moving]]
    segue = (rng.random(len(moving)) < config.segue) & (holders > 0)
    pick = lists.holder_offsets[previous[moving]] + (rng.random(len(moving)) * holders).astype(np.int64)
    slot = np.where(segue, lists.holders[np.minimum(pick, len(lists.holders) - 1)], 0)  # read only where held
    new_playlist = np.where(segue, lists.slot_playlist[slot], _draw(rng, lists.cumulative, len(moving)))
    new_position = np.where(segue, slot - lists.offsets[new_playlist] + 1, 0)
    new_position = np.where(new_position >= lists.lengths(new_playlist), 0, new_position)
    playlist[moving], position[moving] = new_playlist, new_position
    return playlist, position


def _split_sizes(config: SessionConfig) -> tuple[int, int, int]:
    """Sessions to generate per split: valid and test with room for the ones emptied by dropping
    items unseen in training (the requested number is then sampled from the survivors)."""
    margin = 1.2
    return config.n_train_sessions, int(np.ceil(config.n_valid_sessions * margin)), int(np.ceil(config.n_test_sessions * margin))


def _events(rng: np.random.Generator, config: SessionConfig, lists: _Playlists, pick_weights: np.ndarray,
            genres: _Genres | None) -> pd.DataFrame:
    """All sessions' events, sessions numbered in start-time order."""
    n = sum(_split_sizes(config))
    lengths = _session_lengths(rng, config, n)
    longest_first = np.argsort(-lengths, kind="stable")
    steps = _play(rng, config, lengths[longest_first], lists, pick_weights, genres)
    session = longest_first[np.concatenate([np.arange(len(items)) for items in steps])]
    step = np.repeat(np.arange(len(steps)), [len(items) for items in steps])
    order = np.lexsort((step, session))
    session, items = session[order], np.concatenate(steps)[order]
    starts = START_TIME + np.sort(rng.integers(0, config.n_days * 86_400, n))
    gaps = rng.exponential(config.mean_gap_s, len(session)).astype(np.int64) + 1
    elapsed = np.cumsum(gaps)
    first = np.searchsorted(session, session, side="left")  # each event's session's first event
    times = starts[session] + elapsed - elapsed[first]
    return pd.DataFrame({"session_id": session, "item_id": items + FIRST_ITEM_ID, "timestamp": times})


def _held_out(rng: np.random.Generator, events: pd.DataFrame, train_items: np.ndarray, wanted: int) -> pd.DataFrame:
    """A later split's events without items unseen in training; sessions left with one event are
    dropped and `wanted` sessions sampled from the rest (kept in time order)."""
    events = events[np.isin(events["item_id"].to_numpy(), train_items)]
    sizes = events.groupby("session_id").size()
    kept = sizes.index[sizes.to_numpy() >= 2].to_numpy()
    kept = np.sort(rng.choice(kept, min(wanted, len(kept)), replace=False))
    return events[np.isin(events["session_id"].to_numpy(), kept)].reset_index(drop=True)


def _check(config: SessionConfig) -> None:
    for field in fields(config):
        value = getattr(config, field.name)
        if value < (1 if field.name.startswith("n_") else 0):
            raise ValueError(f"SessionConfig.{field.name}: expected a positive value, got {value}")
    chances = config.repeat_previous + config.repeat_earlier + config.random_pick + config.drift
    if chances > 1 or config.skip >= 1:
        raise ValueError(f"SessionConfig: expected repeat_previous + repeat_earlier + random_pick + drift <= 1 and "
                         f"skip < 1, got {chances:g} and {config.skip:g}")


def _catalog(rng: np.random.Generator, config: SessionConfig) -> tuple[np.ndarray, _Genres | None]:
    """Each item's popularity rank (ids do not reveal it) and genre."""
    return rng.permutation(config.n_items) + 1.0, _genres(rng, config)


def item_genres(config: SessionConfig = SessionConfig()) -> np.ndarray | None:
    """The genre of every item (item id - FIRST_ITEM_ID), as generate_sessions(config) draws it."""
    genres = _catalog(np.random.default_rng(config.seed), config)[1]
    return None if genres is None else genres.of_item


def generate_sessions(config: SessionConfig = SessionConfig()) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """-> (train, valid, test) events: session_id, item_id, timestamp; valid and test start after train."""
    _check(config)
    rng = np.random.default_rng(config.seed)
    item_rank, genres = _catalog(rng, config)
    lists = _playlists(rng, config, item_rank, genres)
    events = _events(rng, config, lists, item_rank ** -config.pick_zipf, genres)
    n_train, n_valid, _ = _split_sizes(config)
    session = events["session_id"].to_numpy()
    train = events[session < n_train].reset_index(drop=True)
    train_items = np.unique(train["item_id"].to_numpy())
    valid = _held_out(rng, events[(session >= n_train) & (session < n_train + n_valid)], train_items, config.n_valid_sessions)
    test = _held_out(rng, events[session >= n_train + n_valid], train_items, config.n_test_sessions)
    return train, valid, test


# the real music-listening dataset the defaults are calibrated to (issue 13), keyed as `statistics`
REAL = {
    "items": 121_206, "items_once": 0.51, "items_under_5": 0.82, "train_sessions": 48_961, "train_events": 489_000,
    "test_sessions": 7_476, "length_q1": 5, "length_median": 7, "length_q3": 11, "length_p99": 51,
    "test_repeats_previous": 0.057, "test_repeats_earlier": 0.105, "test_items_in_train": 1.0,
}


def statistics(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """The numbers the generator is calibrated on: catalog, item counts and session lengths in
    training; in test, the share of targets (events after the first) equal to the previous item
    and seen earlier in the session, and the share of test items seen in training."""
    counts = train["item_id"].value_counts().to_numpy()
    lengths = train.groupby("session_id").size().to_numpy()
    items, sessions = test["item_id"].to_numpy(), test["session_id"].to_numpy()
    target = np.flatnonzero(sessions[1:] == sessions[:-1]) + 1  # events after their session's first
    earlier = test.assign(seen=test.duplicated(["session_id", "item_id"]))["seen"].to_numpy()
    q1, median, q3, p99 = np.quantile(lengths, [0.25, 0.5, 0.75, 0.99])
    return {
        "items": len(counts), "items_once": float(np.mean(counts == 1)), "items_under_5": float(np.mean(counts < 5)),
        "train_sessions": len(lengths), "train_events": len(train), "test_sessions": len(np.unique(sessions)),
        "length_q1": q1, "length_median": median, "length_q3": q3, "length_p99": p99,
        "test_repeats_previous": float(np.mean(items[target] == items[target - 1])),
        "test_repeats_earlier": float(np.mean(earlier[target])),
        "test_items_in_train": float(np.mean(np.isin(items, train["item_id"].to_numpy()))),
    }


def statistics_table(generated: dict[str, float]) -> str:
    lines = [f"{'statistic':<24}{'generated':>12}{'real':>12}"]
    for name, real in REAL.items():
        value = generated[name]
        shown = (f"{value:>12,.3f}{real:>12,.3f}" if isinstance(real, float) else f"{value:>12,.0f}{real:>12,}")
        lines.append(f"{name:<24}{shown}")
    return "\n".join(lines)


def mapping_yaml() -> str:
    """The role -> column mapping of the written files (training.prepare --mapping)."""
    import yaml

    return yaml.safe_dump({role: column for role, column in COLUMNS.to_dict().items() if column}, sort_keys=False)


def write_splits(splits: dict[str, pd.DataFrame], out: Path) -> None:
    """DIR/{train,valid,test}.parquet and DIR/mapping.yaml, each written to a temporary name and renamed."""
    from training.files import replace_file

    out.mkdir(parents=True, exist_ok=True)
    for name, events in splits.items():
        replace_file(out / f"{name}.parquet", lambda path, events=events: events.to_parquet(path, index=False))
    replace_file(out / "mapping.yaml", lambda path: path.write_text(mapping_yaml()))


def parse_args(argv: list[str] | None) -> tuple[Path, SessionConfig]:
    defaults = SessionConfig()
    parser = cli.Parser(prog="python -m training.data.datasets.sessions", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for train/valid/test.parquet and mapping.yaml")
    for flag, field in (("--items", "n_items"), ("--train-sessions", "n_train_sessions"), ("--valid-sessions", "n_valid_sessions"),
                        ("--test-sessions", "n_test_sessions"), ("--days", "n_days"), ("--seed", "seed")):
        parser.add_argument(flag, type=int, default=getattr(defaults, field), dest=field, metavar="N", help=f"default {getattr(defaults, field):,}"
                            + (" (the catalog the sessions draw from; at the default sizes about 121k occur in training)"
                               if field == "n_items" else ""))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other SessionConfig field, e.g. --set genre_items=0 --set random_pick=0.4")
    args = vars(parser.parse_args(argv))
    out, settings = args.pop("out"), args.pop("set")
    for field, value in args.items():
        if value < (0 if field == "seed" else 1):
            cli.refuse("sessions", f"--{field.removeprefix('n_').replace('_', '-')}: expected a positive integer, got {value}")
    types = {field.name: field.type for field in fields(SessionConfig)}
    for setting in settings:
        field, equals, text = setting.partition("=")
        if not equals or field not in types or field in args:
            cli.refuse("sessions", f"--set {setting}: expected FIELD=VALUE with FIELD one of "
                                         f"{sorted(set(types) - set(args))}, got {field!r}")
        try:
            args[field] = int(text) if types[field] == "int" else float(text)
        except ValueError:
            cli.refuse("sessions", f"--set {setting}: expected a{'n integer' if types[field] == 'int' else ' number'}, got {text!r}")
    config = replace(defaults, **args)
    try:
        _check(config)
    except ValueError as error:
        cli.refuse("sessions", error)
    return out, config


def main(argv: list[str] | None = None) -> None:
    out, config = parse_args(argv)
    started = time.perf_counter()
    print(f"generating {config.n_train_sessions:,} + {config.n_valid_sessions:,} + {config.n_test_sessions:,} sessions "
          f"over {config.n_items:,} items ...", file=sys.stderr, flush=True)
    train, valid, test = generate_sessions(config)
    print(f"writing {out} ({time.perf_counter() - started:.1f} s) ...", file=sys.stderr, flush=True)
    write_splits(dict(zip(SPLITS, (train, valid, test))), out)
    print(statistics_table(statistics(train, test)))
    print(f"wrote {', '.join(f'{name}.parquet' for name in SPLITS)} and mapping.yaml to {out} "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
