"""Joining the messages of one request (one key) that arrive from a stage's sources.

Seldon Core 2's join types, on wall-clock deadlines (reference b.6, b.7):
- `inner`: emit once every source has a message for the key; at the window's end, drop.
- `outer`: emit once every source has one, or at the window's end with those that came.
- `any`: emit each arriving message on its own, at once.
Triggers are joined among themselves by their own type; the data is emitted only once the
triggers are satisfied, and trigger payloads are never emitted.

Pure and clock-driven, so every rule is unit-testable; the stage runner feeds it messages and the
time, and commits offsets only below the oldest message still held here.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferline.bus.base import TopicPartition


@dataclass(slots=True)
class Part:
    """One source's contribution to a request."""

    source: int  # index into the stage's inputs, or into its triggers for a trigger part
    trigger: bool
    payload: Any  # what the stage decoded; the buffer never looks inside
    position: tuple[TopicPartition, int]


@dataclass(slots=True)
class Emission:
    key: bytes
    parts: list[Part]  # data parts, in source order


@dataclass(slots=True)
class _Pending:
    deadline: float
    data: dict[int, Part] = field(default_factory=dict)
    triggers: dict[int, Part] = field(default_factory=dict)
    # `any` joins: data parts waiting for the triggers.
    waiting: list[Part] = field(default_factory=list)


class JoinBuffer:
    def __init__(
        self,
        inputs: int,
        inputs_join: str = "inner",
        triggers: int = 0,
        triggers_join: str = "inner",
        window_ms: int = 60_000,
        clock: Callable[[], float] | None = None,
    ):
        import time

        self.inputs, self.inputs_join = inputs, inputs_join
        self.trigger_count, self.triggers_join = triggers, triggers_join
        self.window = window_ms / 1000
        self.clock = clock or time.monotonic
        self._pending: dict[bytes, _Pending] = {}

    @property
    def passthrough(self) -> bool:
        """One source and no triggers: nothing to join, every message goes straight on."""
        return self.inputs == 1 and self.trigger_count == 0

    def add(self, key: bytes, part: Part) -> list[Emission]:
        if self.passthrough or (self.inputs_join == "any" and not self.trigger_count):
            # Nothing to wait for: keeping the key for its window would only cost a scan of
            # every such key on each expire (a 60 s window holds 60k keys at 1000 requests/s).
            return [Emission(key, [part])]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(self.clock() + self.window)
        if part.trigger:
            pending.triggers.setdefault(part.source, part)
        elif self.inputs_join == "any":
            pending.waiting.append(part)
        else:
            pending.data.setdefault(part.source, part)
        return self._ready(key, pending, expired=False)

    def expire(self) -> tuple[list[Emission], list[tuple[bytes, list[Part]]]]:
        """Close every window that has passed: what is emitted, and what is dropped."""
        now = self.clock()
        emitted: list[Emission] = []
        dropped: list[tuple[bytes, list[Part]]] = []
        for key, pending in list(self._pending.items()):
            if pending.deadline > now:
                continue
            emitted += self._ready(key, pending, expired=True)
            if key in self._pending:
                del self._pending[key]
                held = [*pending.data.values(), *pending.triggers.values(), *pending.waiting]
                if held and not (self.inputs_join == "any" and not pending.waiting):
                    dropped.append((key, held))
        return emitted, dropped

    def missing(self, key: bytes) -> tuple[list[int], list[int]] | None:
        """For a held key: the input and trigger sources it still waits for."""
        pending = self._pending.get(key)
        if pending is None:
            return None
        return (
            [i for i in range(self.inputs) if i not in pending.data],
            [i for i in range(self.trigger_count) if i not in pending.triggers],
        )

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def held_positions(self) -> list[tuple[TopicPartition, int]]:
        return [
            part.position
            for pending in self._pending.values()
            for part in (*pending.data.values(), *pending.triggers.values(), *pending.waiting)
        ]

    def __len__(self) -> int:
        return len(self._pending)

    # --- rules --------------------------------------------------------------------------------

    def _satisfied(self, join: str, present: int, total: int, expired: bool) -> bool:
        if total == 0:
            return True
        if join == "inner":
            return present == total
        if join == "outer":
            return present == total or (expired and present > 0)
        return present > 0  # any

    def _ready(self, key: bytes, pending: _Pending, expired: bool) -> list[Emission]:
        triggered = self._satisfied(
            self.triggers_join, len(pending.triggers), self.trigger_count, expired
        )
        if not triggered:
            return []
        if self.inputs_join == "any":
            # Each arrival goes on alone; the key stays until its window ends, for later ones.
            emissions = [Emission(key, [part]) for part in pending.waiting]
            pending.waiting.clear()
            return emissions
        if not self._satisfied(self.inputs_join, len(pending.data), self.inputs, expired):
            return []
        del self._pending[key]
        return [Emission(key, [pending.data[i] for i in sorted(pending.data)])]
