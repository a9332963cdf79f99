"""`inferline bench` as a user runs it: a subprocess against a real `inferline serve`.

One server serves iris twice: as trained (no input metadata, so requests come from a file) and
as `iris-meta`, whose settings declare its input, so bench can make requests up itself.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

REQUEST = {
    "inputs": [
        {
            "name": "input-0",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [[5, 3, 1, 0], [6, 3, 5, 2]],
        }
    ]
}


@pytest.fixture(scope="module")
def server(serve, iris_dir, copy_model_folder, tmp_path_factory):
    meta = copy_model_folder(iris_dir, tmp_path_factory.mktemp("bench") / "iris-meta", "iris-meta")
    settings = json.loads((meta / "model-settings.json").read_text())
    settings["inputs"] = [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    (meta / "model-settings.json").write_text(json.dumps(settings))
    return serve(iris_dir, meta)


@pytest.fixture(scope="module")
def request_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "request.json"
    path.write_text(json.dumps(REQUEST))
    return path


def bench(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out.json"
    run = subprocess.run(
        [sys.executable, "-m", "inferline", "bench", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run, json.loads(out.read_text()) if out.exists() else {}


def test_rest_iterations_give_that_many_answers(server, request_file, tmp_path):
    run, result = bench(
        tmp_path, "model", "iris", "--url", server.url, "--concurrency", "4",
        "--iterations", "300", "--warmup", "0.5", "--data", str(request_file),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert result["requests"] == 300
    assert result["errors"] == 0
    assert result["throughput"] > 0
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert result["client_cpu_saturated"] in (True, False)
    assert "throughput" in run.stdout and "p99" in run.stdout


def test_grpc_iterations_give_that_many_answers(server, request_file, tmp_path):
    run, result = bench(
        tmp_path, "model", "iris", "--grpc", server.grpc_address, "--concurrency", "4",
        "--iterations", "300", "--data", str(request_file),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert result["requests"] == 300
    assert result["errors"] == 0
    assert result["target"]["kind"] == "grpc"


def test_grpc_typed_contents_are_served_too(server, request_file, tmp_path):
    run, result = bench(
        tmp_path, "model", "iris", "--grpc", server.grpc_address, "--grpc-contents", "typed",
        "--iterations", "50", "--data", str(request_file),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert result["requests"] == 50 and result["errors"] == 0


def test_the_benchmark_scripts_contract(server, request_file, tmp_path):
    """What benchmarks/mlserver_comparison.py runs: duration, warm-up, both transports."""
    for transport in (["--url", server.url], ["--grpc", server.grpc_address]):
        run, result = bench(
            tmp_path, "model", "iris", *transport, "--concurrency", "8", "--duration", "1",
            "--warmup", "0.5", "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert result["errors"] == 0 and result["requests"] > 0
        expected = result["requests"] / result["duration_s"]
        assert result["throughput"] == pytest.approx(expected, rel=0.01)
        assert 0.9 < result["duration_s"] < 5
        assert set(result["latency_ms"]) >= {"p50", "p90", "p99", "max"}
        assert isinstance(result["client_cpu_saturated"], bool)


def test_unknown_model_is_counted_by_status_and_fails_the_run(server, request_file, tmp_path):
    run, result = bench(
        tmp_path, "model", "nope", "--url", server.url, "--iterations", "40",
        "--data", str(request_file),
    )  # fmt: skip
    assert run.returncode == 1
    assert result["errors_by_status"] == {"404": 40}
    assert "40 of 40 requests failed (404 x40)" in run.stderr
    assert "model 'nope' not found" in run.stderr

    run, result = bench(
        tmp_path, "model", "nope", "--grpc", server.grpc_address, "--iterations", "40",
        "--data", str(request_file),
    )  # fmt: skip
    assert run.returncode == 1
    assert result["errors_by_status"] == {"NOT_FOUND": 40}
    assert "NOT_FOUND" in run.stderr and "'nope'" in run.stderr


def test_two_processes_merge_their_counts(server, request_file, tmp_path):
    run, result = bench(
        tmp_path, "model", "iris", "--url", server.url, "--processes", "2",
        "--concurrency", "4", "--iterations", "301", "--data", str(request_file),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert result["requests"] == 301
    assert result["processes"] == 2
    assert len(result["client_cpu"]) == 2


def test_open_loop_rate_sends_the_arrivals(server, request_file, tmp_path):
    run, result = bench(
        tmp_path, "model", "iris", "--url", server.url, "--rate", "200",
        "--iterations", "150", "--processes", "2", "--data", str(request_file),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert result["requests"] + result["dropped"] == 150
    assert result["mode"] == "open"
    # 150 arrivals at 200/s take 0.75 s; generous for a loaded machine
    assert 0.7 < result["duration_s"] < 10


def test_request_made_up_from_metadata_over_both_transports(server, tmp_path):
    for transport in (["--url", server.url], ["--grpc", server.grpc_address]):
        run, result = bench(
            tmp_path, "model", "iris-meta", *transport, "--iterations", "50", "--batch-size", "3"
        )
        assert run.returncode == 0, run.stderr
        assert result["requests"] == 50 and result["errors"] == 0


def test_model_without_input_metadata_asks_for_data(server, tmp_path):
    run, _ = bench(tmp_path, "model", "iris", "--url", server.url, "--iterations", "5")
    assert run.returncode == 2
    assert "declares no inputs" in run.stderr and "--data" in run.stderr


def test_unreachable_server_is_named(tmp_path, request_file):
    run, result = bench(
        tmp_path, "model", "iris", "--url", "http://127.0.0.1:9", "--iterations", "3",
        "--data", str(request_file),
    )  # fmt: skip
    assert run.returncode == 1
    assert result["errors_by_status"] == {"connect error": 3}
    assert "cannot connect to 127.0.0.1:9" in run.stderr


def test_ctrl_c_stops_the_run_and_reports_what_was_measured(server, request_file, tmp_path):
    out = tmp_path / "out.json"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "inferline", "bench", "model", "iris", "--url", server.url,
            "--processes", "2", "--concurrency", "2", "--duration", "300",
            "--data", str(request_file), "--json", str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: the test runner may have SIGINT ignored for its children
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(10)  # starting the load processes is slow on a loaded machine
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    result = json.loads(out.read_text())
    assert result["interrupted"] is True
    assert result["requests"] > 0 and result["errors"] == 0
    assert result["duration_s"] < 60
    assert "stopped early" in stdout


PID_RECORDER = """
    import os
    from pathlib import Path

    from inferline.protocol.types import InferenceResponse
    from inferline.runtimes import Runtime


    class PidRecorder(Runtime):
        async def predict(self, request):
            with open(Path(__file__).parent / "pids", "a") as pids:
                pids.write(f"{os.getpid()}\\n")
            return InferenceResponse(model_name=self.name, outputs=list(request.inputs))
"""


def test_grpc_channels_spread_the_load_over_a_servers_workers(
    serve, write_custom_model, request_file, tmp_path_factory, tmp_path
):
    folder = write_custom_model(
        tmp_path_factory.mktemp("pids") / "pids",
        {"name": "pids", "implementation": "model.PidRecorder"},
        PID_RECORDER,
    )
    workers = serve(folder, extra_args=("--workers", "2"))
    pids = folder / "pids"

    def served_by(channels: int) -> set[str]:
        pids.unlink(missing_ok=True)
        run, result = bench(
            tmp_path, "model", "pids", "--grpc", workers.grpc_address, "--channels",
            str(channels), "--concurrency", "16", "--iterations", "400",
            "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert result["requests"] == 400
        return set(pids.read_text().split())

    # One channel is one connection, which the kernel gives to one worker. Sixteen land on
    # the same worker with probability 2 / 2**16.
    assert len(served_by(1)) == 1
    assert len(served_by(16)) == 2
