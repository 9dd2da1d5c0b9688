"""`RecommenderClient`: events in, the k best items per session out, over Triton gRPC or HTTP.

The ensemble's contract (model_repository/README.md) is read from the server on first use;
requests are built by `client.sessions`. Only UNAVAILABLE answers and connection errors are
retried (exponential backoff); a refused request (INVALID_ARG) is raised at once.
`recommend_async` keeps at most `max_in_flight` requests open; on the first error it cancels
the others, waits until they have ended, closes its channel and raises that error.
"""
from __future__ import annotations

import asyncio
import importlib
import time
from dataclasses import dataclass

import numpy as np
from tritonclient.utils import InferenceServerException

from client.sessions import RequestSpec, SessionBatch, session_batches
from model_repository.contract import DEFAULT_NAME, OUTPUTS

PROTOCOLS = ("grpc", "http")
READY_POLL_S = 0.2  # how often wait_ready asks again
MAX_IN_FLIGHT = 8  # recommend_async's requests open at once: enough for the server's dynamic batcher


@dataclass(frozen=True)
class Recommendation:
    item_ids: list  # original item ids, best first (text ids as str)
    scores: np.ndarray  # float32, one per item


def is_unavailable(error: BaseException) -> bool:
    """Worth retrying: the server or model is not there yet (gRPC UNAVAILABLE, HTTP 503, no connection)."""
    if isinstance(error, InferenceServerException):
        status = str(error.status() or "")
        return "UNAVAILABLE" in status or status == "503"
    return isinstance(error, OSError) and not isinstance(error, TimeoutError)  # refused, reset (aiohttp's too)


def is_refused(error: BaseException) -> bool:
    """Nothing listens at the address (gRPC reports it as UNAVAILABLE, HTTP as ConnectionRefusedError)."""
    return isinstance(error, ConnectionRefusedError) or "connection refused" in str(error).lower()


class NoSuchModel(LookupError):
    """The server is up and does not have the model asked for."""


class RecommenderClient:
    def __init__(self, url: str, protocol: str = "grpc", model: str = DEFAULT_NAME,
                 timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 0.2,
                 max_in_flight: int = MAX_IN_FLIGHT):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {list(PROTOCOLS)}, got {protocol!r}")
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, (int, np.integer)) or max_in_flight < 1:
            raise ValueError(f"max_in_flight: expected an integer >= 1 (requests open at once), got {max_in_flight!r}")
        self.url, self.protocol, self.model, self.max_in_flight = url, protocol, model, int(max_in_flight)
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._triton = importlib.import_module(f"tritonclient.{protocol}")  # only the protocol in use is imported
        if protocol == "grpc":
            self._client = self._triton.InferenceServerClient(url)
        else:
            self._client = self._triton.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s)
        self._spec: RequestSpec | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RecommenderClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll until the server and the model are ready. ConnectionRefusedError at once when
        nothing listens at the address, NoSuchModel at once when the live server has no such model,
        TimeoutError after `timeout_s` otherwise (the server or the model still starting)."""
        deadline, last_error = time.monotonic() + timeout_s, None
        while True:
            try:
                if self._client.is_server_ready(**self._timeout()):
                    if self._client.is_model_ready(self.model, **self._timeout()):
                        return
                    self._check_model_exists()
            except NoSuchModel:
                raise
            except (InferenceServerException, OSError) as error:
                if is_refused(error):
                    raise ConnectionRefusedError(f"nothing listens at {self.url} ({self.protocol}): start the server "
                                                 f"(python -m serve --repo REPO) or pass its --url") from None
                last_error = error
            if time.monotonic() >= deadline:
                raise TimeoutError(f"model {self.model!r} at {self.url} ({self.protocol}) not ready after "
                                   f"{timeout_s:g}s" + (f": {last_error}" if last_error else ""))
            time.sleep(READY_POLL_S)

    def _check_model_exists(self) -> None:
        index = self._client.get_model_repository_index(**self._json())
        entries = index.get("models", []) if isinstance(index, dict) else index
        names = sorted({entry["name"] for entry in entries})
        if self.model not in names:
            raise NoSuchModel(f"model {self.model!r}: no such model at {self.url}; the server has {names}")

    # --- the contract ----------------------------------------------------------------------
    @property
    def spec(self) -> RequestSpec:
        """The ensemble's inputs and parameters, read from the server once."""
        if self._spec is None:
            metadata = self._retrying(lambda: self._client.get_model_metadata(self.model, **self._json()))
            config = self._retrying(lambda: self._client.get_model_config(self.model, **self._json()))
            self._spec = self._read_spec(metadata, config)
        return self._spec

    def _read_spec(self, metadata: dict, config: dict) -> RequestSpec:
        return RequestSpec.from_server(metadata, config["config"] if self.protocol == "grpc" else config)

    # --- recommending ----------------------------------------------------------------------
    def recommend(self, events, k: int = 10) -> dict:
        """Events (DataFrame or dict of arrays) -> {session_id: Recommendation}, sessions in input order."""
        answers = {}
        for batch in session_batches(events, self.spec, k):
            result = self._retrying(lambda: self._client.infer(
                self.model, self._infer_inputs(self._triton, batch), outputs=self._outputs(self._triton),
                **self._timeout()))
            answers.update(_recommendations(batch, result))
        return answers

    async def recommend_async(self, events, k: int = 10) -> dict:
        """As `recommend`, with up to `max_in_flight` batches in flight over an asyncio client.
        The first error is raised once every other request has been cancelled or has ended; the
        asyncio client is this call's own, so this object stays usable."""
        aio = importlib.import_module(f"tritonclient.{self.protocol}.aio")
        if self.protocol == "grpc":
            client = aio.InferenceServerClient(self.url)
        else:
            client = aio.InferenceServerClient(self.url, conn_timeout=self.timeout_s)
        async with client:
            if self._spec is None:
                metadata = await self._retrying_async(lambda: client.get_model_metadata(self.model, **self._json()))
                config = await self._retrying_async(lambda: client.get_model_config(self.model, **self._json()))
                self._spec = self._read_spec(metadata, config)
            batches = session_batches(events, self._spec, k)

            def send(batch: SessionBatch):
                return lambda: self._retrying_async(lambda: client.infer(
                    self.model, self._infer_inputs(aio, batch), outputs=self._outputs(aio), **self._timeout()))

            results = await bounded_gather([send(batch) for batch in batches], self.max_in_flight)
        answers = {}
        for batch, result in zip(batches, results):
            answers.update(_recommendations(batch, result))
        return answers

    # --- protocol details ------------------------------------------------------------------
    def _timeout(self) -> dict:
        """gRPC takes a timeout per call; HTTP clients got theirs at construction."""
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def _json(self) -> dict:
        return {"as_json": True, **self._timeout()} if self.protocol == "grpc" else {}

    def _infer_inputs(self, triton, batch: SessionBatch) -> list:
        tensors = []
        for name, values in batch.inputs.items():
            tensor = triton.InferInput(name, list(values.shape), self.spec.datatypes[name])
            tensor.set_data_from_numpy(values)
            tensors.append(tensor)
        return tensors

    @staticmethod
    def _outputs(triton) -> list:
        return [triton.InferRequestedOutput(name) for name in OUTPUTS]

    def _retrying(self, call):
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Exception as error:
                if attempt == self.retries or not is_unavailable(error):
                    raise
            time.sleep(self.backoff_s * 2 ** attempt)

    async def _retrying_async(self, call):
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except Exception as error:
                if attempt == self.retries or not is_unavailable(error):
                    raise
            await asyncio.sleep(self.backoff_s * 2 ** attempt)


async def bounded_gather(calls: list, limit: int) -> list:
    """Await `calls` (coroutine functions), at most `limit` at a time; their results in order.
    On the first error the rest are cancelled and awaited to their end, then that error is raised."""
    results, errors, queue = [None] * len(calls), [], iter(enumerate(calls))
    if not calls:
        return results

    async def worker() -> None:
        for index, call in queue:  # one shared iterator: each call is taken by one worker
            try:
                results[index] = await call()
            except BaseException as error:
                errors.append(error)  # in the order they happened: the first one is raised
                raise

    workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(calls)))]
    try:
        await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    finally:  # also when this call is cancelled: no worker outlives it
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    first = next((error for error in errors if not isinstance(error, asyncio.CancelledError)), None)
    if first is not None:
        raise first
    return results


def _recommendations(batch: SessionBatch, result) -> dict:
    item_ids, scores = (result.as_numpy(name) for name in OUTPUTS)
    return {
        session_id: Recommendation(
            item_ids=[item.decode() if isinstance(item, bytes) else item for item in item_ids[row].tolist()],
            scores=np.asarray(scores[row], dtype=np.float32),
        )
        for row, session_id in enumerate(batch.session_ids)
    }
