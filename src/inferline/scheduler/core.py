"""The scheduler's core: applies resources, places model versions, and follows the agents.

Transport-agnostic and single-threaded on the event loop: the HTTP and WebSocket adapters in
`scheduler.api` call these methods. Every change bumps `generation` and wakes whoever waits in
`wait_for_change` (the agents' desired-state pushers and the routers).
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

from inferline.protocol.errors import BadRequest, InferlineError
from inferline.resources import Resource, model_change_kind, resource_from_dict
from inferline.router.routes import Endpoint, ExperimentRoute, ModelRoute, RouteTable
from inferline.scheduler.placement import (
    ModelDemand,
    ReplicaCandidate,
    ReplicaKey,
    place,
)
from inferline.scheduler.state import MODEL_AVAILABLE, ModelVersion, ReplicaState
from inferline.scheduler.store import SchedulerStore

log = logging.getLogger(__name__)

KINDS = ("Model", "Server", "Pipeline", "Experiment")
PIPELINE_CREATE = "PipelineCreate"
# Annotation on a Model: seconds the router waits for one inference call.
TIMEOUT_ANNOTATION = "inferline.io/timeout"


class NotFound(InferlineError):
    status = 404


class Conflict(InferlineError):
    status = 409


class Scheduler:
    def __init__(self, store: SchedulerStore, replica_grace: float = 15.0):
        self.store = store
        # After a restart, replicas that held models get this long to reconnect before their
        # models are placed elsewhere.
        self.replica_grace = replica_grace
        self.started = time.monotonic()
        self.replicas: dict[ReplicaKey, ReplicaState] = {}
        # Replicas that connected since this scheduler started: once one of them leaves, its
        # models move at once; the grace is only for replicas known from before a restart.
        self._seen: set[ReplicaKey] = set()
        self.resources: dict[str, dict[str, Resource]] = {kind: {} for kind in KINDS}
        self.versions: dict[str, list[ModelVersion]] = {}
        # Pipelines: every load is a new version; the dataflow engine reports each one's state.
        self.pipeline_versions: dict[str, int] = store.versions("Pipeline")
        self.pipeline_states: dict[str, tuple[int, str, str]] = {}
        self.generation = 0
        self._changed = asyncio.Event()
        self._restore()
        # Statuses from disk describe replicas that may not be back yet: recompute them now.
        self._reconcile()

    # --- resources ----------------------------------------------------------------------------

    def apply(self, resource: Resource) -> str:
        """Apply one validated resource; returns what happened, e.g. "created" or "version 2"."""
        if resource.kind == "Model":
            outcome = self._apply_model(resource)
        elif resource.kind == "Pipeline":
            version = self.pipeline_versions.get(resource.name, 0) + 1
            self.pipeline_versions[resource.name] = version
            self.store.put_version("Pipeline", resource.name, version)
            self.pipeline_states[resource.name] = (version, PIPELINE_CREATE, "")
            outcome = "created" if version == 1 else f"version {version}"
        else:
            previous = self.resources[resource.kind].get(resource.name)
            if previous is not None and previous.to_dict() == resource.to_dict():
                return "unchanged"
            outcome = "configured" if previous else "created"
        self.resources[resource.kind][resource.name] = resource
        self.store.put_resource(resource.kind, resource.name, resource.to_dict())
        self._reconcile()
        return outcome

    def _apply_model(self, resource: Resource) -> str:
        versions = self.versions.setdefault(resource.name, [])
        latest = versions[-1] if versions else None
        if latest is not None:
            change = model_change_kind(latest.spec, resource.spec)
            if change == "identical" and latest.annotations == resource.annotations:
                return "unchanged"
            if change != "new_version":
                latest.spec, latest.annotations = resource.spec, dict(resource.annotations)
                self._save_version(latest)
                return "scaled" if change == "scale" else "configured"
        number = latest.version + 1 if latest else 1
        version = ModelVersion(resource.name, number, resource.spec, dict(resource.annotations))
        versions.append(version)
        self._save_version(version)
        return "created" if number == 1 else f"version {number}"

    def delete(self, kind: str, name: str) -> None:
        if name not in self.resources.get(kind, {}):
            raise NotFound(f"{kind.lower()} '{name}' not found")
        del self.resources[kind][name]
        self.store.delete_resource(kind, name)
        if kind == "Model":
            self.versions.pop(name, None)
            self.store.delete_model_versions(name)
        if kind == "Pipeline":
            # Deleting and re-creating a pipeline starts again at version 1, as in Seldon.
            self.pipeline_versions.pop(name, None)
            self.pipeline_states.pop(name, None)
            self.store.delete_version("Pipeline", name)
        self._reconcile()

    def get(self, kind: str, name: str) -> Resource:
        try:
            return self.resources[kind][name]
        except KeyError:
            raise NotFound(f"{kind.lower()} '{name}' not found") from None

    # --- status -------------------------------------------------------------------------------

    def model_status(self, name: str) -> dict[str, Any]:
        resource = self.get("Model", name)
        versions = self.versions.get(name, [])
        latest = versions[-1]
        return {
            "modelName": name,
            "state": latest.state,
            "reason": latest.reason,
            "availableReplicas": len(latest.available_replicas(self._view())),
            "desiredReplicas": latest.spec.replicas,
            "version": latest.version,
            "versions": [v.to_status(self._view()) for v in reversed(versions)],
            "annotations": resource.annotations,
        }

    def model_statuses(self) -> list[dict[str, Any]]:
        return [self.model_status(name) for name in sorted(self.resources["Model"])]

    def server_statuses(self) -> list[dict[str, Any]]:
        names = {k.server for k in self.replicas} | set(self.resources["Server"])
        return [self.server_status(name) for name in sorted(names)]

    def server_status(self, name: str) -> dict[str, Any]:
        replicas = sorted(
            (r for k, r in self.replicas.items() if k.server == name), key=lambda r: r.key.index
        )
        if not replicas and name not in self.resources["Server"]:
            raise NotFound(f"server '{name}' not found")
        loaded = sum(
            1
            for versions in self.versions.values()
            for v in versions
            for k in v.available_replicas(self.replicas)
            if k.server == name
        )
        return {
            "serverName": name,
            "availableReplicas": len(replicas),
            "loadedModels": loaded,
            "replicas": [r.to_dict() for r in replicas],
        }

    def pipeline_status(self, name: str) -> dict[str, Any]:
        resource = self.get("Pipeline", name)
        version = self.pipeline_versions.get(name, 1)
        state_version, state, reason = self.pipeline_states.get(
            name, (version, PIPELINE_CREATE, "")
        )
        if state_version != version:
            state, reason = PIPELINE_CREATE, ""
        models = {}
        for step in resource.spec.step_names():
            versions = self.versions.get(step)
            models[step] = versions[-1].state if versions else "ModelNotFound"
        return {
            "pipelineName": name,
            "version": version,
            "state": state,
            "reason": reason,
            "modelsReady": all(s == MODEL_AVAILABLE for s in models.values()),
            "models": models,
            "pipelineDefn": resource.spec.to_dict(),
        }

    def pipeline_statuses(self) -> list[dict[str, Any]]:
        return [self.pipeline_status(name) for name in sorted(self.resources["Pipeline"])]

    def desired_pipelines(self) -> dict[str, tuple[int, Any]]:
        """Every pipeline's current version and spec, for the dataflow engine."""
        return {
            name: (self.pipeline_versions.get(name, 1), resource.spec)
            for name, resource in self.resources["Pipeline"].items()
        }

    def set_pipeline_status(self, name: str, version: int, state: str, reason: str) -> None:
        """The dataflow engine's report on one pipeline version."""
        if self.pipeline_versions.get(name) != version:
            return  # about a version that has been replaced meanwhile
        if self.pipeline_states.get(name) != (version, state, reason):
            self.pipeline_states[name] = (version, state, reason)
            self._notify()

    def experiment_route(self, name: str) -> ExperimentRoute:
        """The experiment as routers run it: active once its candidates and mirror are ready
        (a model's latest version ModelAvailable, a pipeline PipelineReady)."""
        spec = self.get("Experiment", name).spec
        route = ExperimentRoute(
            name,
            [(c.name, c.weight) for c in spec.candidates],
            default=spec.default,
            mirror=(spec.mirror.name, spec.mirror.percent) if spec.mirror else None,
            resource_type=spec.resource_type,
        )
        waiting = [
            f"{c.name} ({problem})"
            for c in spec.candidates
            if (problem := self._not_ready(spec.resource_type, c.name))
        ]
        mirror = spec.mirror and self._not_ready(spec.resource_type, spec.mirror.name)
        if not spec.candidates:
            route.reason = "it has no candidates to send requests to"
        elif waiting:
            route.reason = f"{spec.resource_type} candidates not ready: {', '.join(waiting)}"
        elif mirror:
            route.reason = f"mirror {spec.mirror.name} not ready ({mirror})"
        route.active = not route.reason
        return route

    def _not_ready(self, resource_type: str, name: str) -> str:
        """Why a model or pipeline cannot take an experiment's traffic ("" when it can)."""
        if resource_type == "pipeline":
            if name not in self.resources["Pipeline"]:
                return "pipeline not found"
            state = self.pipeline_status(name)["state"]
            return "" if state == "PipelineReady" else state
        versions = self.versions.get(name)
        if not versions:
            return "model not found"
        return "" if versions[-1].state == MODEL_AVAILABLE else versions[-1].state

    def experiment_status(self, name: str) -> dict[str, Any]:
        """Seldon's experiment status (c.6): `active`, `candidatesReady`, `mirrorReady`, and the
        conditions ExperimentReady, CandidatesReady, MirrorReady and Ready."""
        route = self.experiment_route(name)
        spec = self.get("Experiment", name).spec
        candidates = not any(self._not_ready(route.resource_type, n) for n, _ in route.candidates)
        mirror = not (spec.mirror and self._not_ready(route.resource_type, spec.mirror.name))
        description = "experiment active" if route.active else route.reason

        def condition(kind: str, ok: bool, message: str = "") -> dict[str, Any]:
            return {"type": kind, "status": "True" if ok else "False", "message": message}

        return {
            "experimentName": name,
            "active": route.active,
            "candidatesReady": candidates,
            "mirrorReady": mirror,
            "statusDescription": description,
            "default": route.default,
            "resourceType": route.resource_type,
            "conditions": [
                condition("ExperimentReady", route.active, description),
                condition("CandidatesReady", candidates),
                condition("MirrorReady", mirror),
                condition("Ready", route.active and candidates and mirror),
            ],
        }

    def experiment_statuses(self) -> list[dict[str, Any]]:
        return [self.experiment_status(name) for name in sorted(self.resources["Experiment"])]

    # --- agents -------------------------------------------------------------------------------

    def connect_replica(self, replica: ReplicaState) -> None:
        existing = self.replicas.get(replica.key)
        if existing is not None:
            raise Conflict(
                f"server '{replica.key.server}' replica {replica.key.index} is already connected"
            )
        self.replicas[replica.key] = replica
        self._seen.add(replica.key)
        log.info("server %s replica %d connected", replica.key.server, replica.key.index)
        self._reconcile()

    def report_models(self, key: ReplicaKey, models: dict[str, tuple[str, str]]) -> None:
        replica = self.replicas.get(key)
        if replica is None or replica.models == models:
            return
        replica.models = models
        self._reconcile()

    def disconnect_replica(self, key: ReplicaKey) -> None:
        if self.replicas.pop(key, None) is not None:
            log.info("server %s replica %d disconnected", key.server, key.index)
            self._reconcile()

    def desired_models(self, key: ReplicaKey) -> list[dict[str, Any]]:
        """What the replica's agent should hold: one entry per model version assigned to it."""
        return [
            {
                "name": v.internal_name,
                "model": v.model,
                "version": v.version,
                "spec": v.spec.to_dict(),
            }
            for versions in self.versions.values()
            for v in versions
            if key in v.assigned
        ]

    # --- routes and change notification -------------------------------------------------------

    def route_table(self) -> RouteTable:
        table = RouteTable(generation=self.generation)
        view = self._view()
        for name, versions in self.versions.items():
            latest = versions[-1]
            route = ModelRoute(name, latest.internal_name, latest.version, timeout=_timeout(latest))
            # The newest version with a ready replica answers; older ones cover a rollout.
            for version in reversed(versions):
                endpoints = [
                    Endpoint(r.http, r.grpc, r.key.server, r.key.index)
                    for k in version.available_replicas(view)
                    if (r := view[k])
                ]
                if endpoints:
                    route.internal_name, route.version = version.internal_name, version.version
                    route.endpoints = endpoints
                    break
            else:
                route.reason = f"{latest.state}" + (f": {latest.reason}" if latest.reason else "")
            table.models[name] = route
        for name in self.resources["Experiment"]:
            table.experiments[name] = self.experiment_route(name)
        return table

    async def wait_for_change(self, generation: int, timeout: float) -> RouteTable:
        """The route table once anything changed since `generation` (or after `timeout`)."""
        await self.wait_for_generation(generation, timeout)
        return self.route_table()

    async def wait_for_generation(self, generation: int, timeout: float) -> int:
        if generation == self.generation:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return self.generation

    def tick(self) -> None:
        """Called periodically: ends the reconnect grace once it has passed."""
        if self._in_grace() or not self._waiting_for_replicas():
            return
        self._reconcile()

    # --- reconciliation -----------------------------------------------------------------------

    def _view(self) -> dict[ReplicaKey, ReplicaState]:
        """The connected replicas, plus, while the reconnect grace after a restart lasts, the
        ones that were serving before it: presumed to still hold what they held."""
        if not self._in_grace():
            return self.replicas
        view = dict(self.replicas)
        for versions in self.versions.values():
            for version in versions:
                for key, (http, grpc) in version.serving.items():
                    if key in self.replicas or key in self._seen:
                        continue
                    if key not in view:
                        view[key] = ReplicaState(key, http, grpc, frozenset(), 0, 0)
                    view[key].models[version.internal_name] = ("READY", "")
        return view

    def _in_grace(self) -> bool:
        return time.monotonic() - self.started < self.replica_grace

    def _waiting_for_replicas(self) -> bool:
        return any(
            k not in self.replicas for vs in self.versions.values() for v in vs for k in v.assigned
        )

    def _reconcile(self) -> None:
        in_grace = self._in_grace()
        for name in sorted(self.versions):
            versions = self.versions[name]
            for version in self._active_versions(versions):
                waiting = [
                    k for k in version.assigned if k not in self.replicas and k not in self._seen
                ]
                if waiting and in_grace:
                    continue  # its replicas may still come back with the model loaded
                placement = place(self._demand(version), self._candidates(version))
                if placement.failure:
                    version.assigned = [k for k in version.assigned if k in self.replicas]
                else:
                    version.assigned = placement.replicas
                version.failure = placement.failure
            view = self._view()
            for version in versions:
                version.update_status(view)
            self._retire_old_versions(name)
            for version in self.versions.get(name, []):
                self._save_version(version)
        self._notify()

    def _notify(self) -> None:
        self.generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @staticmethod
    def _active_versions(versions: list[ModelVersion]) -> list[ModelVersion]:
        """The latest version, and the newest available older one while the latest rolls out."""
        latest = versions[-1]
        active = [latest]
        if latest.state != MODEL_AVAILABLE:
            older = [v for v in versions[:-1] if v.state == MODEL_AVAILABLE]
            active[:0] = older[-1:]
        return active

    def _retire_old_versions(self, name: str) -> None:
        versions = self.versions[name]
        keep = self._active_versions(versions)
        for version in versions:
            if version not in keep:
                self.store.delete_model_version(name, version.version)
        versions[:] = keep

    def _demand(self, version: ModelVersion) -> ModelDemand:
        spec = version.spec
        return ModelDemand(
            name=version.model,
            replicas=spec.replicas,
            min_replicas=spec.min_replicas or 0,
            memory=spec.memory or 0,
            requirements=tuple(spec.effective_requirements()),
            server=spec.server,
            explainer=spec.explainer is not None,
            explainer_type=spec.explainer.type if spec.explainer is not None else None,
        )

    def _candidates(self, placing: ModelVersion) -> list[ReplicaCandidate]:
        used: dict[ReplicaKey, int] = {}
        holding: dict[ReplicaKey, set[str]] = {}
        for versions in self.versions.values():
            for v in versions:
                for key in v.assigned:
                    holding.setdefault(key, set()).add(v.model)
                    if v is not placing:
                        used[key] = used.get(key, 0) + (v.spec.memory or 0)
        candidates = []
        for key, replica in self.replicas.items():
            candidates.append(
                ReplicaCandidate(
                    key=key,
                    capabilities=self._capabilities(replica),
                    free_memory=replica.memory - used.get(key, 0),
                    models=frozenset(holding.get(key, set())),
                )
            )
        return candidates

    def _capabilities(self, replica: ReplicaState) -> frozenset[str]:
        server = self.resources["Server"].get(replica.key.server)
        if server is None:
            return replica.capabilities
        return frozenset(server.spec.effective_capabilities(sorted(replica.capabilities)))

    def _save_version(self, version: ModelVersion) -> None:
        self.store.put_model_version(version.model, version.version, version.to_doc())

    def _restore(self) -> None:
        for kind in KINDS:
            for name, doc in self.store.resources(kind).items():
                try:
                    self.resources[kind][name] = resource_from_dict(doc)
                except BadRequest as exc:
                    log.error(
                        "dropping stored %s %s that no longer validates: %s",
                        kind,
                        name,
                        exc.message,
                    )
        for model, versions in self.store.model_versions().items():
            if model not in self.resources["Model"]:
                continue
            for number, doc in sorted(versions.items()):
                resource = resource_from_dict(
                    {**self.resources["Model"][model].to_dict(), "spec": doc["spec"]}
                )
                version = ModelVersion(model, number, resource.spec, doc.get("annotations", {}))
                version.assigned = [ReplicaKey(s, i) for s, i in doc["assigned"]]
                version.failure = doc.get("failure")
                version.state = doc.get("state", version.state)
                version.reason = doc.get("reason", "")
                version.last_change = doc.get("lastChange", version.last_change)
                version.serving = {
                    ReplicaKey(server, index): (http, grpc)
                    for server, index, http, grpc in doc.get("serving", [])
                }
                self.versions.setdefault(model, []).append(version)


def _timeout(version: ModelVersion) -> float | None:
    value = version.annotations.get(TIMEOUT_ANNOTATION)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
