"""`training.prepare --dask-scheduler`: on a real 2-worker Dask LocalCluster the prepared
folder equals the single-process one (every split, every time window, the categories and
the fitted statistics, missing prices filled by the same median), and a bad scheduler
argument is refused by name."""
from __future__ import annotations

import json

import math

import dask.dataframe as dd
import merlin.io
import numpy as np
import nvtabular as nvt
import pandas as pd
import pytest
from merlin.dag import postorder_iter_nodes
from merlin.schema.io.tensorflow_metadata import TensorflowMetadata

from training.data import distributed, prepared
from training import prepare
from training.data.datasets import synthetic
from training.data.events import EventsError
from training.data.parquet import read_parquet
from training.data.workflow import WorkflowOptions, _continuous


def _schema(path):
    return TensorflowMetadata.from_proto_text_file(str(path.parent), path.name).to_merlin_schema()


def _events_with_missing_prices(folder):
    """Synthetic sessions (time split with windows, context) with a tenth of the prices missing."""
    events = synthetic.generate_events(synthetic.SyntheticConfig(n_events=20_000, seed=0))
    rng = np.random.default_rng(0)
    events["price"] *= rng.lognormal(0.0, 0.1, len(events))  # per-event prices: few ties for a median to land on
    events.loc[rng.random(len(events)) < 0.1, "price"] = np.nan
    events.to_parquet(folder / "events.parquet", index=False)
    (folder / "mapping.json").write_text(json.dumps(synthetic.COLUMNS.to_dict()))
    return folder / "events.parquet", folder / "mapping.json"


def test_prepare_on_a_two_worker_dask_cluster_equals_the_single_process_run(tmp_path):
    # a continuous price with missing values (median, mean, std fitted over partitions)
    events_file, mapping = _events_with_missing_prices(tmp_path)
    common = dict(dataset=str(events_file), mapping=mapping, max_length=12)
    single = prepare.run(prepare.PrepareArgs(out=tmp_path / "single", **common))
    spread = prepare.run(prepare.PrepareArgs(out=tmp_path / "dask", dask_scheduler="local:2", **common))

    assert spread["counts"] == single["counts"]
    files = sorted(p.relative_to(tmp_path / "single") for p in (tmp_path / "single").rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path / "dask") for p in (tmp_path / "dask").rglob("*") if p.is_file()) == files
    parquet = [f for f in files if f.suffix == ".parquet"]
    assert any(f.parts[0] == prepared.WINDOWS_DIR for f in parquet) and any("categories" in f.parts for f in parquet)
    for name in parquet:  # splits, windows, categories: the same rows in the same order
        pd.testing.assert_frame_equal(read_parquet(tmp_path / "dask" / name), read_parquet(tmp_path / "single" / name),
                                      check_exact=True, obj=str(name))
    for name in (f for f in files if f.name == "schema.pbtxt"):  # tags are sets: their order in the file varies
        assert _schema(tmp_path / "dask" / name) == _schema(tmp_path / "single" / name), name

    events, _, _ = prepare.raw_events(tmp_path / "single")
    outputs = [nvt.Workflow.load(str(tmp_path / run / prepared.WORKFLOW_DIR)).transform(events) for run in ("single", "dask")]
    pd.testing.assert_frame_equal(outputs[1], outputs[0], check_exact=True)  # the same fitted statistics
    summary = json.loads((tmp_path / "dask" / "prepared.json").read_text())
    assert summary["options"]["dask_scheduler"] == "local:2"


@pytest.mark.parametrize("scheduler, named", [("local:0", "local:N"), ("tcp://127.0.0.1:9", "reachable scheduler")])
def test_a_bad_dask_scheduler_is_refused_by_name(tmp_path, monkeypatch, scheduler, named):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(EventsError, match=f"--dask-scheduler.*{named}") as error:
        prepare.run(prepare.PrepareArgs(dataset="synthetic", synthetic_events=2_000, out=tmp_path / "o", dask_scheduler=scheduler))
    assert scheduler in str(error.value)
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.partial-*"))


@pytest.mark.parametrize("transform", ["log-normalize", "normalize"])
def test_fill_median_and_z_score_are_exact_on_any_partitioning(transform):
    prices = pd.DataFrame({"price": np.random.default_rng(1).lognormal(3.0, 0.8, 10_001)})
    prices.loc[prices.index % 7 == 0, "price"] = np.nan
    fitted = []
    for partitions in (1, 4):
        workflow = nvt.Workflow(_continuous(["price"], WorkflowOptions("sid", continuous=transform), None))
        workflow.fit(merlin.io.Dataset(dd.from_pandas(prices, npartitions=partitions), cpu=True))
        fill, *_, normalize = [node.op for node in postorder_iter_nodes(workflow.output_node)
                               if hasattr(node.op, "medians") or hasattr(node.op, "means")]
        fitted.append((fill.medians["price"], normalize.means["price"], normalize.stds["price"]))
    assert fitted[0] == fitted[1], "the fitted statistics depend on the partitioning"
    filled = prices["price"].fillna(np.nanmedian(prices["price"])).to_numpy()
    values = np.log(filled.astype(np.float32) + 1) if transform == "log-normalize" else filled  # as LogOp computes
    assert fitted[0][0] == np.nanmedian(prices["price"])
    assert fitted[0][1] == math.fsum(values.astype(np.float64)) / len(values)
