"""Parallel workers: N processes serving one server's ports, supervised by a parent.

Each worker is a whole `ModelServer` (uvicorn REST and grpc.aio) listening on the same ports with
SO_REUSEPORT, so the kernel spreads incoming connections over the workers and a request reaches
the process that answers it directly. MLServer instead passes every request from one front
process to its workers over queues: an extra hop per request, and a front process that saturates
first. The price here is that a connection stays with one worker: a gRPC channel (one HTTP/2
connection) or an HTTP keep-alive connection is served by one process, so load spreads only
over several connections.

With `--front` the parent serves the ports itself and passes each request to a worker over
its control channel (`inferline.server.front`): MLServer's shape, one extra hop per request for
a front on its own core and requests (not connections) spread over the workers.

The parent holds no model. It reserves the ports and starts a template
process (`inferline.server.template`) that loads the models the server starts with; the workers
are forked from it, so they share those models' memory copy-on-write instead of each loading its
own copy. If the template cannot fork safely (a thread alive after loading), the parent says why
in one log line and starts every worker fresh (fork+exec), each loading the models itself; so it
does with `INFERLINE_FORK_WORKERS=0`, for a model that does not survive a fork in a way the
thread check cannot see (a GPU context, a connection opened at load).

The parent keeps the list of models the server holds, broadcasts every later load and unload to
all workers over a control channel (a socket pair per worker, length-prefixed pickles) and calls a
load done, and the model READY, only when every worker has it: each worker loads its own copy of
a model loaded after the start. A repository API call reaching a worker is forwarded to the
parent, which broadcasts it. A worker that dies is replaced (forked from the template again when
it can be): the new one applies every load and unload made since before it opens its ports, so
it never answers "model not found" for a model the others serve. Under a scheduler the agent lives
in the parent and drives `WorkerPool` as it drives a `DataPlane` in a single process.

Prometheus metrics: every worker writes to one folder (`PROMETHEUS_MULTIPROC_DIR`, a fresh temp
folder per server unless set, given to the template before it imports prometheus_client, whose
values notice a fork and move to the worker's own file), so `/metrics` on any worker reports the
sum over all of them.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from inferline import metrics, tracing
from inferline.protocol.errors import InferlineError, ModelNotFound
from inferline.protocol.types import RepositoryModel
from inferline.runtimes.settings import ModelSettings
from inferline.server.dataplane import DataPlane, ModelState
from inferline.server.repository import ModelRepository, load_found_models
from inferline.server.template import ForkRefused, Template

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A worker that dies this soon after it started is restarted after a growing pause, so a worker
# that cannot start does not spin.
QUICK_DEATH = 10.0
MAX_RESTART_PAUSE = 10.0
STOP_TIMEOUT = 15.0


class WorkerGone(Exception):
    """The process at the other end of a control channel went away."""


class WorkersFailed(Exception):
    """The workers could not be started: a port is taken, or a worker exited at once."""


class NoWorker(InferlineError):
    """With a front: no worker can take the request (none serves yet, or its worker died)."""

    status = 503


class ForwardedError(InferlineError):
    """An `InferlineError` raised in another process, with its status and message."""

    def __init__(self, status: int, grpc_code: str | None, message: str):
        super().__init__(message)
        self.status = status
        self.grpc_code = grpc_code


# --- the control channel ----------------------------------------------------------------------


class Channel:
    """Calls in both directions over one stream socket: `await channel.call("method", *args)`
    runs `handlers["method"](*args)` in the other process and returns its result or raises its
    `InferlineError` (as a `ForwardedError`). Calls are served concurrently, each as a task."""

    def __init__(self, sock: socket.socket, handlers: dict[str, Callable[..., Awaitable[Any]]]):
        self._sock = sock
        self.handlers = handlers
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task] = set()
        self.closed = asyncio.Event()

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)

    async def run(self) -> None:
        """Read until the other end closes; then every call still waiting fails."""
        reader = self._reader
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                message = pickle.loads(await reader.readexactly(size))
                if message[0] == "call":
                    _, call_id, method, args = message
                    task = asyncio.create_task(self._answer(call_id, method, args))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    _, call_id, ok, value = message
                    future = self._pending.pop(call_id, None)
                    if future is not None and not future.done():
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(ForwardedError(*value))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(WorkerGone())
            self._pending.clear()
            self._writer.close()

    def close(self) -> None:
        """Close this end: the other end sees the channel close, as when this process exits."""
        if self._writer is not None:
            self._writer.close()

    async def call(self, method: str, *args: Any) -> Any:
        if self.closed.is_set() or self._writer is None:
            raise WorkerGone()
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        self._send(("call", self._next_id, method, args))
        return await future

    async def _answer(self, call_id: int, method: str, args: tuple) -> None:
        try:
            reply = (True, await self.handlers[method](*args))
        except InferlineError as exc:
            reply = (False, (exc.status, exc.grpc_code, exc.message))
        except Exception as exc:
            log.exception("control call %s failed", method)
            reply = (False, (500, None, f"{method} failed: {exc!r}"))
        if not self.closed.is_set():
            self._send(("reply", call_id, *reply))

    def _send(self, message: tuple) -> None:
        data = pickle.dumps(message)
        self._writer.write(len(data).to_bytes(4, "big") + data)


# --- the parent ---------------------------------------------------------------------------------


@dataclass
class HeldModel:
    """A model version the server holds, as the parent records it."""

    settings: ModelSettings
    state: ModelState
    reason: str = ""
    # Loaded by the template: a worker forked from it holds it already.
    in_template: bool = False


@dataclass
class WorkerSetup:
    """What a worker gets from the parent when it starts."""

    index: int
    config: Any  # ServerConfig
    log_level: int
    # ("load", settings) or ("unavailable", name, version, reason), in the order to apply them.
    held: list[tuple]
    # (name, version or "") of models a worker forked from the template holds but the server no
    # longer does (unloaded or replaced since): it drops them first.
    drop: list[tuple[str, str]]
    server_ready: bool
    # A worker replacing a dead one loads first and opens its ports after; the first ones open
    # them at once, so the server is live (not ready) while the models load.
    listen_first: bool


@dataclass
class _Slot:
    index: int
    process: Any = None  # asyncio.subprocess.Process, or a ForkedWorker
    forked: bool = False  # from the template: holds what the template loaded
    channel: Channel | None = None
    registered: bool = False  # has taken its setup, so it gets every broadcast from now on
    serving: bool = False  # listening on the ports (with a front: taking its requests)
    started_at: float = 0.0
    restarts: int = 0
    in_flight: int = 0  # requests the front passed to it and awaits


class WorkerPool:
    """Runs `config.workers` worker processes on the same ports and keeps them holding the same
    models. Offers the part of `DataPlane` the agent drives (`load_model`, `unload`,
    `mark_unavailable`, `loaded_models`)."""

    def __init__(self, config, repository: ModelRepository | None = None):
        self.config = config
        self.repository = repository or ModelRepository(config.model_dirs)
        self.http_port = config.http_port
        self.grpc_port = config.grpc_port
        self._held: dict[tuple[str, str], HeldModel] = {}
        self._slots = [_Slot(i) for i in range(config.workers)]
        self._ready = False
        self._stopping = False
        self._reserved: list[socket.socket] = []
        self._metrics_dir: Path | None = None
        self._own_metrics_dir = False
        self._supervisors: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._all_serving = asyncio.Event()
        self._start_failure: asyncio.Future | None = None
        self._template: Template | None = None
        # (name, version or "") of what the template loaded, in its order.
        self._template_keys: list[tuple[str, str]] = []
        # The repository's models were loaded by the template, hence by every worker.
        self._preloaded = False
        # With `config.front`: this process's HTTP server and gRPC server (`server.front`).
        self._front_http: _ParentHttp | None = None
        self._front_grpc = None
        self._turn = 0

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; returns when all listen. Raises if one exits before that."""
        self.http_port = self._reserve_port(self.config.http_port, "HTTP")
        self.grpc_port = self._reserve_port(self.config.grpc_port, "gRPC")
        self._prepare_metrics_dir()
        if self.config.front:
            # The front answers from now on: live, and 503 until a worker serves.
            await self._start_front()
            loading = None
        else:
            loading = await self._answer_health_meanwhile()
        try:
            # Linux only: the template counts its threads in /proc and the parent watches
            # forked workers through pidfds.
            if sys.platform == "linux" and os.environ.get("INFERLINE_FORK_WORKERS", "1") != "0":
                await self._start_template()
            self._start_failure = asyncio.get_running_loop().create_future()
            self._supervisors = [asyncio.create_task(self._supervise(s)) for s in self._slots]
            serving = asyncio.create_task(self._all_serving.wait())
            await asyncio.wait([serving, self._start_failure], return_when=asyncio.FIRST_COMPLETED)
            serving.cancel()
        finally:
            if loading is not None:
                await loading.stop()
        if not self._all_serving.is_set():
            await self.stop()
            raise WorkersFailed(self._start_failure.result())

    async def load_repository(self) -> None:
        """Load every model in the repository into every worker (unless the template did);
        then the server is ready."""
        try:
            if not self._preloaded:
                await load_found_models(self.repository, self.load_model, self.mark_unavailable)
        finally:
            self._ready = True
            await self._broadcast("set_ready")

    async def stop(self) -> None:
        """SIGTERM every worker and wait for them (SIGKILL after `STOP_TIMEOUT` s)."""
        self._stopping = True
        await self._stop_front()
        processes = [s.process for s in self._slots if s.process and s.process.returncode is None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if processes:
            _, late = await asyncio.wait(
                [asyncio.create_task(p.wait()) for p in processes], timeout=STOP_TIMEOUT
            )
            if late:
                log.warning("%d worker(s) did not stop in %.0f s; killing", len(late), STOP_TIMEOUT)
                for process in processes:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                await asyncio.wait(late)
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        if self._template is not None:
            await self._template.stop()
        for sock in self._reserved:
            sock.close()
        if self._own_metrics_dir and self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    async def forward(self, kind: str, *args: Any) -> Any:
        """The front's request (`server.front`) answered by a serving worker with the fewest
        requests in flight."""
        slots = [s for s in self._slots if s.serving and not s.channel.closed.is_set()]
        if not slots:
            raise NoWorker("no worker process is serving (starting, or replacing one that exited)")
        # Ties taken in turn, so that light traffic reaches every worker too.
        self._turn = (self._turn + 1) % len(slots)
        slot = min(slots[self._turn :] + slots[: self._turn], key=lambda s: s.in_flight)
        slot.in_flight += 1
        try:
            return await slot.channel.call(kind, *args)
        except WorkerGone:
            raise NoWorker(
                f"worker {slot.index} exited while answering this request; a new one is starting"
            ) from None
        finally:
            slot.in_flight -= 1

    def worker_pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process and s.process.returncode is None]

    # --- what the agent drives ----------------------------------------------------------------

    def loaded_models(self) -> list[RepositoryModel]:
        return [
            RepositoryModel(name, version or None, held.state.value, held.reason)
            for (name, version), held in self._held.items()
        ]

    async def load(self, name: str) -> None:
        """Load (or reload) a model by name from the repository, in every worker."""
        await self.load_model(self.repository.find(name))

    async def load_model(self, settings: ModelSettings) -> None:
        """Load one model version into every worker; READY once all have it. A version already
        served keeps its record if the new load fails, as in one process."""
        key = (settings.name, settings.version or "")
        previous = self._held.pop(key, None)
        # Recorded before the broadcast: a worker started meanwhile loads it too.
        self._held[key] = held = HeldModel(settings, ModelState.LOADING)
        errors = await self._broadcast("load_model", settings)
        if self._held.get(key) is not held:  # unloaded while loading
            return
        if errors:
            if previous is not None and previous.state is ModelState.READY:
                self._held[key] = previous
            else:
                held.state, held.reason = ModelState.UNAVAILABLE, errors[0].message
            raise errors[0]
        held.state = ModelState.READY

    async def unload(self, name: str, version: str | None = None) -> None:
        keys = [k for k in self._held if k[0] == name and (version is None or k[1] == version)]
        if not keys:
            raise ModelNotFound(name, version)
        for key in keys:
            del self._held[key]
        errors = await self._broadcast("unload", name, version)
        # A worker that never had it (it failed to load there) has nothing to unload.
        errors = [e for e in errors if e.status != ModelNotFound.status]
        if errors:
            raise errors[0]

    def mark_unavailable(self, name: str, version: str | None, reason: str) -> None:
        key = (name, version or "")
        if key not in self._held:
            settings = ModelSettings(name=name, version=version)
            self._held[key] = HeldModel(settings, ModelState.UNAVAILABLE, reason)
            self._in_background(self._broadcast("mark_unavailable", name, version, reason))

    # --- workers ------------------------------------------------------------------------------

    async def _answer_health_meanwhile(self) -> "_ParentHttp":
        """Until the workers listen, the parent answers on the HTTP port itself, with a data
        plane holding no model: live, not ready, as one process is while its models load (a
        supervisor's liveness probe must not kill a server that loads a big model)."""
        from inferline.server.rest import RestApp

        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.config.host, self.http_port))
        return await _ParentHttp.launch(RestApp(DataPlane(), self.config.max_request_size), sock)

    async def _start_front(self) -> None:
        from inferline.server.front import FrontApp, front_grpc_server

        host = self.config.host
        self._front_grpc, _ = front_grpc_server(
            self.forward, f"{host}:{self.grpc_port}", self.config.max_grpc_message_size
        )
        await self._front_grpc.start()
        app = FrontApp(self.forward, self.config.max_request_size, str(self._metrics_dir))
        # The HTTP port's socket, reserved first.
        self._front_http = await _ParentHttp.launch(app, self._reserved[0])

    async def _stop_front(self) -> None:
        if self._front_http is not None:
            await self._front_http.stop()
        if self._front_grpc is not None:
            await self._front_grpc.stop(grace=2)
        self._front_http = self._front_grpc = None

    async def _start_template(self) -> None:
        """Load the repository's models in the template; if workers cannot be forked from it,
        say why once and start them fresh."""
        self._template = Template()
        level = logging.getLogger().getEffectiveLevel()
        reason = await self._template.start(self.config, level, self._environment())
        if reason is not None:
            log.warning("workers are started fresh, each loading its own models: %s", reason)
            self._template = None
            return
        self._record_template_models(self._template.models)

    def _record_template_models(self, models: list[tuple]) -> None:
        """The models the template loaded, as (settings, state, reason): the server holds them,
        and so does every worker forked from it."""
        for settings, state, reason in models:
            key = (settings.name, settings.version or "")
            self._held[key] = HeldModel(settings, state, reason, in_template=True)
            self._template_keys.append(key)
        self._preloaded = True

    async def _broadcast(self, method: str, *args: Any) -> list[InferlineError]:
        """Call `method` in every registered worker; the errors they raised. A worker that dies
        meanwhile is not an error: its replacement loads what the server holds."""
        slots = [s for s in self._slots if s.registered and s.channel is not None]
        results = await asyncio.gather(
            *(s.channel.call(method, *args) for s in slots), return_exceptions=True
        )
        errors = []
        for result in results:
            if isinstance(result, InferlineError):
                errors.append(result)
            elif isinstance(result, BaseException) and not isinstance(result, WorkerGone):
                raise result
        return errors

    async def _supervise(self, slot: _Slot) -> None:
        pause = 0.5
        while not self._stopping:
            code = await self._run_worker(slot)
            if self._stopping:
                return
            if not self._all_serving.is_set():
                if not self._start_failure.done():
                    self._start_failure.set_result(
                        f"worker {slot.index} exited with code {code} before it could serve"
                    )
                return
            quick = time.monotonic() - slot.started_at < QUICK_DEATH
            pause = min(pause * 2, MAX_RESTART_PAUSE) if quick else 0.5
            log.error(
                "worker %d (pid %d) exited with code %s; starting a new one in %.1f s",
                slot.index,
                slot.process.pid,
                code,
                pause,
            )
            await asyncio.sleep(pause)
            slot.restarts += 1

    async def _run_worker(self, slot: _Slot) -> int:
        parent_end, child_end = socket.socketpair()
        slot.registered = slot.serving = False
        slot.started_at = time.monotonic()
        slot.channel = Channel(parent_end, self._handlers(slot))
        try:
            slot.process = await self._fork_worker(slot, child_end)
            slot.forked = slot.process is not None
            if not slot.forked:
                slot.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "inferline.server.workers",
                    "--control-fd", str(child_end.fileno()), "--index", str(slot.index),
                    pass_fds=(child_end.fileno(),),
                    env=self._environment(),
                )  # fmt: skip
        finally:
            child_end.close()
        await slot.channel.open()
        reader = asyncio.create_task(slot.channel.run())
        code = await slot.process.wait()
        slot.registered = slot.serving = False
        await reader  # ends at the end of the stream, which the worker's exit closed
        return code

    async def _fork_worker(self, slot: _Slot, control: socket.socket):
        """A worker forked from the template, or None when it cannot fork (any more)."""
        if self._template is None:
            return None
        try:
            return await self._template.fork(slot.index, control)
        except ForkRefused as exc:
            if not self._stopping:
                log.warning("new workers are started fresh from now on: %s", exc)
            self._template = None
            return None

    def _environment(self) -> dict[str, str]:
        return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir)}

    def _handlers(self, slot: _Slot) -> dict[str, Callable[..., Awaitable[Any]]]:
        async def setup() -> WorkerSetup:
            # Taking the snapshot and registering happen in one step of the event loop, so each
            # load or unload reaches this worker exactly once: in the snapshot or by broadcast.
            slot.registered = True
            forked = slot.forked
            return WorkerSetup(
                index=slot.index,
                config=dataclasses.replace(
                    self.config, http_port=self.http_port, grpc_port=self.grpc_port
                ),
                log_level=logging.getLogger().getEffectiveLevel(),
                held=self._snapshot(forked),
                drop=self._dropped_since_template() if forked else [],
                server_ready=self._ready,
                listen_first=not self._all_serving.is_set(),
            )

        async def serving() -> None:
            slot.serving = True
            if slot.restarts:
                log.warning("worker %d (pid %d) serves again", slot.index, slot.process.pid)
            if all(s.serving for s in self._slots):
                self._all_serving.set()

        return {"setup": setup, "serving": serving, "load": self.load, "unload": self.unload}

    def _snapshot(self, forked: bool) -> list[tuple]:
        """The steps that give a new worker what the server holds; one forked from the
        template skips what it got from there."""
        steps = []
        for (name, version), held in self._held.items():
            if forked and held.in_template:
                continue
            if held.state is ModelState.UNAVAILABLE:
                steps.append(("unavailable", name, version or None, held.reason))
            else:
                steps.append(("load", held.settings))
        return steps

    def _dropped_since_template(self) -> list[tuple[str, str]]:
        return [
            key
            for key in self._template_keys
            if not getattr(self._held.get(key), "in_template", False)
        ]

    def _in_background(self, work: Awaitable) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _reserve_port(self, port: int, what: str) -> int:
        """Pick the port (any free one for 0) and hold it, bound but not listening, so nothing
        else takes it while workers come and go. Bound-only sockets get no connections: the
        kernel spreads them over the workers' listening sockets only."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        # First without SO_REUSEPORT: that bind fails if anything at all uses the port.
        with socket.socket(family) as probe:
            try:
                probe.bind((self.config.host, port))
            except OSError as exc:
                raise WorkersFailed(
                    f"cannot listen for {what} on {self.config.host}:{port}: {exc.strerror}"
                ) from None
            port = probe.getsockname()[1]
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.config.host, port))
        self._reserved.append(sock)
        return port

    def _prepare_metrics_dir(self) -> None:
        configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if configured:
            # Counts left by an earlier run would be added to this one's.
            self._metrics_dir = Path(configured)
            self._metrics_dir.mkdir(parents=True, exist_ok=True)
            for path in self._metrics_dir.glob("*.db"):
                path.unlink()
        else:
            self._metrics_dir = Path(tempfile.mkdtemp(prefix="inferline-metrics-"))
            self._own_metrics_dir = True


class _ParentHttp(uvicorn.Server):
    """The parent's HTTP server: health only while the workers start, or the front."""

    task: asyncio.Task

    def capture_signals(self):
        # The parent's own handlers stop the server.
        return contextlib.nullcontext()

    @classmethod
    async def launch(cls, app, sock: socket.socket) -> "_ParentHttp":
        config = uvicorn.Config(
            app, http="httptools", lifespan="off", access_log=False, log_level="warning"
        )
        server = cls(config)
        server.task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not server.task.done():
            await asyncio.sleep(0.01)
        return server

    async def stop(self) -> None:
        self.should_exit = True
        await self.task


async def serve_workers(config) -> None:
    """`inferline serve --workers N`: the parent's life, until SIGINT or SIGTERM."""
    from inferline.server.serve import stop_on_signal

    stop = stop_on_signal()
    pool = WorkerPool(config)
    await start_or_exit(pool)
    await pool.load_repository()
    log.warning(
        "inferline serving %d model(s) with %d worker(s)%s (pids %s): HTTP on %s:%d, gRPC on %s:%d",
        sum(1 for m in pool.loaded_models() if m.state == ModelState.READY.value),
        config.workers,
        " behind a front process" if config.front else "",
        " ".join(map(str, pool.worker_pids())),
        config.host,
        pool.http_port,
        config.host,
        pool.grpc_port,
    )
    await stop.wait()
    await pool.stop()


async def start_or_exit(pool: WorkerPool) -> None:
    """Start the pool; a failure is one line in the log and exit code 1, not a traceback."""
    try:
        await pool.start()
    except WorkersFailed as exc:
        log.error("cannot start the server: %s", exc)
        raise SystemExit(1) from None


# --- a worker -----------------------------------------------------------------------------------


class WorkerDataPlane(DataPlane):
    """A worker's data plane: loads and unloads asked through its repository API go to the
    parent, which applies them to every worker; the parent's own calls run here directly."""

    def __init__(self, repository: ModelRepository | None = None):
        super().__init__(repository)
        self.parent: Channel | None = None
        self.server_ready = False
        # Set once the snapshot of what the server holds is applied: the parent's calls wait
        # for it, so they apply after the snapshot, in the order they were made.
        self.caught_up = asyncio.Event()

    def ready(self) -> bool:
        return self.server_ready

    async def load(self, name: str) -> None:
        await self.parent.call("load", name)

    async def unload(self, name: str, version: str | None = None) -> None:
        await self.parent.call("unload", name, version)

    async def unload_all(self) -> None:
        for name in list(self._models):
            await DataPlane.unload(self, name)

    def after_fork(self) -> None:
        """In a worker forked from the template: asyncio objects of its own, bound to the loop
        it is about to run (the template's loop is gone)."""
        self._locks = {}
        self.caught_up = asyncio.Event()

    async def apply(self, held: list[tuple], drop: list[tuple[str, str]] = ()) -> None:
        """Take over what the server holds, in the order it was loaded: first drop what the
        template loaded but the server no longer holds."""
        for name, version in drop:
            # Exactly that version: "" is the unversioned one, as in `_models`.
            with contextlib.suppress(ModelNotFound):
                await DataPlane.unload(self, name, version)
        for step in held:
            if step[0] == "load":
                try:
                    await self.load_model(step[1])
                except InferlineError as exc:
                    log.error("model %s failed to load: %s", step[1].name, exc.message)
            else:
                self.mark_unavailable(*step[1:])
        self.caught_up.set()

    def parent_calls(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """What the parent calls in a worker."""

        async def load_model(settings: ModelSettings) -> None:
            await self.caught_up.wait()
            await self.load_model(settings)

        async def unload(name: str, version: str | None) -> None:
            await self.caught_up.wait()
            await DataPlane.unload(self, name, version)

        async def mark_unavailable(name: str, version: str | None, reason: str) -> None:
            await self.caught_up.wait()
            self.mark_unavailable(name, version, reason)

        async def set_ready() -> None:
            await self.caught_up.wait()
            self.server_ready = True

        return {
            "load_model": load_model,
            "unload": unload,
            "mark_unavailable": mark_unavailable,
            "set_ready": set_ready,
        }


async def run_worker(control_fd: int, index: int, preloaded: WorkerDataPlane | None = None) -> None:
    """A worker's life; `preloaded` is the template's data plane in a worker forked from it."""
    from inferline.server.front import worker_calls
    from inferline.server.serve import ModelServer

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches every process of the terminal's group; the parent answers it by stopping
    # the workers, so a worker must not stop (and be replaced) on its own before that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if preloaded is not None:
        preloaded.after_fork()
    dataplane = preloaded or WorkerDataPlane()
    dataplane.worker_requests = metrics.WORKER_REQUESTS.labels(worker=str(index))
    channel = dataplane.parent = Channel(socket.socket(fileno=control_fd), dataplane.parent_calls())
    await channel.open()
    reader = asyncio.create_task(channel.run())
    setup: WorkerSetup = await channel.call("setup")
    worker_format = LOG_FORMAT.replace("%(name)s", f"worker-{index} %(name)s")
    logging.basicConfig(level=setup.log_level, format=worker_format, force=True)
    dataplane.repository = ModelRepository(setup.config.model_dirs)
    if setup.config.tracing is not None:
        tracing.setup("inferline-server", setup.config.tracing)
    if setup.config.front:
        # No ports of its own: the front passes requests in over the channel.
        server = None
        channel.handlers.update(worker_calls(dataplane))
    else:
        server = ModelServer(setup.config, dataplane)
    if setup.listen_first and server:
        await server.start()
    await dataplane.apply(setup.held, setup.drop)
    if not setup.listen_first and server:
        await server.start()
    dataplane.server_ready = dataplane.server_ready or setup.server_ready
    await channel.call("serving")
    # The parent gone (killed, even) means this worker must not stay behind.
    closed = asyncio.create_task(channel.closed.wait())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([closed, stopped], return_when=asyncio.FIRST_COMPLETED)
    closed.cancel()
    stopped.cancel()
    if server:
        await server.stop()
    else:
        await dataplane.unload_all()
    tracing.shutdown()
    reader.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description="One worker process of an inferline server.")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--index", type=int)
    parser.add_argument("--template", action="store_true", help="be the template workers fork from")
    parser.add_argument("--events-fd", type=int, help="the template's events to the parent")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if args.template:
        from inferline.server.template import run_template

        run_template(args.control_fd, args.events_fd)
        return
    if args.index is None:
        parser.error("a worker needs --index")
    from inferline.server.serve import run

    run(run_worker(args.control_fd, args.index))


if __name__ == "__main__":
    # Run as `python -m inferline.server.workers`: import the module under its own name, so
    # what the parent pickles (`inferline.server.workers.WorkerSetup`) is the class used here.
    from inferline.server.workers import main as _main

    _main()
