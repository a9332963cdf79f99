"""The REST adapter: a lean ASGI app translating V2 HTTP calls to the data plane.

Hand-routed on the path segments rather than through a web framework, so the inference hot path is
one body read, one decode, one predict and one encode. Errors go out as `{"error": "..."}` with the
status the exception carries.
"""

import logging
from typing import Any

import orjson

from inferline.protocol import json_encoding
from inferline.protocol.errors import BadRequest, InferlineError, PayloadTooLarge
from inferline.server.dataplane import DataPlane

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_SIZE = 100 * 1024 * 1024

_JSON = [(b"content-type", b"application/json")]
_HEADER_LENGTH = "inference-header-content-length"


class NotFound(InferlineError):
    status = 404


class MethodNotAllowed(InferlineError):
    status = 405


def _json_response(doc: Any, status: int = 200) -> tuple[int, list, bytes]:
    return status, _JSON, orjson.dumps(doc)


class RestApp:
    def __init__(self, dataplane: DataPlane, max_request_size: int = DEFAULT_MAX_REQUEST_SIZE):
        self.dataplane = dataplane
        self.max_request_size = max_request_size

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        try:
            status, headers, body = await self._route(scope, receive)
        except InferlineError as exc:
            status, headers, body = _json_response({"error": exc.message}, exc.status)
        except Exception:
            log.exception("internal error on %s %s", scope["method"], scope["path"])
            status, headers, body = _json_response({"error": "internal server error"}, 500)
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope, receive) -> tuple[int, list, bytes]:
        method = scope["method"]
        parts = scope["path"].strip("/").split("/")
        if parts[0] != "v2":
            raise NotFound(f"no route for {scope['path']}")
        rest = parts[1:]
        if rest == [] or rest == [""]:
            _allow(method, "GET")
            return _json_response(self.dataplane.server_metadata().to_dict())
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            _allow(method, "GET")
            ok = self.dataplane.live() if rest[1] == "live" else self.dataplane.ready()
            return _json_response({rest[1]: ok}, 200 if ok else 503)
        if rest[0] == "models" and len(rest) >= 2:
            return await self._model_route(scope, receive, rest[1], rest[2:])
        if rest[0] == "repository":
            return await self._repository_route(scope, receive, rest[1:])
        raise NotFound(f"no route for {scope['path']}")

    async def _model_route(self, scope, receive, name: str, rest: list[str]):
        method = scope["method"]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        if not rest:
            _allow(method, "GET")
            return _json_response(self.dataplane.model_metadata(name, version).to_dict())
        if rest == ["ready"]:
            _allow(method, "GET")
            ready = self.dataplane.model_ready(name, version)
            return _json_response({"name": name, "ready": ready}, 200 if ready else 503)
        if rest == ["infer"]:
            _allow(method, "POST")
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
        _allow(scope["method"], "POST")
        body = await self._read_body(scope, receive)
        doc = _optional_json(body)
        if rest == ["index"]:
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise BadRequest("'ready' must be true or false")
            rows = self.dataplane.repository_index(ready_only=ready)
            return _json_response([row.to_dict() for row in rows])
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            if rest[2] == "load":
                await self.dataplane.load(rest[1])
            else:
                await self.dataplane.unload(rest[1])
            return 200, _JSON, b""
        raise NotFound(f"no route for {scope['path']}")

    async def _read_body(self, scope, receive) -> bytes:
        limit = self.max_request_size
        declared = _header(scope, "content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(_too_large(int(declared), limit))
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(_too_large(size, limit, at_least=True))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    amount = f"at least {size}" if at_least else f"{size}"
    return (
        f"request body of {amount} bytes is over the server's limit of {limit} bytes "
        "(--max-request-size)"
    )


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"method {method} not allowed here; use {allowed}")


def _header(scope, name: str) -> str | None:
    key = name.encode()
    for header, value in scope["headers"]:
        if header == key:
            return value.decode("latin-1")
    return None


def _header_length(scope) -> int | None:
    value = _header(scope, _HEADER_LENGTH)
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
