"""`inferline serve --workers 2`: worker processes on the same ports, sharing the load, forked
from a template process that loaded the models, so they share the models' memory.

The model burns CPU for as long as the request asks and answers with the pid of the worker that
ran it and the wall-clock interval it ran in, so the tests see which process answered and that
two of them worked at the same time. The kernel spreads connections over the workers (each
worker listens with SO_REUSEPORT): each test opens fresh connections until it has met every
worker, so none depends on the luck of one hash. With `--front` the parent serves the ports and
passes each request to the worker with the fewest in flight, so one connection reaches all.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from inferline.demo import free_port, wait_until_ready

pytestmark = pytest.mark.slow

WORKERS = 2
# Fresh connections tried before concluding that a worker gets none: the chance that 60
# connections all miss one of two workers is 2**-59.
MAX_CONNECTIONS = 60

BURNER_CODE = """
    import os
    import time

    import numpy as np

    from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
    from inferline.runtimes import Runtime


    class Burner(Runtime):
        async def predict(self, request: InferenceRequest) -> InferenceResponse:
            started = time.time()
            # Pure Python under the GIL: a worker running this can do nothing else.
            cpu_deadline = time.process_time() + float(request.inputs[0].data.ravel()[0])
            while time.process_time() < cpu_deadline:
                pass
            outputs = [
                Tensor.from_numpy("pid", np.array([[os.getpid()]], dtype=np.int64)),
                Tensor.from_numpy("interval", np.array([[started, time.time()]])),
            ]
            return InferenceResponse(model_name=self.name, outputs=outputs)
"""


@pytest.fixture(scope="module")
def burner_dir(tmp_path_factory, write_custom_model) -> Path:
    folder = tmp_path_factory.mktemp("workers") / "burner"
    return write_custom_model(
        folder, {"name": "burner", "implementation": "model.Burner"}, BURNER_CODE
    )


@pytest.fixture(scope="module")
def server(serve, burner_dir):
    return serve(burner_dir, extra_args=("--workers", str(WORKERS)))


def burn_request(seconds: float = 0.0) -> dict:
    return {"inputs": [{"name": "seconds", "shape": [1], "datatype": "FP32", "data": [seconds]}]}


def children(pid: int) -> set[int]:
    """The running (not zombie) child processes of `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.add(int(entry.name))
    return found


def workers_of(parent: int) -> set[int]:
    """The worker processes of a server: the children of its template process (started with
    `--template`), or the parent's own children when the workers were started fresh."""
    found = set()
    for child in children(parent):
        with contextlib.suppress(OSError):
            if b"--template" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                found |= children(child)
                continue
        found.add(child)
    return found


def new_worker(parent: int, known: set[int]) -> int | None:
    """A worker of the server that is not one of `known`, if there is one."""
    new = workers_of(parent) - known
    return new.pop() if new else None


def pss_mib(pids: set[int]) -> float:
    """The memory of a group of processes: the sum of their PSS, in MiB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def infer(client: httpx.Client, server, seconds: float = 0.0) -> tuple[int, list[float]]:
    """The pid that answered and the interval the model ran in."""
    answer = client.post(f"{server.url}/v2/models/burner/infer", json=burn_request(seconds))
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    return outputs["pid"][0], outputs["interval"]


def clients_per_worker(server, pids: set[int]) -> dict[int, httpx.Client]:
    """One open keep-alive connection to each worker in `pids`, by pid."""
    found: dict[int, httpx.Client] = {}
    for _ in range(MAX_CONNECTIONS):
        client = httpx.Client(timeout=60)
        pid, _ = infer(client, server)
        if pid in found or pid not in pids:
            client.close()
        else:
            found[pid] = client
        if set(found) == pids:
            return found
    for client in found.values():
        client.close()
    raise AssertionError(f"{MAX_CONNECTIONS} connections reached only workers {sorted(found)}")


# --- sharing the load -----------------------------------------------------------------------------


def test_every_worker_answers_and_two_work_at_once(server):
    workers = workers_of(server.process.pid)
    assert len(workers) == WORKERS, f"expected {WORKERS} worker processes, found {workers}"
    # A connection left idle past the server's keep-alive (5 s, on a loaded machine) is opened
    # again by httpx and may land on the other worker: then try again.
    for _ in range(3):
        intervals = burst(server, clients_per_worker(server, workers))
        if set(intervals) == workers:
            break
    assert set(intervals) == workers
    # One process can run only one of these at a time (the model holds the GIL while it
    # burns), so overlapping intervals mean two processes worked on requests together.
    (a_start, a_end), (b_start, b_end) = intervals.values()
    assert a_start < b_end and b_start < a_end, f"no overlap: {intervals}"


def burst(server, clients: dict[int, httpx.Client]) -> dict[int, list[float]]:
    """One 0.3 s request on each client at once: the interval each pid ran its request in."""
    intervals: dict[int, list[float]] = {}
    barrier = threading.Barrier(len(clients))

    def call(client):
        barrier.wait()
        pid, interval = infer(client, server, seconds=0.3)
        intervals[pid] = interval

    threads = [threading.Thread(target=call, args=(c,)) for c in clients.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients.values():
        client.close()
    return intervals


def test_grpc_channels_reach_every_worker(server):
    workers = workers_of(server.process.pid)
    seen = set()
    seconds = grpcclient.InferInput("seconds", [1], "FP32")
    seconds.set_data_from_numpy(np.array([0.0], dtype=np.float32))
    for _ in range(MAX_CONNECTIONS):
        # One channel is one HTTP/2 connection, hence one worker.
        client = grpcclient.InferenceServerClient(url=server.grpc_address)
        try:
            answer = client.infer("burner", [seconds])
            seen.add(int(answer.as_numpy("pid").ravel()[0]))
        finally:
            client.close()
        if seen == workers:
            break
    assert seen == workers


def test_load_and_unload_through_one_worker_reach_every_worker(server):
    workers = workers_of(server.process.pid)
    clients = clients_per_worker(server, workers)
    try:
        first, second = clients.values()
        answer = first.post(f"{server.url}/v2/repository/models/burner/unload")
        assert answer.status_code == 200, answer.text
        for client in clients.values():
            gone = client.post(f"{server.url}/v2/models/burner/infer", json=burn_request())
            assert gone.status_code == 404, gone.text
        # Unloading it again is answered as in one process, from the parent's record.
        again = second.post(f"{server.url}/v2/repository/models/burner/unload")
        assert again.status_code == 404
        assert "burner" in again.json()["error"]

        answer = second.post(f"{server.url}/v2/repository/models/burner/load")
        assert answer.status_code == 200, answer.text
        # Loaded means loaded in every worker: no request right after sees it missing.
        answered = set()
        for _ in range(MAX_CONNECTIONS):
            with httpx.Client(timeout=60) as client:
                answered.add(infer(client, server)[0])
            if answered == workers:
                break
        assert answered == workers
        for client in clients.values():
            index = client.post(f"{server.url}/v2/repository/index", json={"ready": True})
            assert index.json() == [{"name": "burner", "state": "READY", "reason": ""}]

        missing = first.post(f"{server.url}/v2/repository/models/nothere/load")
        assert missing.status_code == 404
        assert missing.json() == {"error": "model 'nothere' not found"}
    finally:
        for client in clients.values():
            client.close()


def test_metrics_count_the_requests_of_every_worker_in_sum_and_each(server):
    def counts() -> tuple[float, dict[str, float]]:
        """The model's successes summed over the workers, and the requests of each worker."""
        text = httpx.get(f"{server.url}/metrics").text
        successes, per_worker = 0.0, {}
        for line in text.splitlines():
            value = float(line.rsplit(" ", 1)[1]) if line[:1].isalpha() else 0.0
            if line.startswith('model_infer_request_success_total{model="burner"'):
                successes = value
            elif line.startswith("inferline_worker_requests_total{"):
                per_worker[line.split('worker="', 1)[1].split('"', 1)[0]] = value
        return successes, per_worker

    successes_before, before = counts()
    clients = clients_per_worker(server, workers_of(server.process.pid))
    try:
        for client in clients.values():
            for _ in range(3):
                infer(client, server)
    finally:
        for client in clients.values():
            client.close()
    successes, after = counts()
    # clients_per_worker sent at least one request per worker too: at least 3 + 1 per worker.
    assert successes - successes_before >= WORKERS * 4
    assert sorted(after) == [str(i) for i in range(WORKERS)]
    for worker, count in after.items():
        assert count - before.get(worker, 0.0) >= 4, (worker, before, after)


# --- memory ---------------------------------------------------------------------------------------

TABLE_MIB = 300
TABLE_CODE = f"""
    import os

    import numpy as np

    from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
    from inferline.runtimes import Runtime


    class Table(Runtime):
        async def load(self):
            # {TABLE_MIB} MiB of numbers, every page written: a model this size is what a
            # worker would otherwise copy.
            self.table = np.random.default_rng(0).random({TABLE_MIB} * 1024 * 1024 // 8)
            return True

        async def predict(self, request: InferenceRequest) -> InferenceResponse:
            # Reads the whole table, as a model reads its weights.
            total = np.array([[os.getpid(), self.table.sum()]])
            return InferenceResponse(
                model_name=self.name, outputs=[Tensor.from_numpy("pid_sum", total)]
            )
"""

# Starts a thread at load that is still running when the models are loaded, as a runtime
# keeping a thread pool would: forking then is unsafe.
THREAD_KEEPER_CODE = """
    import os
    import threading

    import numpy as np

    from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
    from inferline.runtimes import Runtime


    class ThreadKeeper(Runtime):
        async def load(self):
            self.stop = threading.Event()
            threading.Thread(target=self.stop.wait, daemon=True).start()
            return True

        async def predict(self, request: InferenceRequest) -> InferenceResponse:
            pid = Tensor.from_numpy("pid", np.array([[os.getpid()]], dtype=np.int64))
            return InferenceResponse(model_name=self.name, outputs=[pid])
"""


# Its load waits until a file named "open" appears in its folder.
GATE_CODE = """
    import os
    import time
    from pathlib import Path

    import numpy as np

    from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
    from inferline.runtimes import Runtime


    class Gate(Runtime):
        async def load(self):
            while not (Path(self.settings.folder) / "open").exists():
                time.sleep(0.05)
            return True

        async def predict(self, request: InferenceRequest) -> InferenceResponse:
            pid = Tensor.from_numpy("pid", np.array([[os.getpid()]], dtype=np.int64))
            return InferenceResponse(model_name=self.name, outputs=[pid])
"""


def server_memory(server) -> float:
    """PSS of every process of the server (parent, template and workers), in MiB."""
    parent = server.process.pid
    return pss_mib({parent} | children(parent) | workers_of(parent))


def answering_pids(server, model: str, wanted: set[int]) -> set[int]:
    """Fresh connections until every pid in `wanted` has answered `model`; the pids seen."""
    seen = set()
    for _ in range(MAX_CONNECTIONS):
        with httpx.Client(timeout=60) as client:
            answer = client.post(f"{server.url}/v2/models/{model}/infer", json=burn_request())
            assert answer.status_code == 200, answer.text
            seen.add(int(answer.json()["outputs"][0]["data"][0]))
        if wanted <= seen:
            break
    return seen


def test_forked_workers_share_the_models_memory(serve, tmp_path, write_custom_model):
    folder = write_custom_model(
        tmp_path / "table", {"name": "table", "implementation": "model.Table"}, TABLE_CODE
    )
    single = serve(folder)
    answering_pids(single, "table", {single.process.pid})
    one_worker = server_memory(single)
    assert one_worker > TABLE_MIB

    server = serve(folder, extra_args=("--workers", str(WORKERS)))
    workers = workers_of(server.process.pid)
    assert answering_pids(server, "table", workers) >= workers
    # Each worker holding its own copy would be about twice one worker's memory.
    two_workers = server_memory(server)
    assert two_workers < 1.5 * one_worker, (one_worker, two_workers)

    # A worker replacing a dead one is forked from the template too: still one copy.
    victim = next(iter(workers))
    os.kill(victim, signal.SIGKILL)
    new_pid = wait_for(lambda: new_worker(server.process.pid, workers), 60, "a new worker")
    survivors = (workers - {victim}) | {new_pid}
    assert answering_pids(server, "table", {new_pid}) >= {new_pid}
    assert workers_of(server.process.pid) == survivors
    after = server_memory(server)
    assert after < 1.5 * one_worker, (one_worker, after)
    assert "Traceback" not in server.log(), server.log()


def test_a_thread_alive_after_loading_means_fresh_workers(serve, tmp_path, write_custom_model):
    folder = write_custom_model(
        tmp_path / "keeper", {"name": "keeper", "implementation": "model.ThreadKeeper"},
        THREAD_KEEPER_CODE,
    )  # fmt: skip
    server = serve(folder, extra_args=("--workers", str(WORKERS)))
    log = server.log()
    assert "workers are started fresh, each loading its own models" in log, log
    assert "2 threads alive after loading the models" in log, log
    # No template stays behind: the workers are the parent's own children, and all answer.
    workers = children(server.process.pid)
    assert len(workers) == WORKERS
    assert answering_pids(server, "keeper", workers) == workers


def test_the_server_is_live_while_the_template_loads(serve, tmp_path, write_custom_model):
    folder = write_custom_model(
        tmp_path / "gate", {"name": "gate", "implementation": "model.Gate"}, GATE_CODE
    )
    server = serve(folder, extra_args=("--workers", str(WORKERS)), wait=False)

    def health(what: str) -> int | None:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{server.url}/v2/health/{what}", timeout=10).status_code
        return None

    wait_for(lambda: health("live") == 200, 60, "the server to be live while its model loads")
    assert health("ready") == 503
    (folder / "open").touch()
    serve.wait_ready(server)
    workers = workers_of(server.process.pid)
    assert len(workers) == WORKERS
    assert answering_pids(server, "gate", workers) == workers


# --- failures -------------------------------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_the_others_keep_answering(serve, burner_dir):
    server = serve(burner_dir, extra_args=("--workers", str(WORKERS)))
    workers = workers_of(server.process.pid)
    clients = clients_per_worker(server, workers)
    try:
        victim, survivor = clients
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not running(victim), 10, f"worker {victim} to die")

        # The survivor's open connection and every new connection are answered (httpx opens
        # the first again if it idled past the server's keep-alive).
        assert infer(clients[survivor], server)[0] != victim
        for _ in range(10):
            with httpx.Client(timeout=60) as client:
                assert infer(client, server)[0] != victim
        server.assert_running()

        new_pid = wait_for(lambda: new_worker(server.process.pid, workers), 60, "a new worker")

        def new_worker_answers():
            with httpx.Client(timeout=60) as client:
                try:
                    return infer(client, server)[0] == new_pid
                except (httpx.HTTPError, AssertionError):
                    return False

        # It opens its ports once it holds the model, so it answers the model at once.
        wait_for(new_worker_answers, 60, f"the new worker {new_pid} to answer")
        assert workers_of(server.process.pid) == {survivor, new_pid}
    finally:
        for client in clients.values():
            client.close()


def test_without_its_template_the_server_replaces_workers_with_fresh_ones(serve, burner_dir):
    server = serve(burner_dir, extra_args=("--workers", str(WORKERS)))
    parent = server.process.pid
    (template,) = children(parent)
    workers = workers_of(parent)
    os.kill(template, signal.SIGKILL)
    wait_for(lambda: not running(template), 10, "the template to die")
    # The workers forked from it keep serving.
    assert answering_pids(server, "burner", workers) == workers

    victim, survivor = workers
    os.kill(victim, signal.SIGKILL)
    # The replacement cannot be forked: it is started fresh, as the parent's own child.
    fresh = wait_for(lambda: children(parent) - {template}, 60, "a fresh worker")
    assert answering_pids(server, "burner", fresh | {survivor}) == fresh | {survivor}
    assert "new workers are started fresh from now on: the template process is gone" in (
        server.log()
    )
    server.process.terminate()
    assert server.process.wait(timeout=30) == 0, server.log()
    wait_for(lambda: not running(survivor), 10, "the last forked worker to stop")


def test_sigterm_stops_every_worker(serve, burner_dir):
    server = serve(burner_dir, extra_args=("--workers", str(WORKERS)))
    workers = workers_of(server.process.pid)
    assert len(workers) == WORKERS
    server.process.terminate()
    assert server.process.wait(timeout=30) == 0, server.log()
    wait_for(lambda: not any(running(pid) for pid in workers), 10, "the workers to exit")
    assert "Traceback" not in server.log(), server.log()


def test_ctrl_c_stops_every_worker_without_replacing_any(burner_dir, tmp_path):
    # Ctrl-C in a terminal sends SIGINT to every process of the foreground group.
    http_port, grpc_port = free_port(), free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferline", "serve", str(burner_dir), "--host", "127.0.0.1",
             "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--workers", str(WORKERS)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_ready(http_port, process, timeout=60)
        workers = workers_of(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    log = (tmp_path / "serve.log").read_text()
    assert not any(running(pid) for pid in workers)
    assert "starting a new one" not in log, log
    assert "Traceback" not in log, log


def test_workers_exit_when_the_parent_is_killed(serve, burner_dir):
    server = serve(burner_dir, extra_args=("--workers", str(WORKERS)))
    # The template too.
    workers = workers_of(server.process.pid) | children(server.process.pid)
    assert len(workers) == WORKERS + 1
    server.process.kill()
    server.process.wait(timeout=10)
    # No orphan keeps the ports: each worker sees its control channel close and stops.
    wait_for(lambda: not any(running(pid) for pid in workers), 30, "orphaned workers to exit")


# --- under a scheduler -------------------------------------------------------------------------


def _start(args: list[str], log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log_file:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "inferline", *args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory, burner_dir):
    """`inferline scheduler` and `inferline server --workers 2` registered with it."""
    workdir = tmp_path_factory.mktemp("scheduled")
    scheduler_port, http_port, grpc_port = free_port(), free_port(), free_port()
    scheduler = _start(
        ["scheduler", "--port", str(scheduler_port), "--host", "127.0.0.1",
         "--data-dir", str(workdir / "data")],
        workdir / "scheduler.log",
    )  # fmt: skip
    node = _start(
        ["server", "--scheduler", f"127.0.0.1:{scheduler_port}", "--host", "127.0.0.1",
         "--http-port", str(http_port), "--grpc-port", str(grpc_port),
         "--workers", str(WORKERS)],
        workdir / "server.log",
    )  # fmt: skip
    scheduler_url = f"http://127.0.0.1:{scheduler_port}"

    def connected():
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{scheduler_url}/v1/servers/mlserver")
            return answer.status_code == 200 and answer.json().get("availableReplicas") == 1
        return False

    try:
        wait_for(connected, 60, "the server to register with the scheduler")
        manifest = workdir / "burner.yaml"
        manifest.write_text(
            "apiVersion: mlops.seldon.io/v1alpha1\nkind: Model\nmetadata:\n  name: burner\n"
            f"spec:\n  storageUri: {json.dumps(str(burner_dir))}\n  requirements:\n  - python\n"
        )
        yield SimpleNamespace(
            server=SimpleNamespace(url=f"http://127.0.0.1:{http_port}", process=node),
            scheduler_url=scheduler_url,
            manifest=manifest,
            cli_env={**os.environ, "INFERLINE_SCHEDULER_HOST": f"127.0.0.1:{scheduler_port}"},
            logs=workdir,
        )
    finally:
        for process in (node, scheduler):
            process.terminate()
        for process in (node, scheduler):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _cli(scheduled, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferline", *args],
        capture_output=True, text=True, env=scheduled.cli_env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, f"inferline {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_a_model_the_scheduler_loads_is_served_by_every_worker(scheduled):
    server = scheduled.server
    workers = workers_of(server.process.pid)
    assert len(workers) == WORKERS
    _cli(scheduled, "load", "-f", str(scheduled.manifest))
    _cli(scheduled, "status", "-f", str(scheduled.manifest), "--wait", "--timeout", "90")
    # The scheduler knows one server replica: the parent, whose agent reports for all workers.
    replicas = httpx.get(f"{scheduled.scheduler_url}/v1/servers/mlserver").json()["replicas"]
    assert [(r["pid"], r["loadedModels"]) for r in replicas] == [(server.process.pid, ["burner_1"])]
    # Each worker holds a copy of every model: the scheduler is offered one worker's share of
    # the machine (plus the default 10 % overcommit).
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert replicas[0]["memory"] == physical // WORKERS * 110 // 100

    # The scheduler calls it available only once every worker holds it.
    burner = server.url + "/v2/models/burner_1/infer"
    seen = set()
    for _ in range(MAX_CONNECTIONS):
        with httpx.Client(timeout=60) as client:
            answer = client.post(burner, json=burn_request())
            assert answer.status_code == 200, answer.text
            seen.add(answer.json()["outputs"][0]["data"][0])
        if seen == workers:
            break
    assert seen == workers

    # A worker that dies is replaced by one that loads what the scheduler placed here first.
    victim = next(iter(workers))
    os.kill(victim, signal.SIGKILL)
    new_pid = wait_for(lambda: new_worker(server.process.pid, workers), 60, "a new worker")

    def new_worker_answers():
        with httpx.Client(timeout=60) as client:
            answer = client.post(burner, json=burn_request())
            assert answer.status_code == 200, answer.text
            return answer.json()["outputs"][0]["data"][0] == new_pid

    wait_for(new_worker_answers, 60, f"the new worker {new_pid} to answer")
    model = httpx.get(f"{scheduled.scheduler_url}/v1/models/burner").json()
    assert model["state"] == "ModelAvailable", model

    _cli(scheduled, "unload", "-f", str(scheduled.manifest))

    def unloaded_everywhere():
        for _ in range(MAX_CONNECTIONS // 2):
            with httpx.Client(timeout=60) as client:
                if client.post(burner, json=burn_request()).status_code != 404:
                    return False
        return True

    wait_for(unloaded_everywhere, 60, "every worker to unload the model")


def test_a_taken_port_is_one_clear_error(burner_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "inferline", "serve", str(burner_dir), "--host", "127.0.0.1",
             "--http-port", str(port), "--grpc-port", "0", "--workers", str(WORKERS)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"cannot listen for HTTP on 127.0.0.1:{port}: Address already in use" in result.stderr


# --- with a front process (`--front`) -----------------------------------------------------------


def grpc_burn(client: grpcclient.InferenceServerClient, seconds: float) -> tuple[int, list[float]]:
    tensor = grpcclient.InferInput("seconds", [1], "FP32")
    tensor.set_data_from_numpy(np.array([seconds], dtype=np.float32))
    answer = client.infer("burner", [tensor])
    return int(answer.as_numpy("pid").ravel()[0]), answer.as_numpy("interval").ravel().tolist()


@pytest.fixture(scope="module")
def front_server(serve, burner_dir):
    return serve(burner_dir, extra_args=("--workers", str(WORKERS), "--front"))


def test_with_a_front_one_grpc_channel_reaches_every_worker_at_once(front_server):
    server = front_server
    workers = workers_of(server.process.pid)
    assert len(workers) == WORKERS
    # One channel is one HTTP/2 connection: without a front it stays with one worker.
    client = grpcclient.InferenceServerClient(url=server.grpc_address)
    try:
        answers: dict[int, list[float]] = {}
        barrier = threading.Barrier(WORKERS)

        def call():
            barrier.wait()
            pid, interval = grpc_burn(client, 0.5)
            answers[pid] = interval

        threads = [threading.Thread(target=call) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        client.close()
    # The front sends each request to the worker with the fewest in flight.
    assert set(answers) == workers
    (a_start, a_end), (b_start, b_end) = answers.values()
    assert a_start < b_end and b_start < a_end, f"no overlap: {answers}"


def test_with_a_front_load_and_unload_reach_every_worker(front_server):
    server = front_server
    workers = workers_of(server.process.pid)
    # One keep-alive connection: the front spreads its requests over both workers.
    with httpx.Client(timeout=60) as client:
        assert {infer(client, server)[0] for _ in range(10)} == workers
        answer = client.post(f"{server.url}/v2/repository/models/burner/unload")
        assert answer.status_code == 200, answer.text
        for _ in range(4):
            gone = client.post(f"{server.url}/v2/models/burner/infer", json=burn_request())
            assert gone.status_code == 404, gone.text

        answer = client.post(f"{server.url}/v2/repository/models/burner/load")
        assert answer.status_code == 200, answer.text
        # Loaded means loaded in every worker: no request right after sees it missing.
        assert {infer(client, server)[0] for _ in range(10)} == workers


def test_with_a_front_a_killed_worker_fails_its_request_and_is_replaced(serve, burner_dir):
    server = serve(burner_dir, extra_args=("--front",))
    (worker,) = workers_of(server.process.pid)
    answers = []

    def long_request():
        with httpx.Client(timeout=60) as client:
            url = f"{server.url}/v2/models/burner/infer"
            answers.append(client.post(url, json=burn_request(30)))

    caller = threading.Thread(target=long_request)
    caller.start()
    time.sleep(1.0)
    os.kill(worker, signal.SIGKILL)
    caller.join(timeout=30)
    (answer,) = answers
    assert answer.status_code == 503
    assert "worker 0 exited while answering" in answer.json()["error"]

    # The front stays up: live at once, and not ready until a new worker serves; its metrics
    # still count the dead worker's request.
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{server.url}/v2/health/live").json() == {"live": True}
        scrape = client.get(f"{server.url}/metrics")
        assert scrape.status_code == 200
        assert 'inferline_worker_requests_total{worker="0"} 1.0' in scrape.text
        new_pid = wait_for(lambda: new_worker(server.process.pid, {worker}), 60, "a new worker")

        def answered_by_the_new_worker():
            try:
                return infer(client, server)[0] == new_pid
            except AssertionError:
                return False

        wait_for(answered_by_the_new_worker, 60, f"the new worker {new_pid} to answer")
        assert client.get(f"{server.url}/v2/health/ready").status_code == 200
    server.assert_running()
