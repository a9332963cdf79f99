"""Memory of a model server with 1 and with N workers, and what loading before a fork would save.

Run it as a script: `python benchmarks/workers_memory.py` (`--help` for the knobs). It trains a
scikit-learn RandomForest whose saved file is tens of MB (`--trees`), then measures, from
`/proc/<pid>/smaps_rollup`, every process of:

1. `inferline serve` with no model, with 1 and with N workers (the cost of a worker itself);
2. `inferline serve` with the forest, with 1 and with N workers (after some requests);
3. an experiment, not what the server does: one process loads the forest and forks N children
   that each answer requests with it, so the forest's pages are shared copy-on-write.

PSS (proportional set size) splits each shared page between the processes mapping it, so the sum
of PSS is the real memory of a group of processes; USS (private pages only) is what killing that
one process would give back.
"""

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
from sklearn.ensemble import RandomForestClassifier

# benchmarks/ is on sys.path when a script here runs.
from workers_scaling import start_server

MiB = 1024 * 1024


def memory(pid: int) -> dict[str, float]:
    """Rss, Pss and Uss of one process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    uss = fields["Private_Clean"] + fields["Private_Dirty"]
    return {"rss": fields["Rss"] / MiB, "pss": fields["Pss"] / MiB, "uss": uss / MiB}


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


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


def measure_server(models: Path, workers: int, model: str | None, rows, log: Path) -> list:
    process, http_port = start_server(models, workers, log, timeout=180)
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
        pids = [process.pid, *children(process.pid)] if workers > 1 else [process.pid]
        return [(pid, memory(pid)) for pid in pids]
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure_fork(model_path: Path, workers: int, rows: np.ndarray) -> list:
    """The experiment: load once, then fork; each child predicts, then waits to be measured."""
    model = joblib.load(model_path)
    gc.collect()
    gc.freeze()  # keep the collector from writing to every object's header in the children
    pids = []
    for _ in range(workers):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            for _ in range(200):
                model.predict_proba(rows)
            os.write(write_end, b"x")
            time.sleep(600)
            os._exit(0)
        os.read(read_end, 1)
        pids.append(pid)
    time.sleep(1)
    result = [(os.getpid(), memory(os.getpid()))] + [(pid, memory(pid)) for pid in pids]
    for pid in pids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return result


def show(title: str, rows: list) -> float:
    total = sum(m["pss"] for _, m in rows)
    print(f"{title}: PSS total {total:7.1f} MiB")
    for index, (pid, m) in enumerate(rows):
        role = "parent" if index == 0 and len(rows) > 1 else "worker"
        print(
            f"    {role:6} pid {pid:>7}  RSS {m['rss']:7.1f}  PSS {m['pss']:7.1f}  "
            f"USS {m['uss']:7.1f} MiB"
        )
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trees", type=int, default=300)
    args = parser.parse_args()
    n = args.workers
    with tempfile.TemporaryDirectory(prefix="inferline-workers-memory-") as tmp:
        root = Path(tmp)
        (root / "empty").mkdir()
        rows = train_forest(root / "models" / "forest", args.trees)
        size = (root / "models" / "forest" / "model.joblib").stat().st_size / MiB
        print(f"RandomForest with {args.trees} trees: model.joblib {size:.1f} MiB\n")
        totals = {}
        for label, folder, model in (("no model", "empty", None), ("forest", "models", "forest")):
            for workers in (1, n):
                log = root / f"{label}-{workers}.log"
                measured = measure_server(root / folder, workers, model, rows, log)
                totals[(label, workers)] = show(f"serve, {label}, {workers} worker(s)", measured)
        fork = show(
            f"experiment: forest loaded once, {n} forked children",
            measure_fork(root / "models" / "forest" / "model.joblib", n, rows),
        )
    model_1 = totals[("forest", 1)] - totals[("no model", 1)]
    model_n = totals[("forest", n)] - totals[("no model", n)]
    print(
        f"\nthe forest costs {model_1:.1f} MiB in 1 worker and {model_n:.1f} MiB in {n} workers "
        f"(PSS, server with it minus server without); {n} forked children hold it in "
        f"{fork:.1f} MiB in all, parent included"
    )


if __name__ == "__main__":
    main()
