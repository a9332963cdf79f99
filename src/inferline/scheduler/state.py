"""The scheduler's in-memory picture: server replicas and model versions, and their statuses.

States and reasons are Seldon Core 2's (reference c.5), so status output reads the same.
"""

import time
from dataclasses import dataclass, field
from typing import Any

from inferline.resources import ModelSpec
from inferline.scheduler.placement import ReplicaKey

# Model version states.
MODEL_PROGRESSING = "ModelProgressing"
MODEL_AVAILABLE = "ModelAvailable"
MODEL_FAILED = "ModelFailed"
SCHEDULE_FAILED = "ScheduleFailed"
MODEL_SCALED_DOWN = "ModelScaledDown"

# Replica states of one model version, from what the agent reports.
LOAD_REQUESTED = "LoadRequested"
LOADING = "Loading"
AVAILABLE = "Available"
LOAD_FAILED = "LoadFailed"
UNLOADING = "Unloading"

_AGENT_STATES = {
    "READY": AVAILABLE,
    "LOADING": LOADING,
    "UNAVAILABLE": LOAD_FAILED,
    "UNLOADING": UNLOADING,
}


@dataclass(slots=True)
class ReplicaState:
    """A server replica as its agent described it."""

    key: ReplicaKey
    http: str
    grpc: str
    capabilities: frozenset[str]
    # Total memory offered, overcommit included, in bytes.
    memory: int
    overcommit_percentage: int
    pid: int | None = None
    # internal model name -> (agent state, reason)
    models: dict[str, tuple[str, str]] = field(default_factory=dict)

    def replica_state(self, internal_name: str) -> tuple[str, str]:
        state, reason = self.models.get(internal_name, ("", ""))
        return _AGENT_STATES.get(state, LOAD_REQUESTED), reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica": self.key.index,
            "http": self.http,
            "grpc": self.grpc,
            "capabilities": sorted(self.capabilities),
            "memory": self.memory,
            "overcommitPercentage": self.overcommit_percentage,
            "pid": self.pid,
            "loadedModels": sorted(n for n, (s, _) in self.models.items() if s == "READY"),
        }


@dataclass(slots=True)
class ModelVersion:
    model: str
    version: int
    spec: ModelSpec
    annotations: dict[str, str] = field(default_factory=dict)
    assigned: list[ReplicaKey] = field(default_factory=list)
    # Why placement failed; None when placed (fully or partially).
    failure: str | None = None
    state: str = MODEL_PROGRESSING
    reason: str = ""
    last_change: float = field(default_factory=time.time)
    # Where this version was last seen answering: after a scheduler restart the routes point
    # there until the replicas reconnect (or their grace ends).
    serving: dict[ReplicaKey, tuple[str, str]] = field(default_factory=dict)

    @property
    def internal_name(self) -> str:
        return f"{self.model}_{self.version}"

    def to_doc(self) -> dict[str, Any]:
        """What the store keeps: enough to rebuild placement after a restart."""
        return {
            "spec": self.spec.to_dict(),
            "annotations": self.annotations,
            "assigned": [[k.server, k.index] for k in self.assigned],
            "failure": self.failure,
            "state": self.state,
            "reason": self.reason,
            "lastChange": self.last_change,
            "serving": [
                [k.server, k.index, http, grpc] for k, (http, grpc) in self.serving.items()
            ],
        }

    def update_status(self, replicas: dict[ReplicaKey, ReplicaState]) -> bool:
        """Recompute state and reason from placement and agent reports; True if it changed."""
        self.serving = {
            k: (replicas[k].http, replicas[k].grpc) for k in self.available_replicas(replicas)
        }
        state, reason = self._status(replicas)
        if (state, reason) == (self.state, self.reason):
            return False
        self.state, self.reason, self.last_change = state, reason, time.time()
        return True

    def _status(self, replicas: dict[ReplicaKey, ReplicaState]) -> tuple[str, str]:
        spec = self.spec
        if spec.replicas == 0 and not spec.min_replicas:
            return MODEL_SCALED_DOWN, ""
        if self.failure:
            return SCHEDULE_FAILED, self.failure
        states = [self.replica_state(k, replicas) for k in self.assigned]
        failed = [reason for state, reason in states if state == LOAD_FAILED]
        if failed:
            return MODEL_FAILED, failed[0]
        available = sum(1 for state, _ in states if state == AVAILABLE)
        if (
            available
            and available == len(self.assigned)
            and (available >= spec.replicas or available >= (spec.min_replicas or spec.replicas))
        ):
            return MODEL_AVAILABLE, ""
        return MODEL_PROGRESSING, ""

    def replica_state(
        self, key: ReplicaKey, replicas: dict[ReplicaKey, ReplicaState]
    ) -> tuple[str, str]:
        replica = replicas.get(key)
        if replica is None:
            return LOAD_REQUESTED, "server replica not connected"
        return replica.replica_state(self.internal_name)

    def available_replicas(self, replicas: dict[ReplicaKey, ReplicaState]) -> list[ReplicaKey]:
        return [k for k in self.assigned if self.replica_state(k, replicas)[0] == AVAILABLE]

    def to_status(self, replicas: dict[ReplicaKey, ReplicaState]) -> dict[str, Any]:
        available = self.available_replicas(replicas)
        return {
            "version": self.version,
            "internalName": self.internal_name,
            "state": self.state,
            "reason": self.reason,
            "desiredReplicas": self.spec.replicas,
            "availableReplicas": len(available),
            "unavailableReplicas": len(self.assigned) - len(available),
            "serverName": self.assigned[0].server if self.assigned else "",
            "modelReplicaState": {
                str(k.index): dict(
                    zip(("state", "reason"), self.replica_state(k, replicas), strict=True)
                )
                for k in self.assigned
            },
            "lastChangeTimestamp": self.last_change,
            "modelDefn": self.spec.to_dict(),
        }
