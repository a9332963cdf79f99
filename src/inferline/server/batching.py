"""Adaptive batching: concurrent requests to one model version merged into one `predict` call.

On for a model version whose settings have `max_batch_size > 1` and `max_batch_time > 0`
(MLServer's keys and units: a number of requests, and seconds). Requests that can share a call
wait in a batch; the batch goes to the runtime when it holds `max_batch_size` requests or when
`max_batch_time` has passed since its FIRST request arrived, whichever comes first. Several
batches can be in flight at once.

Where MLServer's batcher is known to go wrong, this one is meant to be invisible to callers:

- only requests that can be merged share a batch: same inputs (names, datatypes, shapes after the
  first dimension, tensor parameters, in the same order), equal request parameters and
  compatible requested outputs. Any other request waits in a batch of its own kind;
- each caller gets exactly its own rows, and the outputs IT asked for (the runtime is asked for
  the union of what the batch asked for); the data plane then fills in its `id`;
- when the merged call fails, the batch is asked again one request at a time, so only a bad
  request gets an error;
- a runtime whose answer does not have one row per input row (a summary over the whole batch)
  cannot be split: the batch is answered one request at a time and batching is switched off for
  that model version, with a warning. A summary that happens to have as many entries as the
  batch has rows cannot be told apart from rows, so runtimes that buffer or summarise (drift,
  outlier, explainer) set `Runtime.batchable = False` and are never batched.

Every batch's size (in requests) is observed in the `model_infer_batch_size` histogram.
"""

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import orjson

from inferline import metrics
from inferline.protocol.errors import InferenceError, ModelLoadError, ModelNotReady
from inferline.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestedOutput,
    Tensor,
)
from inferline.runtimes.base import Runtime
from inferline.runtimes.settings import ModelSettings

log = logging.getLogger(__name__)


def batcher_for(settings: ModelSettings, runtime: Runtime) -> "AdaptiveBatcher | None":
    """The batcher a model version is served through, or None when batching is off for it."""
    size, budget = settings.max_batch_size, settings.max_batch_time
    if size < 0 or budget < 0:
        raise ModelLoadError(
            f"model '{settings.name}': max_batch_size and max_batch_time must not be negative "
            f"(got {size} and {budget})"
        )
    if size <= 1 and budget == 0:
        return None
    if size <= 1 or budget == 0:
        # MLServer's rule too: both are needed. Say so, as a half-configured batcher is a mistake.
        log.warning(
            "model %s: adaptive batching needs max_batch_size > 1 and max_batch_time > 0 "
            "(got %s and %s); it stays off",
            settings.name,
            size,
            budget,
        )
        return None
    if not getattr(runtime, "batchable", True):
        log.warning(
            "model %s: %s answers each request as a whole, so it is not batched "
            "(max_batch_size and max_batch_time are ignored)",
            settings.name,
            type(runtime).__name__,
        )
        return None
    return AdaptiveBatcher(runtime, size, budget)


@dataclass(slots=True, eq=False)
class _Batch:
    key: Hashable
    requests: list[InferenceRequest] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class AdaptiveBatcher:
    """Stands in for `runtime.predict`: `predict(request)` answers as the runtime would have
    answered that request alone, but may share one runtime call with other callers."""

    def __init__(self, runtime: Runtime, max_batch_size: int, max_batch_time: float):
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_batch_time = max_batch_time
        self._batch_sizes = metrics.BATCH_SIZE.labels(
            **metrics.labels(runtime.name, runtime.version)
        )
        # One open batch per kind of request (see `merge_key`).
        self._open: dict[Hashable, _Batch] = {}
        self._running: set[asyncio.Task] = set()
        self._closed = False
        self._splittable = True

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        if self._closed:
            raise ModelNotReady(f"model '{self.runtime.name}' is unloading")
        key = merge_key(request) if self._splittable else None
        if key is None:
            self._batch_sizes.observe(1)
            return await self.runtime.predict(request)
        loop = asyncio.get_running_loop()
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(key)
            # The budget runs from this, the first request's arrival, not from a later one.
            batch.timer = loop.call_later(self.max_batch_time, self._dispatch, batch)
        future = loop.create_future()
        batch.requests.append(request)
        batch.futures.append(future)
        if len(batch.requests) >= self.max_batch_size:
            self._dispatch(batch)
        return await future

    async def close(self) -> None:
        """Send every waiting batch now and wait for all batches in flight, so no caller is left
        waiting on a runtime about to be unloaded; later calls fail with ModelNotReady."""
        self._closed = True
        for batch in list(self._open.values()):
            self._dispatch(batch)
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # --- running batches ----------------------------------------------------------------------

    def _dispatch(self, batch: _Batch) -> None:
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: _Batch) -> None:
        # Callers that gave up (their connection closed) while waiting are left out.
        pairs = [(r, f) for r, f in zip(batch.requests, batch.futures, strict=True) if not f.done()]
        if not pairs:
            return
        requests = [r for r, _ in pairs]
        futures = [f for _, f in pairs]
        try:
            self._batch_sizes.observe(len(pairs))
            if len(pairs) == 1:
                await self._answer(requests[0], futures[0])
                return
            try:
                response = await self.runtime.predict(merge_requests(requests))
            except Exception as exc:
                # One caller's bad rows fail the merged call for everyone. Asking again one
                # request at a time gives the bad request its own error and the others their
                # answers, as if they had never been batched.
                log.debug("model %s: merged call failed (%r); answering one by one", self.name, exc)
                await self._answer_each(pairs)
                return
            parts = split_response(response, requests)
            if parts is None:
                self._splittable = False
                log.warning(
                    "model %s: the runtime's answer does not have one row per input row, so it "
                    "cannot be split between callers; adaptive batching is now off for it",
                    self.name,
                )
                await self._answer_each(pairs)
                return
            for future, part in zip(futures, parts, strict=True):
                if not future.done():
                    future.set_result(part)
        finally:
            # Callers still waiting here means this task was cancelled or broke: never leave
            # them hanging.
            for future in futures:
                if not future.done():
                    future.set_exception(
                        InferenceError(f"model '{self.name}': the batch stopped before answering")
                    )

    async def _answer_each(self, pairs) -> None:
        await asyncio.gather(*(self._answer(request, future) for request, future in pairs))

    async def _answer(self, request: InferenceRequest, future: asyncio.Future) -> None:
        try:
            response = await self.runtime.predict(request)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(response)

    @property
    def name(self) -> str:
        return self.runtime.name


# --- merging and splitting ------------------------------------------------------------------------


def merge_key(request: InferenceRequest) -> Hashable | None:
    """What requests must share to be merged; None for a request that cannot be merged at all
    (no inputs, a scalar input, or inputs that disagree on the number of rows)."""
    rows = None
    inputs = []
    for tensor in request.inputs:
        shape = tensor.shape
        if not shape:
            return None
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            return None
        inputs.append(
            (tensor.name, tensor.datatype, tuple(shape[1:]), _parameters_key(tensor.parameters))
        )
    if rows is None:
        return None
    if request.outputs:
        # Outputs are merged by name; two callers asking for one output with different
        # parameters (e.g. binary_data) cannot share a call.
        outputs = tuple(
            sorted((o.name, _parameters_key(o.parameters)) for o in request.outputs if o.parameters)
        )
    else:
        # "every output" (or the runtime's default) cannot be merged with a list of names.
        outputs = None
    return tuple(inputs), _parameters_key(request.parameters), outputs


def _parameters_key(parameters: Parameters) -> Hashable:
    if not parameters:
        return b""
    try:
        return orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return object()  # not comparable: merges with nothing


def merge_requests(requests: list[InferenceRequest]) -> InferenceRequest:
    """One request holding every request's rows in order; all share one `merge_key`."""
    first = requests[0]
    inputs = []
    for index, tensor in enumerate(first.inputs):
        data = np.concatenate([r.inputs[index].data for r in requests])
        inputs.append(
            Tensor(tensor.name, tensor.datatype, list(data.shape), data, dict(tensor.parameters))
        )
    outputs = None
    if first.outputs:
        union: dict[str, RequestedOutput] = {}
        for request in requests:
            for wanted in request.outputs:
                union.setdefault(wanted.name, wanted)
        outputs = [RequestedOutput(o.name, dict(o.parameters)) for o in union.values()]
    return InferenceRequest(inputs, None, dict(first.parameters), outputs)


def split_response(
    response: InferenceResponse, requests: list[InferenceRequest]
) -> list[InferenceResponse] | None:
    """Each request's rows of the merged answer, holding the outputs that request asked for
    (all when it asked for none); None when an output cannot be split by rows."""
    wanted_by = [{o.name for o in r.outputs} if r.outputs else None for r in requests]
    asked = set().union(*wanted_by) if wanted_by[0] is not None else None
    outputs = [t for t in response.outputs if asked is None or t.name in asked]
    counts = [r.inputs[0].shape[0] for r in requests]
    total = sum(counts)
    if any(t.data.ndim == 0 or t.data.shape[0] != total for t in outputs):
        return None
    parts = []
    start = 0
    for count, wanted in zip(counts, wanted_by, strict=True):
        end = start + count
        mine = [
            Tensor(t.name, t.datatype, [count, *t.shape[1:]], t.data[start:end], dict(t.parameters))
            for t in outputs
            if wanted is None or t.name in wanted
        ]
        parts.append(
            InferenceResponse(
                response.model_name,
                mine,
                response.model_version,
                None,
                dict(response.parameters),
            )
        )
        start = end
    return parts
