"""The README's platform quick start, command by command, as a user types it."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inferline.demo import free_port, wait_for_http

REPO = Path(__file__).resolve().parents[2]
REQUEST = '{"inputs":[{"name":"predict","shape":[1,4],"datatype":"FP32","data":[[1,2,3,4]]}]}'


@pytest.mark.slow
def test_the_four_commands_serve_iris(tmp_path):
    ports = {"http": free_port(), "grpc": free_port(), "scheduler": free_port()}
    env = {
        **os.environ,
        "INFERLINE_EXAMPLES_DIR": str(tmp_path / "examples"),
        "INFERLINE_SCHEDULER_HOST": f"127.0.0.1:{ports['scheduler']}",
        "INFERLINE_INFER_HOST": f"127.0.0.1:{ports['http']}",
        "INFERLINE_INFER_GRPC_HOST": f"127.0.0.1:{ports['grpc']}",
    }

    def cli(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "inferline", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"inferline {' '.join(args)}:\n{result.stderr}"
        return result

    up = subprocess.Popen(
        [
            sys.executable, "-m", "inferline", "up", "--data-dir", str(tmp_path / "state"),
            "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
            "--scheduler-port", str(ports["scheduler"]),
        ],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{ports['scheduler']}/v1/health", up)
        assert "model/iris created" in cli("load", "-f", "examples/iris.yaml").stdout
        cli("model", "status", "iris", "-w", "ModelAvailable", "-t", "60")
        answer = json.loads(cli("model", "infer", "iris", REQUEST).stdout)
        assert answer["model_name"] == "iris_1"
        assert answer["outputs"][0]["data"] == [2]
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
