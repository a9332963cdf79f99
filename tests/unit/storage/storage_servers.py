"""Local stand-ins for remote stores, shared by the storage tests' fixtures."""

import http.server
import logging
import socket
import threading
import uuid
from functools import partial
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def pin_aws_env(monkeypatch, endpoint: str | None) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/inferline-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/inferline-test")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    if endpoint is None:
        monkeypatch.delenv("INFERLINE_S3_ENDPOINT", raising=False)
    else:
        monkeypatch.setenv("INFERLINE_S3_ENDPOINT", endpoint)


class Bucket:
    """A fresh bucket on the moto server, with helpers to fill it."""

    def __init__(self, endpoint: str):
        import boto3

        self.endpoint = endpoint
        self.name = f"models-{uuid.uuid4().hex[:12]}"
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.client.create_bucket(Bucket=self.name)

    def put(self, key: str, body: bytes, **options) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body, **options)

    def put_folder(self, prefix: str, folder: Path) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.put(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())

    def uri(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}" if key else f"s3://{self.name}"


class FileServer:
    """Serves a folder over HTTP; records each request; HEAD refused under /nohead/."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str]] = []
        self.required_headers: dict[str, str] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _allowed(self) -> bool:
                server.requests.append((self.command, self.path))
                for key, value in server.required_headers.items():
                    if self.headers.get(key) != value:
                        self.send_error(401, "a token is needed")
                        return False
                return True

            def do_GET(self):
                if self._allowed():
                    super().do_GET()

            def do_HEAD(self):
                if not self._allowed():
                    return
                if self.path.startswith("/nohead/"):
                    self.send_error(405, "HEAD not allowed")
                    return
                super().do_HEAD()

        handler = partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def gets(self, path: str) -> int:
        return sum(1 for method, p in self.requests if method == "GET" and p == path)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
