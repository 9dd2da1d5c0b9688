"""Seeded synthetic e-commerce events: sessions with learnable structure and every kind of side information.

What a model can learn from it (so tests can check that training learns):
- Zipf item popularity (the first item of a session and every "browse" step);
- item-to-item transitions: each item has one preferred successor, followed with
  probability `follow_prob`, so next-item accuracy well above popularity is reachable;
- items have a category (successors stay in the category) and a price drawn per category;
- each session has a user and a device; users come back for several sessions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.events import EventColumns

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
    seed: int = 0


def generate_events(config: SyntheticConfig = SyntheticConfig()) -> pd.DataFrame:
    rng = np.random.default_rng(config.seed)
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

    n_sessions = max(1, int(config.n_events / config.mean_session_length))
    lengths = 2 + rng.geometric(1.0 / (config.mean_session_length - 1.0), n_sessions) - 1
    max_length = int(lengths.max())
    items = np.full((n_sessions, max_length), -1, dtype=np.int64)
    items[:, 0] = rng.choice(n_items, n_sessions, p=popularity)
    for position in range(1, max_length):
        alive = lengths > position
        follow = rng.random(n_sessions) < config.follow_prob
        browse = rng.choice(n_items, n_sessions, p=popularity)
        step = np.where(follow, successor[items[:, position - 1]], browse)
        items[:, position] = np.where(alive, step, -1)

    session_user = rng.integers(0, config.n_users, n_sessions)
    session_start = START_TIME + np.sort(rng.integers(0, config.n_days * 86_400, n_sessions))
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
