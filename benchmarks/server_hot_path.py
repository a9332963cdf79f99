"""The model server's hot path: one-row iris inference over REST and gRPC, measured and profiled.

Run it as a script: `python benchmarks/server_hot_path.py` (`--help` for the knobs). It writes the
iris LogisticRegression example into a temporary folder, starts `inferline serve` on it and drives
it closed-loop (each connection or caller sends its next request when the answer is in) at each
`--concurrency`: REST with `wrk` when it is installed (a C client that leaves the cores to the
server), else a keep-alive asyncio loop; gRPC with grpc.aio sending pre-serialized
`ModelInferRequest` bytes with raw contents, as tritonclient does. It prints req/s, p50/p99
latency and the server's CPU time per request per row, median (min-max) over `--rounds`. On a
shared machine the CPU time per request is the steadiest of these: it does not depend on how much
of a core the server got.

`--baseline REF` also serves the package as it was at git commit REF (its `src/` extracted into a
temporary folder, put first on PYTHONPATH) and measures both servers in every round, alternating
which goes first, with the ratio current/baseline paired per round: the A/B that says whether a
change helped on a machine other work is also using.

`--stages` prints what each stage of one request costs in-process: decode, check, predict and
encode for REST and gRPC, and scikit-learn's `predict` with and without its validation switches
(CPU time of the thread, best of several repeats: the steadiest estimate on a busy machine).
With `--baseline REF` it also times REF's sklearn runtime and codecs in turns with today's, in
one process.

`--profile DIR` samples the server under c=32 load with py-spy (`pip install py-spy`; `--native`
for C frames too, which tells grpc's C core and waiting apart) for each transport, writes the
folded stacks (DIR/rest.folded, DIR/grpc.folded: open them in speedscope.app or flamegraph.pl)
and prints the busy samples by component (scikit-learn, uvicorn, grpc, our code, ...) and the
Python functions with the most samples.

Client and server share the machine (2 cores here), so compare columns of one run, and repeat it.
"""

import argparse
import asyncio
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

# The router benchmark's closed-loop REST client (wrk's load from an asyncio loop, for machines
# without wrk; it needs a core of its own at high rates). Scripts here run with benchmarks/ on
# sys.path.
from router_overhead import percentiles, rest_load

ROW = [5.1, 3.5, 1.4, 0.2]
REST_BODY = orjson.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
)
INFER_PATH = "/v2/models/iris/infer"
TRANSPORTS = ["rest", "grpc"]
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def grpc_body() -> bytes:
    from inferline.protocol.proto import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.asarray([ROW], dtype="<f4").tobytes())
    return request.SerializeToString()


# --- the servers ----------------------------------------------------------------------------


class Server:
    """One `inferline serve` process on the iris folder; `pythonpath` picks the code it runs."""

    def __init__(self, label: str, folder: Path, logs: Path, pythonpath: str | None = None):
        from inferline.demo import free_port

        self.label = label
        self.http, self.grpc = free_port(), free_port()
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self.log = open(logs / f"{label.replace(' ', '_')}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inferline", "serve", str(folder), "--host", "127.0.0.1",
             "--http-port", str(self.http), "--grpc-port", str(self.grpc)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait(self) -> None:
        from inferline.demo import wait_for_http

        wait_for_http(f"http://127.0.0.1:{self.http}/v2/models/iris/ready", self.process)

    def cpu_seconds(self) -> float:
        """CPU time the server process has used, user + system (Linux /proc)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


def extract_baseline(ref: str, into: Path) -> str:
    """`src/` of git commit `ref` in `into`; returns the folder to put on PYTHONPATH."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into / "src")


# --- the load -------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
"""


def rest_load_wrk(port: int, clients: int, seconds: float, script: Path) -> tuple[float, ...]:
    """(req/s, p50 us, p99 us) from wrk: one thread, `clients` keep-alive connections."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}{INFER_PATH}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rate, _wrk_percentile(out, "50"), _wrk_percentile(out, "99")


def _wrk_percentile(out: str, which: str) -> float:
    found = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    if found is None:
        raise RuntimeError(f"no {which}% latency in wrk's output:\n{out}")
    value, unit = found.groups()
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]


async def grpc_load(port: int, clients: int, seconds: float) -> tuple[float, ...]:
    import grpc

    body, times = grpc_body(), []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        # Bytes in, bytes out: the client spends nothing on protobuf.
        call = channel.unary_unary(GRPC_METHOD)
        await call(body)
        end = time.perf_counter() + seconds

        async def client():
            while (start := time.perf_counter()) < end:
                await call(body)
                times.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return len(times) / elapsed, *percentiles(times)


def load(transport: str, server: Server, clients: int, seconds: float, wrk_script: Path | None):
    """(req/s, p50 us, p99 us, server CPU us per request)."""
    cpu = server.cpu_seconds()
    if transport == "grpc":
        result = asyncio.run(grpc_load(server.grpc, clients, seconds))
    elif wrk_script is not None:
        result = rest_load_wrk(server.http, clients, seconds, wrk_script)
    else:
        result = asyncio.run(rest_load(server.http, INFER_PATH, clients, seconds, REST_BODY))
    per_request = (server.cpu_seconds() - cpu) / (result[0] * seconds) * 1e6
    return *result, per_request


# --- the table ------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 0) -> str:
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:,.{digits}f}"
    return f"{middle:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def measure(args, servers: list[Server], wrk_script: Path | None) -> None:
    width = 28
    client = "wrk" if wrk_script else "asyncio"
    print(f"\n{args.rounds} rounds x {args.seconds:g} s per cell; median (min-max) over rounds")
    for transport in args.transports:
        title = f"{transport.upper()} ({client if transport == 'rest' else 'grpc.aio'})"
        print(f"\n{title:18}" + "".join(f"{s.label:>{width}}" for s in servers))
        for clients in args.concurrency:
            results: dict[str, list[tuple[float, ...]]] = {s.label: [] for s in servers}
            for round_ in range(args.rounds):
                shift = round_ % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    result = load(transport, server, clients, args.seconds, wrk_script)
                    results[server.label].append(result)
            label = f"c={clients}"
            for column, what in ((0, "req/s"), (1, "p50 us"), (2, "p99 us"), (3, "CPU us/req")):
                cells = [_spread([r[column] for r in results[s.label]]) for s in servers]
                print(f"{label:8}{what:10}" + "".join(f"{cell:>{width}}" for cell in cells))
                label = ""
            if len(servers) == 2:
                new, old = (results[s.label] for s in servers)
                pairs = list(zip(new, old, strict=True))
                rate = _spread([n[0] / o[0] for n, o in pairs], 2)
                cpu = _spread([n[3] / o[3] for n, o in pairs], 2)
                print(f"{'':18}{servers[0].label}/{servers[1].label}: req/s {rate}, CPU/req {cpu}")


# --- profiling ------------------------------------------------------------------------------


def profile(args, server: Server, wrk_script: Path | None) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy is not installed: pip install py-spy")
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    for transport in args.transports:
        # Folded stacks: speedscope.app and flamegraph.pl open them; summarized below.
        folded = out / f"{transport}.folded"
        # Native stacks need the server paused for each sample, which slows it a lot here:
        # sampled less often then. Python-only stacks are read without stopping it.
        how = ["--native", "--rate", "50"] if args.native else ["--nonblocking", "--rate", "200"]
        record = [py_spy, "record", "--pid", str(server.process.pid), *how, "--duration",
                  str(int(args.seconds)), "--format", "raw", "-o", str(folded)]  # fmt: skip
        spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            load(transport, server, 32, args.seconds + 1, wrk_script)
        except RuntimeError as exc:  # timeouts while paused by --native: the samples still count
            print(f"(the load saw errors while profiled: {str(exc).splitlines()[0]})")
        if spy.wait() != 0 or not folded.exists():
            sys.exit(f"py-spy failed: {spy.stderr.read().decode()}")
        print(f"\n{transport.upper()} at c=32, py-spy samples in {folded}")
        summarize(folded, args.top)


# Where a sample's time goes: the first rule matching a frame, from the innermost frame out.
COMPONENTS = [
    # Waiting, not working: for I/O, or (threads other than the loop's) for a lock or a queue.
    ("idle", r"^(epoll_wait|epoll_pwait|uv__io_poll|PyThread_acquire_lock_timed) "),
    ("scikit-learn (+ narwhals, scipy)", r"sklearn/|narwhals/|scipy/"),
    ("numpy", r"numpy/"),
    ("protobuf", r"google/protobuf|_message\.abi3"),
    ("prometheus metrics", r"prometheus_client/"),
    ("inferline: protocol codecs", r"inferline/protocol/"),
    ("inferline: runtime", r"inferline/runtimes/"),
    ("inferline: data plane", r"inferline/server/dataplane\.py"),
    ("inferline: REST / gRPC adapters", r"inferline/(server/rest|server/grpc|asgi)\.py"),
    ("uvicorn + httptools", r"uvicorn/|httptools"),
    ("grpc (Python + C core)", r"grpc/|cygrpc|libgrpc"),
    ("asyncio + uvloop", r"asyncio/|_asynciomodule|uvloop|loop\.c"),
]


def summarize(folded: Path, top: int) -> None:
    """The server's samples by component, and the Python functions with the most samples (a
    sample counts for the innermost Python frame, native code below it included)."""
    components, functions = collections.Counter(), collections.Counter()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        # grpc.aio polls its completion queue in a thread of its own; executors have threads.
        thread = "other threads: " if "threading.py" in stack else ""
        for frame in reversed(frames):
            name = next((n for n, rule in COMPONENTS if re.search(rule, frame)), None)
            if name:
                break
        components[thread + (name or "other")] += int(count)
        python = [f for f in frames if ".py:" in f]
        if python and name != "idle":
            functions[_short(python[-1])] += int(count)
    samples = sum(components.values())
    if not samples:
        print("  (no samples: does py-spy have permission to trace the server?)")
        return
    busy = sum(n for c, n in components.items() if "idle" not in c)
    print(f"  {samples} samples, {busy} busy; share of the busy ones by component:")
    for component, count in components.most_common():
        share = "" if "idle" in component else f"{100 * count / busy:5.1f}%"
        print(f"    {share:>6}  {component} ({count})")
    print(f"  top {top} Python functions (innermost Python frame of busy samples):")
    for frame, count in functions.most_common(top):
        print(f"    {100 * count / busy:5.1f}%  {frame}")


def _short(frame: str) -> str:
    # "predict (sklearn/linear_model/_base.py:398)" without the site-packages prefix
    return re.sub(r"\(/\S*?(site-packages|src|python3\.\d+)/", "(", frame)


# --- stages, in-process ---------------------------------------------------------------------


# CPU time of this thread, not wall time: another process taking the core does not count.
_clock = time.thread_time


def _measure(rows: list[tuple[str, object]], number: int, run, repeat: int = 15) -> None:
    """Print microseconds of CPU per call of each row's function: the best of `repeat` runs of
    `number` calls. The rows take turns run by run, so a busy spell of the machine hits them all
    alike and the rows compare fairly with each other."""
    best = {label: float("inf") for label, _ in rows}
    for _ in range(repeat):
        for label, fn in rows:
            start = _clock()
            run(fn, number)
            best[label] = min(best[label], _clock() - start)
    for label, _ in rows:
        print(f"  {label:44}{best[label] / number * 1e6:8.1f}")


def _calls(fn, number: int) -> None:
    for _ in range(number):
        fn()


def _awaits(loop):
    def run(coroutine_fn, number: int) -> None:
        async def many():
            for _ in range(number):
                await coroutine_fn()

        loop.run_until_complete(many())

    return run


def stages(number: int) -> None:
    """What each stage of one iris request costs in this process (the code on sys.path)."""
    import sklearn

    import inferline
    from inferline.examples import train_iris
    from inferline.protocol import json_encoding, protobuf
    from inferline.protocol.proto import inference_pb2 as pb
    from inferline.server.dataplane import DataPlane, _check_inputs
    from inferline.server.grpc import InferenceServicer
    from inferline.server.repository import ModelRepository
    from inferline.server.rest import RestApp

    print(f"stages of one iris request, us per call (best of 15 x {number}); {inferline.__file__}")
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        dataplane = DataPlane(ModelRepository([train_iris(Path(tmp) / "iris")]))
        loop.run_until_complete(dataplane.load_repository())
    model = dataplane._ready_model("iris", None)
    runtime, metadata = model.runtime, model.metadata
    request = json_encoding.decode_request(REST_BODY)
    response = loop.run_until_complete(dataplane.infer("iris", None, request))
    binary = json_encoding.binary_output_names(request)
    raw = grpc_body()
    message = pb.ModelInferRequest.FromString(raw)
    proto_request = protobuf.request_from_proto(message)

    async def rest_whole():
        decoded = json_encoding.decode_request(REST_BODY)
        answer = await dataplane.infer("iris", None, decoded)
        json_encoding.encode_response(answer, json_encoding.binary_output_names(decoded))

    async def grpc_whole():
        decoded = protobuf.request_from_proto(pb.ModelInferRequest.FromString(raw))
        answer = await dataplane.infer("iris", None, decoded)
        protobuf.response_to_proto(answer, True).SerializeToString()

    rows = [
        ("REST decode (JSON -> request)", lambda: json_encoding.decode_request(REST_BODY)),
        ("check inputs", lambda: _check_inputs(request, metadata)),
        ("REST encode (response -> JSON)", lambda: json_encoding.encode_response(response, binary)),
        ("gRPC parse (bytes -> message)", lambda: pb.ModelInferRequest.FromString(raw)),
        ("gRPC decode (message -> request)", lambda: protobuf.request_from_proto(message)),
        (
            "gRPC encode + serialize",
            lambda: protobuf.response_to_proto(response, True).SerializeToString(),
        ),
    ]
    _measure(rows, number, _calls)
    app, servicer = RestApp(dataplane), InferenceServicer(dataplane)
    scope = {
        "type": "http",
        "method": "POST",
        "path": INFER_PATH,
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(REST_BODY)).encode()),
        ],
    }

    async def receive():
        return {"type": "http.request", "body": REST_BODY, "more_body": False}

    async def send(message):
        pass

    async_rows = [
        ("runtime.predict", lambda: runtime.predict(proto_request)),
        ("dataplane.infer (+ check, metrics)", lambda: dataplane.infer("iris", None, request)),
        ("REST decode + infer + encode", rest_whole),
        ("gRPC parse + decode + infer + encode", grpc_whole),
        ("REST app: ASGI call without the server", lambda: app(scope, receive, send)),
        ("gRPC servicer: ModelInfer without grpc", lambda: servicer.ModelInfer(message, None)),
    ]  # fmt: skip
    _measure(async_rows, number, _awaits(loop))

    estimator = runtime.model
    x = np.asarray([ROW], dtype=np.float32)
    print(f"scikit-learn {sklearn.__version__}, {type(estimator).__name__}, one FP32 row:")

    def switched():
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return estimator.predict(x)

    def math_alone():
        scores = x @ estimator.coef_.T + estimator.intercept_
        return estimator.classes_[scores.argmax(1)]

    sklearn_rows = [
        ("predict, default checks", lambda: estimator.predict(x)),
        ("predict, assume_finite + skip_parameter_val.", switched),
        ("np.isfinite(x).all()", lambda: np.isfinite(x).all()),
        ("the math alone (x @ coef.T + b, argmax)", math_alone),
    ]  # fmt: skip
    _measure(sklearn_rows, number, _calls)
    loop.close()


def paired(baseline_src: str, label: str, number: int) -> None:
    """The modules this work touches, as at the baseline and as now, timed in turns in this one
    process: the steadiest before/after on a busy machine. Only the named module is the
    baseline's; what it imports comes from the current tree."""
    import importlib.util

    from inferline.examples import train_iris
    from inferline.protocol import json_encoding, protobuf
    from inferline.protocol.proto import inference_pb2 as pb
    from inferline.runtimes import sklearn as sklearn_runtime
    from inferline.runtimes.settings import ModelSettings

    def old(relative: str):
        path = Path(baseline_src) / "inferline" / relative
        spec = importlib.util.spec_from_file_location(f"baseline_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    old_runtime_module, old_protobuf = old("runtimes/sklearn.py"), old("protocol/protobuf.py")
    old_json = old("protocol/json_encoding.py")
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        settings = ModelSettings("iris", "sklearn", folder=train_iris(Path(tmp) / "iris"))
        runtimes = [sklearn_runtime.SKLearnRuntime(settings)]
        runtimes.append(old_runtime_module.SKLearnRuntime(settings))
        for runtime in runtimes:
            loop.run_until_complete(runtime.load())
    request = json_encoding.decode_request(REST_BODY)
    message = pb.ModelInferRequest.FromString(grpc_body())
    print(f"before ({label}) / after, in turns in one process, us per call:")
    rows = [
        (f"runtime.predict, {label}", lambda: runtimes[1].predict(request)),
        ("runtime.predict, now", lambda: runtimes[0].predict(request)),
    ]
    _measure(rows, number, _awaits(loop))
    rows = [
        (f"gRPC decode, {label}", lambda: old_protobuf.request_from_proto(message)),
        ("gRPC decode, now", lambda: protobuf.request_from_proto(message)),
        (f"REST decode, {label}", lambda: old_json.decode_request(REST_BODY)),
        ("REST decode, now", lambda: json_encoding.decode_request(REST_BODY)),
    ]
    _measure(rows, number, _calls)
    loop.close()


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--transports", nargs="+", choices=["rest", "grpc"], default=["rest", "grpc"]
    )
    parser.add_argument("--baseline", metavar="REF", help="also serve git commit REF, A/B")
    parser.add_argument("--client", choices=["wrk", "asyncio"], default="wrk", help="REST load")
    parser.add_argument("--stages", action="store_true", help="in-process cost of each stage")
    parser.add_argument("--stage-calls", type=int, default=500)
    parser.add_argument("--profile", metavar="DIR", help="py-spy the server under c=32 load")
    parser.add_argument("--top", type=int, default=20, help="functions listed from the profile")
    parser.add_argument("--native", action="store_true", help="py-spy --native (slows it)")
    parser.add_argument("--no-load", action="store_true", help="skip the load table")
    parser.add_argument("--stages-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--paired-with", nargs=2, help=argparse.SUPPRESS)  # SRC LABEL
    args = parser.parse_args()

    if args.stages_only:
        stages(args.stage_calls)
        if args.paired_with:
            paired(*args.paired_with, args.stage_calls)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline_path = None
        if args.baseline:
            (tmp / "baseline").mkdir()
            baseline_path = extract_baseline(args.baseline, tmp / "baseline")
        if args.stages:
            _stages_in_subprocess(args, None, baseline_path)
            if baseline_path:
                _stages_in_subprocess(args, baseline_path)
        if args.no_load and not args.profile:
            return

        from inferline.examples import train_iris

        folder = train_iris(tmp / "iris")
        wrk_script = None
        if args.client == "wrk" and shutil.which("wrk"):
            wrk_script = tmp / "post.lua"
            wrk_script.write_text(WRK_SCRIPT.format(body=REST_BODY.decode()))
        elif args.client == "wrk":
            print("wrk is not installed: REST load from an asyncio loop instead")
        servers = [Server("current", folder, tmp)]
        if baseline_path:
            servers.append(Server(f"baseline {args.baseline}", folder, tmp, baseline_path))
        try:
            for server in servers:
                server.wait()
            if not args.no_load:
                measure(args, servers, wrk_script)
            if args.profile:
                profile(args, servers[0], wrk_script)
        finally:
            for server in servers:
                server.stop()


def _stages_in_subprocess(args, pythonpath: str | None, paired_with: str | None = None) -> None:
    """Stages run in a fresh interpreter, so the current and the baseline code each import their
    own package; the current one also times the baseline's changed modules in turns with its own."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, __file__, "--stages-only", "--stage-calls", str(args.stage_calls)]
    if paired_with:
        command += ["--paired-with", paired_with, args.baseline]
    subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
