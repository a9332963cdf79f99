"""inferline against MLServer 1.7.1, side by side, on the same iris model and the same load.

    python benchmarks/mlserver_comparison.py            # the full table (about 10 minutes)
    python benchmarks/mlserver_comparison.py --quick    # a smoke run (about 3 minutes)

Run it with the project's virtualenv from the repository root. The first run builds a separate
virtualenv, `benchmarks/.work/venv-mlserver`, with mlserver 1.7.1, mlserver-sklearn 1.7.1 and
`uvloop<0.22` (MLServer's workers need it): MLServer and `tritonclient.grpc` cannot be imported
into one process, their protobuf modules clash, so MLServer only ever runs there, as a
subprocess. scikit-learn and numpy are pinned there to this interpreter's versions, so the one
model pickle written here loads in both servers without a version warning.

It trains one iris LogisticRegression into a model folder with MLServer's `model-settings.json`
(`mlserver_sklearn.SKLearnModel`, which `inferline serve` reads too), starts `inferline serve` and
`mlserver start` on it (each with its default settings, ports aside; MLServer's default is one
parallel inference worker process beside its REST/gRPC process), and drives both with the same
closed-loop load generator, row by row, alternating inferline, MLServer, inferline, MLServer
(`--rounds`, median over rounds). Both servers stay up during a phase; an idle one uses well
under 1 % of a core. REST rows use `wrk` when it is installed (`apt-get install wrk`; a Lua
script posts the body), else `inferline bench`; gRPC rows use `h2load` when it is installed
(`apt-get install nghttp2-client`; it posts the gRPC-framed request over HTTP/2), else
`inferline bench`. Both C clients cost a few microseconds of CPU a request, where a Python client
costs 40-250 us, which the servers would otherwise lose on a 2-core machine. The batching
row starts both servers again with `max_batch_size` / `max_batch_time` set in the same
model-settings.json.

Rows: REST and gRPC at concurrency 1, 8 and 32, and REST at concurrency 32 with adaptive
batching on both. Targets (issue 6): REST c=32 at least 4x MLServer's throughput, REST c=1 p50
at most a third of MLServer's, gRPC c=32 at least 3x, batching REST c=32 at least 2x. The
"2 workers" rows serve REST and gRPC at concurrency 32 from `inferline serve --workers 2`: two
processes, as many as MLServer's default runs (its REST/gRPC process and one inference worker),
so that pair compares the servers at equal process count; the plain rows compare inferline's
one-process default with MLServer's two. The "front" rows serve them from `inferline serve
--front`: MLServer's own shape, a front process for REST and gRPC passing each request to one
worker process holding the model.

Client and servers share the machine, so absolute figures depend on it and on whatever else
runs: compare the columns of one run, and rerun on a quiet machine before quoting.
"""

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from inferline.demo import free_port
from inferline.examples import train_iris

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
VENV = WORK / "venv-mlserver"
MLSERVER = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]
GROUPS = ("rest", "grpc", "batching", "workers", "front")
MODEL = "iris"
# One flower, one row per request: the issue's earlier measurements used the same payload.
REQUEST = {
    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}
CONCURRENCIES = (1, 8, 32)
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def grpc_request_body() -> bytes:
    """REQUEST as a gRPC message on the wire: a 5-byte frame header and the ModelInferRequest
    (raw contents, as tritonclient sends them)."""
    import numpy as np

    from inferline.protocol.proto import inference_pb2 as pb

    (tensor,) = REQUEST["inputs"]
    message = pb.ModelInferRequest(model_name=MODEL)
    message.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    message.raw_input_contents.append(np.asarray(tensor["data"], dtype=np.float32).tobytes())
    body = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(body)) + body


# --- the MLServer virtualenv -----------------------------------------------------------------


def venv_requirements() -> list[str]:
    import numpy
    import sklearn

    # The model is pickled by this interpreter: the same versions there load it unchanged.
    return [*MLSERVER, f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}"]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def ensure_mlserver_venv() -> Path:
    """The virtualenv's python, built once; a folder without the completion marker (an
    interrupted build) or built for other requirements is built again."""
    requirements = venv_requirements()
    marker = VENV / "inferline-requirements.txt"
    python = VENV / "bin" / "python"
    wanted = "\n".join(requirements) + "\n"
    if marker.exists() and marker.read_text() == wanted and python.exists():
        return python
    log = WORK / "venv-mlserver.log"
    print(f"building {VENV} ({', '.join(requirements)}); log: {log}")
    shutil.rmtree(VENV, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", *requirements],
        [str(python), "-c", "import mlserver, mlserver_sklearn, sklearn"],
    ]
    with log.open("w") as out:
        for step in steps:
            out.write(f"$ {shlex.join(step)}\n")
            out.flush()
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                fail(
                    f"cannot build the MLServer virtualenv {VENV}: `{shlex.join(step[2:])}` "
                    f"failed: {_last_error(log)} (full output in {log})"
                )
    marker.write_text(wanted)
    return python


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") or "Error" in line]
    return (errors or lines or ["no output"])[-1]


# --- the model and the servers ---------------------------------------------------------------


def write_models(root: Path, max_batch_size: int, max_batch_time: float) -> dict[str, Path]:
    """Two model roots holding the same pickle: 'plain' and 'batching'. Each root is what
    `mlserver start` gets (it finds settings.json there); `inferline serve` gets root/iris."""
    plain = train_iris(root / "plain" / MODEL)
    batching = root / "batching" / MODEL
    batching.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plain / "model.joblib", batching / "model.joblib")
    settings = json.loads((plain / "model-settings.json").read_text())
    settings.update(max_batch_size=max_batch_size, max_batch_time=max_batch_time)
    (batching / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return {"plain": plain.parent, "batching": batching.parent}


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    http: int
    grpc: int
    log: Path

    def cpu_seconds(self) -> float:
        """CPU time of the server and its children (MLServer's workers) so far."""
        return sum(_process_cpu(pid) for pid in _process_tree(self.process.pid))

    def stop(self) -> None:
        # Each server runs in a session of its own, so this reaches its workers and only them.
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo.extend(children.get(current, []))
    return tree


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_inferline(
    folder: Path, logs: Path, tag: str, workers: int | None, front: bool = False
) -> Server:
    http, grpc_port = free_port(), free_port()
    log = logs / f"inferline-{tag}.log"
    command = [sys.executable, "-m", "inferline", "serve", str(folder / MODEL), "--host",
               "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc_port)]  # fmt: skip
    if workers:
        command += ["--workers", str(workers)]
    if front:
        command.append("--front")
    return Server("inferline", _spawn(command, log, folder), http, grpc_port, log)


def start_mlserver(
    venv_python: Path, folder: Path, logs: Path, tag: str, workers: int | None
) -> Server:
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    settings = {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc_port,
                "metrics_port": metrics}  # fmt: skip
    if workers is not None:
        settings["parallel_workers"] = workers
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    log = logs / f"mlserver-{tag}.log"
    command = [str(venv_python.parent / "mlserver"), "start", str(folder)]
    return Server("MLServer", _spawn(command, log, folder), http, grpc_port, log)


def _spawn(command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(server: Server, timeout: float = 180.0) -> None:
    url = f"http://127.0.0.1:{server.http}/v2/models/{MODEL}/ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {_tail(server.log)} (log: {server.log})")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{server.name}: model not ready after {timeout:g} s (log: {server.log})")


def _tail(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def predict(server: Server) -> list:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http}/v2/models/{MODEL}/infer",
        data=json.dumps(REQUEST).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["outputs"][0]["data"]


def check_grpc_body(server: Server, expected: list) -> None:
    """The exact bytes h2load sends are a request the server answers with OK and the class REST
    gave (h2load itself cannot see a gRPC error status)."""
    import grpc
    import numpy as np

    from inferline.protocol.proto import inference_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
        call = channel.unary_unary(GRPC_PATH)  # bytes in, bytes out
        answer = pb.ModelInferResponse.FromString(call(grpc_request_body()[5:], timeout=10))
    got = np.frombuffer(answer.raw_output_contents[0], dtype=np.int64).tolist()
    if got != expected:
        fail(f"{server.name} answers h2load's gRPC request with {got}, not {expected}")


# Python warnings, as `warnings` prints them (`InconsistentVersionWarning` for a pickle from
# another scikit-learn version); log records at level WARNING are not what this looks for.
PYTHON_WARNING = re.compile(r"\b[A-Z]\w*Warning\b")


def log_warnings(servers: list[Server]) -> list[str]:
    found = []
    for server in servers:
        for line in server.log.read_text(errors="replace").splitlines():
            text = f"{server.log.name}: {line.strip()}"
            if PYTHON_WARNING.search(line) and text not in found:
                found.append(text)
    return found


def mean_batch_size(server: Server) -> float | None:
    """Requests per model call in inferline's `model_infer_batch_size` histogram, or None when
    the server reports no batches (batching off, or a checkout without it)."""
    url = f"http://127.0.0.1:{server.http}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    totals = {}
    for line in text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f"model_infer_batch_size_{part}{{") and f'model="{MODEL}"' in line:
                totals[part] = totals.get(part, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals["sum"] / totals["count"] if totals.get("count") else None


# --- the load --------------------------------------------------------------------------------


@dataclass
class Measurement:
    client: str
    throughput: float = 0.0  # answers per second
    p50: float = 0.0  # ms
    p99: float = 0.0  # ms
    requests: int = 0
    errors: int = 0
    client_saturated: bool = False
    server_cores: float = 0.0  # CPU the server used over the run, in cores
    failure: str = ""


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, '
    .. '"p50_us": %f, "p99_us": %f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


class Load:
    def __init__(self, args, scratch: Path):
        self.args = args
        self.data = scratch / "request.json"
        self.data.write_text(json.dumps(REQUEST))
        self.lua = scratch / "post.lua"
        self.lua.write_text(WRK_SCRIPT.format(body=json.dumps(REQUEST)))
        self.out = scratch / "bench.json"
        self.bench = shlex.split(args.bench_command)
        self.grpc_body = scratch / "grpc-request.bin"
        self.grpc_body.write_bytes(grpc_request_body())
        self.h2load_log = scratch / "h2load.log"

    def rest_client(self) -> str:
        return "wrk" if self.args.wrk else "inferline bench"

    def run(self, server: Server, protocol: str, concurrency: int) -> Measurement:
        before = server.cpu_seconds()
        if protocol == "rest" and self.args.wrk:
            result = self.wrk(server, concurrency)
        elif protocol == "grpc" and self.args.h2load:
            result = self.h2load(server, concurrency)
        else:
            result = self.inferline_bench(server, protocol, concurrency)
        # Over the loaded time (warm-up included), not the wall time: the client's own start-up
        # (a second or two for Python) leaves the server idle.
        loaded = self.args.warmup + self.args.duration
        result.server_cores = (server.cpu_seconds() - before) / loaded
        return result

    def wrk(self, server: Server, concurrency: int) -> Measurement:
        url = f"http://127.0.0.1:{server.http}/v2/models/{MODEL}/infer"
        threads = min(self.args.wrk_threads, concurrency)

        def command(seconds: float) -> list[str]:
            return ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds:g}s",
                    "--timeout", "10s", "-s", str(self.lua), url]  # fmt: skip

        if self.args.warmup > 0:
            subprocess.run(command(self.args.warmup), capture_output=True, timeout=120)
        cpu = _children_cpu()
        done = subprocess.run(
            command(self.args.duration), capture_output=True, text=True, timeout=300
        )
        client_cpu = (_children_cpu() - cpu) / self.args.duration
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            reason = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            return Measurement("wrk", failure=f"wrk failed: {reason[-1]}")
        report = json.loads(lines[-1])
        seconds = report["duration_us"] / 1e6
        return Measurement(
            "wrk",
            throughput=report["requests"] / seconds,
            p50=report["p50_us"] / 1000,
            p99=report["p99_us"] / 1000,
            requests=report["requests"],
            errors=report["errors"] + report["non_2xx"],
            client_saturated=client_cpu >= 0.9 * threads,
        )

    def h2load(self, server: Server, concurrency: int) -> Measurement:
        """gRPC with h2load: one stream per connection, `concurrency` connections. h2load sees
        HTTP/2 statuses, not gRPC's (those come in trailers), so `check_grpc_body` makes sure the
        request is answered with OK before any load."""
        url = f"http://127.0.0.1:{server.grpc}{GRPC_PATH}"

        def command(seconds: float, log: Path | None = None) -> list[str]:
            return ["h2load", "-c", str(concurrency), "-m", "1", "-D", f"{seconds:g}",
                    "-d", str(self.grpc_body), "-H", "content-type: application/grpc",
                    "-H", "te: trailers", *(["--log-file", str(log)] if log else []),
                    url]  # fmt: skip

        if self.args.warmup > 0:
            subprocess.run(command(self.args.warmup), capture_output=True, timeout=120)
        self.h2load_log.unlink(missing_ok=True)
        cpu = _children_cpu()
        done = subprocess.run(
            command(self.args.duration, self.h2load_log),
            capture_output=True,
            text=True,
            timeout=300,
        )
        client_cpu = (_children_cpu() - cpu) / self.args.duration
        if done.returncode != 0 or not self.h2load_log.exists():
            reason = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            return Measurement("h2load", failure=f"h2load failed: {reason[-1]}")
        # One line per request: start (us since the epoch), HTTP status, duration (us).
        rows = [line.split("\t") for line in self.h2load_log.read_text().splitlines() if line]
        latencies = sorted(int(row[2]) / 1000 for row in rows)
        errors = sum(1 for row in rows if row[1] != "200")
        summary = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", done.stdout)
        if summary:
            errors += sum(int(n) for n in summary.groups())
        if not latencies:
            return Measurement("h2load", failure="h2load answered no request")
        return Measurement(
            "h2load",
            throughput=len(latencies) / self.args.duration,
            p50=latencies[len(latencies) // 2],
            p99=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            requests=len(latencies),
            errors=errors,
            client_saturated=client_cpu >= 0.9,
        )

    def inferline_bench(self, server: Server, protocol: str, concurrency: int) -> Measurement:
        if protocol == "rest":
            target = ["--url", f"http://127.0.0.1:{server.http}"]
        else:
            target = ["--grpc", f"127.0.0.1:{server.grpc}"]
        command = [*self.bench, "model", MODEL, *target, "--concurrency", str(concurrency),
                   "--duration", f"{self.args.duration:g}", "--warmup", f"{self.args.warmup:g}",
                   "--data", str(self.data), "--json", str(self.out)]  # fmt: skip
        if self.args.client_processes > 1:
            command += ["--processes", str(self.args.client_processes)]
        self.out.unlink(missing_ok=True)
        limit = self.args.duration + self.args.warmup + 120
        done = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=limit
        )
        if done.returncode != 0 or not self.out.exists():
            reason = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            return Measurement("inferline bench", failure=f"inferline bench: {reason[-1]}")
        report = json.loads(self.out.read_text())
        return Measurement(
            "inferline bench",
            throughput=report["throughput"],
            p50=report["latency_ms"]["p50"],
            p99=report["latency_ms"]["p99"],
            requests=report["requests"],
            errors=report["errors"],
            client_saturated=bool(report["client_cpu_saturated"]),
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- rows, rounds and targets ----------------------------------------------------------------


@dataclass
class Row:
    label: str
    protocol: str  # rest | grpc
    concurrency: int
    phase: str  # plain | batching | workers | front
    # (what, bound): "throughput" ratio at least bound, or "p50" ratio at most bound
    target: tuple[str, float] | None = None
    runs: dict[str, list[Measurement]] = field(
        default_factory=lambda: {"inferline": [], "MLServer": []}
    )


def plan(groups: list[str]) -> list[Row]:
    targets = {("rest", 32): ("throughput", 4.0), ("rest", 1): ("p50", 1 / 3),
               ("grpc", 32): ("throughput", 3.0)}  # fmt: skip
    rows = []
    for protocol in ("rest", "grpc"):
        if protocol in groups:
            for c in CONCURRENCIES:
                label = f"{'REST' if protocol == 'rest' else 'gRPC'} c={c}"
                rows.append(Row(label, protocol, c, "plain", targets.get((protocol, c))))
    if "batching" in groups:
        rows.append(Row("batching REST c=32", "rest", 32, "batching", ("throughput", 2.0)))
    if "workers" in groups:
        rows.append(Row("REST c=32, 2 workers", "rest", 32, "workers"))
        rows.append(Row("gRPC c=32, 2 workers", "grpc", 32, "workers", ("throughput", 3.0)))
    if "front" in groups:
        rows.append(Row("REST c=32, front", "rest", 32, "front", ("throughput", 4.0)))
        rows.append(Row("gRPC c=32, front", "grpc", 32, "front", ("throughput", 3.0)))
    return rows


def median_of(runs: list[Measurement], what: str) -> float | None:
    values = [getattr(run, what) for run in runs if not run.failure]
    return statistics.median(values) if values else None


def summarise(row: Row) -> dict:
    medians = {
        name: {what: median_of(runs, what) for what in ("throughput", "p50", "p99", "server_cores")}
        for name, runs in row.runs.items()
    }
    # Each round's two runs are back to back, so their ratio sees the same machine; the median of
    # those paired ratios drifts less with other load than the ratio of the medians.
    pairs = [
        (a, b) for a, b in zip(row.runs["inferline"], row.runs["MLServer"], strict=False)
        if not a.failure and not b.failure
    ]  # fmt: skip
    ratio = {
        what: statistics.median(getattr(a, what) / getattr(b, what) for a, b in pairs)
        if pairs and all(getattr(b, what) > 0 for _, b in pairs)
        else None
        for what in ("throughput", "p50")
    }
    verdict, met = "-", None
    if row.target:
        what, bound = row.target
        if ratio[what] is None:
            verdict = "no data"
        elif what == "throughput":
            met = ratio[what] >= bound
            verdict = f">= {bound:g}x: {'met' if met else 'not met'}"
        else:
            met = ratio[what] <= bound
            verdict = f"p50 <= 1/{1 / bound:g}: {'met' if met else 'not met'}"
    everything = [run for runs in row.runs.values() for run in runs]
    return {
        "row": row.label,
        "protocol": row.protocol,
        "concurrency": row.concurrency,
        "adaptive_batching": row.phase == "batching",
        "client": " / ".join(sorted({run.client for run in everything})),
        "client_saturated": any(run.client_saturated for run in everything),
        "errors": sum(run.errors for run in everything),
        "failures": sorted({run.failure for run in everything if run.failure}),
        "median": medians,
        "ratio": ratio,
        "target": verdict,
        "target_met": met,
        "rounds": {name: [asdict(run) for run in runs] for name, runs in row.runs.items()},
    }


# --- output ----------------------------------------------------------------------------------


def machine(venv_python: Path, args) -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    probe = (
        "import json, mlserver, sklearn, numpy; from mlserver.settings import Settings; "
        "s = Settings(); print(json.dumps({'mlserver': mlserver.__version__, "
        "'scikit-learn': sklearn.__version__, 'numpy': numpy.__version__, "
        "'parallel_workers': s.parallel_workers, 'debug': s.debug}))"
    )
    theirs = json.loads(
        subprocess.run([str(venv_python), "-c", probe], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    from importlib.metadata import version

    import numpy
    import sklearn

    wrk = "not installed"
    if args.wrk:
        banner = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk = (banner.stdout or banner.stderr).split(" [")[0].strip()
    h2load = "not installed"
    if args.h2load:
        banner = subprocess.run(["h2load", "--version"], capture_output=True, text=True)
        h2load = banner.stdout.strip().splitlines()[0] if banner.stdout.strip() else "installed"
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": platform.python_version(),
        "inferline": version("inferline"),
        "inferline_commit": commit,
        "inferline_sklearn": sklearn.__version__,
        "inferline_numpy": numpy.__version__,
        "mlserver": theirs,
        "wrk": wrk,
        "h2load": h2load,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_header(info: dict, args) -> None:
    theirs = info["mlserver"]
    print(
        f"machine: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, "
        f"Python {info['python']}; load average {info['load_average_at_start'][0]} at start"
    )
    print(
        f"inferline {info['inferline']} ({info['inferline_commit']}), default settings; "
        f"MLServer {theirs['mlserver']}, default settings (parallel_workers="
        f"{theirs['parallel_workers']}, debug={theirs['debug']}); scikit-learn "
        f"{info['inferline_sklearn']} / {theirs['scikit-learn']}, numpy {info['inferline_numpy']}"
        f" / {theirs['numpy']}; wrk: {info['wrk']}; h2load: {info['h2load']}"
    )
    print(
        f"{args.rounds} rounds x {args.duration:g} s (after {args.warmup:g} s warm-up) per server "
        f"and row, inferline and MLServer alternating; medians over rounds, ratios are the "
        f"median of each round's inferline/MLServer. Batching: "
        f"max_batch_size={args.max_batch_size}, max_batch_time={args.max_batch_time:g} s on both."
        " '2 workers' rows: inferline serve --workers 2; 'front' rows: inferline serve --front;"
        " MLServer as in the other rows."
    )


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(summaries: list[dict]) -> None:
    head = (f"{'':22}{'':17}{'inferline':>28}{'MLServer':>28}   {'inferline/MLServer':<20}\n"
            f"{'row':22}{'client':17}" + f"{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}" * 2
            + f"   {'req/s':>7}{'p50':>7}   target")  # fmt: skip
    print("\n" + head)
    notes = []
    for s in summaries:
        client = s["client"] + (" *" if s["client_saturated"] else "")
        cells = ""
        for name in ("inferline", "MLServer"):
            m = s["median"][name]
            cells += f"{_number(m['throughput']):>10}{_number(m['p50'], 2):>9}"
            cells += f"{_number(m['p99'], 2):>9}"
        ratio = s["ratio"]
        throughput = "-" if ratio["throughput"] is None else f"{ratio['throughput']:.2f}x"
        p50 = "-" if ratio["p50"] is None else f"{ratio['p50']:.2f}"
        print(f"{s['row']:22}{client:17}{cells}   {throughput:>7}{p50:>7}   {s['target']}")
        if s["errors"]:
            notes.append(f"{s['row']}: {s['errors']} failed requests (see --json)")
        notes += [f"{s['row']}: {failure}" for failure in s["failures"]]
    if any(s["client_saturated"] for s in summaries):
        notes.append("* the load generator used 90 % of a core or more in some run of this row: ")
        notes[-1] += "it measured itself too, so the row understates the faster server"
    for note in notes:
        print(f"  {note}")
    # How much CPU the servers got: on a busy machine far less than a core, and then the
    # figures say more about the machine than about the servers.
    spans = []
    for name in ("inferline", "MLServer"):
        cores = [run["server_cores"] for s in summaries for run in s["rounds"][name]]
        if cores:
            spans.append(f"{name} {min(cores):.2f}-{max(cores):.2f}")
    print("server CPU during the runs, in cores (min-max): " + ", ".join(spans))


# --- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 3 s")
    parser.add_argument(
        "--rows", default=",".join(GROUPS), help=f"groups: {','.join(GROUPS)} (all)"
    )
    parser.add_argument("--json", type=Path, help="also write every run and the table here")
    parser.add_argument("--rounds", type=int, help="runs per server and row (default 3)")
    parser.add_argument("--duration", type=float, help="seconds measured per run (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured load first (2)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="batching row (32)")
    parser.add_argument(
        "--max-batch-time", type=float, default=0.005, help="batching row, seconds (0.005)"
    )
    parser.add_argument(
        "--no-wrk", dest="wrk", action="store_false", help="REST with inferline bench, not wrk"
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--no-h2load",
        dest="h2load",
        action="store_false",
        help="gRPC with inferline bench, not h2load",
    )
    parser.add_argument(
        "--inferline-workers",
        type=int,
        help="inferline serve --workers outside the '2 workers' rows (default: its own, 1)",
    )
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        help="MLServer parallel_workers (default: its own, 1; 0 runs inference in-process)",
    )
    parser.add_argument(
        "--client-processes", type=int, default=1, help="inferline bench --processes (1)"
    )
    parser.add_argument(
        "--bench-command",
        default=f"{shlex.quote(sys.executable)} -m inferline bench",
        help="the load generator for gRPC (and REST without wrk): any command taking "
        "`inferline bench`'s arguments and writing its --json",
    )
    args = parser.parse_args()
    quick = args.quick
    args.rounds = args.rounds or (2 if quick else 3)
    args.duration = args.duration or (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.groups = [group.strip() for group in args.rows.split(",") if group.strip()]
    unknown = set(args.groups) - set(GROUPS)
    if unknown or not args.groups:
        parser.error(f"--rows takes {', '.join(GROUPS)}, comma-separated (got {args.rows!r})")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    args.wrk = args.wrk and shutil.which("wrk") is not None
    args.h2load = args.h2load and shutil.which("h2load") is not None
    return args


def check_bench(args, rows: list[Row]) -> None:
    native = {"rest": args.wrk, "grpc": args.h2load}  # rows a C client drives
    if all(native[row.protocol] for row in rows):
        return
    command = [*shlex.split(args.bench_command), "--help"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=60)
    except OSError as exc:
        fail(f"the load generator `{args.bench_command}` cannot run: {exc}")
    if done.returncode != 0:
        fail(
            f"`{args.bench_command}` is not available (exit status {done.returncode}); "
            "it drives the rows wrk (REST) or h2load (gRPC) cannot, not being installed"
        )


def main() -> None:
    args = parse_args()
    rows = plan(args.groups)
    check_bench(args, rows)
    venv_python = ensure_mlserver_venv()
    info = machine(venv_python, args)
    print_header(info, args)
    WORK.mkdir(parents=True, exist_ok=True)
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    warnings: list[str] = []
    notes: dict = {}
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        folders = write_models(Path(scratch) / "models", args.max_batch_size, args.max_batch_time)
        load = Load(args, Path(scratch))
        for phase in ("plain", "batching", "workers", "front"):
            phase_rows = [row for row in rows if row.phase == phase]
            if not phase_rows:
                continue
            folder = folders["batching" if phase == "batching" else "plain"]
            workers = 2 if phase == "workers" else args.inferline_workers
            servers = [
                start_inferline(folder, logs, phase, workers, front=phase == "front"),
                start_mlserver(venv_python, folder, logs, phase, args.mlserver_workers),
            ]
            try:
                for server in servers:
                    wait_ready(server)
                answers = {server.name: predict(server) for server in servers}
                if len({json.dumps(answer) for answer in answers.values()}) != 1:
                    fail(f"the servers disagree on the same request: {answers}")
                if args.h2load and any(row.protocol == "grpc" for row in phase_rows):
                    for server in servers:
                        check_grpc_body(server, answers[server.name])
                for row in phase_rows:
                    for round_ in range(args.rounds):
                        for server in servers:  # A B A B
                            run = load.run(server, row.protocol, row.concurrency)
                            row.runs[server.name].append(run)
                            print(
                                f"  {row.label:20} round {round_ + 1} {server.name:10}"
                                f" {run.failure or f'{run.throughput:,.0f} req/s'}",
                                file=sys.stderr,
                            )
                if phase == "batching":
                    notes["inferline_mean_batch_size"] = mean_batch_size(servers[0])
            except (RuntimeError, OSError) as exc:  # a server that never came up or answered
                fail(str(exc))
            finally:
                for server in servers:
                    server.stop()
                warnings += log_warnings(servers)
    summaries = [summarise(row) for row in rows]
    print_table(summaries)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average {info['load_average_at_end'][0]} at end; server logs in {logs}")
    if "inferline_mean_batch_size" in notes:
        mean = notes["inferline_mean_batch_size"]
        print(
            "batching: "
            + (
                f"inferline merged {mean:.1f} requests per model call on average"
                if mean
                else "inferline reported no batches (no model_infer_batch_size in /metrics)"
            )
            + "; MLServer publishes no batch-size metric"
        )
    print("Python warnings in the server logs: " + ("none" if not warnings else ""))
    for line in warnings[:10]:
        print(f"  {line}")
    if args.json:
        settings = {key: getattr(args, key) for key in ("rounds", "duration", "warmup",
                    "max_batch_size", "max_batch_time", "wrk_threads", "client_processes",
                    "inferline_workers", "mlserver_workers")}  # fmt: skip
        document = {"machine": info, "settings": settings, "warnings": warnings, **notes,
                    "rows": summaries}  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
