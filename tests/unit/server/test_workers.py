"""The worker pool's bookkeeping, in one process: the parent's `WorkerPool` talks over real socket
pairs to `WorkerDataPlane`s that stand for the worker processes, and one for the template they
are forked from (no HTTP or gRPC is started, nothing is forked;
tests/integration/test_serve_workers.py runs real template and worker processes)."""

import asyncio
import json
import socket

import pytest

from inferline.protocol.errors import InferlineError, ModelNotFound
from inferline.server.serve import ServerConfig
from inferline.server.workers import Channel, WorkerDataPlane, WorkerPool

# Fails its second load in the same folder: one worker of two fails, the other does not.
SECOND_LOAD_FAILS = """
from pathlib import Path

from inferline.runtimes import Runtime


class SecondFails(Runtime):
    async def load(self):
        counter = Path(self.settings.folder) / "loads"
        count = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(count + 1))
        if count == 1:
            raise RuntimeError("out of memory in this worker")
"""


class Worker:
    """A worker's data plane and its end of the control channel."""

    def __init__(self, pool: WorkerPool, index: int, forked_from: WorkerDataPlane | None = None):
        """`forked_from`: the template's data plane, which a forked worker starts with."""
        self.pool = pool
        self.slot = pool._slots[index]
        self.slot.forked = forked_from is not None
        parent_end, worker_end = socket.socketpair()
        self.slot.channel = Channel(parent_end, pool._handlers(self.slot))
        self.dataplane = forked_from or WorkerDataPlane(pool.repository)
        self.dataplane.parent = Channel(worker_end, self.dataplane.parent_calls())
        self.tasks: list[asyncio.Task] = []

    async def start(self, catch_up: bool = True) -> None:
        """Connect and take the snapshot of what the server holds; with catch_up=False the
        worker does not apply it yet (a worker still loading), so calls wait for `catch_up`."""
        await self.slot.channel.open()
        await self.dataplane.parent.open()
        self.tasks.append(asyncio.create_task(self.slot.channel.run()))
        self.tasks.append(asyncio.create_task(self.dataplane.parent.run()))
        self.setup = await self.dataplane.parent.call("setup")
        if catch_up:
            await self.catch_up()

    async def catch_up(self) -> None:
        await self.dataplane.apply(self.setup.held, self.setup.drop)

    def states(self) -> dict[str, str]:
        return {row.name: row.state for row in self.dataplane.loaded_models()}

    def die(self) -> None:
        """The worker process ends: its end of the channel closes."""
        self.dataplane.parent.close()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.dataplane.parent.close()


@pytest.fixture
async def pool(model_root):
    flaky = model_root / "flaky"
    flaky.mkdir()
    (flaky / "model.py").write_text(SECOND_LOAD_FAILS)
    settings = {"name": "flaky", "implementation": "model.SecondFails"}
    (flaky / "model-settings.json").write_text(json.dumps(settings))
    pool = WorkerPool(ServerConfig(model_dirs=[model_root], workers=2))
    pool.workers = [Worker(pool, 0), Worker(pool, 1)]
    yield pool
    for worker in pool.workers:
        await worker.close()


async def test_a_load_is_ready_only_once_every_worker_has_it(pool):
    first, second = pool.workers
    await first.start()
    await second.start(catch_up=False)
    loading = asyncio.create_task(pool.load("doubler"))
    while first.states().get("doubler") != "READY":
        await asyncio.sleep(0.01)
    assert pool.loaded_models()[0].state == "LOADING"
    assert not loading.done()

    await second.catch_up()
    await loading
    assert [(m.name, m.state) for m in pool.loaded_models()] == [("doubler", "READY")]
    assert second.states() == {"doubler": "READY"}


async def test_a_load_asked_at_one_worker_reaches_every_worker(pool):
    for worker in pool.workers:
        await worker.start()
    first, second = pool.workers
    await first.dataplane.load("iris")
    assert first.states() == second.states() == {"iris": "READY"}

    await second.dataplane.unload("iris")
    assert first.states() == second.states() == {}
    with pytest.raises(InferlineError) as missing:
        await first.dataplane.unload("iris")
    assert missing.value.status == ModelNotFound.status
    assert missing.value.message == "model 'iris' not found"
    with pytest.raises(InferlineError) as unknown:
        await first.dataplane.load("nothere")
    assert unknown.value.status == 404


async def test_a_load_failing_in_one_worker_fails_with_its_reason(pool):
    for worker in pool.workers:
        await worker.start()
    with pytest.raises(InferlineError) as failed:
        await pool.load("flaky")
    assert "out of memory in this worker" in failed.value.message
    (row,) = pool.loaded_models()
    assert row.state == "UNAVAILABLE"
    assert "out of memory in this worker" in row.reason


async def test_a_new_worker_takes_over_what_the_server_holds_in_order(pool, model_root):
    first, second = pool.workers
    await first.start()
    await pool.load("doubler")
    await pool.load("iris")
    pool.mark_unavailable("bad-uri", "1", "no such bucket")
    await pool.unload("doubler")
    await pool.load("doubler")
    # The second worker starts now, as a replacement would.
    await second.start()
    assert list(second.dataplane._models) == ["iris", "bad-uri", "doubler"]
    assert second.states() == {"iris": "READY", "bad-uri": "UNAVAILABLE", "doubler": "READY"}
    assert second.states() == first.states()


async def test_a_worker_gone_during_a_load_is_not_an_error(pool):
    first, second = pool.workers
    await first.start()
    await second.start(catch_up=False)
    loading = asyncio.create_task(pool.load("iris"))
    await asyncio.sleep(0.05)
    second.die()
    await loading
    assert [(m.name, m.state) for m in pool.loaded_models()] == [("iris", "READY")]


async def test_a_forked_worker_keeps_the_template_models_and_applies_what_changed(pool, model_root):
    # The template loads the repository: flaky's first load, which succeeds.
    template = WorkerDataPlane(pool.repository)
    for name in ("flaky", "doubler", "iris"):
        await template.load_model(pool.repository.find(name))
    kept = template._models["flaky"][""].runtime
    pool._record_template_models(
        [(m.settings, m.state, m.reason) for v in template._models.values() for m in v.values()]
    )
    (template_iris,) = template._models["iris"].values()
    # Since the template loaded them: doubler unloaded, iris loaded again (a new version of
    # its files, say). No worker runs yet: a replacement forked now must catch up.
    await pool.unload("doubler")
    await pool.load("iris")

    await pool.workers[0].close()
    forked = pool.workers[0] = Worker(pool, 0, forked_from=template)
    await forked.start()
    # flaky is not loaded again (its second load would fail): the template's copy serves.
    assert forked.states() == {"flaky": "READY", "iris": "READY"}
    assert forked.dataplane._models["flaky"][""].runtime is kept
    assert (model_root / "flaky" / "loads").read_text() == "1"
    (iris,) = forked.dataplane._models["iris"].values()
    assert iris.runtime is not template_iris.runtime
    assert [(m.name, m.state) for m in pool.loaded_models()] == [
        ("flaky", "READY"),
        ("iris", "READY"),
    ]
