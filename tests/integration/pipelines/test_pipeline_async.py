"""Requests through a pipeline survive the loss of the model server that runs its steps: the
model gateway leaves them on their topics and retries until the supervisor has started the
server again and the scheduler has reloaded its models (ARCHITECTURE.md, "a step that is down
leaves its input waiting on its topic").

Asynchronous use of the bus (writing a pipeline's inputs topic directly, reference b.16) is only
reachable in-process with the embedded bus, so it is not tested here.
"""

import json
import os
import signal
import threading
import time

import httpx
import pytest

from ._platform import (
    SAMPLES,
    SKIP_REASON,
    NotYet,
    Up,
    outputs_by_name,
    sample_documents,
    tfsimple_request,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SAMPLES.is_dir(), reason=SKIP_REASON)]

REQUESTS = 10
CALL_TIMEOUT = 60.0
# Requests start this far apart, so some are at the server when it dies and some are sent while
# it is gone.
STAGGER = 0.02
TWO_TO_32 = [2 * i for i in range(1, 17)]


@pytest.fixture(scope="module")
def up(up_factory, model_root) -> Up:
    platform = up_factory()
    platform.apply(
        doc
        for path in ("models/tfsimple1.yaml", "models/tfsimple2.yaml", "pipelines/tfsimples.yaml")
        for doc in sample_documents(path, model_root)
    )
    platform.wait_pipeline("tfsimples")
    platform.infer_ok("tfsimples", tfsimple_request())
    return platform


def test_no_request_is_lost_when_the_model_server_is_killed(up):
    (pid,) = up.server_pids()
    results: dict[int, tuple[int, dict, str] | BaseException] = {}
    took: dict[int, float] = {}
    start = threading.Barrier(REQUESTS + 1)

    def call(index: int) -> None:
        start.wait()
        time.sleep(index * STAGGER)
        sent = time.monotonic()
        try:
            with httpx.Client(timeout=CALL_TIMEOUT) as client:
                answer = client.post(
                    f"{up.router_url}/v2/pipelines/tfsimples/infer", json=tfsimple_request()
                )
            results[index] = (answer.status_code, dict(answer.headers), answer.text)
            took[index] = time.monotonic() - sent
        except BaseException as exc:  # reported below, with the others
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(REQUESTS)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(STAGGER)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    for thread in threads:
        thread.join(max(0.1, CALL_TIMEOUT + 5 - (time.monotonic() - started)))

    assert len(results) == REQUESTS, f"{REQUESTS - len(results)} call(s) never returned"
    keys = set()
    for index, result in sorted(results.items()):
        assert not isinstance(result, BaseException), f"request {index}: {result!r}"
        status, headers, text = result
        assert status == 200, f"request {index}: {status} {text}"
        assert outputs_by_name(json.loads(text)) == {
            "OUTPUT0": TWO_TO_32,
            "OUTPUT1": TWO_TO_32,
        }
        keys.add(headers["x-request-id"])
    assert len(keys) == REQUESTS, "every request has its own key"
    # Those sent after the kill waited for the server to come back (the supervisor waits 1 s).
    assert max(took.values()) > 0.5, f"no request waited for the server: {took}"

    # The server really died and was started again by `up`.
    def restarted():
        pids = up.server_pids()
        if pids == [pid] or not pids:
            raise NotYet(f"server pids {pids}")
        return pids

    wait_until(restarted, 30, "the server to be started again", alive=up.assert_alive)
    assert "exited with code -9" in up.log_path.read_text()
    up.wait_pipeline("tfsimples")
    up.infer_ok("tfsimples", tfsimple_request())
