"""What the router adds to a call: the same echo model called directly and through the router.

Not a test (pytest does not collect it); run it with
`python tests/integration/router/bench_router_overhead.py`. It starts `inferline serve` with one
echo model and a router process in front of it, then measures sequential latency (p50/p99) and
throughput with 32 concurrent keep-alive connections, for REST and gRPC, direct and through the
router. Client, router and server share the machine, so the figures are relative, not absolute.
"""

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

ECHO = """
    from inferline.protocol.types import InferenceResponse
    from inferline.runtimes import Runtime


    class Echo(Runtime):
        async def predict(self, request):
            return InferenceResponse(model_name=self.name, outputs=list(request.inputs))
"""

ROUTER = """
    import asyncio, sys
    from inferline.router.app import RouterConfig, run_router
    from inferline.router.routes import Endpoint, ModelRoute, RouteTable
    from inferline.router.table import StaticRouteSource

    http, grpc_port, up_http, up_grpc = map(int, sys.argv[1:5])
    endpoint = Endpoint(f"127.0.0.1:{up_http}", f"127.0.0.1:{up_grpc}", "s", 0)
    table = RouteTable(1, {"echo": ModelRoute("echo", "echo_1", 1, [endpoint])})
    config = RouterConfig(host="127.0.0.1", http_port=http, grpc_port=grpc_port)
    try:
        import uvloop
        uvloop.run(run_router(config, StaticRouteSource(table)))
    except ImportError:
        asyncio.run(run_router(config, StaticRouteSource(table)))
"""

BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
).encode()


async def _exchange(reader, writer, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    lengths = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
    if lengths:
        await reader.readexactly(int(lengths[0].split(b":")[1]))
    else:  # chunked
        await reader.readuntil(b"0\r\n\r\n")


def _request(path: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(BODY)}\r\n\r\n").encode() + BODY


async def rest_latency(port: int, path: str, n: int = 2000) -> tuple[float, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request, times = _request(path), []
    for i in range(n + 200):
        start = time.perf_counter()
        await _exchange(reader, writer, request)
        if i >= 200:
            times.append(time.perf_counter() - start)
    writer.close()
    return statistics.median(times) * 1e6, float(np.percentile(times, 99)) * 1e6


async def rest_throughput(port: int, path: str, clients: int = 32, seconds: float = 3.0) -> float:
    request, done = _request(path), 0
    end = time.perf_counter() + seconds

    async def client():
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < end:
            await _exchange(reader, writer, request)
            done += 1
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return done / seconds


def _grpc_request(model: str) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    return request.SerializeToString()


async def grpc_latency(port: int, model: str, n: int = 2000) -> tuple[float, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        raw, times = _grpc_request(model), []
        for i in range(n + 200):
            start = time.perf_counter()
            await call(raw)
            if i >= 200:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6, float(np.percentile(times, 99)) * 1e6


async def grpc_throughput(port: int, model: str, clients: int = 32, seconds: float = 3.0):
    raw, done = _grpc_request(model), 0
    end = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        async def client():
            nonlocal done
            while time.perf_counter() < end:
                await call(raw)
                done += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return done / seconds


async def measure(server_http, server_grpc, router_http, router_grpc) -> None:
    direct, routed = "/v2/models/echo_1/infer", "/v2/models/echo/infer"
    rows = [
        ("REST p50/p99 us", rest_latency(server_http, direct), rest_latency(router_http, routed)),
        ("gRPC p50/p99 us", grpc_latency(server_grpc, "echo_1"), grpc_latency(router_grpc, "echo")),
        (
            "REST req/s, 32 conns",
            rest_throughput(server_http, direct),
            rest_throughput(router_http, routed),
        ),
        (
            "gRPC req/s, 32 calls",
            grpc_throughput(server_grpc, "echo_1"),
            grpc_throughput(router_grpc, "echo"),
        ),
    ]
    print(f"{'':24}{'direct':>22}{'via router':>22}")
    for label, direct_run, routed_run in rows:
        a, b = await direct_run, await routed_run
        show = (lambda v: f"{v[0]:.0f} / {v[1]:.0f}") if isinstance(a, tuple) else "{:.0f}".format
        print(f"{label:24}{show(a):>22}{show(b):>22}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "echo"
        folder.mkdir()
        (folder / "model.py").write_text(textwrap.dedent(ECHO))
        settings = {"name": "echo_1", "implementation": "model.Echo"}
        (folder / "model-settings.json").write_text(json.dumps(settings))
        (Path(tmp) / "router.py").write_text(textwrap.dedent(ROUTER))
        ports = [free_port() for _ in range(4)]
        server = subprocess.Popen(
            [sys.executable, "-m", "inferline", "serve", str(folder), "--host", "127.0.0.1",
             "--http-port", str(ports[0]), "--grpc-port", str(ports[1])],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        router_ports = [*ports[2:], *ports[:2]]  # its own, then the replica's
        router = subprocess.Popen(
            [sys.executable, str(Path(tmp) / "router.py"), *map(str, router_ports)],
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_ready(ports[0], server)
            wait_until_ready(ports[2], router)
            asyncio.run(measure(ports[0], ports[1], ports[2], ports[3]))
        finally:
            for process in (router, server):
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
