"""Reference recommenders that a trained model must beat, scored by training.evaluate on the
same rows, targets and seen-item exclusion as the model:

- most popular (popularity.py): items ranked by their count in the training split;
- first-order transitions (rules.py): the most frequent successors in training of the row's last
  item (equal counts: the more popular first), then the most popular items;
- sequential rules (SR, Ludewig & Jannach; rules.py): the items that followed the last item
  within 10 events in training, weighted 1/distance, 20 rules per item, then the most popular;
- session kNN (V-SkNN; knn.py): the items of the 100 training sessions most similar to the row
  (linear decay over its last 10 events, cosine) among the 500 most recent sharing an item;
- VSTAN (knn.py): STAN's position and recency weights with V-SkNN's, session-rec's defaults.

    python -m training.baselines --data PREPARED [--split test] [--protocol last|all] [--exclude-seen] [--baselines a,b]

Each baseline is a scorer: a batch (as SequenceData.batches gives it, targets removed) ->
scores [rows, catalog]; ties are broken towards the lower code, as serving does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data import prepared
from training.baselines.knn import decay_weights, session_knn, vstan
from training.baselines.popularity import Scorer, most_popular, popularity_scores
from training.baselines.rules import first_order_transitions, rule_weights, sequential_rules
from training.batches import SequenceData
from training.evaluate import evaluate_scores

BASELINES = {"most_popular": most_popular, "transitions": first_order_transitions, "sequential_rules": sequential_rules,
             "session_knn": session_knn, "vstan": vstan}
BY_RECENCY = {"session_knn", "vstan"}  # sample the most recent training sessions: need their times

__all__ = ["BASELINES", "Scorer", "baseline_metrics", "baseline_names", "decay_weights", "first_order_transitions", "fit_baseline",
           "most_popular", "popularity_scores", "rule_weights", "sequential_rules", "session_knn",
           "session_start_times", "vstan"]


def baseline_names(text: str) -> list[str]:
    """The comma-separated baseline names of an option; ValueError naming the unknown ones."""
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: expected names of {list(BASELINES)}, got {unknown}")
    return names


def fit_baseline(name: str, train: SequenceData, session_times: np.ndarray | None = None) -> Scorer:
    """The named baseline fitted on `train`; `session_times`: each training row's session start
    (recency-sampling baselines; None: the row order is taken as the time order)."""
    return BASELINES[name](train, session_times=session_times) if name in BY_RECENCY else BASELINES[name](train)


def session_start_times(prepared_dir: Path, train: SequenceData) -> np.ndarray:
    """Each row of the prepared training split's session start (unix s): its column tagged TIME."""
    from merlin.schema import Tags

    from training.model.features import read_schema

    column = read_schema(prepared_dir, "train").select_by_tag(Tags.TIME).column_names[0]
    return prepared.read_split(prepared_dir, "train")[column].to_numpy()[train.rows]


def baseline_metrics(train: SequenceData, data: SequenceData, ks, exclude_seen: bool = False, batch_size: int = 512,
                     protocol: str = "last", names=("most_popular", "transitions"),
                     session_times: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """{name: metrics} of the named baselines on `data`, fitted on `train`."""
    return {name: evaluate_scores(fit_baseline(name, train, session_times), data, ks, exclude_seen, batch_size, protocol)
            for name in names}
