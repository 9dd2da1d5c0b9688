"""The `all` protocol (session-based recommendation): every next event of every row is predicted
from the events before it; for causal bodies in one forward per sequence, equal to scoring each
prefix on its own."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from tests.conftest import PYTHON, ROOT


@pytest.fixture(scope="module")
def test_rows(prepared_synthetic):
    from training.batches import SequenceData
    from training.model.features import feature_spec

    return SequenceData(prepared_synthetic, "test", feature_spec(prepared_synthetic))


def _model(spec, architecture: str, task: str, repeat_window: int = 0):
    from training.model.configuration import ModelConfig
    from training.model.next_item import NextItemModel

    torch.manual_seed(0)
    model = NextItemModel(spec, ModelConfig(architecture=architecture, task=task, d_model=16, n_layers=1, n_heads=1,
                                            max_length=12, dropout=0.0, repeat_window=repeat_window)).eval()
    if repeat_window:  # large enough to reorder the rankings
        with torch.no_grad():
            model.repeat_weights.copy_(torch.linspace(3.0, 0.5, repeat_window))
    return model


def test_prefix_rows_are_every_next_event_with_the_events_before_it(test_rows):
    prefixes = test_rows.prefixes()
    assert len(prefixes) == int((test_rows.lengths - 1).sum())
    rows = np.repeat(np.arange(len(test_rows)), test_rows.lengths - 1)
    for index in (0, 1, len(prefixes) // 2, len(prefixes) - 1):
        row, length = rows[index], prefixes.lengths[index]
        whole = test_rows.batch(np.array([row]))
        prefix = prefixes.batch(np.array([index]), drop_last_event=True)
        assert prefix[test_rows.spec.item][0].tolist() == whole[test_rows.spec.item][0, : length - 1].tolist()
        assert int(prefix["targets"][0]) == int(whole[test_rows.spec.item][0, length - 1])
        for name in test_rows.spec.context_columns:
            assert prefix[name][0] == whole[name][0]


@pytest.mark.parametrize("architecture,task,one_forward,repeat_window", [
    ("gpt2", "clm", True, 0), ("llama", "clm", True, 0), ("bert", "mlm", False, 0), ("gpt2", "clm", True, 4)])
def test_all_positions_equal_scoring_each_prefix_alone(test_rows, architecture, task, one_forward, repeat_window):
    from training.evaluate import _one_forward_per_sequence, evaluate, evaluate_scores

    model = _model(test_rows.spec, architecture, task, repeat_window)
    assert _one_forward_per_sequence(model, test_rows) == one_forward
    exclude_seen = not repeat_window  # the repeat score ranks the seen items
    with torch.no_grad():
        alone = evaluate_scores(model.next_item_scores, test_rows, (10, 20), exclude_seen=exclude_seen, batch_size=1, protocol="all")
    together = evaluate(model, test_rows, (10, 20), exclude_seen=exclude_seen, batch_size=64, protocol="all")
    assert together == pytest.approx(alone, abs=1e-6)  # seen items: the prefix's own (a later event may be the answer)
    last = evaluate(model, test_rows, (10, 20), exclude_seen=exclude_seen, batch_size=64, protocol="last")
    assert last != pytest.approx(together, abs=1e-6)  # more predictions than the last events


def test_evaluate_command_takes_the_protocol_and_refuses_another(prepared_synthetic, tmp_path):
    from tests.conftest import train_run

    run = train_run(prepared_synthetic, tmp_path / "run", "gpt2_clm.yaml", "model.d_model=16", "model.n_layers=1",
                    "model.n_heads=1", "model.max_length=12", "train.eval_protocol=all")
    saved = json.loads((run / "metrics.json").read_text())["test"]
    shown = subprocess.run([PYTHON, "-m", "training.evaluate", "--run", str(run), "--protocol", "all"],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    printed = json.loads(shown.stdout)
    assert printed["protocol"] == "all" and printed["ndcg@10"] == pytest.approx(saved["ndcg@10"], abs=1e-5)
    bad = subprocess.run([PYTHON, "-m", "training.train", "--config", str(ROOT / "training/configs/gpt2_clm.yaml"),
                          "--data", str(prepared_synthetic), "--out", str(tmp_path / "bad"), "train.eval_protocol=every"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "train.eval_protocol: expected one of ['last', 'all'], got 'every'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
