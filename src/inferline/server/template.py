"""The template process: it loads the server's models once, and the workers are forked from it.

A fork shares the parent's memory copy-on-write, so a model loaded here before the forks is held
once however many workers serve it (as gunicorn's `--preload`), where workers started fresh each
load their own copy. The hazard of forking is a thread alive at the fork: the child gets only the
forking thread, and a lock another thread held (inside an OpenMP, BLAS or grpc pool) stays locked
for ever. So the template is a plain process started fresh by the parent (fork+exec) that
never creates a grpc server or channel, loads the models with `asyncio.run` (which joins its
executor threads), waits for requests in a blocking loop without an event loop, and checks that
it runs exactly one thread before each fork. If it does not (a runtime left a thread pool
running), it says why and the parent starts fresh workers instead, as before.

OpenBLAS starts its thread pool when numpy is imported, so the parent starts the template with
`OPENBLAS_NUM_THREADS=1` (no pool), and each forked worker sets the BLAS thread count it would
have had if started fresh (with threadpoolctl, which scikit-learn brings; without it the pool is
left alone, and the check sends the server to fresh workers).

Only the models the server starts with are loaded here (the repository's models for `inferline
serve`; none for a server the scheduler drives, whose template only imports the runtimes). A
model loaded later, through the repository API or by the scheduler, is loaded by every worker
itself, so each holds its own copy of it. A worker replacing a dead one is forked from the
template too, so it again shares the models loaded here, then applies the loads and unloads made
since.

Both ends live here: `run_template` is the template's own life; `Template` is the parent's handle
on it, and `ForkedWorker` the parent's handle on a worker forked from it.
"""

import asyncio
import contextlib
import gc
import importlib.util
import logging
import os
import pickle
import select
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Environment variables OpenBLAS reads for its thread count, in the order it reads them. Only
# the first is changed for the template: it wins over the others, which OpenMP reads too.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
# How long the parent waits for the template to report a worker's exit code once the worker is
# gone; the code only goes into a log line.
EXIT_CODE_WAIT = 2.0


@dataclass
class TemplateSetup:
    """What the template gets from the parent when it starts."""

    config: Any  # ServerConfig
    log_level: int
    # The parent's OPENBLAS_NUM_THREADS (None when unset), restored in each worker; None too
    # when the template runs with the parent's own (threadpoolctl is missing).
    openblas_threads: str | None
    blas_restored: bool


# --- framing: length-prefixed pickles, as on the workers' control channels ------------------


def _frame(message: tuple) -> bytes:
    data = pickle.dumps(message)
    return len(data).to_bytes(4, "big") + data


def _receive_exactly(sock: socket.socket, size: int, fds: list[int]) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk, new_fds, _, _ = socket.recv_fds(sock, size - len(data), 1)
        fds.extend(new_fds)
        if not chunk:
            return None
        data += chunk
    return data


def _receive(sock: socket.socket) -> tuple[tuple, list[int]] | None:
    """One message and the file descriptors sent with it; None at the end of the stream."""
    fds: list[int] = []
    header = _receive_exactly(sock, 4, fds)
    body = header and _receive_exactly(sock, int.from_bytes(header, "big"), fds)
    if body is None:
        for fd in fds:
            os.close(fd)
        return None
    return pickle.loads(body), fds


# --- the template process ----------------------------------------------------------------------


def fork_hazard() -> str | None:
    """Why forking now would be unsafe (threads besides this one), or None."""
    tasks = os.listdir("/proc/self/task")
    if len(tasks) == 1:
        return None
    names = []
    for task in sorted(tasks):
        if int(task) != threading.get_native_id():
            with contextlib.suppress(OSError):
                names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
    return f"{len(tasks)} threads alive after loading the models (others: {', '.join(names)})"


def run_template(requests_fd: int, events_fd: int) -> None:
    """The template's life: load, report, then fork a worker on each request until the parent
    goes away. Returns only in the template; a forked worker never returns from here."""
    from inferline.server.repository import ModelRepository, load_found_models
    from inferline.server.workers import LOG_FORMAT, WorkerDataPlane

    requests = socket.socket(fileno=requests_fd)
    events = socket.socket(fileno=events_fd)
    # Ctrl-C reaches the whole process group; the parent answers it for everyone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    received = _receive(requests)
    if received is None:
        return
    setup: TemplateSetup = received[0][0]
    logging.basicConfig(
        level=setup.log_level,
        format=LOG_FORMAT.replace("%(name)s", "template %(name)s"),
        force=True,
    )
    dataplane = WorkerDataPlane(ModelRepository(setup.config.model_dirs))
    # asyncio.run closes its loop and joins its executor threads (the runtimes load in them).
    asyncio.run(
        load_found_models(dataplane.repository, dataplane.load_model, dataplane.mark_unavailable)
    )
    models = [
        (model.settings, model.state, model.reason)
        for versions in dataplane._models.values()
        for model in versions.values()
    ]
    # The objects alive now are shared with every worker: a collection in a worker would write
    # to each one's header and copy its page, so the collector leaves them alone from now on.
    gc.collect()
    gc.freeze()
    hazard = fork_hazard()
    if hazard is not None and not setup.blas_restored:
        hazard += " (one may be numpy's OpenBLAS pool: install threadpoolctl to keep it out)"
    # The parent gone (killed, even) ends the template: it forks for no one else.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        events.sendall(_frame(("ready", models, hazard)))
        if hazard is None:
            _fork_on_request(requests, events, dataplane, setup)


def _fork_on_request(requests, events, dataplane, setup: TemplateSetup) -> None:
    # A dead worker is reaped at once: SIGCHLD wakes the loop through this pipe.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    while True:
        readable, _, _ = select.select([requests, wake_read], [], [])
        if wake_read in readable:
            os.read(wake_read, 512)
            _reap(events)
        if requests in readable:
            received = _receive(requests)
            if received is None:  # the parent is gone
                return
            (_, request_id, index), fds = received
            hazard = fork_hazard()
            if hazard is not None:
                os.close(fds[0])
                events.sendall(_frame(("failed", request_id, hazard)))
                continue
            pid = os.fork()
            if pid == 0:
                for fd in (wake_read, wake_write, requests.fileno(), events.fileno()):
                    os.close(fd)
                _run_forked_worker(dataplane, fds[0], index, setup)
            os.close(fds[0])
            events.sendall(_frame(("forked", request_id, pid)))


def _reap(events: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        events.sendall(_frame(("exited", pid, os.waitstatus_to_exitcode(status))))


def _run_forked_worker(dataplane, control_fd: int, index: int, setup: TemplateSetup) -> None:
    """In the child: undo what only the template needed, then be a worker. Never returns."""
    from inferline.server.serve import run
    from inferline.server.workers import run_worker

    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if setup.blas_restored:
            _restore_blas_threads(setup.openblas_threads)
        run(run_worker(control_fd, index, preloaded=dataplane))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker %d failed", index)
        code = 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # Not `sys.exit`: that would unwind into the template's loop.
        os._exit(code)


def _restore_blas_threads(openblas_threads: str | None) -> None:
    """Give OpenBLAS the thread count a freshly started worker would have had."""
    os.environ.pop("OPENBLAS_NUM_THREADS")
    if openblas_threads is not None:
        os.environ["OPENBLAS_NUM_THREADS"] = openblas_threads
    count = None
    for name in BLAS_THREAD_VARIABLES:
        with contextlib.suppress(ValueError):
            count = count or max(int(os.environ.get(name, "")), 0) or None
    from threadpoolctl import threadpool_limits

    threadpool_limits(count or len(os.sched_getaffinity(0)), user_api="blas")


# --- the parent's side -------------------------------------------------------------------------


class ForkedWorker:
    """A worker forked by the template: the template's child, not the parent's, so the parent
    watches it through a pidfd (which also keeps a reused pid from being signalled), and learns
    its exit code from the template. Offers what `WorkerPool` uses of `asyncio.subprocess.Process`.
    """

    def __init__(self, pid: int, exit_code: asyncio.Future):
        self.pid = pid
        # Stays None for a worker whose exit the template could not report (it is gone).
        self.returncode: int | None = None
        self._exit_code = exit_code
        loop = asyncio.get_running_loop()
        self._gone = loop.create_future()
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # it died at once, and the template reaped it
            self._pidfd = -1
            self._gone.set_result(None)
            return
        loop.add_reader(self._pidfd, self._exited)

    def send_signal(self, sig: int) -> None:
        if self._pidfd < 0:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int | None:
        await asyncio.shield(self._gone)
        with contextlib.suppress(TimeoutError):
            self.returncode = await asyncio.wait_for(
                asyncio.shield(self._exit_code), EXIT_CODE_WAIT
            )
        return self.returncode

    def _exited(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._gone.set_result(None)


class Template:
    """The parent's handle on the template process."""

    def __init__(self):
        self.process: asyncio.subprocess.Process | None = None
        # What the template loaded: (settings, state, reason) per model version.
        self.models: list[tuple] = []
        self._requests: socket.socket | None = None
        self._events: asyncio.StreamReader | None = None
        self._events_writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._exit_codes: dict[int, asyncio.Future] = {}
        self._next_id = 0

    @property
    def alive(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def start(self, config, log_level: int, environment: dict[str, str]) -> str | None:
        """Start the template and wait until it has loaded the models. Returns why workers
        cannot be forked from it (then it has exited), or None when they can."""
        requests, template_requests = socket.socketpair()
        events, template_events = socket.socketpair()
        restore = importlib.util.find_spec("threadpoolctl") is not None
        setup = TemplateSetup(
            config, log_level, environment.get("OPENBLAS_NUM_THREADS") if restore else None, restore
        )
        if restore:
            environment = {**environment, "OPENBLAS_NUM_THREADS": "1"}
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "inferline.server.workers", "--template",
                "--control-fd", str(template_requests.fileno()),
                "--events-fd", str(template_events.fileno()),
                pass_fds=(template_requests.fileno(), template_events.fileno()),
                env=environment,
            )  # fmt: skip
        finally:
            template_requests.close()
            template_events.close()
        self._requests = requests
        self._requests.sendall(_frame((setup,)))
        # The writer is kept: a StreamWriter collected as garbage closes its transport.
        self._events, self._events_writer = await asyncio.open_unix_connection(sock=events)
        try:
            _, self.models, hazard = await self._read()
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self.process.wait()
            return f"the template process exited with code {code} while loading the models"
        if hazard is not None:
            await self.stop()
            return hazard
        self._reader = asyncio.create_task(self._read_events())
        return None

    async def fork(self, index: int, control: socket.socket) -> ForkedWorker:
        """Fork a worker that talks to the parent over `control`. Raises `ForkRefused` with
        the reason if the template cannot fork (safely) any more."""
        if not self.alive:
            raise ForkRefused("the template process is gone")
        self._next_id += 1
        reply = self._pending[self._next_id] = asyncio.get_running_loop().create_future()
        # The socket is blocking and the message a few bytes: this does not wait.
        socket.send_fds(
            self._requests, [_frame(("fork", self._next_id, index))], [control.fileno()]
        )
        pid = await reply
        exit_code = self._exit_codes[pid] = asyncio.get_running_loop().create_future()
        return ForkedWorker(pid, exit_code)

    async def stop(self) -> None:
        """The template exits when its request stream ends; its workers are stopped by then."""
        if self._requests is not None:
            self._requests.close()
        if self.process is not None:
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> tuple:
        size = int.from_bytes(await self._events.readexactly(4), "big")
        return pickle.loads(await self._events.readexactly(size))

    async def _read_events(self) -> None:
        try:
            while True:
                message = await self._read()
                if message[0] == "exited":
                    _, pid, code = message
                    future = self._exit_codes.pop(pid, None)
                    if future is not None and not future.done():
                        future.set_result(code)
                    continue
                kind, request_id, value = message
                future = self._pending.pop(request_id)
                if kind == "forked":
                    future.set_result(value)
                else:
                    future.set_exception(ForkRefused(value))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ForkRefused("the template process is gone"))
            self._pending.clear()


class ForkRefused(Exception):
    """The template cannot fork a worker; the message says why."""
