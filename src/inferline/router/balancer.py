"""Choosing a replica for each call, as Envoy's least-request balancer with retries does.

Pure logic, no I/O: the transports hand `Balancer.call` an `attempt(endpoint)` coroutine that
raises `ConnectFailure` when the call never got an answer from that endpoint, and the balancer
tries the next one. Outstanding calls are counted per endpoint (a replica holding two models is
one replica), so the least busy replica wins; ties go round-robin per model.

An endpoint that failed to connect is set aside for `ejection_time` seconds (Envoy's outlier
detection, simplified), so while the scheduler has not yet noticed a dead replica, calls do not
each pay a failed connect first. Set-aside endpoints are still tried when no other is left.
"""

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from inferline.router.routes import Endpoint

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_EJECTION_TIME = 5.0


class ConnectFailure(Exception):
    """The call got no answer from `endpoint` (refused, reset before answering): another
    replica may be tried. With `eject`, the endpoint is also set aside for a while."""

    def __init__(self, endpoint: Endpoint, detail: str, eject: bool = True):
        super().__init__(f"{endpoint.server}/{endpoint.replica}: {detail}")
        self.endpoint = endpoint
        self.detail = detail
        self.eject = eject


class NoEndpointAnswered(Exception):
    """Every endpoint was tried once and none answered."""

    def __init__(self, failures: list[ConnectFailure]):
        last = f" (last: {failures[-1]})" if failures else ""
        super().__init__(f"tried {len(failures)} replica(s), none answered{last}")
        self.failures = failures


class Balancer:
    def __init__(
        self,
        ejection_time: float = DEFAULT_EJECTION_TIME,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ejection_time = ejection_time
        self._clock = clock
        self._outstanding: dict[Endpoint, int] = {}
        self._turns: dict[str, int] = {}
        self._ejected_until: dict[Endpoint, float] = {}

    def outstanding(self, endpoint: Endpoint) -> int:
        return self._outstanding.get(endpoint, 0)

    def is_ejected(self, endpoint: Endpoint) -> bool:
        until = self._ejected_until.get(endpoint)
        if until is None:
            return False
        if until <= self._clock():
            del self._ejected_until[endpoint]
            return False
        return True

    def pick(
        self, key: str, endpoints: Sequence[Endpoint], exclude: Sequence[Endpoint] = ()
    ) -> Endpoint | None:
        """The endpoint for the next call of model `key`, or None when all are excluded."""
        candidates = [e for e in endpoints if e not in exclude]
        if not candidates:
            return None
        if len(candidates) > 1:
            healthy = [e for e in candidates if not self.is_ejected(e)]
            candidates = healthy or candidates
        if len(candidates) == 1:
            return candidates[0]
        fewest = min(self.outstanding(e) for e in candidates)
        ties = [e for e in candidates if self.outstanding(e) == fewest]
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return ties[turn % len(ties)]

    def begin(self, endpoint: Endpoint) -> None:
        self._outstanding[endpoint] = self._outstanding.get(endpoint, 0) + 1

    def end(self, endpoint: Endpoint) -> None:
        left = self._outstanding.get(endpoint, 0) - 1
        if left > 0:
            self._outstanding[endpoint] = left
        else:
            self._outstanding.pop(endpoint, None)

    def record_failure(self, endpoint: Endpoint) -> None:
        self._ejected_until[endpoint] = self._clock() + self.ejection_time

    def record_success(self, endpoint: Endpoint) -> None:
        self._ejected_until.pop(endpoint, None)

    async def call(
        self,
        key: str,
        endpoints: Sequence[Endpoint],
        attempt: Callable[[Endpoint], Awaitable[T]],
    ) -> T:
        """Run `attempt` on a chosen endpoint; on `ConnectFailure`, on another one, trying each
        endpoint at most once. Raises `NoEndpointAnswered` when none answered."""
        tried: list[Endpoint] = []
        failures: list[ConnectFailure] = []
        while (endpoint := self.pick(key, endpoints, tried)) is not None:
            tried.append(endpoint)
            self.begin(endpoint)
            try:
                result = await attempt(endpoint)
            except ConnectFailure as failure:
                log.info("%s: no answer from %s; trying another replica", key, failure)
                if failure.eject:
                    self.record_failure(endpoint)
                failures.append(failure)
                continue
            finally:
                self.end(endpoint)
            self.record_success(endpoint)
            return result
        raise NoEndpointAnswered(failures)
