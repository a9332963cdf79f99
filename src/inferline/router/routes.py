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
class ExperimentRoute:
    """An experiment as the router runs it: a weighted split over candidates, maybe a mirror.

    Candidates and mirror are model names (`resource_type` "model") or pipeline names without
    the ".pipeline" suffix ("pipeline"). Only an active experiment is run; `reason` says why
    one is not.
    """

    name: str
    candidates: list[tuple[str, int]]  # (name, weight)
    default: str | None = None
    mirror: tuple[str, int] | None = None  # (name, percent)
    resource_type: str = "model"
    active: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "candidates": [{"name": n, "weight": w} for n, w in self.candidates],
            "default": self.default,
            "mirror": {"name": self.mirror[0], "percent": self.mirror[1]} if self.mirror else None,
            "resourceType": self.resource_type,
            "active": self.active,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ExperimentRoute":
        mirror = doc.get("mirror")
        return cls(
            name=doc["name"],
            candidates=[(c["name"], c["weight"]) for c in doc.get("candidates", [])],
            default=doc.get("default"),
            mirror=(mirror["name"], mirror["percent"]) if mirror else None,
            resource_type=doc.get("resourceType", "model"),
            active=doc.get("active", False),
            reason=doc.get("reason", ""),
        )


@dataclass(slots=True)
class RouteTable:
    # Grows by one on every change, so a follower can ask "anything newer than N?".
    generation: int = 0
    models: dict[str, ModelRoute] = field(default_factory=dict)
    experiments: dict[str, ExperimentRoute] = field(default_factory=dict)

    def split_of(self, name: str, resource_type: str) -> ExperimentRoute | None:
        """The active experiment whose split is installed on `name`'s own route (its default)."""
        for experiment in self.experiments.values():
            if (
                experiment.active
                and experiment.default == name
                and experiment.resource_type == resource_type
            ):
                return experiment
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "models": {name: route.to_dict() for name, route in self.models.items()},
            "experiments": {name: e.to_dict() for name, e in self.experiments.items()},
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "RouteTable":
        return cls(
            generation=doc["generation"],
            models={name: ModelRoute.from_dict(r) for name, r in doc.get("models", {}).items()},
            experiments={
                name: ExperimentRoute.from_dict(e) for name, e in doc.get("experiments", {}).items()
            },
        )


class RouteSource(Protocol):
    async def wait_for_change(self, generation: int, timeout: float) -> RouteTable:
        """Return the table as soon as its generation differs from `generation`, or after
        `timeout` seconds with the current table."""
        ...
