"""Two versions of inferline side by side: what a 1-step pipeline call adds over calling its model
directly, through `inferline up` on the embedded bus, with calls alternating between the two.

A change to the pipeline path is worth a few hundred microseconds against a run-to-run spread of
as much on a shared machine; two processes measured in turn, in the same minutes, see the same
machine. Each version is a source folder (a checkout's `src`, e.g. from `git worktree add`),
put first on PYTHONPATH of its own `inferline up`; both use this interpreter's packages.

    python benchmarks/pipeline_versions.py OLD_SRC NEW_SRC [--rounds 20] [--calls 100]

Prints, per version: p50 of the direct call and of the 1-step pipeline, the difference, and the
CPU time the `up` process spent per call on each.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from pipeline_latency import REQUEST, start_up

from inferline.examples import write_runtime_model

DIRECT = "/v2/models/tfsimple1/infer"
ONE_STEP = "/v2/pipelines/one-step/infer"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs=2, help="two source folders (each a checkout's src)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=100, help="calls per target per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, httpx.Client(timeout=60) as client:
        tmp = Path(folder)
        uri = write_runtime_model(tmp / "tfsimple", "TfSimple")
        ups = []
        try:
            for index, src in enumerate(args.sources):
                pythonpath = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])
                env = dict(os.environ, PYTHONPATH=pythonpath)
                ups.append(start_up(tmp / f"data{index}", uri, env=env))
            for _, router in ups:  # warm up
                for path in (DIRECT, ONE_STEP):
                    for _ in range(100):
                        client.post(router + path, json=REQUEST).raise_for_status()
            took = {(i, p): [] for i in range(2) for p in (DIRECT, ONE_STEP)}
            cpu = dict.fromkeys(took, 0.0)
            for round_ in range(args.rounds):
                for i in (0, 1) if round_ % 2 == 0 else (1, 0):
                    up, router = ups[i]
                    for path in (DIRECT, ONE_STEP):
                        before = cpu_seconds(up.pid)
                        for _ in range(args.calls):
                            start = time.perf_counter()
                            client.post(router + path, json=REQUEST).raise_for_status()
                            took[i, path].append((time.perf_counter() - start) * 1000)
                        cpu[i, path] += cpu_seconds(up.pid) - before
        finally:
            for up, _ in ups:
                up.terminate()
                up.wait(30)
    count = args.rounds * args.calls
    print(f"{'version':40} | direct p50 | 1-step p50 | +p50 | up CPU ms/call: direct, 1-step, +")
    for i, src in enumerate(args.sources):
        direct, one = statistics.median(took[i, DIRECT]), statistics.median(took[i, ONE_STEP])
        cpu_direct, cpu_one = cpu[i, DIRECT] / count * 1000, cpu[i, ONE_STEP] / count * 1000
        print(
            f"{src[-40:]:40} | {direct:7.2f} ms | {one:7.2f} ms | {one - direct:+.2f} | "
            f"{cpu_direct:.2f}, {cpu_one:.2f}, {cpu_one - cpu_direct:+.2f}"
        )
    print(f"\n{args.rounds} rounds of {args.calls} sequential REST calls per target and version")


if __name__ == "__main__":
    main()
