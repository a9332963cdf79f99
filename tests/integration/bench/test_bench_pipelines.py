"""`inferline bench pipeline` against a real `inferline up`: synchronously through the router
(embedded bus), and asynchronously through Kafka topics (`up --kafka` on a Tansu broker)."""

import json
import subprocess
import sys

import pytest
from pipelines._platform import new_up, tfsimple_request

from inferline.examples import write_runtime_model

pytestmark = pytest.mark.slow


def _documents(model_dir) -> list[dict]:
    model = {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "tfsimple1"},
        "spec": {"storageUri": str(model_dir), "memory": "100Ki"},
    }
    pipeline = {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "tfsimple"},
        "spec": {"steps": [{"name": "tfsimple1"}], "output": {"steps": ["tfsimple1"]}},
    }
    return [model, pipeline]


def _start(tmp_path_factory, extra_args: list[str]):
    model_dir = write_runtime_model(tmp_path_factory.mktemp("models") / "tfsimple", "TfSimple")
    platform = new_up(tmp_path_factory, __name__)
    platform.extra_args = extra_args
    platform.start()
    platform.apply(_documents(model_dir))
    platform.wait_pipeline("tfsimple", timeout=120)
    return platform


@pytest.fixture(scope="module")
def request_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tfsimple.json"
    path.write_text(json.dumps(tfsimple_request()))
    return path


def bench(platform, tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out.json"
    run = subprocess.run(
        [sys.executable, "-m", "inferline", "bench", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=platform.cli_env,  # the router's address, as a user's shell would have it
    )
    return run, json.loads(out.read_text()) if out.exists() else {}


@pytest.fixture(scope="module")
def embedded_up(tmp_path_factory):
    platform = _start(tmp_path_factory, [])
    yield platform
    platform.stop()
    platform.http.close()


@pytest.fixture(scope="module")
def kafka_up(tmp_path_factory, tansu_broker):
    platform = _start(tmp_path_factory, ["--kafka", tansu_broker])
    yield platform
    platform.stop()
    platform.http.close()


@pytest.fixture(scope="module")
def stopped_later_up(tmp_path_factory):
    """A platform with the pipeline loaded, which a test stops to bench on its folder."""
    platform = _start(tmp_path_factory, [])
    yield platform
    platform.stop()
    platform.http.close()


class TestEmbedded:
    @pytest.fixture
    def up(self, embedded_up):
        return embedded_up

    def test_pipeline_through_the_router_over_rest_and_grpc(self, up, request_file, tmp_path):
        run, result = bench(
            up, tmp_path, "pipeline", "tfsimple", "--iterations", "60", "--concurrency", "4",
            "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert result["requests"] == 60 and result["errors"] == 0
        assert result["target"]["name"] == "tfsimple.pipeline"

        run, result = bench(
            up, tmp_path, "pipeline", "tfsimple", "--grpc", "router",
            "--iterations", "60", "--concurrency", "4", "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert result["requests"] == 60 and result["errors"] == 0
        assert result["target"]["address"] == up.grpc_address  # the router's, from the env

    def test_model_through_the_router_by_default(self, up, request_file, tmp_path):
        # No --url: the router at INFERLINE_INFER_HOST
        run, result = bench(
            up, tmp_path, "model", "tfsimple1", "--iterations", "30", "--data", str(request_file)
        )
        assert run.returncode == 0, run.stderr
        assert result["requests"] == 30 and result["errors"] == 0
        assert result["target"]["address"] == f"127.0.0.1:{up.http_port}"

    def test_a_bad_request_fails_in_the_step_and_is_counted(self, up, tmp_path):
        bad = tmp_path / "bad.json"
        bad.write_text(
            json.dumps(
                {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "INT32", "data": [1]}]}
            )
        )
        run, result = bench(
            up, tmp_path, "pipeline", "tfsimple", "--iterations", "5", "--data", str(bad)
        )
        assert run.returncode == 1
        assert result["errors_by_status"] == {"400": 5}
        assert "tfsimple1" in run.stderr


class TestKafka:
    @pytest.fixture
    def up(self, kafka_up):
        return kafka_up

    def test_pipeline_through_its_topics(self, up, tansu_broker, request_file, tmp_path):
        run, result = bench(
            up, tmp_path, "pipeline", "tfsimple", "--kafka", tansu_broker,
            "--iterations", "40", "--concurrency", "8", "--processes", "2",
            "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert result["requests"] == 40 and result["errors"] == 0
        assert result["target"]["kind"] == "kafka"

    def test_open_loop_through_the_topics(self, up, tansu_broker, request_file, tmp_path):
        run, result = bench(
            up, tmp_path, "pipeline", "tfsimple", "--kafka", tansu_broker,
            "--rate", "20", "--duration", "2", "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert result["requests"] == 40 and result["errors"] == 0

    def test_unknown_pipeline_names_its_topic(self, up, tansu_broker, request_file, tmp_path):
        run, _ = bench(
            up, tmp_path, "pipeline", "nope", "--kafka", tansu_broker, "--iterations", "1",
            "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 2
        assert "seldon.default.pipeline.nope" in run.stderr


class TestEmbeddedBus:
    """--embedded: the platform comes up inside the bench process from a stopped `up`'s folder
    (the only way to reach the embedded bus's topics from outside the `up` process)."""

    @pytest.fixture
    def prepared(self, stopped_later_up):
        return stopped_later_up

    def test_refused_while_up_owns_the_folder(self, prepared, request_file, tmp_path):
        run, _ = bench(
            prepared, tmp_path, "pipeline", "tfsimple", "--embedded", str(prepared.data_dir),
            "--iterations", "1", "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 2
        assert "already open" in run.stderr and "stop `inferline up`" in run.stderr

    def test_pipeline_through_the_embedded_topics(self, prepared, request_file, tmp_path):
        prepared.stop()
        run, result = bench(
            prepared, tmp_path, "pipeline", "tfsimple", "--embedded", str(prepared.data_dir),
            "--iterations", "50", "--concurrency", "8", "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert result["requests"] == 50 and result["errors"] == 0
        assert result["target"]["kind"] == "embedded"

        run, _ = bench(
            prepared, tmp_path, "pipeline", "nope", "--embedded", str(prepared.data_dir),
            "--iterations", "1", "--data", str(request_file),
        )  # fmt: skip
        assert run.returncode == 2
        assert "nope" in run.stderr
