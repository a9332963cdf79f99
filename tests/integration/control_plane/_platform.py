"""Real processes of the control plane for the tests: `inferline up`, or its components.

Every process is started with `sys.executable -m inferline ...` on free ports, in its own process
group and with its own log file; `Proc.stop` sends SIGINT, then SIGKILL to the whole group, so
server children of an `up` that did not stop cleanly cannot outlive the tests.

The CLI is run as a user runs it, as a subprocess (`Platform.cli`); the scheduler's HTTP API is
read directly for the states the tests wait on (`Platform.model`, `Platform.wait_model`).
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from inferline.demo import free_port

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "conformance" / "seldon-samples"

# [1, 2, 3, 4] is class 2 for the iris classifier (INDEX.md, "iris").
IRIS_REQUEST = {
    "inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
}
IRIS_REQUEST_JSON = json.dumps(IRIS_REQUEST)
IRIS_CLASS = 2

# The CLI's error lines are printed by rich, which wraps them at 80 columns when stderr is not a
# terminal (see tests/e2e/test_cli_errors.py). A wide console keeps each message on one line here.
CLI_COLUMNS = "400"
LOG_TAIL_LINES = 80

# Log files and folders of processes started for each test module, shown when a test fails.
MODULE_LOGS: dict[str, list[Path]] = {}


def register_log(module: str, path: Path) -> None:
    MODULE_LOGS.setdefault(module, []).append(path)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<cannot read: {exc}>"
    return "\n".join(text[-lines:])


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    """One process we started: a process group leader writing to its own log file."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def assert_alive(self) -> None:
        assert self.alive(), (
            f"{self.name} exited with code {self.process.returncode}:\n{tail(self.log_path)}"
        )

    def interrupt(self, timeout: float = 20.0) -> int | None:
        """SIGINT, as Ctrl-C would; the exit code, or None if it had to be killed."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the process and anything left in its process group (its children)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        code = self.interrupt(timeout)
        # Children of a leader that stopped (or was killed) must not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return code


def start_process(name: str, args: list[str], log_path: Path, cwd: Path) -> Proc:
    command = [sys.executable, "-m", "inferline", *args]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:  # the child keeps its own handle
        log_file.write(f"$ inferline {' '.join(args)}\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    return Proc(name, process, log_path)


class NotYet(Exception):
    """Raised by a `wait_until` check to say what it saw instead."""


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], None] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s.

    `check` may raise (`NotYet(what it saw)`, or a server not answering yet): the last error is
    reported on time-out.
    `alive`, when given, is called on every round to fail at once when a process died.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if alive is not None:
            alive()
        try:
            result = check()
            if result:
                return result
            last = result
        except NotYet as exc:
            last = str(exc)
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last}")
        time.sleep(interval)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited but is not yet reaped: it is not running any more.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


class TcpRelay:
    """A TCP forwarder to 127.0.0.1:`target_port` that can be cut: while blocked it closes every
    connection (new and open ones), as a network partition would.

    Lets a test decide when the servers' agents can reach the scheduler, independently of the
    router, which talks to the scheduler directly.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._blocked = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcp-relay").start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def block(self) -> None:
        self._blocked.set()
        with self._lock:
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def unblock(self) -> None:
        self._blocked.clear()

    def close(self) -> None:
        self._closed = True
        self.block()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._blocked.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --- the platform as the tests see it ----------------------------------------------------------


@dataclass
class Platform:
    """Where a running control plane is reached: scheduler API, router REST and gRPC."""

    scheduler_port: int
    http_port: int
    grpc_port: int
    workdir: Path
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def scheduler_url(self) -> str:
        return f"http://127.0.0.1:{self.scheduler_port}"

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INFERLINE_SCHEDULER_HOST": f"127.0.0.1:{self.scheduler_port}",
            "INFERLINE_INFER_HOST": f"127.0.0.1:{self.http_port}",
            "INFERLINE_INFER_GRPC_HOST": self.grpc_address,
            "COLUMNS": CLI_COLUMNS,
            # The CLI's saved sticky session (`infer -s`) stays in the test's folder.
            "XDG_CONFIG_HOME": str(self.workdir / "config"),
        }

    # --- the CLI ------------------------------------------------------------------------------

    def cli(
        self, *args: str, expect: int | None = 0, timeout: float = 90
    ) -> subprocess.CompletedProcess:
        """Run `inferline ARGS`; with `expect`, fail unless it exits with that code."""
        result = subprocess.run(
            [sys.executable, "-m", "inferline", *args],
            # No terminal, as in a script: rich would size its tables from one.
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.cli_env,
            cwd=self.workdir,
            timeout=timeout,
        )
        if expect is not None:
            assert result.returncode == expect, (
                f"`inferline {' '.join(args)}` exited with {result.returncode}, "
                f"expected {expect}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    # --- the scheduler API --------------------------------------------------------------------

    def get(self, path: str) -> httpx.Response:
        return self.http.get(f"{self.scheduler_url}{path}")

    def model(self, name: str) -> dict[str, Any]:
        answer = self.get(f"/v1/models/{name}")
        assert answer.status_code == 200, f"GET /v1/models/{name}: {answer.text}"
        return answer.json()

    def server(self, name: str = "mlserver") -> dict[str, Any]:
        answer = self.get(f"/v1/servers/{name}")
        assert answer.status_code == 200, f"GET /v1/servers/{name}: {answer.text}"
        return answer.json()

    def replica_pids(self, name: str = "mlserver") -> dict[int, int]:
        return {r["replica"]: r["pid"] for r in self.server(name)["replicas"]}

    def holders(self, internal_name: str, server: str = "mlserver") -> list[int]:
        """Indexes of the server replicas that report `internal_name` loaded."""
        return [
            r["replica"]
            for r in self.server(server)["replicas"]
            if internal_name in r["loadedModels"]
        ]

    def delete_model(self, name: str) -> None:
        """Remove a model if present (cleanup between tests; not what a test asserts on)."""
        answer = self.http.delete(f"{self.scheduler_url}/v1/models/{name}")
        assert answer.status_code in (200, 404), answer.text

    def wait_model(
        self,
        name: str,
        state: str = "ModelAvailable",
        timeout: float = 60,
        version: int | None = None,
        replicas: int | None = None,
        alive: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        def check():
            status = self.model(name)
            ok = status["state"] == state
            ok = ok and (version is None or status["version"] == version)
            ok = ok and (replicas is None or status["availableReplicas"] == replicas)
            if not ok:
                raise NotYet(
                    f"{status['state']} at version {status['version']} with "
                    f"{status['availableReplicas']} replica(s), reason {status['reason']!r}"
                )
            return status

        want = f"model '{name}' to be {state}" + (f" at version {version}" if version else "")
        want += f" with {replicas} replica(s)" if replicas else ""
        return wait_until(check, timeout, want, alive=alive)

    def wait_replicas(self, count: int, timeout: float = 60, server: str = "mlserver") -> None:
        wait_until(
            lambda: self.get(f"/v1/servers/{server}").json().get("availableReplicas") == count,
            timeout,
            f"{count} replica(s) of server '{server}' to connect",
        )

    # --- the router ---------------------------------------------------------------------------

    def infer(
        self, model: str, payload: dict | None = None, headers: dict | None = None, path=None
    ) -> httpx.Response:
        return self.http.post(
            f"{self.router_url}/v2/models/{path or model}/infer",
            json=payload or IRIS_REQUEST,
            headers=headers,
        )

    def wait_iris_answers(self, model: str, internal_name: str, timeout: float = 15) -> None:
        """Wait until the router answers for `model` from `internal_name`, then check the
        answer (a route change reaches the router a moment after the scheduler's status)."""
        wait_until(
            lambda: self.infer(model).json().get("model_name") == internal_name,
            timeout,
            f"the router to answer for '{model}' with {internal_name}",
        )
        self.assert_iris_answers(model, internal_name)

    def assert_iris_answers(self, model: str, internal_name: str) -> dict[str, Any]:
        answer = self.infer(model)
        assert answer.status_code == 200, f"infer {model}: {answer.status_code} {answer.text}"
        body = answer.json()
        assert body["model_name"] == internal_name, body
        assert body["outputs"][0]["data"] == [IRIS_CLASS], body
        assert answer.headers["x-seldon-route"] == f":{internal_name}:"
        return body


@dataclass
class Up(Platform):
    """A running `inferline up`."""

    proc: Proc | None = None
    data_dir: Path | None = None
    servers: int = 1
    workers: int = 1
    front: bool = False
    starts: int = 0

    @property
    def up_args(self) -> list[str]:
        return [
            "up", "--servers", str(self.servers), "--workers", str(self.workers),
            "--front" if self.front else "--no-front",
            "--data-dir", str(self.data_dir),
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--scheduler-port", str(self.scheduler_port), "--host", "127.0.0.1",
        ]  # fmt: skip

    def start(self, timeout: float = 60) -> "Up":
        """Start `inferline up` (again) and wait for its servers' replicas to connect."""
        self.starts += 1
        # A log per start: the previous run's lines must not satisfy the waits below.
        name = "up.log" if self.starts == 1 else f"up.{self.starts}.log"
        log_path = self.workdir / name
        self.proc = start_process("inferline up", self.up_args, log_path, self.workdir)
        wait_until(
            lambda: "inferline is up:" in self.proc.log(),
            timeout,
            "`inferline up` to print 'inferline is up:'",
            alive=self.proc.assert_alive,
        )
        self.wait_replicas(self.servers, timeout)
        return self

    def assert_alive(self) -> None:
        assert self.proc is not None
        self.proc.assert_alive()


def _ports() -> tuple[int, int, int]:
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    return tuple(ports)  # type: ignore[return-value]


def new_up(
    tmp_path_factory, module: str, servers: int, workers: int = 1, front: bool = False
) -> Up:
    workdir = tmp_path_factory.mktemp("up")
    scheduler_port, http_port, grpc_port = _ports()
    platform = Up(
        scheduler_port=scheduler_port,
        http_port=http_port,
        grpc_port=grpc_port,
        workdir=workdir,
        data_dir=workdir / "data",
        servers=servers,
        workers=workers,
        front=front,
    )
    register_log(module, workdir)
    return platform


@dataclass
class Components(Platform):
    """The components started one by one, as on many machines: `inferline scheduler`,
    `inferline server` replicas and `inferline router`, each a process of its own."""

    data_dir: Path | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    # A relay the servers' agents reach the scheduler through, when not directly.
    relay: TcpRelay | None = None

    @property
    def agent_scheduler_address(self) -> str:
        return self.relay.address if self.relay else f"127.0.0.1:{self.scheduler_port}"

    def _start(self, name: str, args: list[str]) -> Proc:
        proc = start_process(name, args, self.workdir / "logs" / f"{name}.log", self.workdir)
        self.procs[name] = proc
        return proc

    def start_scheduler(self, timeout: float = 30) -> Proc:
        proc = self._start(
            "scheduler",
            [
                "scheduler", "--port", str(self.scheduler_port), "--data-dir", str(self.data_dir),
                "--host", "127.0.0.1",
            ],
        )  # fmt: skip
        wait_until(
            lambda: self.get("/v1/health").status_code == 200,
            timeout,
            "the scheduler's /v1/health",
            alive=proc.assert_alive,
        )
        return proc

    def start_server(self, replica: int) -> Proc:
        """Start a server replica; it connects to the scheduler on its own (wait_replicas)."""
        return self._start(
            f"server-{replica}",
            [
                "server", "--scheduler", self.agent_scheduler_address,
                "--name", "mlserver", "--replica", str(replica), "--host", "127.0.0.1",
            ],
        )  # fmt: skip

    def start_router(self, timeout: float = 30) -> Proc:
        proc = self._start(
            "router",
            [
                "router", "--scheduler", f"127.0.0.1:{self.scheduler_port}",
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                "--host", "127.0.0.1",
            ],
        )  # fmt: skip
        wait_until(
            lambda: self.http.get(f"{self.router_url}/v2/health/ready").status_code == 200,
            timeout,
            "the router to be ready",
            alive=proc.assert_alive,
        )
        return proc

    def stop_all(self) -> None:
        procs = list(self.procs.values())
        for proc in procs:  # SIGINT to all first, so they stop in parallel
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    proc.process.send_signal(signal.SIGINT)
        for proc in procs:
            proc.stop()
        self.http.close()
        if self.relay is not None:
            self.relay.close()


def new_components(tmp_path_factory, module: str) -> Components:
    workdir = tmp_path_factory.mktemp("components")
    scheduler_port, http_port, grpc_port = _ports()
    platform = Components(
        scheduler_port=scheduler_port,
        http_port=http_port,
        grpc_port=grpc_port,
        workdir=workdir,
        data_dir=workdir / "data",
    )
    register_log(module, workdir)
    return platform


class Traffic:
    """Requests sent to a model through the router from a thread, one every `interval` s,
    while a test changes things underneath: `with Traffic(platform, "iris") as traffic: ...`.

    Each answer is kept as (HTTP status, model_name or error text); status 0 is a transport
    error.
    """

    def __init__(self, platform: Platform, model: str, interval: float = 0.02):
        self.url = f"{platform.router_url}/v2/models/{model}/infer"
        self.interval = interval
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"traffic-{model}")

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=35)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=IRIS_REQUEST)
                    if response.status_code == 200:
                        self.answers.append((200, response.json()["model_name"]))
                    else:
                        self.answers.append((response.status_code, response.text[:300]))
                except httpx.HTTPError as exc:
                    self.answers.append((0, repr(exc)))
                time.sleep(self.interval)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        """Wait until `count` answers in all have come back."""
        wait_until(lambda: len(self.answers) >= count, timeout, f"{count} answers")

    def failures(self) -> list[tuple[int, str]]:
        return [answer for answer in self.answers if answer[0] != 200]

    def served_by(self) -> list[str]:
        """The model_name of each good answer, in order, consecutive repeats folded."""
        names: list[str] = []
        for status, name in self.answers:
            if status == 200 and (not names or names[-1] != name):
                names.append(name)
        return names


# --- artifacts and manifests -------------------------------------------------------------------


def model_yaml(
    name: str,
    storage_uri: str | Path,
    requirements: tuple[str, ...] = ("sklearn",),
    replicas: int | None = None,
) -> str:
    lines = [
        "apiVersion: mlops.seldon.io/v1alpha1",
        "kind: Model",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  storageUri: {json.dumps(str(storage_uri))}",
    ]
    if requirements:
        lines += ["  requirements:", *(f"  - {r}" for r in requirements)]
    if replicas is not None:
        lines.append(f"  replicas: {replicas}")
    return "\n".join(lines) + "\n"


_STORAGE_URI = re.compile(r"^(\s*storageUri:\s*).*$", re.MULTILINE)


def with_storage_uri(text: str, storage_uri: str | Path) -> str:
    """A manifest's text with its `storageUri` replaced (and nothing else touched)."""
    rewritten, count = _STORAGE_URI.subn(lambda m: m.group(1) + json.dumps(str(storage_uri)), text)
    assert count == 1, f"expected one storageUri in:\n{text}"
    return rewritten


def write_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def table_rows(output: str) -> list[list[str]]:
    """The cells of every row of the rich tables the CLI printed (unicode or ASCII boxes)."""
    rows = []
    for line in output.splitlines():
        if line.startswith(("│", "|")):
            rows.append([cell.strip() for cell in re.split(r"[│|]", line)[1:-1]])
    return rows


def printed_json(stdout: str) -> Any:
    """The JSON document the CLI printed after any header lines."""
    return json.loads(stdout[stdout.index("{") :])


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The CLI's error: exit code 1, one line on stderr, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
