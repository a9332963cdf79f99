"""Batching a step (`batch: {size, windowMs}`): requests for the step are merged along their
first dimension and sent as one, and the model's answer is split back into each request's rows.

The merged request is written under the last request's key with the header `inferline-batch`
listing every request's key, row count and request id. Whoever reads the step's answer splits it
back by those row counts (`split_rows`), so each request continues with its own rows; this works
when the model answers row by row (every output has the batch's total as its first dimension).
When it does not, the answer is passed on whole under the last request's key, as Seldon Core 2
does: the earlier requests of that batch then get nothing from that branch.

A batch is sent once it holds `size` rows or, when `windowMs` is set, that long after its first
request arrived, whichever comes first. Only requests of one layout (tensor names, datatypes and
shapes after the first dimension) merge; each layout fills a batch of its own, as the model
server's adaptive batching does, so one malformed request neither cuts a batch short (a drift test
on fewer rows than asked for) nor joins it. A request with a scalar tensor cannot be concatenated
and goes on its own at once.
"""

import itertools
import time
from collections.abc import Callable, Hashable
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


@dataclass(slots=True)
class _Held:
    """The requests of one layout waiting to be sent, and when the first of them arrived."""

    started: float
    items: list[BatchItem] = field(default_factory=list)


@dataclass
class Batcher:
    size: int
    window_ms: int | None = None
    clock: Callable[[], float] = time.monotonic
    # One batch per layout, in the order their first requests arrived.
    held: dict[Hashable, _Held] = field(default_factory=dict)

    def add(self, item: BatchItem) -> list[Batch]:
        layout = _layout(item.message)
        if layout is None:
            return [_merge([item])]
        held = self.held.get(layout)
        if held is None:
            held = self.held[layout] = _Held(self.clock())
        held.items.append(item)
        if sum(i.rows for i in held.items) >= self.size:
            del self.held[layout]
            return [_merge(held.items)]
        return []

    def expire(self) -> list[Batch]:
        if self.window_ms is None:
            return []
        now = self.clock()
        due = [layout for layout, held in self.held.items() if now >= self._deadline(held)]
        return [_merge(self.held.pop(layout).items) for layout in due]

    def deadline(self) -> float | None:
        if self.window_ms is None:
            return None
        return min((self._deadline(held) for held in self.held.values()), default=None)

    def held_items(self) -> list[BatchItem]:
        return [item for held in self.held.values() for item in held.items]

    def held_positions(self) -> list[tuple[TopicPartition, int]]:
        return [position for item in self.held_items() for position in item.positions]

    def flush(self) -> list[Batch]:
        held, self.held = self.held, {}
        return [_merge(h.items) for h in held.values()]

    def _deadline(self, held: _Held) -> float:
        return held.started + self.window_ms / 1000


def _merge(items: list[BatchItem]) -> Batch:
    """One request holding every item's rows, under the last item's key."""
    last = items[-1]
    if len(items) == 1:
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
    return Batch(last.key, merged, headers)


def _layout(message: TensorMessage) -> Hashable | None:
    """What requests must share to be merged; None when the message cannot be merged at all."""
    if not all(t.shape for t in message.tensors):
        return None
    return tuple((t.name, t.datatype, tuple(t.shape[1:])) for t in message.tensors)


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
