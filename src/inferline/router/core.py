"""The router's transport-agnostic core: name -> route -> balanced, timed call to a replica.

The REST and gRPC adapters parse their request, ask `ModelRouter.resolve` for the route, and hand
`ModelRouter.call` an `attempt(endpoint)` coroutine that speaks their protocol to one replica.
Everything they answer by themselves is an `InferlineError` with the HTTP status it stands for.
"""

import asyncio
import base64
import itertools
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from inferline import __version__, metrics
from inferline.protocol.errors import InferlineError
from inferline.router.balancer import Balancer, NoEndpointAnswered
from inferline.router.routes import Endpoint, ExperimentRoute, ModelRoute, RouteTable

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
ROUTER_NAME = "inferline-router"
# The router forwards binary tensors and parameters untouched; it has no model repository.
EXTENSIONS = ["binary_tensor_data", "parameters"]

# Names with these suffixes are not models (sc2-semantics d). Their handlers plug in per transport.
PIPELINE_SUFFIX = ".pipeline"
EXPERIMENT_SUFFIX = ".experiment"
SPECIAL_SUFFIXES = (PIPELINE_SUFFIX, EXPERIMENT_SUFFIX)


class NoRoute(InferlineError):
    status = 404


class UnknownModel(InferlineError):
    status = 404

    def __init__(self, name: str):
        super().__init__(f"model '{name}' not found")
        self.name = name


class NoReadyReplica(InferlineError):
    status = 503


class UpstreamUnavailable(InferlineError):
    status = 503


class BadGateway(InferlineError):
    """The replica's answer was cut off or unreadable."""

    status = 502


class UpstreamTimeout(InferlineError):
    status = 504


class NotServedYet(InferlineError):
    status = 404


def not_served_yet(name: str) -> NotServedYet:
    kind = "pipelines" if name.endswith(PIPELINE_SUFFIX) else "experiments"
    return NotServedYet(f"'{name}': {kind} are not served by this router yet")


class UnknownExperiment(InferlineError):
    status = 404


class ExperimentNotActive(InferlineError):
    status = 503


def special_suffix(name: str) -> str | None:
    for suffix in SPECIAL_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def route_header(route: ModelRoute) -> str:
    """The `x-seldon-route` value for a call answered by `route`: `:<model>_<version>:`, as
    Seldon's Envoy sets it (pipelines answer with `:<p>.pipeline:` from their gateway)."""
    return f":{route.internal_name}:"


# One `x-seldon-route` value holds one or more `:<target>:` (they accumulate across hops, and
# an HTTP client may have joined repeated headers with ", ").
_ROUTE_TOKEN = re.compile(r":([^:,\s]+):")


def route_targets(values: Iterable[str]) -> set[str]:
    """The targets named by `x-seldon-route` values: `iris_1`, `p.pipeline`, ..."""
    return {token for value in values for token in _ROUTE_TOKEN.findall(value)}


@dataclass(slots=True, frozen=True)
class Plan:
    """Where one call goes: `target` is a model name or `<p>.pipeline`; `mirror` the same kind
    of name when this call is also copied to an experiment's mirror."""

    target: str
    experiment: str | None = None
    mirror: str | None = None


def _target_name(experiment: ExperimentRoute, name: str) -> str:
    return name + PIPELINE_SUFFIX if experiment.resource_type == "pipeline" else name


class MirrorCalls:
    """Mirror calls run in the background, at most `limit` at a time.

    A mirror never changes or delays the caller's answer: its call is a task of its own whose
    answer and errors are dropped. When the mirror is slower than the traffic, copies beyond
    `limit` are skipped (and counted) instead of piling up.
    """

    def __init__(self, limit: int = 64):
        self.limit = limit
        self.sent = 0
        self.failed = 0
        self.skipped = 0
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, call: Callable[[], Awaitable[object]], target: str) -> bool:
        """Start `call()` unless `limit` mirror calls are running; returns whether it started."""
        if len(self._tasks) >= self.limit:
            self.skipped += 1
            if self.skipped == 1 or self.skipped % 1000 == 0:
                log.warning(
                    "mirror '%s' is behind: %d mirror call(s) running, %d copies skipped so far",
                    target,
                    len(self._tasks),
                    self.skipped,
                )
            return False
        self.sent += 1
        task = asyncio.create_task(self._run(call, target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, call: Callable[[], Awaitable[object]], target: str) -> None:
        try:
            await call()
        except Exception as exc:  # the mirror's own failure; nobody waits for it
            self.failed += 1
            log.debug("mirror call to '%s' failed: %s", target, exc)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class InferMetrics:
    """Counts one transport's inference calls of model replicas in Seldon's agent metrics
    (`metrics.model_infer_series`), labelled with the replica that was called last.

    `answer_code` and `error_code` give the `code` label of an answer and of an error: what the
    router answers the client with (for a timeout or no reachable replica: 504 / 503, or
    DEADLINE_EXCEEDED / UNAVAILABLE). Calls that never reach a replica (unknown model, no ready
    replica) are not counted: Seldon's agent never sees them either, and their names would be
    the caller's, not a model's.
    """

    def __init__(
        self,
        method_type: str,
        method: str,
        answer_code: Callable[[object], str],
        error_code: Callable[[Exception], str],
    ):
        self.method_type = method_type
        self.method = method
        self.answer_code = answer_code
        self.error_code = error_code
        self._series: dict[tuple[str, Endpoint, str], metrics.InferSeries] = {}

    def observe(self, route: ModelRoute, endpoint: Endpoint, code: str, seconds: float) -> None:
        key = (route.internal_name, endpoint, code)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metrics.model_infer_series(
                endpoint.server,
                str(endpoint.replica),
                route.name,
                route.internal_name,
                self.method_type,
                self.method,
                code,
            )
        series.observe(seconds)


class _RequestIds:
    """xid-style ids, as Seldon's agent makes: 4 bytes of seconds, 5 random bytes fixed per
    process, a 3-byte counter; 20 characters of base32hex, sortable by creation time."""

    def __init__(self):
        self._machine = os.urandom(5)
        self._counter = itertools.count(int.from_bytes(os.urandom(3)))

    def __call__(self) -> str:
        raw = (
            int(time.time()).to_bytes(4)
            + self._machine
            + (next(self._counter) & 0xFFFFFF).to_bytes(3)
        )
        return base64.b32hexencode(raw).decode()[:20].lower()


new_request_id = _RequestIds()


class RouteView(Protocol):
    """Anything holding the current table: a `RouteFollower`, a `MutableRouteSource`."""

    @property
    def table(self) -> RouteTable: ...


class ModelRouter:
    def __init__(
        self,
        routes: RouteView,
        balancer: Balancer | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        rng: random.Random | None = None,
        mirror_limit: int = 64,
    ):
        self.routes = routes
        self.balancer = balancer or Balancer()
        self.default_timeout = default_timeout
        # Experiments' splits and mirror shares (seeded in tests).
        self.rng = rng or random.Random()
        self.mirrors = MirrorCalls(mirror_limit)

    def ready(self) -> bool:
        """Ready once a route table has been received (a follower tells; anything else is)."""
        return getattr(self.routes, "synced", True)

    def server_metadata(self) -> dict:
        return {"name": ROUTER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def resolve(self, name: str) -> ModelRoute:
        """The route to call for model `name`, with the split of an experiment whose default it
        is applied (randomly: callers without the sticky header, such as pipeline steps, get it
        this way); or the error to answer with."""
        return self.route_of(self.plan(name, mirror=False).target)

    def route_of(self, name: str) -> ModelRoute:
        """The route of model `name` itself, or the error to answer with."""
        route = self.routes.table.models.get(name)
        if route is None:
            raise UnknownModel(name)
        if not route.endpoints:
            reason = f": {route.reason}" if route.reason else ""
            raise NoReadyReplica(f"model '{name}' has no ready replica{reason}")
        return route

    def plan(self, name: str, sticky: Iterable[str] = (), mirror: bool = True) -> Plan:
        """Where a call for `name` goes. `name` may be `<e>.experiment`, or the default of an
        active experiment (its own callers are split too); anything else goes to `name`.
        `sticky` are the caller's `x-seldon-route` values: one naming a candidate pins the call
        to it. `mirror=False` for calls that are not copied (ready, metadata)."""
        table = self.routes.table
        if name.endswith(EXPERIMENT_SUFFIX):
            experiment = self._experiment(table, name[: -len(EXPERIMENT_SUFFIX)])
        elif name.endswith(PIPELINE_SUFFIX):
            experiment = table.split_of(name[: -len(PIPELINE_SUFFIX)], "pipeline")
        else:
            experiment = table.split_of(name, "model")
        if experiment is None:
            return Plan(name)
        chosen = self._sticky_candidate(experiment, table, route_targets(sticky))
        if chosen is None:
            names = [n for n, _ in experiment.candidates]
            weights = [w for _, w in experiment.candidates]
            chosen = self.rng.choices(names, weights)[0]
        copy = None
        if mirror and experiment.mirror is not None:
            target, percent = experiment.mirror
            if self.rng.random() * 100 < percent:
                copy = _target_name(experiment, target)
        return Plan(_target_name(experiment, chosen), experiment.name, copy)

    @staticmethod
    def _experiment(table: RouteTable, name: str) -> ExperimentRoute:
        experiment = table.experiments.get(name)
        if experiment is None:
            raise UnknownExperiment(f"experiment '{name}' not found")
        if not experiment.active:
            reason = f": {experiment.reason}" if experiment.reason else ""
            raise ExperimentNotActive(f"experiment '{name}' is not active{reason}")
        return experiment

    @staticmethod
    def _sticky_candidate(
        experiment: ExperimentRoute, table: RouteTable, targets: set[str]
    ) -> str | None:
        """The candidate a sticky caller names (`iris_1` names model iris at any version: model
        names have no underscore; `p.pipeline` names pipeline p)."""
        if not targets:
            return None
        for name, _ in experiment.candidates:
            if experiment.resource_type == "pipeline":
                if name + PIPELINE_SUFFIX in targets:
                    return name
            elif any(t == name or t.rsplit("_", 1)[0] == name for t in targets):
                return name
        return None

    def timeout_for(self, route: ModelRoute) -> float:
        return route.timeout if route.timeout else self.default_timeout

    async def call(
        self,
        route: ModelRoute,
        attempt: Callable[[Endpoint], Awaitable[T]],
        timeout: float | None = None,
        counted: InferMetrics | None = None,
    ) -> T:
        """Call one replica of `route` through the balancer, within `timeout` seconds (default:
        the route's). Raises `UpstreamTimeout` or `UpstreamUnavailable` naming the model.
        An inference call is `counted` in the metrics given, whatever its outcome."""
        limit = self.timeout_for(route) if timeout is None else timeout
        if counted is None:
            return await self._call(route, attempt, limit)
        called: Endpoint | None = None

        async def tracked(endpoint: Endpoint) -> T:
            nonlocal called
            called = endpoint
            return await attempt(endpoint)

        started = time.perf_counter()
        try:
            answer = await self._call(route, tracked, limit)
        except Exception as exc:
            if called is not None:
                seconds = time.perf_counter() - started
                counted.observe(route, called, counted.error_code(exc), seconds)
            raise
        counted.observe(route, called, counted.answer_code(answer), time.perf_counter() - started)
        return answer

    async def _call(
        self, route: ModelRoute, attempt: Callable[[Endpoint], Awaitable[T]], limit: float
    ) -> T:
        try:
            async with asyncio.timeout(limit):
                return await self.balancer.call(route.internal_name, route.endpoints, attempt)
        except TimeoutError:
            raise UpstreamTimeout(
                f"model '{route.name}' did not answer within {limit:g} s (timeout)"
            ) from None
        except NoEndpointAnswered as exc:
            last = f" (last: {exc.failures[-1]})" if exc.failures else ""
            raise UpstreamUnavailable(
                f"model '{route.name}' is unavailable: none of its {len(route.endpoints)} "
                f"replica(s) could be reached{last}"
            ) from None
