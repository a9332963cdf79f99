"""`model infer`: one call, or a loop counting answers by route, over REST or gRPC.

Sticky sessions work as in Seldon's CLI: the `x-seldon-route` values of every successful answer
are saved (`$XDG_CONFIG_HOME/inferline/cli/session`, else `~/.config/...`), and `-s` sends the
saved ones with each call, so an experiment keeps answering from the candidate it chose last.
"""

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from inferline.cli.client import CLIError, error_message
from inferline.protocol import json_encoding, protobuf
from inferline.protocol.errors import InferlineError

ROUTE_HEADER = "x-seldon-route"


@dataclass
class InferResult:
    body: dict | None
    headers: dict[str, str]
    error: str | None = None
    routes: list[str] = field(default_factory=list)  # every x-seldon-route value answered


@dataclass
class InferOptions:
    target: str  # what `seldon-model` names: "iris" or "p.pipeline"
    path_name: str  # the name in /v2/models/{name}/infer
    payload: bytes
    mode: str = "rest"
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    sticky: bool = False  # send the routes the last answer saved


class Inferrer:
    def __init__(self, options: InferOptions, rest_host: str, grpc_host: str):
        self.options = options
        self.rest_host, self.grpc_host = rest_host, grpc_host
        routes = load_session() if options.sticky else []
        self._headers = [*options.headers.items(), *((ROUTE_HEADER, r) for r in routes)]
        self._saved = routes
        try:
            self.request = json_encoding.decode_request(options.payload)
        except InferlineError as exc:
            raise CLIError(f"invalid inference request: {exc.message}") from None
        if options.mode == "rest":
            self._http = httpx.Client(timeout=options.timeout)
        elif options.mode == "grpc":
            import grpc

            from inferline.protocol.proto import inference_pb2_grpc as pb_grpc

            self._channel = grpc.insecure_channel(grpc_host)
            self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
            self._message = protobuf.request_to_proto(self.request, options.path_name)
        else:
            raise CLIError(f"unknown inference mode '{options.mode}'; use rest or grpc")

    def call(self) -> InferResult:
        result = self._rest() if self.options.mode == "rest" else self._grpc()
        if not result.error and result.routes and result.routes != self._saved:
            save_session(result.routes)
            self._saved = result.routes
        return result

    def _rest(self) -> InferResult:
        url = f"http://{self.rest_host}/v2/models/{self.options.path_name}/infer"
        headers = [
            ("content-type", "application/json"),
            ("seldon-model", self.options.target),
            *self._headers,
        ]
        try:
            response = self._http.post(url, content=self.options.payload, headers=headers)
        except httpx.TransportError as exc:
            raise CLIError(
                f"cannot reach the inference endpoint at {self.rest_host} ({type(exc).__name__})"
            ) from None
        answer_headers = dict(response.headers)
        if response.status_code >= 400:
            return InferResult(
                None, answer_headers, f"{response.status_code}: {error_message(response)}"
            )
        routes = response.headers.get_list(ROUTE_HEADER)
        return InferResult(orjson.loads(response.content), answer_headers, routes=routes)

    def _grpc(self) -> InferResult:
        import grpc

        metadata = [("seldon-model", self.options.target), *self._headers]
        try:
            message, call = self._stub.ModelInfer.with_call(
                self._message, metadata=metadata, timeout=self.options.timeout
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or ""):
                raise CLIError(f"cannot reach the gRPC endpoint at {self.grpc_host}") from None
            headers = dict(exc.initial_metadata() or ())
            return InferResult(None, headers, f"{exc.code().name}: {exc.details()}")
        response = protobuf.response_from_proto(message)
        body, _ = json_encoding.encode_response(response)
        metadata = call.initial_metadata() or ()
        routes = [value for key, value in metadata if key == ROUTE_HEADER]
        return InferResult(orjson.loads(body), dict(metadata), routes=routes)


def session_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "inferline" / "cli" / "session"


def save_session(routes: list[str]) -> None:
    path = session_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(",".join(routes))
    except OSError as exc:
        raise CLIError(f"cannot save the sticky session to {path}: {exc.strerror}") from None


def load_session() -> list[str]:
    path = session_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CLIError(
            f"no sticky session saved at {path}: call once without -s, and the route of "
            "the answer is saved for -s to send"
        ) from None
    except OSError as exc:
        raise CLIError(f"cannot read the sticky session at {path}: {exc.strerror}") from None
    return [route for route in text.split(",") if route]


def run_loop(inferrer: Inferrer, iterations: int, seconds: float) -> tuple[Counter, Counter]:
    """Call repeatedly; count successes by route header value and errors by message."""
    successes: Counter = Counter()
    errors: Counter = Counter()
    deadline = time.monotonic() + seconds if seconds > 0 else None
    count = 0
    while (deadline is not None and time.monotonic() < deadline) or (
        deadline is None and count < iterations
    ):
        result = inferrer.call()
        count += 1
        if result.error:
            errors[result.error] += 1
        else:
            successes[result.headers.get(ROUTE_HEADER, "")] += 1
    return successes, errors
