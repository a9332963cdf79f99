"""Throughput of one model server with 1 and with N worker processes (`inferline serve --workers`).

Run it as a script: `python benchmarks/workers_scaling.py` (`--help` for the knobs). It writes two
models into a temp folder: `burner`, a custom runtime that burns `--burn-ms` of CPU in pure Python
per request (a CPU-bound model: one process can run one at a time), and the demo's iris
LogisticRegression (a light model, where the server's own work dominates). It starts one
`inferline serve` with 1 worker and one with `--workers` workers, serving both models, and drives
each with `wrk` (REST, keep-alive connections, closed loop) for `--seconds` per cell, alternating
the servers round by round (A B A B) so both see the same machine. It prints, per model and
connection count, the median req/s, p50 and CPU cores used (all the server's processes, from
/proc: on a busy machine this is what bounds req/s) of each server over the rounds, and the
ratio of req/s.

wrk is used because it costs little CPU (the load generator shares the cores with the servers):
`apt-get install wrk`. Connections are spread over the workers by the kernel (SO_REUSEPORT), so
use several connections; one connection is always served by one worker.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from inferline.demo import free_port, train_iris, wait_until_ready

BURNER = """
    import time

    import numpy as np

    from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
    from inferline.runtimes import Runtime


    class Burner(Runtime):
        async def predict(self, request: InferenceRequest) -> InferenceResponse:
            deadline = time.process_time() + float(request.inputs[0].data.ravel()[0])
            while time.process_time() < deadline:
                pass
            return InferenceResponse(
                model_name=self.name, outputs=[Tensor.from_numpy("done", np.ones((1, 1)))]
            )
"""

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
"""


def write_models(root: Path) -> None:
    burner = root / "burner"
    burner.mkdir(parents=True)
    (burner / "model.py").write_text(textwrap.dedent(BURNER))
    settings = {"name": "burner", "implementation": "model.Burner"}
    (burner / "model-settings.json").write_text(json.dumps(settings))
    train_iris(root / "iris")


def requests(burn_ms: float) -> dict[str, dict]:
    return {
        "burner": {
            "inputs": [{"name": "s", "shape": [1], "datatype": "FP32", "data": [burn_ms / 1000]}]
        },
        "iris": {
            "inputs": [
                {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
            ]
        },
    }


def start_server(
    models: Path, workers: int, log_path: Path, timeout: float = 120, fork: bool = True
) -> tuple[subprocess.Popen, int]:
    """`inferline serve --workers` on free ports, once ready: the process and its REST port.
    With `fork=False` the workers are started fresh (`INFERLINE_FORK_WORKERS=0`), each loading
    its own models, instead of forked from the template process that loaded them."""
    http_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "inferline", "serve", str(models), "--host", "127.0.0.1",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--workers", str(workers), "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "INFERLINE_FORK_WORKERS": "1" if fork else "0"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    wait_until_ready(http_port, process, timeout=timeout)
    return process, http_port


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: the template and the workers forked from it, or the workers
    started fresh."""
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def server_cpu(pid: int) -> list[float]:
    """CPU seconds used so far by the server process and each of its descendants."""
    seconds = []
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return seconds


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> tuple[float, float, int]:
    """req/s, p50 latency in ms and the count of failed requests of one wrk run."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency",
         "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    out = result.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"50%\s+([\d.]+)(us|ms|s)", out).groups()
    p50_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, p50_ms, errors + (int(non_2xx.group(1)) if non_2xx else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="workers of the second server")
    parser.add_argument("--connections", default="8,32", help="comma-separated list")
    parser.add_argument("--seconds", type=int, default=5, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burn-ms", type=float, default=5.0, help="CPU per burner request")
    parser.add_argument("--models", default="burner,iris", help="comma-separated: burner, iris")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    connections = [int(c) for c in args.connections.split(",")]
    models = args.models.split(",")
    counts = [1, args.workers]

    with tempfile.TemporaryDirectory(prefix="inferline-workers-bench-") as tmp:
        root = Path(tmp)
        write_models(root / "models")
        scripts = {}
        for model, body in requests(args.burn_ms).items():
            scripts[model] = root / f"{model}.lua"
            scripts[model].write_text(LUA.format(body=json.dumps(body)))
        servers = {n: start_server(root / "models", n, root / f"serve-{n}.log") for n in counts}
        try:
            results: dict[tuple, list[tuple[float, float]]] = {}
            for round_index in range(args.rounds):
                order = counts if round_index % 2 == 0 else counts[::-1]
                for model in models:
                    for conns in connections:
                        for n in order:
                            url = f"http://127.0.0.1:{servers[n][1]}/v2/models/{model}/infer"
                            # A short unmeasured run: new connections, caches, the CPU governor.
                            run_wrk(url, scripts[model], conns, 1)
                            before = server_cpu(servers[n][0].pid)
                            cell = run_wrk(url, scripts[model], conns, args.seconds)
                            after = server_cpu(servers[n][0].pid)
                            # Cores the server got: on a busy machine, what bounds req/s.
                            cores = (sum(after) - sum(before)) / args.seconds
                            results.setdefault((model, conns, n), []).append((*cell, cores))
                            time.sleep(0.5)
        finally:
            for process, _ in servers.values():
                process.terminate()
            for process, _ in servers.values():
                process.wait(timeout=30)

    one, many = counts
    print(
        f"\nREST req/s (median of {args.rounds} rounds x {args.seconds:g} s; wrk -t1), "
        f"burner = {args.burn_ms:g} ms of CPU per request"
    )
    header = (
        f"{'model':8} {'conns':>5}  {'1 worker':>10} {'p50 ms':>7} {'cores':>5}  "
        f"{f'{many} workers':>10} {'p50 ms':>7} {'cores':>5}  {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    for model in models:
        for conns in connections:
            cells = {n: results[(model, conns, n)] for n in counts}
            rate = {n: statistics.median(c[0] for c in cells[n]) for n in counts}
            p50 = {n: statistics.median(c[1] for c in cells[n]) for n in counts}
            cores = {n: statistics.median(c[3] for c in cells[n]) for n in counts}
            errors = sum(c[2] for n in counts for c in cells[n])
            print(
                f"{model:8} {conns:>5}  {rate[one]:>10.0f} {p50[one]:>7.2f} {cores[one]:>5.2f}  "
                f"{rate[many]:>10.0f} {p50[many]:>7.2f} {cores[many]:>5.2f}  "
                f"{rate[many] / rate[one]:>5.2f}"
                + (f"  ({errors} failed requests)" if errors else "")
            )


if __name__ == "__main__":
    main()
