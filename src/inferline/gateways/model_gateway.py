"""The model gateway: reads a model's inputs topic, calls the model through the router, writes
its outputs topic (or, when the model rejects a request, the errors topic).

A model that cannot be reached (no ready replica, server down) is not an error: the gateway waits
and tries again, and the request stays on its topic meanwhile, so a step that is down only
delays its data. Offsets are committed only below the oldest request still being worked on.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from inferline.bus.base import Bus, Message, TopicPartition
from inferline.dataflow.topics import (
    ERROR_HEADER,
    INPUTS,
    OUTPUTS,
    TopicNames,
    key_partition,
)
from inferline.protocol.errors import InferlineError, grpc_code_name
from inferline.router.grpc import RouterGrpcService, UpstreamStatus

log = logging.getLogger(__name__)

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# Codes that mean "the model is not there right now": wait and retry instead of failing.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED}
)


class ModelCallError(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


# (model, request bytes, metadata) -> (response bytes, response metadata)
ModelCaller = Callable[
    [str, bytes, list[tuple[str, str]]], Awaitable[tuple[bytes, list[tuple[str, str]]]]
]


class RouterCaller:
    """Calls models through the router's gRPC port, passing protobuf bytes through untouched."""

    def __init__(self, router_grpc: str, timeout: float = 120.0):
        self._channel = grpc.aio.insecure_channel(
            router_grpc,
            options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ],
        )
        self._infer = self._channel.unary_unary(MODEL_INFER)
        self.timeout = timeout

    async def __call__(self, model: str, request: bytes, metadata: list[tuple[str, str]]):
        call = self._infer(
            request, metadata=[("seldon-model", model), *metadata], timeout=self.timeout
        )
        try:
            response = await call
            return response, [(k, str(v)) for k, v in (await call.initial_metadata() or ())]
        except grpc.aio.AioRpcError as exc:
            raise ModelCallError(
                exc.details() or exc.code().name, exc.code() in RETRYABLE
            ) from None

    async def close(self) -> None:
        await self._channel.close()


class LocalRouterCaller:
    """Calls models through a router running in this process (`inferline up`): the same route
    resolution, balancing and gRPC call to the replica as `RouterCaller`, without the loopback
    gRPC hop into the router, which cost a pipeline step 0.8 ms of the 1.7 ms its model call
    took (benchmarks/pipeline_latency.py). Errors are classed exactly as `RouterCaller`'s."""

    def __init__(self, router_grpc: RouterGrpcService, timeout: float = 120.0):
        self._service = router_grpc
        self.timeout = timeout

    async def __call__(self, model: str, request: bytes, metadata: list[tuple[str, str]]):
        try:
            async with asyncio.timeout(self.timeout):
                return await self._service.infer(model, request, metadata), []
        except InferlineError as exc:
            code = grpc.StatusCode[grpc_code_name(exc)]
            raise ModelCallError(exc.message, code in RETRYABLE) from None
        except UpstreamStatus as exc:
            raise ModelCallError(exc.details or exc.code.name, exc.code in RETRYABLE) from None
        except TimeoutError:
            raise ModelCallError(
                f"model '{model}' did not answer within {self.timeout:g} s", False
            ) from None

    async def close(self) -> None:
        """Nothing to close: the router owns its channels."""


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
        consumer = await self.bus.consumer(self.group, [inputs])
        workers = asyncio.Semaphore(self.config.workers)
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                batch = await consumer.poll(0.1, max_messages=self.config.workers)
                if consumer.assignment():
                    self.ready.set()
                for message in batch:
                    await workers.acquire()
                    tp = message.topic_partition
                    self._in_flight.setdefault(tp, set()).add(message.offset)
                    task = asyncio.create_task(self._work(message))
                    tasks.add(task)
                    task.add_done_callback(
                        lambda t, m=message: self._finished(t, m, workers, tasks)
                    )
                await self._commit(consumer)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.close()

    def _finished(self, task, message: Message, workers, tasks) -> None:
        tasks.discard(task)
        workers.release()
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

    async def _work(self, message: Message) -> None:
        metadata = [
            (name, value.decode("latin-1"))
            for name, value in message.headers
            if name.startswith("x-") and name != "x-seldon-route"
        ]
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
        headers = list(message.headers) + [
            (name, value.encode())
            for name, value in answer_metadata
            if name.startswith("x-")
            and name != "x-seldon-route"
            and all(name != existing for existing, _ in message.headers)
        ]
        await self._produce(self.topics.model(self.model, OUTPUTS), message, response, headers)

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
