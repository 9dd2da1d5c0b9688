"""Reading parquet in a command leaves the process to exit cleanly (training/data/parquet.py)."""
import subprocess

import numpy as np
import pandas as pd

from tests.conftest import PYTHON, ROOT
from training.data.parquet import read_parquet

RUNS = 16  # through pandas' file object about a quarter of the runs aborted here: all 16 clean by chance is ~1%


def test_a_process_that_read_parquet_exits_cleanly_every_time(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"session_id": np.arange(1_000),
                          "item_id/list": [rng.integers(0, 2_000, rng.integers(2, 9)) for _ in range(1_000)]})
    frame.to_parquet(tmp_path / "sessions.parquet")
    script = ("import sys; from training.data.parquet import read_parquet; "
              "print(len(read_parquet(sys.argv[1], columns=['session_id', 'item_id/list'])))")
    failures = []
    for _ in range(RUNS):
        run = subprocess.run([PYTHON, "-c", script, str(tmp_path / "sessions.parquet")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0 or run.stdout.strip() != "1000":
            failures.append((run.returncode, run.stderr.strip()[-200:]))
    assert not failures, f"{len(failures)} of {RUNS} runs failed: {failures[:3]}"


def test_it_reads_what_pandas_reads(tmp_path):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None], "c": [[1, 2], [], [3]]})
    frame.to_parquet(tmp_path / "f.parquet")
    (tmp_path / "folder").mkdir()
    frame.to_parquet(tmp_path / "folder" / "part_0.parquet")
    for path in (tmp_path / "f.parquet", tmp_path / "folder"):
        got, want = read_parquet(path), pd.read_parquet(path)
        pd.testing.assert_frame_equal(got.drop(columns="c"), want.drop(columns="c"))
        assert [list(x) for x in got["c"]] == [list(x) for x in want["c"]]
    assert list(read_parquet(tmp_path / "f.parquet", columns=["b"]).columns) == ["b"]
