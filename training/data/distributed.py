"""Preprocessing on a Dask cluster: `python -m training.prepare ... --dask-scheduler ADDRESS|local:N`.

The workflow's fit and transforms run on the cluster; reading, filtering and splitting the
events stay in the calling process.

The fitted workflow and the prepared splits equal the single-process run's: statistics are
fitted over partitions of the training events, and every partition holds whole sequences
(events go to partitions by a hash of the sequence key), so SequenceGroupby never sees half
a sequence; the grouped rows are put back in key order, as one process sorts them. Workers
must be able to import `training` (a LocalCluster's workers inherit this process's path;
remote workers need hf4rec installed). On multi-GPU nodes, start a
`dask_cuda.LocalCUDACluster` (one worker per GPU) and pass its scheduler address.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dask
import dask.dataframe as dd
import merlin.io
import nvtabular as nvt
import pandas as pd
from merlin.core.utils import set_dask_client

from training.data.events import EventsError

LOCAL = "local:"  # --dask-scheduler local:N starts N single-threaded worker processes here
CONNECT_TIMEOUT_S = 30  # how long to keep trying a scheduler address


@contextmanager
def cluster(scheduler: str | None) -> Iterator[int]:
    """Connect to (or start) the cluster and make it the one NVTabular uses; yields how many
    partitions to cut the events into (1 without a cluster: the single-process path)."""
    if not scheduler:
        yield 1
        return
    from distributed import Client, LocalCluster

    if scheduler.startswith(LOCAL):
        workers = scheduler[len(LOCAL):]
        if not workers.isdigit() or int(workers) < 1:
            raise EventsError(f"--dask-scheduler: expected local:N with N >= 1 workers, got {scheduler!r}")
        client = Client(LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                     dashboard_address=None))
    else:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except OSError as error:
            raise EventsError(f"--dask-scheduler: expected a reachable scheduler address, got {scheduler!r} ({error})")
    try:
        set_dask_client(client)
        yield 2 * max(len(client.scheduler_info()["workers"]), 1)
    finally:
        set_dask_client(None)
        cluster_ = getattr(client, "cluster", None)
        client.close()
        if cluster_ is not None:
            cluster_.close()


def by_sequence(events: pd.DataFrame, key: str, partitions: int) -> merlin.io.Dataset:
    """Events as a Dataset of `partitions` parts, every sequence whole in one of them."""
    if partitions == 1:
        return merlin.io.Dataset(events, cpu=True)
    part = pd.util.hash_pandas_object(events[key], index=False).to_numpy() % partitions
    pieces = [dask.delayed(events[part == index]) for index in range(partitions)]
    return merlin.io.Dataset(dd.from_delayed(pieces, meta=events.iloc[:0]), cpu=True)


def transform(workflow: nvt.Workflow, events: pd.DataFrame, key: str, partitions: int) -> pd.DataFrame:
    """`workflow.transform(events)`, over the cluster's partitions when there is one."""
    if partitions == 1:
        return workflow.transform(events)
    grouped = workflow.transform(by_sequence(events, key, partitions)).to_ddf().compute()
    return grouped.sort_values(key, kind="stable").reset_index(drop=True)
