"""The Alibi runtimes' tests: the libraries pin numpy below 2, so they live in a virtualenv of
their own, `.venv-alibi` at the repository root, which this module builds with
`uv pip install -e ".[alibi-detect,alibi-explain,sklearn]"` the first time and again whenever the
requirements it installs change in pyproject.toml (an editable install: source changes need no
rebuild).

The tests drive processes started from that virtualenv with the main one's clients
(tritonclient, httpx, the CLI). A failed build fails the tests with the installer's output: they
must not pass by being skipped where the network is missing.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inferline.demo import free_port, train_iris, wait_until_ready

ROOT = Path(__file__).resolve().parents[3]
VENV = ROOT / ".venv-alibi"
EXTRA_NAMES = ("alibi-detect", "alibi-explain", "sklearn")
EXTRAS = f".[{','.join(EXTRA_NAMES)}]"
STAMP = VENV / "inferline-build-key"
BUILD_LOG = ROOT / ".venv-alibi.log"  # ignored by git, as the virtualenv is
# Generous for a loaded machine with a cold download cache.
BUILD_TIMEOUT = 1200


def build_key() -> str:
    """What the virtualenv is built from: the core's and these extras' requirements, the build
    system and this Python (other edits of pyproject.toml need no rebuild)."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = doc["project"]
    extras = project.get("optional-dependencies", {})
    inputs = {
        "build-system": doc.get("build-system"),
        "dependencies": project.get("dependencies"),
        "extras": {name: extras.get(name) for name in EXTRA_NAMES},
        "command": EXTRAS,
        "python": list(sys.version_info[:3]),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _run(command: list[str], what: str) -> None:
    started = time.monotonic()
    with BUILD_LOG.open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        result = subprocess.run(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT
        )
        log.write(f"# {what}: exit {result.returncode} after {time.monotonic() - started:.0f} s\n")
    if result.returncode != 0:
        tail = "\n".join(BUILD_LOG.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"{what} failed (exit {result.returncode}); {BUILD_LOG}:\n{tail}")


@pytest.fixture(scope="session")
def alibi_python() -> Path:
    """The Alibi virtualenv's python, built if missing or out of date."""
    python = VENV / "bin" / "python"
    key = build_key()
    if python.exists() and STAMP.exists() and STAMP.read_text() == key:
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    BUILD_LOG.write_text("")
    started = time.monotonic()
    # uv (a dev dependency) builds it in about 15 s where pip took 200-400 s here: it downloads
    # and unpacks the ~1 GB of wheels in parallel.
    uv = [sys.executable, "-m", "uv"]
    _run(
        [*uv, "venv", "--quiet", "--python", sys.executable, str(VENV)],
        "creating the venv",
    )
    _run(
        [*uv, "pip", "install", "--quiet", "--python", str(python), "-e", EXTRAS],
        f'uv pip install -e "{EXTRAS}" into {VENV}',
    )
    STAMP.write_text(key)
    with BUILD_LOG.open("a") as log:
        log.write(f"# built in {time.monotonic() - started:.0f} s\n")
    return python


@pytest.fixture(scope="session")
def alibi_artifacts(alibi_python, tmp_path_factory) -> Path:
    """Detectors and an anchor explainer trained and saved by the Alibi libraries themselves."""
    out = tmp_path_factory.mktemp("alibi-artifacts")
    script = Path(__file__).with_name("make_artifacts.py")
    result = subprocess.run(
        [str(alibi_python), str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"make_artifacts.py failed:\n{result.stdout}\n{result.stderr}"
    return out


class AlibiServe:
    """`inferline serve` with the Alibi virtualenv's python; the ports are chosen first, so
    model settings can name them before `start`."""

    def __init__(self, python: Path, models: Path, log_path: Path):
        self.python, self.models, self.log_path = python, models, log_path
        self.http_port, self.grpc_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> "AlibiServe":
        command = [str(self.python), "-m", "inferline", "serve", str(self.models)]
        command += ["--host", "127.0.0.1", "--http-port", str(self.http_port)]
        command += ["--grpc-port", str(self.grpc_port)]
        with self.log_path.open("ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        try:
            # Importing alibi (transformers, spaCy, numba) takes a while on a loaded machine.
            wait_until_ready(self.http_port, self.process, timeout=180)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"inferline serve failed: {exc}\n{self.log()}") from exc
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def alibi_serve(alibi_python) -> Iterator[Callable[[Path, Path], AlibiServe]]:
    """`alibi_serve(models, log_path)`: a server not yet started; all are stopped with the
    module."""
    made: list[AlibiServe] = []

    def make(models: Path, log_path: Path) -> AlibiServe:
        made.append(AlibiServe(alibi_python, models, log_path))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="module")
def detect_server(alibi_serve, alibi_artifacts, tmp_path_factory) -> AlibiServe:
    """One server, from the Alibi virtualenv, holding every detector folder."""
    log_path = tmp_path_factory.mktemp("alibi-serve") / "serve.log"
    return alibi_serve(alibi_artifacts / "detect", log_path).start()


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory) -> Path:
    """The iris classifier, trained in the main virtualenv for the main one's servers."""
    return train_iris(tmp_path_factory.mktemp("iris") / "iris")
