"""A real `inferline up` for the pipeline tests, and Seldon Core 2's pipeline samples made local.

`Up` starts `sys.executable -m inferline up --servers 1` on free ports in its own process group,
logging to a file (shown when a test fails), and stops it with SIGINT (then SIGKILL to the group,
so no model server outlives the tests). The scheduler's HTTP API is read directly for the states
the tests wait on; calls go through the router over REST (httpx) and gRPC (tritonclient).

`sample_documents` loads a sample with PyYAML and makes it runnable here: every Model's
`storageUri` points at the local folder of the model it stands for (written by
`inferline.examples.EXAMPLES`) and its `requirements` (triton, tensorflow) are dropped.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from control_plane._platform import NotYet, tail, wait_until

from inferline.demo import free_port

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "conformance" / "seldon-samples"
SKIP_REASON = f"Seldon Core 2 samples not found at {SAMPLES}"

# Seldon sample Model name -> folder of `inferline.examples.EXAMPLES` that stands for it.
MODEL_FOLDERS = {
    "tfsimple1": "tfsimple",
    "tfsimple2": "tfsimple",
    "tfsimple3": "tfsimple",
    "add10": "add10",
    "mul10": "mul10",
    "conditional": "conditional",
    "check": "check",
    "outlier-error": "outlier-error",
}

# Per test module, the log files of the processes it started (shown when one of its tests fails).
MODULE_LOGS: dict[str, list[Path]] = {}


# --- samples -----------------------------------------------------------------------------------


def sample_documents(path: str, model_root: Path) -> list[dict[str, Any]]:
    """The documents of a sample file, made runnable on this machine (see the module doc)."""
    docs = [doc for doc in yaml.safe_load_all((SAMPLES / path).read_text()) if doc]
    for doc in docs:
        if doc["kind"] != "Model":
            continue
        name = doc["metadata"]["name"]
        doc["spec"]["storageUri"] = str((model_root / MODEL_FOLDERS[name]).resolve())
        doc["spec"].pop("requirements", None)
    return docs


def model_samples(names: Iterable[str], model_root: Path) -> list[dict[str, Any]]:
    return [doc for name in names for doc in sample_documents(f"models/{name}.yaml", model_root)]


def to_yaml(docs: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


# --- tensors -----------------------------------------------------------------------------------


def tensor(name: str, datatype: str, shape: list[int], data: list) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def tfsimple_request(values: list[int] | None = None) -> dict[str, Any]:
    """INPUT0 and INPUT1 INT32 [1, 16], both `values` (1..16 unless given)."""
    values = values if values is not None else list(range(1, 17))
    return {
        "inputs": [
            tensor("INPUT0", "INT32", [1, 16], values),
            tensor("INPUT1", "INT32", [1, 16], values),
        ]
    }


def outputs_by_name(body: dict[str, Any]) -> dict[str, list]:
    """{name: flat data} of a V2 JSON response (names must be unique)."""
    names = [o["name"] for o in body["outputs"]]
    assert len(names) == len(set(names)), f"duplicate output names: {names}"
    return {o["name"]: list(np.ravel(o["data"])) for o in body["outputs"]}


# --- the platform ------------------------------------------------------------------------------


@dataclass
class Up:
    """One `inferline up` on free ports with a data dir of its own; `start` may be called again
    after `stop` (same ports, same data dir) to restart it."""

    workdir: Path
    module: str
    servers: int = 1
    scheduler_port: int = 0
    http_port: int = 0
    grpc_port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    starts: int = 0
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    # More `inferline up` flags, e.g. ["--kafka", "127.0.0.1:9092"].
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.scheduler_port, self.http_port, self.grpc_port = sorted(ports)

    # --- addresses ----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def scheduler_url(self) -> str:
        return f"http://127.0.0.1:{self.scheduler_port}"

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INFERLINE_SCHEDULER_HOST": f"127.0.0.1:{self.scheduler_port}",
            "INFERLINE_INFER_HOST": f"127.0.0.1:{self.http_port}",
            "INFERLINE_INFER_GRPC_HOST": self.grpc_address,
            "COLUMNS": "400",
        }

    # --- the process --------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> "Up":
        self.starts += 1
        # A log per start, so a previous run's "is up" line cannot satisfy the wait below.
        self.log_path = self.workdir / f"up.{self.starts}.log"
        MODULE_LOGS.setdefault(self.module, []).append(self.log_path)
        args = [
            "up", "--servers", str(self.servers), "--data-dir", str(self.data_dir),
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--scheduler-port", str(self.scheduler_port), "--host", "127.0.0.1",
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log_file:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [sys.executable, "-m", "inferline", *args],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        wait_until(
            lambda: "inferline is up:" in self.log_path.read_text(errors="replace"),
            timeout,
            "`inferline up` to print 'inferline is up:'",
            alive=self.assert_alive,
        )
        wait_until(
            lambda: self.get("/v1/servers/mlserver").json()["availableReplicas"] == self.servers,
            timeout,
            f"{self.servers} server replica(s) to connect",
            alive=self.assert_alive,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def assert_alive(self) -> None:
        assert self.alive(), (
            f"inferline up exited with code {self.process.returncode}:\n{tail(self.log_path)}"
        )

    def stop(self, timeout: float = 30) -> int | None:
        """SIGINT (as Ctrl-C); the exit code, or None if it had to be killed. Whatever is left
        of its process group (model servers) is killed either way."""
        if self.process is None:
            return None
        code: int | None = self.process.returncode
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                code = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        return code

    def server_logs(self) -> list[Path]:
        return sorted((self.data_dir / "logs").glob("*.log"))

    # --- the scheduler ------------------------------------------------------------------------

    def get(self, path: str, **params) -> httpx.Response:
        return self.http.get(f"{self.scheduler_url}{path}", params=params or None)

    def apply(self, docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST the documents to /v1/resources, as `inferline load -f` does."""
        answer = self.http.post(f"{self.scheduler_url}/v1/resources", content=to_yaml(docs))
        assert answer.status_code == 200, f"apply: {answer.status_code} {answer.text}"
        return answer.json()

    def pipeline(self, name: str) -> dict[str, Any]:
        answer = self.get(f"/v1/pipelines/{name}")
        assert answer.status_code == 200, f"GET /v1/pipelines/{name}: {answer.text}"
        return answer.json()

    def wait_pipeline(self, name: str, version: int | None = None, timeout: float = 60) -> dict:
        """Wait until the pipeline (at `version`, if given) is PipelineReady with its models."""

        def check():
            status = self.pipeline(name)
            ok = status["state"] == "PipelineReady" and status["modelsReady"]
            if not ok or (version is not None and status["version"] != version):
                raise NotYet(
                    f"version {status['version']} {status['state']} {status['reason']!r}, "
                    f"models {status['models']}"
                )
            return status

        return wait_until(check, timeout, f"pipeline '{name}' to be ready", alive=self.assert_alive)

    def wait_pipelines(self, names: Iterable[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            self.wait_pipeline(name, timeout=max(1.0, deadline - time.monotonic()))

    def server_pids(self, name: str = "mlserver") -> list[int]:
        return [r["pid"] for r in self.get(f"/v1/servers/{name}").json()["replicas"]]

    def inspect(self, expression: str, request_id: str | None = None, offset: int = 1):
        params: dict[str, Any] = {"expression": expression, "offset": offset}
        if request_id is not None:
            params["requestId"] = request_id
        answer = self.get("/v1/inspect", **params)
        assert answer.status_code == 200, f"inspect {expression}: {answer.text}"
        return answer.json()

    def cli(self, *args: str, expect: int | None = 0, timeout: float = 60):
        result = subprocess.run(
            [sys.executable, "-m", "inferline", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.cli_env,
            cwd=self.workdir,
            timeout=timeout,
        )
        if expect is not None:
            assert result.returncode == expect, (
                f"`inferline {' '.join(args)}` exited with {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    # --- the router ---------------------------------------------------------------------------

    def infer(
        self,
        pipeline: str,
        payload: dict,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> httpx.Response:
        """POST a V2 JSON request to `path` (default `/v2/pipelines/<pipeline>/infer`)."""
        return self.http.post(
            self.router_url + (path or f"/v2/pipelines/{pipeline}/infer"),
            json=payload,
            headers=headers,
            timeout=timeout,
        )

    def infer_ok(self, pipeline: str, payload: dict, **kwargs) -> httpx.Response:
        answer = self.infer(pipeline, payload, **kwargs)
        assert answer.status_code == 200, f"{pipeline}: {answer.status_code} {answer.text}"
        return answer


def new_up(tmp_path_factory, module: str, servers: int = 1) -> Up:
    return Up(workdir=tmp_path_factory.mktemp("up"), module=module, servers=servers)
