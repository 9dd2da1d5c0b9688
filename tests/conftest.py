"""Shared fixtures: paths, the synthetic event set, and prepared-data folders built once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@pytest.fixture(scope="session")
def synthetic_events():
    from training.datasets.synthetic import SyntheticConfig, generate_events

    return generate_events(SyntheticConfig(n_events=20_000, n_items=500, n_users=800, n_days=6, seed=7))


@pytest.fixture(scope="session")
def prepared_synthetic(tmp_path_factory):
    from training.prepare import PrepareArgs, run

    out = tmp_path_factory.mktemp("prepared") / "synthetic"
    run(PrepareArgs(dataset="synthetic", out=out, synthetic_events=20_000, max_length=12))
    return out
