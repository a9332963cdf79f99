"""Memory of a model server with 1 and with N workers, forked from a template or started fresh.

Run it as a script: `python benchmarks/workers_memory.py` (`--help` for the knobs). It trains a
scikit-learn RandomForest whose saved file is tens of MB (`--trees`), then measures, from
`/proc/<pid>/smaps_rollup`, every process of `inferline serve` with no model and with the forest
(after some requests), with 1 worker, with N workers forked from the template process that loaded
the models (the default), and with N workers started fresh (`INFERLINE_FORK_WORKERS=0`, each
loading its own copy). It also times how long each server took to be ready, and how long after a
worker is killed its replacement serves.

PSS (proportional set size) splits each shared page between the processes mapping it, so the sum
of PSS is the real memory of a group of processes; USS (private pages only) is what killing that
one process would give back.
"""

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
from sklearn.ensemble import RandomForestClassifier

# benchmarks/ is on sys.path when a script here runs.
from workers_scaling import children, descendants, start_server

MiB = 1024 * 1024


def memory(pid: int) -> dict[str, float]:
    """Rss, Pss and Uss of one process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    uss = fields["Private_Clean"] + fields["Private_Dirty"]
    return {"rss": fields["Rss"] / MiB, "pss": fields["Pss"] / MiB, "uss": uss / MiB}


def train_forest(folder: Path, trees: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20000, 20)).astype(np.float32)
    labels = (features[:, 0] + rng.normal(size=20000) > 0).astype(int)
    model = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1)
    model.fit(features, labels)
    folder.mkdir(parents=True)
    joblib.dump(model, folder / "model.joblib")
    return features[:4]


def request(rows: np.ndarray) -> dict:
    return {
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
        ]
    }


def roles(parent: int) -> list[tuple[str, int]]:
    """Every process of a server, with its role."""
    found = [("parent", parent)]
    for pid in descendants(parent):
        template = b"--template" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        found.append(("template" if template and pid in children(parent) else "worker", pid))
    return found


def measure_server(models: Path, workers: int, fork: bool, model: str | None, rows, log: Path):
    """The memory of each process of the server, the seconds it took to be ready, and the
    seconds from killing a worker to its replacement serving (None with one worker)."""
    started = time.monotonic()
    process, http_port = start_server(models, workers, log, timeout=180, fork=fork)
    ready = time.monotonic() - started
    try:
        if model:
            # Fresh connections, so every worker answers some.
            for _ in range(40):
                with httpx.Client(timeout=60) as client:
                    answer = client.post(
                        f"http://127.0.0.1:{http_port}/v2/models/{model}/infer", json=request(rows)
                    )
                    answer.raise_for_status()
        time.sleep(1)
        measured = [(role, pid, memory(pid)) for role, pid in roles(process.pid)]
        replaced = None
        if workers > 1:
            victim = next(pid for role, pid, _ in measured if role == "worker")
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            while "serves again" not in log.read_text():
                time.sleep(0.02)
            replaced = time.monotonic() - killed
        return measured, ready, replaced
    finally:
        process.terminate()
        process.wait(timeout=30)


def show(title: str, measured: list, ready: float, replaced: float | None) -> float:
    total = sum(m["pss"] for _, _, m in measured)
    after = f", a killed worker serves again after {replaced:.2f} s" if replaced else ""
    print(f"{title}: PSS total {total:7.1f} MiB; ready after {ready:.1f} s{after}")
    for role, pid, m in measured:
        print(
            f"    {role:8} pid {pid:>7}  RSS {m['rss']:7.1f}  PSS {m['pss']:7.1f}  "
            f"USS {m['uss']:7.1f} MiB"
        )
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trees", type=int, default=300)
    args = parser.parse_args()
    n = args.workers
    setups = (
        (1, True, "1 worker"),
        (n, True, f"{n} forked workers"),
        (n, False, f"{n} fresh workers"),
    )
    with tempfile.TemporaryDirectory(prefix="inferline-workers-memory-") as tmp:
        root = Path(tmp)
        (root / "empty").mkdir()
        rows = train_forest(root / "models" / "forest", args.trees)
        size = (root / "models" / "forest" / "model.joblib").stat().st_size / MiB
        print(f"RandomForest with {args.trees} trees: model.joblib {size:.1f} MiB\n")
        totals = {}
        for label, folder, model in (("no model", "empty", None), ("forest", "models", "forest")):
            for workers, fork, name in setups:
                log = root / f"{label}-{name}.log".replace(" ", "-")
                measured = measure_server(root / folder, workers, fork, model, rows, log)
                totals[(label, name)] = show(f"serve, {label}, {name}", *measured)
    print("\nwhat the forest costs (PSS, server with it minus server without):")
    for _, _, name in setups:
        cost = totals[("forest", name)] - totals[("no model", name)]
        print(f"    {name:18} {cost:7.1f} MiB   (server total {totals[('forest', name)]:7.1f} MiB)")


if __name__ == "__main__":
    main()
