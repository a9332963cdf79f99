"""When requests are sent: closed loop (N users, each sending when its answer is in) or open loop
(arrivals on a schedule, whether or not earlier answers are in), as k6's `constant-vus`,
`constant-arrival-rate` and `ramping-arrival-rate` executors do.

An open-loop schedule is a list of stages, each ramping the arrival rate linearly from where the
previous one ended to its target (k6's ramping-arrival-rate; a constant rate is one stage whose
start and target are equal). Arrival n is sent at the time the expected count of arrivals,
the integral of the rate, reaches n: exact times, so no drift accumulates over a long run.

Every function here takes its clock and its sleep as arguments, so tests drive them on a fake
clock without waiting.
"""

import math
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class Stage:
    duration: float  # seconds
    target: float  # requests per second reached at the end of the stage


def parse_duration(text: str) -> float:
    """'30s', '2m', '500ms', '1.5h' or plain seconds ('10')."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a duration; write e.g. 500ms, 30s, 2m or 1h")
    return float(match.group(1)) * _UNIT[match.group(2)]


def parse_stages(text: str) -> list[Stage]:
    """k6-style stages: 'DURATION:RATE,...', e.g. '10s:100,30s:500' (ramp to 100 req/s over
    10 s, then to 500 req/s over 30 s)."""
    stages = []
    for item in text.split(","):
        duration, sep, rate = item.strip().partition(":")
        if not sep:
            raise ValueError(f"stage '{item.strip()}' needs DURATION:RATE, e.g. 30s:500")
        try:
            target = float(rate)
        except ValueError:
            raise ValueError(f"stage '{item.strip()}': '{rate}' is not a rate") from None
        if target < 0 or not math.isfinite(target):
            raise ValueError(f"stage '{item.strip()}': the rate must be 0 or more")
        seconds = parse_duration(duration)
        if seconds <= 0:
            raise ValueError(f"stage '{item.strip()}': the duration must be more than 0")
        stages.append(Stage(seconds, target))
    return stages


def stages_duration(stages: list[Stage]) -> float:
    return sum(stage.duration for stage in stages)


def arrival_times(
    stages: list[Stage], start_rate: float = 0.0, first: int = 0, step: int = 1
) -> Iterator[float]:
    """Seconds from the start at which arrivals first, first + step, first + 2*step, ... are
    due, until the stages end. `first` and `step` split one schedule between `step` load
    processes without overlap: process k takes arrivals k, k + P, k + 2P, ..."""
    n = first
    count_before = 0.0  # expected arrivals before the current stage
    began = 0.0
    rate = start_rate
    for stage in stages:
        # In the stage, arrivals by time u are rate*u + slope*u^2 (slope: half the acceleration).
        slope = (stage.target - rate) / (2 * stage.duration)
        in_stage = rate * stage.duration + slope * stage.duration**2
        while n < count_before + in_stage:
            m = n - count_before
            # The root of slope*u^2 + rate*u - m = 0 in the stage, in the form that also holds
            # for slope 0 and does not cancel when slope is small.
            root = math.sqrt(max(rate * rate + 4 * slope * m, 0.0))
            u = 2 * m / (rate + root) if m > 0 else 0.0
            yield began + min(u, stage.duration)
            n += step
        count_before += in_stage
        began += stage.duration
        rate = stage.target


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


async def run_open_loop(
    times: Iterator[float],
    send: Callable[[float], object],
    clock: Clock,
    sleep: Sleep,
    in_flight: Callable[[], int],
    max_in_flight: int,
    limit: int | None = None,
) -> tuple[int, int]:
    """Call `send(due)` (which must not block: it starts the request) at each arrival time,
    measured from now on `clock`. An arrival due while `max_in_flight` requests are unanswered is
    dropped, as k6 drops iterations when it has no free VU: counted, never sent late in a burst.
    Stops after `limit` arrivals if given. Returns (sent, dropped)."""
    start = clock()
    sent = dropped = 0
    for offset in times:
        if limit is not None and sent + dropped >= limit:
            break
        due = start + offset
        wait = due - clock()
        if wait > 0:
            await sleep(wait)
        if in_flight() >= max_in_flight:
            dropped += 1
            continue
        send(due)
        sent += 1
    return sent, dropped
