"""Progress where stderr is not a terminal (CI, nohup, a log file): a line every few seconds with the
count, rate and ETA, and one at the end; nothing when disabled."""
from __future__ import annotations

from training.progress import Progress


def test_progress_prints_count_rate_and_eta_lines_when_not_a_terminal(capsys):
    with Progress("train: epoch 1/3", total=4, unit="steps", every_s=0.0) as progress:
        progress.update(1, loss="6.500")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train: epoch 1/3: 1/4 steps (") and "loss 6.500" in lines[0] and "ETA" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("train: epoch 1/3: 1/4 steps")  # the closing line


def test_progress_is_silent_when_disabled(capsys):
    with Progress("validate", total=2, enabled=False, every_s=0.0) as progress:
        progress.update(2)
    assert capsys.readouterr().err == ""
