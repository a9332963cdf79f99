"""The model gateway: reads a model's inputs topic, calls the model through the router, writes
its outputs topic (or, when the model rejects a request, the errors topic).

A model that cannot be reached (no ready replica, server down) is not an error: the gateway waits
and tries again, and the request stays on its topic meanwhile, so a step that is down only
delays its data. Offsets are committed only below the oldest request still being worked on.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from inferline import tracing
from inferline.bus.base import Bus, Message, MessageTooLarge, TopicPartition
from inferline.dataflow.topics import (
    ERROR_HEADER,
    INPUTS,
    OUTPUTS,
    TopicNames,
    key_partition,
)
from inferline.gateways import rest_wire
from inferline.protocol.errors import InferlineError
from inferline.router.balancer import ConnectFailure
from inferline.router.core import BadGateway, ModelRouter
from inferline.router.rest import REST_INFER
from inferline.router.routes import Endpoint
from inferline.router.upstream import (
    HttpUpstream,
    UpstreamBroken,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamResponse,
)

log = logging.getLogger(__name__)

# Statuses that mean "the model is not there right now" (not found, not served, unavailable,
# unreachable): wait and retry instead of failing the request.
RETRYABLE = frozenset({404, 405, 502, 503})
# Offsets are committed when idle, else at most this often (as the dataflow's stages do): on
# Kafka a commit is a broker round trip the gateway's loop would wait for at every poll.
COMMIT_SECONDS = 0.1


class ModelCallError(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


# (model, request bytes, metadata) -> (response bytes, response metadata)
ModelCaller = Callable[
    [str, bytes, list[tuple[str, str]]], Awaitable[tuple[bytes, list[tuple[str, str]]]]
]


class LocalRouterCaller:
    """Calls models through the router core of this process (`inferline up`): the same route
    resolution, replica balancing and timeouts as any call through the router, without a
    loopback hop into it, and over REST with binary tensors (`rest_wire`) rather than gRPC.
    Measured on a step's call (benchmarks/pipeline_latency.py): 1.7 ms through the router's
    gRPC port, 0.7 ms with the loopback hop gone, 0.4 ms over REST. Its calls are counted with
    the router's REST calls (`seldon_model_infer_total{method_type="rest"}`): they reach a model."""

    def __init__(self, router: ModelRouter, timeout: float = 120.0):
        self._router = router
        self._upstream = HttpUpstream()
        self.timeout = timeout

    async def __call__(self, model: str, request: bytes, metadata: list[tuple[str, str]]):
        try:
            route = self._router.resolve(model)
            body, json_length = rest_wire.request_body(request)
            target = f"/v2/models/{quote(route.internal_name, safe='')}/infer"
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", b"%d" % json_length),
                (b"seldon-model", model.encode()),
                (b"seldon-internal-model", route.internal_name.encode()),
                *[(k.encode("latin-1"), v.encode("latin-1")) for k, v in metadata],
            ]

            async def attempt(endpoint: Endpoint) -> UpstreamResponse:
                try:
                    return await self._upstream.request(
                        endpoint.http, "POST", target, headers, body
                    )
                except UpstreamConnectError as exc:
                    raise ConnectFailure(endpoint, str(exc)) from None
                except UpstreamClosed as exc:
                    raise ConnectFailure(endpoint, str(exc), eject=False) from None
                except UpstreamBroken as exc:
                    raise BadGateway(f"model replica at {endpoint.http}: {exc}") from None

            limit = min(self.timeout, self._router.timeout_for(route))
            answer = await self._router.call(route, attempt, limit, REST_INFER)
            if answer.status != 200:
                raise ModelCallError(_error_text(answer), answer.status in RETRYABLE)
            length = _header(answer, b"inference-header-content-length")
            return rest_wire.response_message(answer.body, int(length) if length else None), []
        except InferlineError as exc:
            raise ModelCallError(exc.message, exc.status in RETRYABLE) from None

    async def close(self) -> None:
        await self._upstream.aclose()


def _once(function: Callable[[], None]) -> Callable[[], None]:
    called = False

    def call() -> None:
        nonlocal called
        if not called:
            called = True
            function()

    return call


def _header(answer: UpstreamResponse, name: bytes) -> str | None:
    for key, value in answer.headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _error_text(answer: UpstreamResponse) -> str:
    """The `error` of a V2 error answer, else its body as text."""
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
        return str(orjson.loads(answer.body)["error"])
    return answer.body.decode(errors="replace") or f"HTTP {answer.status}"


@dataclass
class ModelGatewayConfig:
    workers: int = 8
    retry_min: float = 0.2
    retry_max: float = 5.0


class ModelGateway:
    def __init__(
        self,
        model: str,
        bus: Bus,
        topics: TopicNames,
        caller: ModelCaller,
        config: ModelGatewayConfig | None = None,
    ):
        self.model = model
        self.bus = bus
        self.topics = topics
        self.caller = caller
        self.config = config or ModelGatewayConfig()
        self.ready = asyncio.Event()
        self._in_flight: dict[TopicPartition, set[int]] = {}
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._partitions: dict[str, int] = {}

    @property
    def group(self) -> str:
        return f"modelgateway.{self.model}"

    async def run(self) -> None:
        inputs = self.topics.model(self.model, INPUTS)
        await self.bus.create_topic(inputs)
        await self.bus.create_topic(self.topics.model(self.model, OUTPUTS))
        await self.bus.create_topic(self.topics.errors)
        consumer = await self.bus.consumer(self.group, [inputs], read_unacknowledged=True)
        workers = asyncio.Semaphore(self.config.workers)
        tasks: set[asyncio.Task] = set()
        next_commit = 0.0
        try:
            while True:
                batch = await consumer.poll(0.1, max_messages=self.config.workers)
                if consumer.assignment():
                    self.ready.set()
                for message in batch:
                    await workers.acquire()
                    tp = message.topic_partition
                    self._in_flight.setdefault(tp, set()).add(message.offset)
                    release = _once(workers.release)
                    task = asyncio.create_task(self._work(message, release))
                    tasks.add(task)
                    task.add_done_callback(
                        lambda t, m=message, r=release: self._finished(t, m, r, tasks)
                    )
                now = time.monotonic()
                if not batch or now >= next_commit:
                    await self._commit(consumer)
                    next_commit = now + COMMIT_SECONDS
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
            # Record what was answered, so a restart does not call the model for it again.
            with contextlib.suppress(Exception):
                await self._commit(consumer)
            await consumer.close()

    def _finished(self, task, message: Message, release, tasks) -> None:
        tasks.discard(task)
        release()
        if task.cancelled() or task.exception() is not None:
            # Not written anywhere (the bus failed, or we are stopping): leave the offset
            # uncommitted, so the request is read again after a restart.
            if not task.cancelled():
                log.error(
                    "model %s: request %s not processed: %r",
                    self.model,
                    message.key,
                    task.exception(),
                )
            return
        tp = message.topic_partition
        self._in_flight[tp].discard(message.offset)
        self._done[tp] = max(self._done.get(tp, 0), message.offset + 1)

    async def _commit(self, consumer) -> None:
        offsets = {}
        for tp, done in self._done.items():
            in_flight = self._in_flight.get(tp)
            offset = min(in_flight) if in_flight else done
            if self._committed.get(tp) != offset:
                offsets[tp] = offset
        if offsets:
            await consumer.commit(offsets)
            self._committed.update(offsets)

    async def _work(self, message: Message, release=lambda: None) -> None:
        if tracing.ENABLED:
            attributes = {
                "inference.model.name": self.model,
                "x-request-id": (message.header("x-request-id") or b"").decode(),
            }
            with tracing.span("model-gateway.infer", "consumer", message.headers, attributes):
                await self._call(message, release)
        else:
            await self._call(message, release)

    async def _call(self, message: Message, release) -> None:
        metadata = [
            (name, value.decode("latin-1"))
            for name, value in message.headers
            if name.startswith("x-") and name != "x-seldon-route"
        ]
        if tracing.ENABLED:
            # The model's server continues this trace.
            metadata += tracing.context_headers()
        delay = self.config.retry_min
        while True:
            try:
                response, answer_metadata = await self.caller(self.model, message.value, metadata)
                break
            except ModelCallError as exc:
                if not exc.retryable:
                    await self._write_error(message, exc.message)
                    return
                log.info(
                    "model %s unavailable (%s); retrying in %.1f s", self.model, exc.message, delay
                )
            except Exception as exc:  # a caller bug must end the request, not lose it
                log.exception("model %s: call failed", self.model)
                await self._write_error(message, f"{type(exc).__name__}: {exc}")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max)
        # The model is done with it: the next request takes its slot while the bus acknowledges
        # the answer (on Kafka a broker round trip as long as the call; the offset still waits).
        release()
        headers = list(message.headers) + [
            (name, value.encode())
            for name, value in answer_metadata
            if name.startswith("x-")
            and name != "x-seldon-route"
            and all(name != existing for existing, _ in message.headers)
        ]
        if tracing.ENABLED:
            headers = tracing.bus_headers(headers)
        try:
            await self._produce(self.topics.model(self.model, OUTPUTS), message, response, headers)
        except MessageTooLarge as exc:
            # Calling the model again would give the same answer: the request ends here.
            await self._write_error(message, f"the model's answer cannot be passed on: {exc}")

    async def _write_error(self, message: Message, text: str) -> None:
        headers = [*message.headers, (ERROR_HEADER, self.model.encode())]
        log.info("model %s rejected request %s: %s", self.model, message.key, text)
        await self._produce(self.topics.errors, message, text.encode(), headers)

    async def _produce(self, topic: str, message: Message, value: bytes, headers) -> None:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = (await self.bus.topics()).get(topic, 1)
        partition = key_partition(message.key, partitions)
        if partition is None:
            # Keys written by others may not name a partition: keep the one read from.
            partition = message.partition if message.partition < partitions else None
        await self.bus.produce(topic, value, key=message.key, headers=headers, partition=partition)
