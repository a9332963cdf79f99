"""The router's transport-agnostic core: name -> route -> balanced, timed call to a replica.

The REST and gRPC adapters parse their request, ask `ModelRouter.resolve` for the route, and hand
`ModelRouter.call` an `attempt(endpoint)` coroutine that speaks their protocol to one replica.
Everything they answer by themselves is an `InferlineError` with the HTTP status it stands for.
"""

import asyncio
import base64
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from inferline import __version__
from inferline.protocol.errors import InferlineError
from inferline.router.balancer import Balancer, NoEndpointAnswered
from inferline.router.routes import Endpoint, ModelRoute, RouteTable

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


def special_suffix(name: str) -> str | None:
    for suffix in SPECIAL_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def route_header(route: ModelRoute) -> str:
    """The `x-seldon-route` value for a call answered by `route`."""
    return f":{route.internal_name}:"


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
    ):
        self.routes = routes
        self.balancer = balancer or Balancer()
        self.default_timeout = default_timeout

    def ready(self) -> bool:
        """Ready once a route table has been received (a follower tells; anything else is)."""
        return getattr(self.routes, "synced", True)

    def server_metadata(self) -> dict:
        return {"name": ROUTER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def resolve(self, name: str) -> ModelRoute:
        """The route of a model that has a replica to call, or the error to answer with."""
        route = self.routes.table.models.get(name)
        if route is None:
            raise UnknownModel(name)
        if not route.endpoints:
            reason = f": {route.reason}" if route.reason else ""
            raise NoReadyReplica(f"model '{name}' has no ready replica{reason}")
        return route

    def timeout_for(self, route: ModelRoute) -> float:
        return route.timeout if route.timeout else self.default_timeout

    async def call(
        self,
        route: ModelRoute,
        attempt: Callable[[Endpoint], Awaitable[T]],
        timeout: float | None = None,
    ) -> T:
        """Call one replica of `route` through the balancer, within `timeout` seconds (default:
        the route's). Raises `UpstreamTimeout` or `UpstreamUnavailable` naming the model."""
        limit = self.timeout_for(route) if timeout is None else timeout
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
