"""The REST adapter: a lean ASGI app translating V2 HTTP calls to the data plane.

Hand-routed on the path segments rather than through a web framework, so the inference hot path is
one body read, one decode, one predict and one encode. Errors go out as `{"error": "..."}` with the
status the exception carries.
"""

import logging

import orjson

from inferline import tracing
from inferline.asgi import (
    JSON_HEADERS,
    Response,
    allow,
    header,
    json_response,
    metrics_response,
    read_body,
    respond,
)
from inferline.protocol import json_encoding
from inferline.protocol.errors import BadRequest, InferlineError
from inferline.server.dataplane import DataPlane

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_SIZE = 100 * 1024 * 1024

_JSON = JSON_HEADERS
_HEADER_LENGTH = "inference-header-content-length"


class NotFound(InferlineError):
    status = 404


class RestApp:
    def __init__(self, dataplane: DataPlane, max_request_size: int = DEFAULT_MAX_REQUEST_SIZE):
        self.dataplane = dataplane
        self.max_request_size = max_request_size

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await respond(scope, receive, send, self._route)

    async def _route(self, scope, receive) -> Response:
        parts = scope["path"].strip("/").split("/")
        if parts == ["metrics"]:
            allow(scope, "GET")
            return metrics_response()
        if parts[0] != "v2":
            raise NotFound(f"no route for {scope['path']}")
        rest = parts[1:]
        if rest == [] or rest == [""]:
            allow(scope, "GET")
            return json_response(200, self.dataplane.server_metadata().to_dict())
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            allow(scope, "GET")
            ok = self.dataplane.live() if rest[1] == "live" else self.dataplane.ready()
            return json_response(200 if ok else 503, {rest[1]: ok})
        if rest[0] == "models" and len(rest) >= 2:
            return await self._model_route(scope, receive, rest[1], rest[2:])
        if rest[0] == "repository":
            return await self._repository_route(scope, receive, rest[1:])
        raise NotFound(f"no route for {scope['path']}")

    async def _model_route(self, scope, receive, name: str, rest: list[str]):
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        if not rest:
            allow(scope, "GET")
            return json_response(200, self.dataplane.model_metadata(name, version).to_dict())
        if rest == ["ready"]:
            allow(scope, "GET")
            ready = self.dataplane.model_ready(name, version)
            return json_response(200 if ready else 503, {"name": name, "ready": ready})
        if rest == ["infer"]:
            allow(scope, "POST")
            if tracing.ENABLED:
                with tracing.span(
                    "server.infer", "server", scope["headers"], _attributes(scope, name, version)
                ):
                    return await self._infer(scope, receive, name, version)
            return await self._infer(scope, receive, name, version)
        raise NotFound(f"no route for {scope['path']}")

    async def _infer(self, scope, receive, name: str, version: str | None):
        body = await self._read_body(scope, receive)
        json_length = _header_length(scope)
        request = json_encoding.decode_request(body, json_length)
        response = await self.dataplane.infer(name, version, request)
        payload, header_length = json_encoding.encode_response(
            response, json_encoding.binary_output_names(request)
        )
        if header_length is None:
            return 200, _JSON, payload
        headers = [
            (b"content-type", b"application/octet-stream"),
            (_HEADER_LENGTH.encode(), str(header_length).encode()),
        ]
        return 200, headers, payload

    async def _repository_route(self, scope, receive, rest: list[str]):
        allow(scope, "POST")
        body = await self._read_body(scope, receive)
        doc = _optional_json(body)
        if rest == ["index"]:
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise BadRequest("'ready' must be true or false")
            rows = self.dataplane.repository_index(ready_only=ready)
            return json_response(200, [row.to_dict() for row in rows])
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            if rest[2] == "load":
                await self.dataplane.load(rest[1])
            else:
                await self.dataplane.unload(rest[1])
            return 200, _JSON, b""
        raise NotFound(f"no route for {scope['path']}")

    async def _read_body(self, scope, receive) -> bytes:
        return await read_body(scope, receive, self.max_request_size, "server")


def _attributes(scope, name: str, version: str | None) -> dict[str, str]:
    attributes = {"inference.model.name": name, "inference.model.version": version or ""}
    request_id = header(scope, b"x-request-id")
    if request_id is not None:
        attributes["x-request-id"] = request_id
    return attributes


def _header_length(scope) -> int | None:
    value = header(scope, _HEADER_LENGTH.encode())
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(
            f"Inference-Header-Content-Length must be an integer, got '{value}'"
        ) from None


def _optional_json(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    return doc
