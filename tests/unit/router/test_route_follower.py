"""Route sources and the follower that keeps the newest table."""

import asyncio

import httpx
import pytest

from inferline.router.routes import Endpoint, ModelRoute, RouteTable
from inferline.router.table import (
    HttpRouteSource,
    MutableRouteSource,
    RouteFollower,
    StaticRouteSource,
)

ENDPOINT = Endpoint("127.0.0.1:1", "127.0.0.1:2", "server", 0)


def table(generation: int, *names: str) -> RouteTable:
    return RouteTable(generation, {n: ModelRoute(n, f"{n}_1", 1, [ENDPOINT]) for n in names})


# --- sources ----------------------------------------------------------------------------------


async def test_mutable_source_answers_at_once_when_generation_differs():
    source = MutableRouteSource(table(3, "iris"))
    got = await asyncio.wait_for(source.wait_for_change(0, timeout=10), 1)
    assert got.generation == 3 and list(got.models) == ["iris"]


async def test_mutable_source_holds_until_timeout_without_change():
    source = MutableRouteSource(table(3, "iris"))
    got = await source.wait_for_change(3, timeout=0.05)
    assert got.generation == 3


async def test_mutable_source_set_wakes_waiters_and_raises_generation():
    source = MutableRouteSource(table(3, "iris"))
    waiter = asyncio.create_task(source.wait_for_change(3, timeout=10))
    await asyncio.sleep(0)
    published = source.set(table(0, "iris", "wine"))
    assert published.generation == 4
    got = await asyncio.wait_for(waiter, 1)
    assert got.generation == 4 and set(got.models) == {"iris", "wine"}
    assert source.set(table(10, "x")).generation == 10  # a higher generation is kept


async def test_mutable_source_put_and_remove():
    source = MutableRouteSource()
    source.put(ModelRoute("iris", "iris_1", 1))
    source.put(ModelRoute("wine", "wine_1", 1))
    assert source.remove("iris").generation == 3
    assert list(source.table.models) == ["wine"]


async def test_static_source():
    source = StaticRouteSource(table(1, "iris"))
    assert (await source.wait_for_change(-1, 10)).generation == 1
    assert (await source.wait_for_change(1, 0.01)).generation == 1


async def test_http_source_long_polls_the_scheduler():
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url)
        return httpx.Response(200, json=table(7, "iris").to_dict())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        source = HttpRouteSource("sched:9004", client=client)
        got = await source.wait_for_change(6, timeout=30)
    assert got.generation == 7 and got.models["iris"].endpoints == [ENDPOINT]
    (url,) = asked
    assert (url.host, url.port, url.path) == ("sched", 9004, "/v1/routes")
    assert dict(url.params) == {"generation": "6", "wait": "30"}


async def test_http_source_raises_on_error_answers():
    transport = httpx.MockTransport(lambda request: httpx.Response(500, text="db locked"))
    async with httpx.AsyncClient(transport=transport) as client:
        source = HttpRouteSource("http://sched:9004/", client=client)
        with pytest.raises(RuntimeError, match="500.*db locked"):
            await source.wait_for_change(0, timeout=1)


# --- follower ---------------------------------------------------------------------------------


async def test_follower_takes_the_first_table_at_once_and_then_changes():
    source = MutableRouteSource(table(0))
    follower = RouteFollower(source, poll_wait=10)
    assert not follower.synced
    follower.start()
    try:
        await follower.wait_synced(timeout=1)
        assert follower.table.generation == 0
        source.put(ModelRoute("iris", "iris_1", 1))
        got = await follower.wait_for_generation(1, timeout=1)
        assert list(got.models) == ["iris"]
        assert follower.table is source.table
    finally:
        await follower.stop()


class FlakySource:
    """Fails `failures` times, then serves `table`."""

    def __init__(self, failures: int, table: RouteTable):
        self.failures = failures
        self.table = table
        self.calls = 0

    async def wait_for_change(self, generation: int, timeout: float) -> RouteTable:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("scheduler is down")
        if generation == self.table.generation:
            await asyncio.sleep(timeout)
        return self.table


async def test_follower_retries_after_source_errors(caplog):
    source = FlakySource(3, table(5, "iris"))
    follower = RouteFollower(source, poll_wait=10, min_backoff=0.001, max_backoff=0.004)
    follower.start()
    try:
        got = await follower.wait_for_generation(5, timeout=2)
        assert list(got.models) == ["iris"]
        assert source.calls >= 4
    finally:
        await follower.stop()
    assert "scheduler is down" in caplog.text


async def test_follower_keeps_the_last_table_while_the_source_fails():
    source = MutableRouteSource(table(1, "iris"))
    follower = RouteFollower(source, poll_wait=0.01, min_backoff=0.001)
    follower.start()
    try:
        await follower.wait_synced(timeout=1)

        async def broken(generation, timeout):
            raise ConnectionError("gone")

        source.wait_for_change = broken
        await asyncio.sleep(0.05)
        assert list(follower.table.models) == ["iris"]
    finally:
        await follower.stop()


async def test_follower_does_not_spin_on_a_source_that_never_holds():
    calls = 0

    class Impatient:
        async def wait_for_change(self, generation, timeout):
            nonlocal calls
            calls += 1
            return table(1)

    follower = RouteFollower(Impatient(), min_backoff=0.02)
    follower.start()
    await asyncio.sleep(0.1)
    await follower.stop()
    assert calls <= 7


async def test_wait_for_generation_times_out():
    follower = RouteFollower(MutableRouteSource(table(0)))
    follower.start()
    try:
        with pytest.raises(TimeoutError):
            await follower.wait_for_generation(1, timeout=0.05)
    finally:
        await follower.stop()
