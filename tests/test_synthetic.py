"""The synthetic generator: seeded, Zipf-popular, with learnable item-to-item transitions."""
from __future__ import annotations

import pandas as pd

from training.data.datasets.synthetic import COLUMNS, FIRST_ITEM_ID, SyntheticConfig, generate_events
from training.data.events import validate_events


def test_same_seed_same_events_other_seed_other_events():
    config = SyntheticConfig(n_events=5_000, seed=1)
    pd.testing.assert_frame_equal(generate_events(config), generate_events(config))
    assert not generate_events(config).equals(generate_events(SyntheticConfig(n_events=5_000, seed=2)))


def test_every_mapped_column_is_present_and_valid(synthetic_events):
    validated = validate_events(synthetic_events, COLUMNS, "synthetic")
    assert len(validated) == len(synthetic_events) > 15_000
    assert synthetic_events["item_id"].min() >= FIRST_ITEM_ID  # original ids are not codes
    assert synthetic_events.groupby("session_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    assert synthetic_events.groupby("session_id").size().min() >= 2
    assert (synthetic_events.groupby("item_id")["category"].nunique() == 1).all()


def test_popularity_is_skewed(synthetic_events):
    counts = synthetic_events["item_id"].value_counts()
    top_tenth = counts.iloc[: len(counts) // 10].sum()
    assert top_tenth / counts.sum() > 0.4


def test_next_item_is_predictable_from_the_current_item(synthetic_events):
    """The most frequent successor of an item explains far more transitions than the most popular item."""
    events = synthetic_events.sort_values(["session_id", "timestamp"])
    same_session = events["session_id"].shift(-1) == events["session_id"]
    pairs = pd.DataFrame({"item": events["item_id"], "next": events["item_id"].shift(-1)})[same_session]
    best_successor_share = pairs.groupby("item")["next"].agg(lambda n: n.value_counts().iloc[0]).sum() / len(pairs)
    popularity_share = pairs["next"].value_counts().iloc[0] / len(pairs)
    assert best_successor_share > 0.55 and best_successor_share > 2.5 * popularity_share


def _top_category_share(events: pd.DataFrame, key: pd.Series) -> float:
    """Share of events in the most frequent category of their `key` group."""
    counts = events.groupby([key, "category"]).size()
    return counts.groupby(level=0).max().sum() / len(events)


def test_the_clock_tells_what_a_session_browses():
    """With daypart_taste, each 6-hour part of the day (UTC) has its category; without, the part of
    the day says no more about the category than the catalogue's most popular category does."""
    daypart = lambda events: (events.groupby("session_id")["timestamp"].transform("min") % 86_400) // 21_600
    base = dict(n_events=20_000, n_categories=20, seed=3)
    plain = generate_events(SyntheticConfig(**base))
    timed = generate_events(SyntheticConfig(**base, daypart_taste=0.5))
    everywhere = lambda events: pd.Series(0, index=events.index)
    assert _top_category_share(plain, daypart(plain)) < _top_category_share(plain, everywhere(plain)) + 0.02
    assert _top_category_share(timed, daypart(timed)) > _top_category_share(timed, everywhere(timed)) + 0.2
    hours = (timed.groupby("session_id")["timestamp"].min() % 86_400) // 3_600
    assert hours.nunique() == 24  # sessions start around the clock


def test_a_users_earlier_sessions_tell_the_categories_of_the_last():
    """With user_taste, the 2 favourite categories of a user's earlier sessions predict their last
    session's far better than the catalogue's 2 most popular categories do; without, no better."""
    def hit_shares(events: pd.DataFrame) -> tuple[float, float]:
        last = events.groupby("user_id")["session_id"].transform("max") == events["session_id"]
        favourite = events[~last].groupby("user_id")["category"].agg(lambda c: set(c.value_counts().index[:2]))
        popular = set(events[~last]["category"].value_counts().index[:2])
        test = events[last & events["user_id"].isin(favourite.index)]
        own = test.apply(lambda e: e["category"] in favourite[e["user_id"]], axis=1).mean()
        return float(own), float(test["category"].isin(popular).mean())

    base = dict(n_events=20_000, n_users=300, n_categories=20, seed=3)
    own, popular = hit_shares(generate_events(SyntheticConfig(**base, user_taste=0.8)))
    assert own > popular + 0.3, (own, popular)
    own, popular = hit_shares(generate_events(SyntheticConfig(**base)))
    assert own < popular, (own, popular)
