"""The pipeline gateway: a synchronous call becomes a message on the pipeline's inputs topic,
and the message with the same key on its outputs topic becomes the answer.

The key is `<partition>.<pipeline>.<request id>`; the caller gets it back as `x-request-id`, so
`pipeline inspect --request-id` finds every tensor of that request afterwards.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from inferline import tracing
from inferline.bus.base import Bus, Consumer, Message, MessageTooLarge
from inferline.dataflow.topics import (
    ERROR_HEADER,
    INPUTS,
    OUTPUTS,
    PIPELINE_HEADER,
    PIPELINE_VERSION_HEADER,
    REQUEST_ID_HEADER,
    TopicNames,
    message_key,
    propagated_headers,
)
from inferline.protocol.errors import InferlineError, PayloadTooLarge

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


class PipelineStepError(InferlineError):
    """A step rejected the request: 400 `<model> : <message>`, as Seldon answers (and gRPC
    UNKNOWN, Seldon's code for it)."""

    status = 400
    grpc_code = "UNKNOWN"

    def __init__(self, message: str, headers: list[tuple[str, str]]):
        super().__init__(message)
        self.headers = headers


class PipelineTimeout(InferlineError):
    status = 504


class PipelineNotReady(InferlineError):
    status = 503


@dataclass(slots=True)
class PipelineAnswer:
    value: bytes  # ModelInferResponse protobuf
    headers: list[tuple[str, str]]  # x-request-id, x-pipeline-version and the message's x-*


class _PipelineListener:
    """Reads one pipeline's outputs topic; hands each message to the caller waiting on its key."""

    def __init__(self, pipeline: str, bus: Bus, topics: TopicNames, group: str):
        self.pipeline = pipeline
        self.bus = bus
        self.topic = topics.pipeline(pipeline, OUTPUTS)
        self.group = group
        self.waiters: dict[bytes, asyncio.Future] = {}
        self.consumer: Consumer | None = None
        self.ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.bus.create_topic(self.topic)
        self.consumer = await self.bus.consumer(self.group, [self.topic])
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for message in await self.consumer.poll(0.1):
                waiter = self.waiters.pop(message.key or b"", None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
            if self.consumer.assignment():
                self.ready.set()

    def partitions(self) -> list[int]:
        owned = [tp.partition for tp in self.consumer.assignment()] if self.consumer else []
        return owned or [0]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.consumer is not None:
            await self.consumer.close()
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(
                    PipelineNotReady(f"pipeline '{self.pipeline}' was unloaded before it answered")
                )


class PipelineGateway:
    def __init__(
        self,
        bus: Bus,
        topics: TopicNames,
        instance: str,
        describe_missing: Callable[[str, bytes], str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.bus = bus
        self.topics = topics
        # Each gateway instance reads every output itself: its own consumer group.
        self.instance = instance
        self.describe_missing = describe_missing
        self.timeout = timeout
        self._listeners: dict[str, _PipelineListener] = {}
        self._versions: dict[str, int] = {}

    async def serve(self, pipeline: str, version: int) -> None:
        """Start answering for `pipeline` (idempotent); `version` is reported until a newer one."""
        self._versions[pipeline] = version
        if pipeline not in self._listeners:
            listener = _PipelineListener(
                pipeline, self.bus, self.topics, f"pipelinegateway.{self.instance}.{pipeline}"
            )
            self._listeners[pipeline] = listener
            await listener.start()

    async def stop_serving(self, pipeline: str) -> None:
        listener = self._listeners.pop(pipeline, None)
        self._versions.pop(pipeline, None)
        if listener is not None:
            await listener.stop()

    def listener_ready(self, pipeline: str) -> asyncio.Event:
        """Set once the gateway reads `pipeline`'s outputs topic."""
        return self._listeners[pipeline].ready

    async def close(self) -> None:
        for pipeline in list(self._listeners):
            await self.stop_serving(pipeline)

    async def infer(
        self,
        pipeline: str,
        request: bytes,
        request_id: str,
        headers: list[tuple[str, str]],
        timeout: float | None = None,
    ) -> PipelineAnswer:
        listener = self._listeners.get(pipeline)
        if listener is None:
            raise PipelineNotReady(f"pipeline '{pipeline}' is not running")
        partition = random.choice(listener.partitions())
        key = message_key(partition, pipeline, request_id)
        waiter = asyncio.get_running_loop().create_future()
        listener.waiters[key] = waiter
        message_headers = [
            (PIPELINE_HEADER, pipeline.encode()),
            (REQUEST_ID_HEADER, key.decode().encode()),
            *propagated_headers([(k, v.encode()) for k, v in headers if k != REQUEST_ID_HEADER]),
        ]
        if tracing.ENABLED:
            message_headers = tracing.bus_headers(message_headers)
        limit = timeout or self.timeout
        started = time.monotonic()
        try:
            await self.bus.produce(
                self.topics.pipeline(pipeline, INPUTS),
                request,
                key=key,
                headers=message_headers,
                partition=partition,
            )
            remaining = max(0.0, limit - (time.monotonic() - started))
            # asyncio.timeout, not wait_for: no second future and no extra loop turn per call.
            async with asyncio.timeout(remaining):
                message: Message = await waiter
        except MessageTooLarge as exc:
            raise PayloadTooLarge(
                f"pipeline '{pipeline}' cannot take this request: {exc}"
            ) from None
        except TimeoutError:
            missing = self.describe_missing(pipeline, key) if self.describe_missing else ""
            raise PipelineTimeout(
                f"pipeline '{pipeline}' did not answer request {key.decode()} within "
                f"{limit:g} s" + (f": {missing}" if missing else "")
            ) from None
        finally:
            listener.waiters.pop(key, None)
        answer_headers = [
            (REQUEST_ID_HEADER, key.decode()),
            ("x-seldon-route", f":{pipeline}.pipeline:"),
        ]
        version = message.header(PIPELINE_VERSION_HEADER)
        if version is not None:
            answer_headers.append((PIPELINE_VERSION_HEADER, version.decode()))
        answer_headers += [
            (k, v.decode("latin-1"))
            for k, v in propagated_headers(message.headers)
            if k != REQUEST_ID_HEADER
        ]
        failed = message.header(ERROR_HEADER)
        if failed is not None:
            text = f"{failed.decode()} : {message.value.decode(errors='replace')}"
            raise PipelineStepError(text, answer_headers)
        return PipelineAnswer(message.value, answer_headers)
