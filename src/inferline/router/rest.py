"""The router's REST edge: a lean ASGI app proxying V2 model calls to a chosen replica.

Hand-routed like the server's `RestApp`. The model comes from the `seldon-model` header, else from
the path; the path's model name is rewritten to the route's internal name (`<model>_<version>`)
and the body goes upstream byte for byte (JSON or binary tensors) over kept-alive connections
(`upstream.HttpUpstream`). The replica's answer comes back as it was (status, body, content-type,
inference header), plus `x-request-id` and `x-seldon-route`. `GET /metrics` answers the
Prometheus metrics of this process (`inferline.metrics`), Seldon Core 2's router-side ones included.
"""

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from inferline import tracing
from inferline.asgi import (
    Response,
    allow,
    error_response,
    header,
    json_response,
    metrics_response,
    read_body,
    respond,
)
from inferline.protocol.errors import InferlineError
from inferline.router.balancer import ConnectFailure
from inferline.router.core import (
    SPECIAL_SUFFIXES,
    BadGateway,
    InferMetrics,
    ModelRouter,
    NoRoute,
    new_request_id,
    not_served_yet,
    route_header,
    special_suffix,
)
from inferline.router.routes import Endpoint, ModelRoute
from inferline.router.upstream import (
    HttpUpstream,
    UpstreamBroken,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamResponse,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_SIZE = 100 * 1024 * 1024


# Not forwarded either way: hop-by-hop headers, and those the proxy sets itself.
_HOP_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        # The router answers `100 Continue` itself; the replica gets the whole body at once.
        b"expect",
        b"x-request-id",
    }
)
# Set by the router's own HTTP server on the way back.
_RESPONSE_SKIP = _HOP_HEADERS | {b"date", b"server"}


def _error_status(exc: Exception) -> str:
    return str(exc.status) if isinstance(exc, InferlineError) else "500"


# Inference calls over REST (the router's and the pipeline steps'), `code` the HTTP status. Only
# POST .../infer is counted, so the histogram's `method` (the HTTP method, lower-cased by
# Seldon's agent) is always "post".
REST_INFER = InferMetrics("rest", "post", lambda answer: str(answer.status), _error_status)


class ModelCall:
    """One model call as parsed from the path and headers, handed to special-name handlers."""

    __slots__ = ("method", "name", "operation", "query", "request_id", "scope", "version")

    def __init__(self, scope, name: str, version: str | None, operation: str, request_id: str):
        self.scope = scope
        self.method: str = scope["method"]
        self.name = name
        self.version = version
        self.operation = operation  # "infer", "ready" or "metadata"
        self.query: bytes = scope.get("query_string", b"")
        self.request_id = request_id


# A handler for names with a special suffix: gets the call and the request body.
SpecialHandler = Callable[[ModelCall, bytes], Awaitable[Response]]


async def _not_served_yet(call: ModelCall, body: bytes) -> Response:
    raise not_served_yet(call.name)


class RouterRestApp:
    def __init__(
        self,
        router: ModelRouter,
        upstream: HttpUpstream,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        special_handlers: dict[str, SpecialHandler] | None = None,
    ):
        self.router = router
        self.upstream = upstream
        self.max_request_size = max_request_size
        # Suffix -> handler for names that are not models (pipelines, experiments).
        self.special_handlers: dict[str, SpecialHandler] = {
            suffix: _not_served_yet for suffix in SPECIAL_SUFFIXES
        }
        self.special_handlers.update(special_handlers or {})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await respond(scope, receive, send, self._route)

    async def _route(self, scope, receive) -> Response:
        parts = scope["path"].strip("/").split("/")
        if parts == ["metrics"]:
            allow(scope, "GET")
            return metrics_response()
        if parts[0] != "v2":
            raise NoRoute(f"no route for {scope['path']}")
        rest = parts[1:]
        if rest == [] or rest == [""]:
            allow(scope, "GET")
            return json_response(200, self.router.server_metadata())
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            allow(scope, "GET")
            ok = True if rest[1] == "live" else self.router.ready()
            return json_response(200 if ok else 503, {rest[1]: ok})
        if rest[0] in ("models", "pipelines") and len(rest) >= 2:
            name = rest[1] if rest[0] == "models" else rest[1] + ".pipeline"
            return await self._model_call(scope, receive, name, rest[2:])
        raise NoRoute(f"no route for {scope['path']}")

    async def _model_call(self, scope, receive, path_name: str, tail: list[str]) -> Response:
        request_id = header(scope, b"x-request-id") or new_request_id()
        if tracing.ENABLED and tail[-1:] == ["infer"]:
            attributes = {"inference.model.name": path_name, "x-request-id": request_id}
            with tracing.span("router.infer", "server", scope["headers"], attributes) as span:
                status, headers, payload = await self._answer(
                    scope, receive, path_name, tail, request_id
                )
                span.set_attribute("http.response.status_code", status)
                return status, headers, payload
        return await self._answer(scope, receive, path_name, tail, request_id)

    async def _answer(
        self, scope, receive, path_name: str, tail: list[str], request_id: str
    ) -> Response:
        id_header = (b"x-request-id", request_id.encode())
        try:
            version = None
            if len(tail) >= 2 and tail[0] == "versions":
                version, tail = tail[1], tail[2:]
            if not tail:
                operation, method = "metadata", "GET"
            elif tail == ["ready"]:
                operation, method = "ready", "GET"
            elif tail == ["infer"]:
                operation, method = "infer", "POST"
            else:
                raise NoRoute(f"no route for {scope['path']}")
            allow(scope, method)
            # Header beats path, as in Seldon Core 2's Envoy.
            name = header(scope, b"seldon-model") or path_name
            body = await self._read_body(scope, receive) if method == "POST" else b""
            sticky = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-seldon-route"]
            plan = self.router.plan(name, sticky, mirror=operation == "infer")
            if plan.mirror is not None:
                mirrored = ModelCall(scope, plan.mirror, version, operation, request_id)
                self.router.mirrors.submit(lambda: self._dispatch(mirrored, body), plan.mirror)
            call = ModelCall(scope, plan.target, version, operation, request_id)
            status, headers, payload = await self._dispatch(call, body)
        except InferlineError as exc:
            status, headers, payload = error_response(exc)
        # A handler may answer with its own request id (a pipeline's is its message key).
        if not any(name == b"x-request-id" for name, _ in headers):
            headers.append(id_header)
        return status, headers, payload

    async def _dispatch(self, call: ModelCall, body: bytes) -> Response:
        suffix = special_suffix(call.name)
        if suffix is not None:
            return await self.special_handlers[suffix](call, body)
        return await self._proxy(call, body)

    async def _proxy(self, call: ModelCall, body: bytes) -> Response:
        route = self.router.route_of(call.name)
        path = _upstream_path(route, call)
        headers = _upstream_headers(call, route)

        async def attempt(endpoint: Endpoint) -> UpstreamResponse:
            return await self._send(endpoint, call.method, path, headers, body)

        counted = REST_INFER if call.operation == "infer" else None
        response = await self.router.call(route, attempt, counted=counted)
        response_headers = [(k, v) for k, v in response.headers if k not in _RESPONSE_SKIP]
        response_headers.append((b"x-seldon-route", route_header(route).encode()))
        return response.status, response_headers, response.body

    async def _send(
        self, endpoint: Endpoint, method: str, target: str, headers: list, body: bytes
    ) -> UpstreamResponse:
        try:
            return await self.upstream.request(endpoint.http, method, target, headers, body)
        except UpstreamConnectError as exc:
            raise ConnectFailure(endpoint, str(exc)) from None
        except UpstreamClosed as exc:
            # No answer at all (a replica going down): another replica may answer. Not set
            # aside, as one connection closing says little about the replica.
            raise ConnectFailure(endpoint, f"{endpoint.http}: {exc}", eject=False) from None
        except UpstreamBroken as exc:
            raise BadGateway(
                f"model replica at {endpoint.http} broke off its answer: {exc}"
            ) from None

    async def _read_body(self, scope, receive) -> bytes:
        return await read_body(scope, receive, self.max_request_size, "router")


def _upstream_path(route: ModelRoute, call: ModelCall) -> str:
    # Segments are quoted again: the ASGI path arrives percent-decoded.
    path = f"/v2/models/{quote(route.internal_name, safe='')}"
    if call.version is not None:
        path += f"/versions/{quote(call.version, safe='')}"
    if call.operation != "metadata":
        path += f"/{call.operation}"
    if call.query:
        path += "?" + call.query.decode("latin-1")
    return path


def _upstream_headers(call: ModelCall, route: ModelRoute) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in call.scope["headers"] if k not in _HOP_HEADERS]
    headers.append((b"x-request-id", call.request_id.encode()))
    # What Seldon's Envoy adds for the agent: the target it chose.
    headers.append((b"seldon-internal-model", route.internal_name.encode()))
    if tracing.ENABLED:
        headers = tracing.http_headers(headers)
    return headers
