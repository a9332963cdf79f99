"""The balancer's choices and retries, with fake calls and a fake clock."""

import asyncio

import pytest

from inferline.router.balancer import Balancer, ConnectFailure, NoEndpointAnswered
from inferline.router.routes import Endpoint

A, B, C = (Endpoint(f"h:{i}", f"g:{i}", f"server-{i}", 0) for i in range(3))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ties_go_round_robin():
    balancer = Balancer()
    assert [balancer.pick("m", [A, B, C]) for _ in range(6)] == [A, B, C, A, B, C]


def test_round_robin_is_per_model():
    balancer = Balancer()
    assert balancer.pick("m", [A, B]) == A
    assert balancer.pick("other", [A, B]) == A
    assert balancer.pick("m", [A, B]) == B


def test_least_outstanding_wins():
    balancer = Balancer()
    balancer.begin(A)
    balancer.begin(A)
    balancer.begin(B)
    assert [balancer.pick("m", [A, B, C]) for _ in range(3)] == [C, C, C]
    balancer.end(A)
    balancer.end(A)
    # A and C tie at zero now; B has one.
    assert {balancer.pick("m", [A, B, C]) for _ in range(4)} == {A, C}


def test_outstanding_is_counted_per_endpoint_across_models():
    balancer = Balancer()
    balancer.begin(A)  # a call of another model on the same replica
    assert balancer.pick("m", [A, B]) == B
    balancer.end(A)
    assert balancer.outstanding(A) == 0


def test_pick_excludes_tried_endpoints():
    balancer = Balancer()
    assert balancer.pick("m", [A, B], exclude=[A]) == B
    assert balancer.pick("m", [A, B], exclude=[A, B]) is None
    assert balancer.pick("m", []) is None


async def test_call_tracks_outstanding_while_running():
    balancer = Balancer()
    seen = []

    async def attempt(endpoint):
        seen.append(balancer.outstanding(endpoint))
        return endpoint.server

    assert await balancer.call("m", [A], attempt) == "server-0"
    assert seen == [1]
    assert balancer.outstanding(A) == 0


async def test_concurrent_calls_spread_by_outstanding():
    balancer = Balancer()
    release = asyncio.Event()
    used = []

    async def attempt(endpoint):
        used.append(endpoint)
        await release.wait()
        return endpoint

    calls = [asyncio.create_task(balancer.call("m", [A, B, C], attempt)) for _ in range(6)]
    await asyncio.sleep(0)
    assert sorted(used, key=lambda e: e.server) == [A, A, B, B, C, C]
    release.set()
    await asyncio.gather(*calls)
    assert all(balancer.outstanding(e) == 0 for e in (A, B, C))


async def test_connect_failure_retries_each_other_endpoint_once():
    balancer = Balancer()
    tried = []

    async def attempt(endpoint):
        tried.append(endpoint)
        if len(tried) < 3:
            raise ConnectFailure(endpoint, "refused")
        return "ok"

    assert await balancer.call("m", [A, B, C], attempt) == "ok"
    assert sorted(tried, key=lambda e: e.server) == [A, B, C]
    assert all(balancer.outstanding(e) == 0 for e in (A, B, C))


async def test_all_endpoints_failing_raises_with_every_failure():
    balancer = Balancer()
    tried = []

    async def attempt(endpoint):
        tried.append(endpoint)
        raise ConnectFailure(endpoint, "refused")

    with pytest.raises(NoEndpointAnswered) as failure:
        await balancer.call("m", [A, B], attempt)
    assert sorted(e.server for e in tried) == ["server-0", "server-1"]
    assert [f.endpoint for f in failure.value.failures] == tried
    assert "refused" in str(failure.value)


async def test_other_errors_are_not_retried():
    balancer = Balancer()
    tried = []

    async def attempt(endpoint):
        tried.append(endpoint)
        raise ValueError("the replica answered 400")

    with pytest.raises(ValueError):
        await balancer.call("m", [A, B], attempt)
    assert tried == [A]
    assert balancer.outstanding(A) == 0
    assert not balancer.is_ejected(A)


async def test_failed_endpoint_is_set_aside_until_ejection_time_passes():
    clock = Clock()
    balancer = Balancer(ejection_time=5.0, clock=clock)

    async def attempt(endpoint):
        if endpoint is A:
            raise ConnectFailure(endpoint, "refused")
        return endpoint

    assert await balancer.call("m", [A, B], attempt) == B
    assert balancer.is_ejected(A)
    assert [balancer.pick("m", [A, B]) for _ in range(3)] == [B, B, B]
    clock.now += 5.0
    assert not balancer.is_ejected(A)
    assert {balancer.pick("m", [A, B]) for _ in range(2)} == {A, B}


async def test_set_aside_endpoints_are_still_used_when_nothing_else_is_left():
    clock = Clock()
    balancer = Balancer(clock=clock)
    balancer.record_failure(A)
    balancer.record_failure(B)
    assert balancer.pick("m", [A, B]) in (A, B)

    async def attempt(endpoint):
        return endpoint

    assert await balancer.call("m", [A], attempt) == A
    assert not balancer.is_ejected(A)  # an answer clears it


async def test_failure_without_eject_is_retried_but_not_set_aside():
    balancer = Balancer()

    async def attempt(endpoint):
        if endpoint is A:
            raise ConnectFailure(endpoint, "closed before answering", eject=False)
        return endpoint

    assert await balancer.call("m", [A, B], attempt) == B
    assert not balancer.is_ejected(A)
