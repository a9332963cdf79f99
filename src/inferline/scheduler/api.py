"""The scheduler's HTTP and WebSocket adapter (Starlette): the CLI, routers and agents use it.

POST   /v1/resources                 apply a (multi-document) YAML body
DELETE /v1/resources                 delete every resource named in a YAML body
GET    /v1/{kind}s[/{name}]          status of models, servers, pipelines, experiments
DELETE /v1/{kind}s/{name}            delete one resource
GET    /v1/resources/{kind}/{name}   the stored resource
GET    /v1/routes?generation=N&wait=S  the route table, long-polled by remote routers
WS     /v1/agents                    agents: hello + model reports in, desired models out
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from inferline.protocol.errors import BadRequest, InferlineError
from inferline.resources import load_resources
from inferline.scheduler.core import KINDS, Scheduler
from inferline.scheduler.placement import ReplicaKey
from inferline.scheduler.state import ReplicaState

log = logging.getLogger(__name__)

_PLURALS = {f"{kind.lower()}s": kind for kind in KINDS}
MAX_WAIT = 30.0


def _json(doc, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status, media_type="application/json")


def _kind(plural: str) -> str:
    try:
        return _PLURALS[plural]
    except KeyError:
        raise NotFoundRoute(f"no resources called '{plural}'") from None


class NotFoundRoute(InferlineError):
    status = 404


# (expression, request id, offset) -> per topic, the messages found; see dataflow.inspect.
Inspector = Callable[[str, str | None, int], Awaitable[list[dict]]]


def create_scheduler_app(scheduler: Scheduler, inspector: Inspector | None = None) -> Starlette:
    async def health(request: Request) -> Response:
        return _json({"ok": True, "generation": scheduler.generation})

    async def apply_resources(request: Request) -> Response:
        resources = load_resources((await request.body()).decode(), source="request")
        results = [
            {"kind": r.kind, "name": r.name, "result": scheduler.apply(r)} for r in resources
        ]
        return _json(results)

    async def delete_resources(request: Request) -> Response:
        resources = load_resources((await request.body()).decode(), source="request")
        results = []
        for resource in resources:
            scheduler.delete(resource.kind, resource.name)
            results.append({"kind": resource.kind, "name": resource.name, "result": "deleted"})
        return _json(results)

    async def list_kind(request: Request) -> Response:
        kind = _kind(request.path_params["plural"])
        if kind == "Model":
            return _json(scheduler.model_statuses())
        if kind == "Server":
            return _json(scheduler.server_statuses())
        if kind == "Pipeline":
            return _json(scheduler.pipeline_statuses())
        return _json(scheduler.experiment_statuses())

    async def one_of_kind(request: Request) -> Response:
        kind = _kind(request.path_params["plural"])
        name = request.path_params["name"]
        if request.method == "DELETE":
            scheduler.delete(kind, name)
            return _json({"kind": kind, "name": name, "result": "deleted"})
        if kind == "Model":
            return _json(scheduler.model_status(name))
        if kind == "Server":
            return _json(scheduler.server_status(name))
        if kind == "Pipeline":
            return _json(scheduler.pipeline_status(name))
        return _json(scheduler.experiment_status(name))

    async def resource(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in KINDS:
            raise BadRequest(f"unknown kind '{kind}'; expected one of {', '.join(KINDS)}")
        return _json(scheduler.get(kind, request.path_params["name"]).to_dict())

    async def routes(request: Request) -> Response:
        try:
            generation = int(request.query_params.get("generation", -1))
            wait = min(float(request.query_params.get("wait", 0)), MAX_WAIT)
        except ValueError:
            raise BadRequest("'generation' and 'wait' must be numbers") from None
        table = await scheduler.wait_for_change(generation, wait)
        return _json(table.to_dict())

    async def inspect(request: Request) -> Response:
        if inspector is None:
            raise NotFoundRoute("this scheduler runs with no bus to inspect")
        expression = request.query_params.get("expression", "")
        pipeline = expression.split(".")[0]
        scheduler.get("Pipeline", pipeline)
        try:
            offset = int(request.query_params.get("offset", 1))
        except ValueError:
            raise BadRequest("'offset' must be an integer") from None
        return _json(await inspector(expression, request.query_params.get("requestId"), offset))

    async def agents(websocket: WebSocket) -> None:
        await websocket.accept()
        await AgentSession(scheduler, websocket).run()

    async def handle_error(request: Request, exc: InferlineError) -> Response:
        return _json({"error": exc.message}, exc.status)

    return Starlette(
        routes=[
            Route("/v1/health", health),
            Route("/v1/resources", apply_resources, methods=["POST"]),
            Route("/v1/resources", delete_resources, methods=["DELETE"]),
            Route("/v1/resources/{kind}/{name}", resource),
            Route("/v1/routes", routes),
            Route("/v1/inspect", inspect),
            Route("/v1/{plural}", list_kind),
            Route("/v1/{plural}/{name}", one_of_kind, methods=["GET", "DELETE"]),
            WebSocketRoute("/v1/agents", agents),
        ],
        exception_handlers={InferlineError: handle_error},
    )


class AgentSession:
    """One agent's connection: its reports come in, its desired models go out on every change.

    The connection is the replica's liveness: when it closes, the replica is gone and its models
    are placed elsewhere.
    """

    def __init__(self, scheduler: Scheduler, websocket: WebSocket):
        self.scheduler = scheduler
        self.websocket = websocket
        self.key: ReplicaKey | None = None

    async def run(self) -> None:
        try:
            hello = orjson.loads(await self.websocket.receive_text())
            replica = _replica_from_hello(hello)
            self.scheduler.connect_replica(replica)
        except (InferlineError, KeyError, TypeError, ValueError) as exc:
            message = exc.message if isinstance(exc, InferlineError) else f"bad hello: {exc!r}"
            await self.websocket.send_text(
                orjson.dumps({"type": "error", "error": message}).decode()
            )
            await self.websocket.close(code=1008)
            return
        except WebSocketDisconnect:
            return
        self.key = replica.key
        self.scheduler.report_models(self.key, _model_states(hello))
        pusher = asyncio.create_task(self._push_desired())
        try:
            while True:
                message = orjson.loads(await self.websocket.receive_text())
                if message.get("type") == "state":
                    self.scheduler.report_models(self.key, _model_states(message))
        except WebSocketDisconnect:
            pass
        finally:
            pusher.cancel()
            self.scheduler.disconnect_replica(self.key)

    async def _push_desired(self) -> None:
        sent = None
        generation = -1
        try:
            while True:
                desired = self.scheduler.desired_models(self.key)
                if desired != sent:
                    await self.websocket.send_text(
                        orjson.dumps({"type": "desired", "models": desired}).decode()
                    )
                    sent = desired
                generation = await self.scheduler.wait_for_generation(generation, MAX_WAIT)
        except (WebSocketDisconnect, RuntimeError):
            return  # the receiving side sees the disconnect and cleans up


def _replica_from_hello(hello: dict) -> ReplicaState:
    if hello.get("type") != "hello":
        raise BadRequest("the first message must be a hello")
    overcommit = int(hello.get("overcommitPercentage", 0))
    return ReplicaState(
        key=ReplicaKey(str(hello["server"]), int(hello["replica"])),
        http=str(hello["http"]),
        grpc=str(hello["grpc"]),
        capabilities=frozenset(hello.get("capabilities", [])),
        memory=int(hello["memory"]) * (100 + overcommit) // 100,
        overcommit_percentage=overcommit,
        pid=hello.get("pid"),
    )


def _model_states(message: dict) -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["state"], m.get("reason", "")) for m in message.get("models", [])}
