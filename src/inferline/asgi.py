"""What the lean ASGI apps (the model server's and the router's REST) share: request headers,
the body read with a size limit, and JSON answers."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from inferline import metrics
from inferline.protocol.errors import InferlineError, PayloadTooLarge

log = logging.getLogger(__name__)

JSON_HEADERS = [(b"content-type", b"application/json")]

# (status, headers, body)
Response = tuple[int, list[tuple[bytes, bytes]], bytes]


class MethodNotAllowed(InferlineError):
    status = 405


def header(scope, name: bytes) -> str | None:
    """The value of a request header; `name` in lower case, as ASGI gives them."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def allow(scope, allowed: str) -> None:
    if scope["method"] != allowed:
        raise MethodNotAllowed(f"method {scope['method']} not allowed here; use {allowed}")


def json_response(status: int, doc: Any) -> Response:
    return status, list(JSON_HEADERS), orjson.dumps(doc)


def metrics_response(multiprocess_dir: str | None = None) -> Response:
    """A `GET /metrics` answer (`inferline.metrics.exposition`)."""
    body, content_type = metrics.exposition(multiprocess_dir)
    return 200, [(b"content-type", content_type.encode())], body


def error_response(exc: InferlineError) -> Response:
    status, headers, body = json_response(exc.status, {"error": exc.message})
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers]
    return status, headers, body


async def read_body(scope, receive, limit: int, owner: str) -> bytes:
    """The whole request body; over `limit` bytes it is a 413 naming the limit. `owner` says
    whose limit it is ("server", "router")."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(f"{declared}", limit, owner))
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(f"at least {size}", limit, owner))
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(amount: str, limit: int, owner: str) -> str:
    return (
        f"request body of {amount} bytes is over the {owner}'s limit of {limit} bytes "
        "(--max-request-size)"
    )


async def respond(scope, receive, send, route: Callable[..., Awaitable[Response]]) -> None:
    """Answer one HTTP request with what `route(scope, receive)` returns: InferlineErrors become
    their status with `{"error": ...}`, anything else a 500 (our bug, logged)."""
    try:
        status, headers, body = await route(scope, receive)
    except InferlineError as exc:
        status, headers, body = error_response(exc)
    except Exception:
        log.exception("internal error on %s %s", scope["method"], scope["path"])
        status, headers, body = json_response(500, {"error": "internal server error"})
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
