"""Seeded synthetic e-commerce events: sessions with learnable structure and every kind of side information.

What a model can learn from it (so tests can check that training learns):
- Zipf item popularity (the first item of a session and every "browse" step);
- item-to-item transitions: each item has one preferred successor, followed with
  probability `follow_prob`, so next-item accuracy well above popularity is reachable;
- items have a category (successors stay in the category) and a price drawn per category;
- each session has a user and a device; users come back for several sessions;
- with `user_taste` > 0 (session-aware data), users have favourite categories that drift: a
  session's first item and that share of its browse steps come from the user's current
  favourites (popularity-weighted), and before each of a user's sessions one favourite is
  replaced with probability `taste_drift`; a user's earlier sessions then tell what the next
  session browses, which the session alone tells only after its first events;
- with `daypart_taste` > 0 (time carries signal), each of the day's four 6-hour parts (UTC) has a
  category, and that share of a session's first item and browse steps comes from the category of
  the hour the session starts in (before user taste takes its share of the rest): the clock then
  tells what a session browses, which item ids alone tell only after its first events.

    python -m training.data.datasets.synthetic --out DIR [--events N] [--set FIELD=VALUE ...]

writes DIR/events.parquet and DIR/mapping.yaml for `python -m training.prepare --dataset
DIR/events.parquet --mapping DIR/mapping.yaml ...` (e.g. `--set user_taste=0.8 --set n_users=1000`
with `--view session-aware`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from training import cli
from training.data.events import EventColumns

COLUMNS = EventColumns(
    session="session_id",
    user="user_id",
    item="item_id",
    time="timestamp",
    categorical=("category",),
    continuous=("price",),
    context_categorical=("device",),
)
DEVICES = np.array(["mobile", "desktop", "tablet", "app"])
FIRST_ITEM_ID = 100_000  # original item ids are not their codes: serving must map codes back
START_TIME = 1_700_000_000  # 2023-11-14, unix seconds
DAYPARTS = 4  # parts of the day with their own category (daypart_taste)


@dataclass(frozen=True)
class SyntheticConfig:
    n_events: int = 100_000  # approximate: whole sessions are generated
    n_items: int = 2_000
    n_users: int = 5_000
    n_categories: int = 20
    mean_session_length: float = 8.0  # geometric lengths, at least 2 events
    zipf_exponent: float = 1.1  # item popularity ~ rank^-exponent
    follow_prob: float = 0.6  # chance the next item is the current item's preferred successor
    n_days: int = 14  # time span the sessions start in
    user_taste: float = 0.0  # share of first items and browse steps from the user's favourite categories (0: none)
    taste_categories: int = 2  # favourite categories per user
    taste_drift: float = 0.1  # chance that one favourite is replaced before each of a user's sessions
    daypart_taste: float = 0.0  # share of first items and browse steps from the category of the session's time of day
    seed: int = 0


def _check(config: SyntheticConfig) -> None:
    for name in ("n_events", "n_items", "n_users", "n_categories", "n_days", "taste_categories"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name}: expected 1 or more, got {getattr(config, name)}")
    for name in ("follow_prob", "user_taste", "taste_drift", "daypart_taste"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"{name}: expected a share in [0, 1], got {getattr(config, name)}")
    if config.taste_categories > config.n_categories:
        raise ValueError(f"taste_categories: expected at most n_categories ({config.n_categories}), got {config.taste_categories}")
    if config.mean_session_length <= 1.0:
        raise ValueError(f"mean_session_length: expected above 1, got {config.mean_session_length}")


def _favourites(rng: np.random.Generator, config: SyntheticConfig, session_user: np.ndarray) -> np.ndarray:
    """Each session's favourite categories [sessions, taste_categories]: its user's, drifting one
    category at a time over the user's sessions (sessions are numbered in time order)."""
    current = np.stack([rng.choice(config.n_categories, config.taste_categories, replace=False) for _ in range(config.n_users)])
    drifts = rng.random(len(session_user)) < config.taste_drift
    slots = rng.integers(0, config.taste_categories, len(session_user))
    picks = rng.integers(0, config.n_categories, len(session_user))
    out = np.empty((len(session_user), config.taste_categories), dtype=np.int64)
    for session, user in enumerate(session_user):
        if drifts[session] and picks[session] not in current[user]:
            current[user, slots[session]] = picks[session]
        out[session] = current[user]
    return out


def _taste_sampler(item_category: np.ndarray, popularity: np.ndarray):
    """draw(categories [n], uniforms [n] in [0, 1)) -> an item of each category, popularity-weighted
    (one search over every item keyed category + its cumulative share within the category)."""
    order = np.argsort(item_category, kind="stable")
    categories, weights = item_category[order], popularity[order]
    totals = np.bincount(categories, weights=weights)
    below = np.cumsum(weights) - np.r_[0.0, np.cumsum(totals)][categories]  # the category's mass up to each item
    keys = categories + below / totals[categories]

    def draw(wanted: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        return order[np.minimum(np.searchsorted(keys, wanted + uniforms, side="right"), len(order) - 1)]

    return draw


@dataclass(frozen=True)
class Catalogue:
    """What the generator draws items from (item codes 0..n_items-1; ids are codes + FIRST_ITEM_ID)."""
    category: np.ndarray  # [items] category code
    price: np.ndarray  # [items]
    popularity: np.ndarray  # [items] share of popularity draws, sums to 1
    successor: np.ndarray  # [items] each item's preferred successor, of its category


def catalogue(config: SyntheticConfig, rng: np.random.Generator) -> Catalogue:
    """The items of `config`, drawn first from the generator's main stream."""
    n_items = config.n_items
    item_category = rng.integers(0, config.n_categories, n_items)
    category_price = rng.lognormal(3.0, 0.8, config.n_categories)
    item_price = (category_price[item_category] * rng.lognormal(0.0, 0.25, n_items)).round(2)
    popularity = 1.0 / np.arange(1, n_items + 1) ** config.zipf_exponent
    popularity = rng.permutation(popularity / popularity.sum())
    # each item's preferred successor: a popular-weighted item of the same category
    successor = np.empty(n_items, dtype=np.int64)
    for category in range(config.n_categories):
        members = np.flatnonzero(item_category == category)
        if len(members):
            weights = popularity[members] / popularity[members].sum()
            successor[members] = rng.choice(members, size=len(members), p=weights)
    return Catalogue(item_category, item_price, popularity, successor)


def session_count(config: SyntheticConfig) -> int:
    return max(1, int(config.n_events / config.mean_session_length))


def daypart_clock(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(sessions' start times in order, each day part's category, the stream daypart_taste goes on
    drawing from): the clock's own stream, so the other draws stay as without it."""
    clock_rng = np.random.default_rng([config.seed, 2])
    starts = START_TIME + np.sort(clock_rng.integers(0, config.n_days * 86_400, session_count(config)))
    return starts, clock_rng.choice(config.n_categories, DAYPARTS, replace=False), clock_rng


def daypart_of(times: np.ndarray) -> np.ndarray:
    """The part of the day (0..DAYPARTS-1, UTC) of unix seconds."""
    return (np.asarray(times) % 86_400) // (86_400 // DAYPARTS)


def generate_events(config: SyntheticConfig = SyntheticConfig()) -> pd.DataFrame:
    rng = np.random.default_rng(config.seed)
    n_items = config.n_items
    items_of = catalogue(config, rng)
    item_category, item_price, popularity, successor = items_of.category, items_of.price, items_of.popularity, items_of.successor

    n_sessions = session_count(config)
    lengths = 2 + rng.geometric(1.0 / (config.mean_session_length - 1.0), n_sessions) - 1
    max_length = int(lengths.max())
    items = np.full((n_sessions, max_length), -1, dtype=np.int64)
    items[:, 0] = rng.choice(n_items, n_sessions, p=popularity)
    draw = _taste_sampler(item_category, popularity)
    steers = []  # each replaces its share of the drawn items, in order (a later one takes from the earlier's)
    if config.user_taste > 0:  # its own stream: at user_taste 0 the events are those of before
        taste_rng = np.random.default_rng([config.seed, 1])
        taste_users = taste_rng.integers(0, config.n_users, n_sessions)
        favourites = _favourites(taste_rng, config, taste_users)

        def taste(picked: np.ndarray) -> np.ndarray:
            use = taste_rng.random(n_sessions) < config.user_taste
            category = favourites[np.arange(n_sessions), taste_rng.integers(0, config.taste_categories, n_sessions)]
            return np.where(use, draw(category, taste_rng.random(n_sessions)), picked)

        steers.append(taste)
    starts = None
    if config.daypart_taste > 0:  # its own stream for the start times, known before the items
        starts, daypart_category, clock_rng = daypart_clock(config)
        session_category = daypart_category[daypart_of(starts)]

        def daypart(picked: np.ndarray) -> np.ndarray:
            use = clock_rng.random(n_sessions) < config.daypart_taste
            return np.where(use, draw(session_category, clock_rng.random(n_sessions)), picked)

        steers.append(daypart)

    def steer(picked: np.ndarray) -> np.ndarray:
        for one in steers:
            picked = one(picked)
        return picked

    items[:, 0] = steer(items[:, 0])
    for position in range(1, max_length):
        alive = lengths > position
        follow = rng.random(n_sessions) < config.follow_prob
        browse = steer(rng.choice(n_items, n_sessions, p=popularity))
        step = np.where(follow, successor[items[:, position - 1]], browse)
        items[:, position] = np.where(alive, step, -1)

    session_user = rng.integers(0, config.n_users, n_sessions)
    if config.user_taste > 0:
        session_user = taste_users
    session_start = START_TIME + np.sort(rng.integers(0, config.n_days * 86_400, n_sessions))
    if starts is not None:
        session_start = starts
    session_device = rng.integers(0, len(DEVICES), n_sessions)
    gaps = rng.exponential(45.0, (n_sessions, max_length)).astype(np.int64) + 1
    gaps[:, 0] = 0
    times = session_start[:, None] + np.cumsum(gaps, axis=1)

    category_names = np.array([f"cat{c:02d}" for c in range(config.n_categories)])
    mask = items >= 0
    session_index = np.broadcast_to(np.arange(n_sessions)[:, None], items.shape)[mask]
    event_items = items[mask]
    return pd.DataFrame(
        {
            "session_id": session_index.astype(np.int64),
            "user_id": session_user[session_index].astype(np.int64),
            "item_id": (event_items + FIRST_ITEM_ID).astype(np.int64),
            "timestamp": times[mask].astype(np.int64),
            "category": category_names[item_category[event_items]],
            "price": item_price[event_items],
            "device": DEVICES[session_device[session_index]],
        }
    )


def mapping_yaml() -> str:
    return "".join(f"{role}: {value}\n" if isinstance(value, str) else f"{role}: [{', '.join(value)}]\n"
                   for role, value in COLUMNS.to_dict().items() if value)


def config_from_settings(settings: list[str]) -> SyntheticConfig:
    """The config of `FIELD=VALUE` settings over the defaults; ValueError names a bad one."""
    types = {field.name: field.type for field in fields(SyntheticConfig)}
    values = {}
    for setting in settings:
        field, equals, text = setting.partition("=")
        if not equals or field not in types:
            raise ValueError(f"--set {setting}: expected FIELD=VALUE with FIELD one of {sorted(types)}, got {field!r}")
        try:
            values[field] = int(text) if types[field] == "int" else float(text)
        except ValueError:
            raise ValueError(f"--set {setting}: expected a{'n integer' if types[field] == 'int' else ' number'}, got {text!r}") from None
    config = replace(SyntheticConfig(), **values)
    _check(config)
    return config


def parse_args(argv: list[str] | None) -> tuple[Path, SyntheticConfig]:
    parser = cli.Parser(prog="python -m training.data.datasets.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for events.parquet and mapping.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a SyntheticConfig field, e.g. --set n_events=200000 --set user_taste=0.8")
    args = parser.parse_args(argv)
    try:
        config = config_from_settings(args.set)
    except ValueError as error:
        cli.refuse("synthetic", error)
    return args.out, config


def main(argv: list[str] | None = None) -> None:
    out, config = parse_args(argv)
    events = generate_events(config)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".events.parquet.partial"
    events.to_parquet(tmp, index=False)
    tmp.rename(out / "events.parquet")
    (out / "mapping.yaml").write_text(mapping_yaml())
    print(f"synthetic: {len(events):,} events, {events['session_id'].nunique():,} sessions, "
          f"{events['user_id'].nunique():,} users -> {out}/events.parquet, mapping.yaml", file=sys.stderr)


if __name__ == "__main__":
    main()
