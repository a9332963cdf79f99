"""What the router adds to a call: one echo model called directly and through the router.

Run it as a script: `python benchmarks/router_overhead.py` (`--help` for the knobs). It starts
`inferline serve` with one echo model, and one router process per upstream client in front of it:
the router's own `HttpUpstream` (hand-written, asyncio + httptools) and `AiohttpUpstream` below
(the same interface on aiohttp's `ClientSession`), the candidate it was measured against. Then,
for each concurrency (keep-alive connections, each sending its next request when the answer is
in), it measures every target in turn for `--seconds`, in `--rounds` rounds whose order rotates
(direct, A, B / A, B, direct / ...), so both clients see the same machine. It prints per target
the median over rounds of req/s and of p50/p99 latency, with the range over rounds, and the
paired ratio aiohttp / hand-written per round. `--grpc` adds gRPC direct vs through the router.

Client, router and server share the machine (2 cores here), so the figures are relative, not
absolute: compare columns of one run, and repeat the run.
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np

from inferline.demo import free_port, wait_until_ready
from inferline.protocol.proto import inference_pb2 as pb
from inferline.router.upstream import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEPALIVE_EXPIRY,
    UpstreamBroken,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamResponse,
)

try:  # not a dependency of inferline: `pip install aiohttp` for the router+aiohttp column
    import aiohttp
    from yarl import URL
except ImportError:
    aiohttp = None

# --- the candidate upstream client -----------------------------------------------------------

# aiohttp adds these unless told not to; the replica gets only what the router forwards.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# aiohttp itself retries these once on a new connection after a disconnect (RFC 9112 9.3.1).
_RETRIED_BY_AIOHTTP = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


async def _on_reuse(session, context, params) -> None:
    context.trace_request_ctx["reused"] = True


class AiohttpUpstream:
    """`HttpUpstream`'s interface and failure classes on aiohttp: a `ClientSession` over a
    `TCPConnector` keeping connections alive per replica, the whole answer read into memory."""

    def __init__(
        self,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
    ):
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self._session = None

    def _open(self):
        # Whether a request went out on a kept-alive connection: only then is a close before
        # any answer taken for a stale connection and tried once more.
        trace = aiohttp.TraceConfig()
        trace.on_connection_reuseconn.append(_on_reuse)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=self.keepalive_expiry
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            auto_decompress=False,
            trace_configs=[trace],
        )
        return self._session

    async def request(
        self,
        address: str,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamResponse:
        session = self._session or self._open()
        url = URL(f"http://{address}{target}", encoded=True)
        fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        try:
            try:
                return await self._exchange(session, method, url, fields, body)
            except UpstreamClosed as exc:
                if not exc.reused or method in _RETRIED_BY_AIOHTTP:
                    raise
                return await self._exchange(session, method, url, fields, body)
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"cannot connect to {address}: {exc.os_error}") from None
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamConnectError(
                f"no connection to {address} within {self.connect_timeout:g} s"
            ) from None

    async def _exchange(self, session, method, url, headers, body) -> UpstreamResponse:
        context = {"reused": False}
        answered = False
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                trace_request_ctx=context,
            ) as response:
                answered = True
                payload = await response.read()
                headers = [(k.lower(), v) for k, v in response.raw_headers]
                return UpstreamResponse(response.status, headers, payload)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            raise
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamBroken(f"answer cut off: {exc}") from None
        except aiohttp.ClientResponseError as exc:
            raise UpstreamBroken(f"unreadable answer: {exc.message}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # A disconnect after part of the head carries the parsed part as its message.
            partial = isinstance(exc, aiohttp.ServerDisconnectedError) and not isinstance(
                exc.message, str
            )
            if answered or partial:
                raise UpstreamBroken("connection closed in the middle of the answer") from None
            closed = UpstreamClosed(f"connection closed before any answer: {exc}")
            closed.reused = context["reused"]
            raise closed from None

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


# --- the processes ---------------------------------------------------------------------------

ECHO = """
    from inferline.protocol.types import InferenceResponse
    from inferline.runtimes import Runtime


    class Echo(Runtime):
        async def predict(self, request):
            return InferenceResponse(model_name=self.name, outputs=list(request.inputs))
"""

ROUTER = """
    import asyncio, sys
    import inferline.router.app
    from inferline.router.app import RouterConfig, run_router
    from inferline.router.routes import Endpoint, ModelRoute, RouteTable
    from inferline.router.table import StaticRouteSource

    http, grpc_port, up_http, up_grpc = map(int, sys.argv[1:5])
    if sys.argv[5] == "aiohttp":
        sys.path.insert(0, sys.argv[6])
        from router_overhead import AiohttpUpstream
        inferline.router.app.HttpUpstream = AiohttpUpstream
    endpoint = Endpoint(f"127.0.0.1:{up_http}", f"127.0.0.1:{up_grpc}", "s", 0)
    table = RouteTable(1, {"echo": ModelRoute("echo", "echo_1", 1, [endpoint])})
    config = RouterConfig(host="127.0.0.1", http_port=http, grpc_port=grpc_port)
    try:
        import uvloop
        uvloop.run(run_router(config, StaticRouteSource(table)))
    except ImportError:
        asyncio.run(run_router(config, StaticRouteSource(table)))
"""

UPSTREAMS = {"handwritten": "router+handwritten", "aiohttp": "router+aiohttp"}

BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
).encode()

# --- the load --------------------------------------------------------------------------------


async def _exchange(reader, writer, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    lengths = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
    if lengths:
        await reader.readexactly(int(lengths[0].split(b":")[1]))
    else:  # chunked
        await reader.readuntil(b"0\r\n\r\n")


def _request(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body


async def rest_load(
    port: int, path: str, clients: int, seconds: float, body: bytes = BODY
) -> tuple[float, ...]:
    """(req/s, p50 us, p99 us) with `clients` keep-alive connections for `seconds`, each POSTing
    `body` to `path` as soon as its last answer is in."""
    request, times = _request(path, body), []
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    for reader, writer in connections:  # warm: first request on each connection
        await _exchange(reader, writer, request)
    end = time.perf_counter() + seconds

    async def client(reader, writer):
        while (start := time.perf_counter()) < end:
            await _exchange(reader, writer, request)
            times.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(client(*c) for c in connections))
    elapsed = time.perf_counter() - began
    for _, writer in connections:
        writer.close()
    return len(times) / elapsed, *percentiles(times)


def percentiles(times: list[float]) -> tuple[float, float]:
    return statistics.median(times) * 1e6, float(np.percentile(times, 99)) * 1e6


def _grpc_request(model: str) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    return request.SerializeToString()


async def grpc_load(port: int, model: str, clients: int, seconds: float) -> tuple[float, ...]:
    raw, times = _grpc_request(model), []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        await call(raw)
        end = time.perf_counter() + seconds

        async def client():
            while (start := time.perf_counter()) < end:
                await call(raw)
                times.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return len(times) / elapsed, *percentiles(times)


# --- the table -------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 0) -> str:
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.{digits}f}"
    return f"{middle:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


async def measure(args, targets: dict[str, tuple], grpc_targets: dict[str, tuple]) -> None:
    names = list(targets)
    width = 30
    print(f"{args.rounds} rounds x {args.seconds:g} s per cell; median (min-max) over rounds")
    print(f"{'':8}{'':10}" + "".join(f"{name:>{width}}" for name in names))
    for clients in args.concurrency:
        results: dict[str, list[tuple[float, ...]]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                port, path = targets[name]
                results[name].append(await rest_load(port, path, clients, args.seconds))
        label = f"c={clients}"
        for column, what in ((0, "req/s"), (1, "p50 us"), (2, "p99 us")):
            cells = [_spread([r[column] for r in results[name]]) for name in names]
            print(f"{label:8}{what:10}" + "".join(f"{cell:>{width}}" for cell in cells))
            label = ""
        if "router+handwritten" in results and "router+aiohttp" in results:
            hand, aio = results["router+handwritten"], results["router+aiohttp"]
            ratio = [a[0] / h[0] for h, a in zip(hand, aio, strict=True)]
            p50 = [a[1] - h[1] for h, a in zip(hand, aio, strict=True)]
            print(
                f"{'':18}aiohttp/handwritten req/s {_spread(ratio, 2)}, "
                f"p50 aiohttp-handwritten {_spread(p50)} us (paired per round)"
            )
    if grpc_targets:
        print(f"\ngRPC{'':14}" + "".join(f"{name:>{width}}" for name in grpc_targets))
        for clients in args.concurrency:
            results = {name: [] for name in grpc_targets}
            for _ in range(args.rounds):
                for name, (port, model) in grpc_targets.items():
                    results[name].append(await grpc_load(port, model, clients, args.seconds))
            label = f"c={clients}"
            for column, what in ((0, "req/s"), (1, "p50 us"), (2, "p99 us")):
                cells = [_spread([r[column] for r in results[name]]) for name in grpc_targets]
                print(f"{label:8}{what:10}" + "".join(f"{cell:>{width}}" for cell in cells))
                label = ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per target and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--upstream", choices=list(UPSTREAMS), nargs="+", default=list(UPSTREAMS))
    parser.add_argument("--grpc", action="store_true", help="also gRPC, direct vs router")
    args = parser.parse_args()
    if aiohttp is None and "aiohttp" in args.upstream:
        print("aiohttp is not installed (pip install aiohttp): router+aiohttp left out")
        args.upstream.remove("aiohttp")

    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "echo"
        folder.mkdir()
        (folder / "model.py").write_text(textwrap.dedent(ECHO))
        settings = {"name": "echo_1", "implementation": "model.Echo"}
        (folder / "model-settings.json").write_text(json.dumps(settings))
        (Path(tmp) / "router.py").write_text(textwrap.dedent(ROUTER))
        http, grpc_port = free_port(), free_port()
        try:
            server = subprocess.Popen(
                [sys.executable, "-m", "inferline", "serve", str(folder), "--host", "127.0.0.1",
                 "--http-port", str(http), "--grpc-port", str(grpc_port)],
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            processes.append(server)
            targets = {"direct": (http, "/v2/models/echo_1/infer")}
            grpc_targets = {"direct": (grpc_port, "echo_1")}
            routers = []
            for upstream in args.upstream:
                ports = [free_port(), free_port(), http, grpc_port]
                router = subprocess.Popen(
                    [sys.executable, str(Path(tmp) / "router.py"), *map(str, ports), upstream,
                     str(Path(__file__).resolve().parent)],
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                processes.append(router)
                routers.append((router, ports[0]))
                targets[UPSTREAMS[upstream]] = (ports[0], "/v2/models/echo/infer")
                if not grpc_targets.get("router"):
                    grpc_targets["router"] = (ports[1], "echo")
            wait_until_ready(http, server)
            for router, port in routers:
                wait_until_ready(port, router)
            asyncio.run(measure(args, targets, grpc_targets if args.grpc else {}))
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
