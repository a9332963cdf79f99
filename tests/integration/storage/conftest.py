"""A moto S3 server and an HTTP file server on loopback ports, with the artifact cache in tmp."""

import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def artifact_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INFERLINE_CACHE_DIR", str(tmp_path / "artifact-cache"))
    for name in ("INFERLINE_STORAGE_SECRET", "INFERLINE_STORAGE_SECRET_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "artifact-cache"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_client(moto_endpoint, monkeypatch):
    """A boto3 client for the moto server; the process environment points s3:// at it too."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/inferline-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/inferline-test")
    monkeypatch.setenv("INFERLINE_S3_ENDPOINT", moto_endpoint)
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def web_root(tmp_path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP, and its base URL."""
    root = tmp_path / "web"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", _free_port()), partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
