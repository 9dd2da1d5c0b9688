"""Shared fixtures: paths, the synthetic event set, and prepared-data folders built once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@pytest.fixture(scope="session")
def synthetic_events():
    from training.data.datasets.synthetic import SyntheticConfig, generate_events

    return generate_events(SyntheticConfig(n_events=20_000, n_items=500, n_users=800, n_days=6, seed=7))


@pytest.fixture(scope="session")
def prepared_synthetic(tmp_path_factory):
    from training.prepare import PrepareArgs, run

    out = tmp_path_factory.mktemp("prepared") / "synthetic"
    # min_item_count 5 (since issue 14 the default is 1 outside MovieLens): rows of one event stay in the split
    run(PrepareArgs(dataset="synthetic", out=out, synthetic_events=20_000, max_length=12, min_item_count=5))
    return out


@pytest.fixture(scope="session")
def prepared_ml1m(tmp_path_factory):
    from training.prepare import PrepareArgs, run

    out = tmp_path_factory.mktemp("ml1m") / "prepared"
    run(PrepareArgs(dataset="ml-1m", out=out))
    return out


def train_run(data, out, config: str, *overrides: str):
    """A short real training run (tiny model, one epoch) for the export and serving tests."""
    import subprocess

    command = [PYTHON, "-m", "training.train", "--config", str(ROOT / "training" / "configs" / config),
               "--data", str(data), "--out", str(out), "train.epochs=1", "train.threads=1", *overrides]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def ml1m_run(prepared_ml1m, tmp_path_factory):
    """GPT-2 over ML-1M item ids, genres, year and user context; keeps the last 50 events."""
    return train_run(prepared_ml1m, tmp_path_factory.mktemp("runs") / "ml1m_gpt2", "gpt2_clm.yaml",
                     "model.max_length=50", "model.d_model=32", "model.n_layers=1", "model.n_heads=1",
                     "train.exclude_seen=true")


@pytest.fixture(scope="session")
def synthetic_runs(prepared_synthetic, tmp_path_factory):
    """Two BERT (MLM) runs over the synthetic sessions (item, category, price, device), seeds 0 and 1."""
    folder = tmp_path_factory.mktemp("runs")
    return [train_run(prepared_synthetic, folder / f"synthetic_bert_{seed}", "bert_mlm.yaml", "model.d_model=16",
                      "model.n_layers=1", "model.n_heads=1", f"train.seed={seed}") for seed in (0, 1)]


def client_spec(served: dict, item: str, rows: int):
    """The client's RequestSpec for a transform spec, as the exported ensemble's metadata and config would
    give it: `item` the item column, `rows` sessions a request; with the spec's history inputs if it has them."""
    from client.sessions import EVENT_COUNT, K, RequestSpec, _datatype
    from export.configs import WIRE

    datatypes = {raw["name"]: _datatype(WIRE[raw["dtype"]]) for raw in served["inputs"]}
    history, session_aware = served.get("history"), {}
    if history:
        datatypes.update({history["inputs"]["item"]: datatypes[item], history["inputs"]["time"]: "INT64",
                          history["inputs"]["count"]: "INT32"})
        session_aware = dict(user_column=history["user_column"], session_gap_s=history["session_gap_s"],
                             history_events=history["events"])
    datatypes.update({EVENT_COUNT: "INT32", K: "INT32"})
    return RequestSpec(datatypes=datatypes, max_batch_size=rows, sequence_key=served["sequence_key"],
                       time_column=served["time_column"], item_column=item,
                       context_columns=tuple(o["source"] for o in served["outputs"] if o["kind"] == "context"),
                       max_events=served["max_events"], max_k=1, exclude_seen=False,
                       max_request_events=rows * served["max_events"], **session_aware)
