"""The routing table the scheduler publishes and the router follows.

The scheduler builds it from model placement and replica state; the router only reads it. It
crosses the process boundary as JSON (`to_dict` / `from_dict`) when the router runs on its own.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True, frozen=True)
class Endpoint:
    """One ready server replica holding the model."""

    http: str  # "host:port" of the replica's V2 REST
    grpc: str  # "host:port" of the replica's V2 gRPC
    server: str
    replica: int


@dataclass(slots=True)
class ModelRoute:
    name: str  # the model's name as users call it
    internal_name: str  # "<model>_<version>", the name the replicas serve it under
    version: int
    endpoints: list[Endpoint] = field(default_factory=list)
    # Why there is no endpoint, for the 503 answer (e.g. "ScheduleFailed: ...").
    reason: str = ""
    # Seconds the router waits for one call (None: the router's default).
    timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "internalName": self.internal_name,
            "version": self.version,
            "endpoints": [
                {"http": e.http, "grpc": e.grpc, "server": e.server, "replica": e.replica}
                for e in self.endpoints
            ],
            "reason": self.reason,
            "timeout": self.timeout,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ModelRoute":
        return cls(
            name=doc["name"],
            internal_name=doc["internalName"],
            version=doc["version"],
            endpoints=[Endpoint(**e) for e in doc.get("endpoints", [])],
            reason=doc.get("reason", ""),
            timeout=doc.get("timeout"),
        )


@dataclass(slots=True)
class RouteTable:
    # Grows by one on every change, so a follower can ask "anything newer than N?".
    generation: int = 0
    models: dict[str, ModelRoute] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "models": {name: route.to_dict() for name, route in self.models.items()},
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "RouteTable":
        return cls(
            generation=doc["generation"],
            models={name: ModelRoute.from_dict(r) for name, r in doc.get("models", {}).items()},
        )


class RouteSource(Protocol):
    async def wait_for_change(self, generation: int, timeout: float) -> RouteTable:
        """Return the table as soon as its generation differs from `generation`, or after
        `timeout` seconds with the current table."""
        ...
