"""The CLI's errors, as a user meets them: exit code 1 and one readable line on stderr, never a
traceback. Run as a subprocess, against a real `inferline scheduler` where one is needed.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from inferline.demo import free_port

pytestmark = pytest.mark.slow

IRIS_REQUEST = (
    '{"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}'
)
# rich wraps stderr at 80 columns when it is not a terminal; a wide console keeps the message on
# one line, so the tests below check its words (the wrapping has a test of its own at the end).
WIDE = "400"


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> Iterator[str]:
    """A running `inferline scheduler`: its host:port."""
    folder = tmp_path_factory.mktemp("scheduler")
    port = free_port()
    log_path = folder / "scheduler.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "inferline", "scheduler", "--port", str(port),
                "--data-dir", str(folder / "data"), "--host", "127.0.0.1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"scheduler exited:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"scheduler not up in 30 s:\n{log_path.read_text()}"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def nobody_listens() -> str:
    """An address with nothing listening on it."""
    return f"127.0.0.1:{free_port()}"


def inferline(*args: str, columns: str | None = WIDE, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INFERLINE_")}
    environment.pop("COLUMNS", None)
    if columns is not None:
        environment["COLUMNS"] = columns
    # Nothing reachable unless a test says otherwise.
    environment["INFERLINE_SCHEDULER_HOST"] = nobody_listens()
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "inferline", *args],
        # No terminal anywhere, as in a script or CI: stdin too, or rich sizes from it.
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_unknown_model(scheduler):
    result = inferline("model", "status", "nope", INFERLINE_SCHEDULER_HOST=scheduler)
    assert error_line(result) == "error: model 'nope' not found"


def test_invalid_yaml_file(scheduler, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: mlops.seldon.io/v1alpha1\nkind: Model\nmetadata: [\n")
    line = error_line(inferline("load", "-f", str(path), INFERLINE_SCHEDULER_HOST=scheduler))
    assert "invalid YAML at line 4" in line


def test_missing_file(scheduler, tmp_path):
    path = tmp_path / "missing.yaml"
    line = error_line(inferline("load", "-f", str(path), INFERLINE_SCHEDULER_HOST=scheduler))
    assert line == f"error: cannot read {path}: No such file or directory"


def test_unknown_field(scheduler, tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(
        "apiVersion: mlops.seldon.io/v1alpha1\nkind: Model\nmetadata:\n  name: iris\n"
        "spec:\n  storagUri: /models/iris\n"
    )
    line = error_line(inferline("load", "-f", str(path), INFERLINE_SCHEDULER_HOST=scheduler))
    assert "Model iris" in line
    assert line.endswith("unknown field 'spec.storagUri'")
    # Nothing was stored.
    missing = inferline("model", "status", "iris", INFERLINE_SCHEDULER_HOST=scheduler)
    assert error_line(missing) == "error: model 'iris' not found"


def test_unreachable_scheduler():
    address = nobody_listens()
    line = error_line(inferline("model", "list", INFERLINE_SCHEDULER_HOST=address))
    assert line.startswith(f"error: cannot reach the scheduler at {address} (ConnectError)")
    assert "INFERLINE_SCHEDULER_HOST" in line


def test_infer_against_an_unreachable_router_rest_and_grpc():
    rest, grpc = nobody_listens(), nobody_listens()
    line = error_line(inferline("model", "infer", "iris", IRIS_REQUEST, INFERLINE_INFER_HOST=rest))
    assert line == f"error: cannot reach the inference endpoint at {rest} (ConnectError)"
    result = inferline(
        "model", "infer", "iris", IRIS_REQUEST, "--inference-mode", "grpc",
        INFERLINE_INFER_GRPC_HOST=grpc,
    )  # fmt: skip
    assert error_line(result) == f"error: cannot reach the gRPC endpoint at {grpc}"


def test_a_sticky_call_before_any_answer_was_saved(tmp_path):
    config = tmp_path / "config"
    line = error_line(
        inferline("model", "infer", "iris", IRIS_REQUEST, "-s", XDG_CONFIG_HOME=str(config))
    )
    session = config / "inferline" / "cli" / "session"
    assert line.startswith(f"error: no sticky session saved at {session}: call once without -s")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kafka-topic-property", "retention.ms=1"], "--kafka-topic-property need --kafka"),
        (["--kafka", "127.0.0.1:1", "--kafka-topic-property", "retention.ms"], "needs key=value"),
    ],
)
def test_up_refuses_kafka_topic_properties_it_cannot_use(args, message):
    result = inferline("up", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_inference_request():
    line = error_line(inferline("model", "infer", "iris", '{"inputs": 3}'))
    assert line == "error: invalid inference request: 'inputs' must be a list"


def test_a_long_error_stays_on_one_line_at_the_default_width():
    address = nobody_listens()
    result = inferline("model", "list", columns=None, INFERLINE_SCHEDULER_HOST=address)
    line = error_line(result)
    assert "INFERLINE_SCHEDULER_HOST" in line
