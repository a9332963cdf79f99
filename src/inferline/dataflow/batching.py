"""Batching a step (`batch: {size, windowMs}`): requests for the step are merged along their
first dimension and sent as one, and the model's answer is split back into each request's rows.

The merged request is written under the last request's key with the header `inferline-batch`
listing every request's key, row count and request id. Whoever reads the step's answer splits it
back by those row counts (`split_rows`), so each request continues with its own rows; this works
when the model answers row by row (every output has the batch's total as its first dimension).
When it does not, the answer is passed on whole under the last request's key, as Seldon Core 2
does: the earlier requests of that batch then get nothing from that branch.

A batch is sent once it holds `size` rows or, when `windowMs` is set, that long after its first
request arrived, whichever comes first.
"""

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson

from inferline.bus.base import TopicPartition
from inferline.dataflow.messages import TensorMessage
from inferline.protocol.types import Tensor

BATCH_HEADER = "inferline-batch"


@dataclass(slots=True)
class BatchItem:
    key: bytes
    message: TensorMessage
    headers: list[tuple[str, bytes]]
    positions: list[tuple[TopicPartition, int]]

    @property
    def rows(self) -> int:
        shape = self.message.tensors[0].shape if self.message.tensors else []
        return shape[0] if shape else 1


@dataclass(slots=True)
class Batch:
    key: bytes
    message: TensorMessage
    headers: list[tuple[str, bytes]]


@dataclass
class Batcher:
    size: int
    window_ms: int | None = None
    clock: Callable[[], float] = time.monotonic
    items: list[BatchItem] = field(default_factory=list)
    started: float | None = None

    def add(self, item: BatchItem) -> list[Batch]:
        flushed: list[Batch] = []
        if self.items and not _compatible(self.items[0].message, item.message):
            # Tensors of another layout cannot be merged: send what we hold, start anew.
            flushed = self.flush()
        if not self.items:
            self.started = self.clock()
        self.items.append(item)
        if sum(i.rows for i in self.items) >= self.size:
            return flushed + self.flush()
        return flushed

    def expire(self) -> list[Batch]:
        deadline = self.deadline()
        if deadline is not None and self.clock() >= deadline:
            return self.flush()
        return []

    def deadline(self) -> float | None:
        if not self.items or self.window_ms is None or self.started is None:
            return None
        return self.started + self.window_ms / 1000

    def held_positions(self) -> list[tuple[TopicPartition, int]]:
        return [position for item in self.items for position in item.positions]

    def flush(self) -> list[Batch]:
        items, self.items, self.started = self.items, [], None
        if not items:
            return []
        last = items[-1]
        if len(items) == 1:
            # One request alone goes as it is (a scalar tensor cannot be concatenated).
            tensors = list(last.message.tensors)
        else:
            tensors = [
                Tensor.from_numpy(
                    t.name,
                    np.concatenate([i.message.tensors[n].data for i in items], axis=0),
                    t.datatype,
                    t.parameters,
                )
                for n, t in enumerate(items[0].message.tensors)
            ]
        members = [[i.key.decode(errors="replace"), i.rows, _request_id(i.headers)] for i in items]
        headers = [*last.headers, (BATCH_HEADER, orjson.dumps(members))]
        merged = TensorMessage(tensors, last.message.id, last.message.parameters)
        return [Batch(last.key, merged, headers)]


def _compatible(a: TensorMessage, b: TensorMessage) -> bool:
    return [(t.name, t.datatype, t.shape[1:]) for t in a.tensors] == [
        (t.name, t.datatype, t.shape[1:]) for t in b.tensors
    ] and all(t.shape for t in (*a.tensors, *b.tensors))


def _request_id(headers: list[tuple[str, bytes]]) -> str:
    for name, value in headers:
        if name == "x-request-id":
            return value.decode(errors="replace")
    return ""


def batch_members(header: bytes) -> list[tuple[bytes, int, str]]:
    return [(key.encode(), rows, request_id) for key, rows, request_id in orjson.loads(header)]


def split_rows(message: TensorMessage, rows: list[int]) -> list[TensorMessage] | None:
    """Split a merged answer back into each request's rows; None when the model did not answer
    row by row."""
    total = sum(rows)
    if not message.tensors or any(not t.shape or t.shape[0] != total for t in message.tensors):
        return None
    bounds = np.cumsum([0, *rows])
    return [
        TensorMessage(
            [
                Tensor.from_numpy(t.name, t.data[start:end], t.datatype, t.parameters)
                for t in message.tensors
            ],
            message.id,
            message.parameters,
            message.model_name,
        )
        for start, end in itertools.pairwise(bounds)
    ]
