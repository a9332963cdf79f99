"""The front process: the pool's parent serves HTTP and gRPC and passes each request to a worker.

With `--front` the parent of the worker pool listens on the server's ports itself and hands each
request, still undecoded, to a worker over the worker's control channel; the worker answers it
with the same REST app and gRPC servicer a single process uses, so every route, error and status
is the same. This is MLServer's shape (a front process and inference workers): the front's HTTP
and HTTP/2 work runs on one core while the model runs on another, and one worker (the default)
keeps every request of a stateful model (online drift, buffering detectors) in one process.
With several workers each request goes to the worker with the fewest requests in flight, so one
connection's requests are spread too (without `--front` a connection stays with one worker).

The front answers liveness itself, over REST and gRPC (it is alive while a worker restarts), and
`/metrics` from the files every worker writes its counts to (a scrape does not fail or lose a dead
worker's counts while it is replaced); anything else with no worker serving is a 503. A worker that
dies fails the requests it held with a 503 naming that, and its replacement takes new ones once it
holds the server's models.
"""

import grpc

from inferline.asgi import Response, allow, json_response, metrics_response, read_body, respond
from inferline.protocol.errors import InferlineError, grpc_code_name
from inferline.protocol.proto import inference_pb2 as pb
from inferline.server.grpc import InferenceServicer, bind_server
from inferline.server.rest import RestApp

SERVICE = "inference.GRPCInferenceService"
# Request message class by method name, for the methods the servicer answers (all unary).
_REQUEST_TYPES = {
    method.name: getattr(pb, method.input_type.name)
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    if method.name in vars(InferenceServicer)
}


# --- the front (the pool's parent) ----------------------------------------------------------


class FrontApp:
    """The front's ASGI app: reads the body (the size limit is enforced here, before anything
    crosses to a worker) and passes the request on. `forward(kind, *args)` is the pool's;
    `metrics_dir` the folder the workers write their metrics to."""

    def __init__(self, forward, max_request_size: int, metrics_dir: str | None = None):
        self._forward = forward
        self.max_request_size = max_request_size
        self.metrics_dir = metrics_dir

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await respond(scope, receive, send, self._route)

    async def _route(self, scope, receive) -> Response:
        if scope["path"].rstrip("/") == "/v2/health/live":
            allow(scope, "GET")
            return json_response(200, {"live": True})
        if self.metrics_dir is not None and scope["path"] == "/metrics":
            allow(scope, "GET")
            return metrics_response(self.metrics_dir)
        body = await read_body(scope, receive, self.max_request_size, "server")
        return await self._forward(
            "http", scope["method"], scope["path"], scope["query_string"], scope["headers"], body
        )


class _ForwardingHandler(grpc.GenericRpcHandler):
    """Takes every method of the inference service as raw bytes and passes it on."""

    def __init__(self, forward):
        self._forward = forward
        self._handlers = {
            f"/{SERVICE}/{name}": grpc.unary_unary_rpc_method_handler(self._behaviour(name))
            for name in _REQUEST_TYPES
        }

    def service(self, handler_call_details):
        return self._handlers.get(handler_call_details.method)

    def _behaviour(self, name: str):
        if name == "ServerLive":
            live = pb.ServerLiveResponse(live=True).SerializeToString()

            async def answer_live(request: bytes, context) -> bytes:
                return live

            return answer_live

        async def behaviour(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = [(m.key, m.value) for m in context.invocation_metadata() or ()]
            try:
                ok, value = await self._forward("grpc", name, metadata, request)
            except InferlineError as exc:
                ok, value = False, (grpc_code_name(exc), exc.message)
            if not ok:
                await context.abort(grpc.StatusCode[value[0]], value[1])
            return value

        return behaviour


def front_grpc_server(forward, address: str, max_message_size: int) -> tuple[grpc.aio.Server, int]:
    handler = _ForwardingHandler(forward)
    return bind_server(
        address, max_message_size, lambda server: server.add_generic_rpc_handlers((handler,))
    )


# --- a worker's end -----------------------------------------------------------------------------


class _Aborted(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message


class _Context:
    """The part of a grpc.aio servicer context `InferenceServicer` uses."""

    def __init__(self, metadata: list[tuple[str, str | bytes]]):
        self._metadata = metadata

    def invocation_metadata(self):
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str):
        raise _Aborted(code.name, details)


def worker_calls(dataplane) -> dict:
    """The calls a worker answers for the front: one HTTP request, one gRPC call."""
    # The front enforced the size limit already.
    rest = RestApp(dataplane, max_request_size=2**63)
    servicer = InferenceServicer(dataplane)

    async def http(method: str, path: str, query: bytes, headers: list, body: bytes) -> Response:
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query,
            "headers": headers,
        }
        answer = {}

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                # The front's own response sets the length.
                answer["headers"] = [h for h in message["headers"] if h[0] != b"content-length"]
            else:
                answer["body"] = message.get("body", b"")

        await rest(scope, receive, send)
        return answer["status"], answer["headers"], answer["body"]

    async def grpc_call(name: str, metadata: list, request: bytes):
        try:
            message = _REQUEST_TYPES[name].FromString(request)
        except Exception as exc:
            return False, ("INVALID_ARGUMENT", f"cannot parse the {name} request: {exc}")
        try:
            response = await getattr(servicer, name)(message, _Context(metadata))
        except _Aborted as exc:
            return False, (exc.code, exc.message)
        return True, response.SerializeToString()

    return {"http": http, "grpc": grpc_call}
