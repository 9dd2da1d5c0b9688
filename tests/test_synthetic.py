"""The synthetic generator: seeded, Zipf-popular, with learnable item-to-item transitions."""
from __future__ import annotations

import pandas as pd

from training.datasets.synthetic import COLUMNS, FIRST_ITEM_ID, SyntheticConfig, generate_events
from training.events import validate_events


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
