"""Local stand-ins for remote stores: a moto S3 server, a GCS emulator, an HTTP file server.

Every server listens on a free loopback port. Credential chains are pinned so no test reads a
developer's ~/.aws or asks a cloud metadata server for credentials.
"""

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_servers import Bucket, FileServer, free_port, pin_aws_env, start_moto


@pytest.fixture(autouse=True)
def artifact_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INFERLINE_CACHE_DIR", str(tmp_path / "artifact-cache"))
    for name in ("INFERLINE_STORAGE_SECRET", "INFERLINE_STORAGE_SECRET_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "artifact-cache"


# --- S3 -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    server, endpoint = start_moto()
    yield endpoint
    server.stop()


@pytest.fixture
def bucket(moto_endpoint, monkeypatch) -> Bucket:
    pin_aws_env(monkeypatch, moto_endpoint)
    return Bucket(moto_endpoint)


@pytest.fixture
def download_count(monkeypatch) -> list[list[str]]:
    """The remote paths of every object-store download, one list per download call."""
    from inferline.storage.remote import ObjectStoreStorage

    calls: list[list[str]] = []
    original = ObjectStoreStorage._get

    def counting(self, fs, remote, local, path):
        calls.append(list(remote))
        return original(self, fs, remote, local, path)

    monkeypatch.setattr(ObjectStoreStorage, "_get", counting)
    return calls


# --- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
def file_server(tmp_path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    server = FileServer(root)
    yield server
    server.stop()


# --- GCS ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    pytest.importorskip("gcsfs")
    emulator = pytest.importorskip("gcp_storage_emulator.server")
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    port = free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs(gcs_emulator, monkeypatch):
    """A fresh bucket on the emulator and a gcsfs file system to fill it."""
    import gcsfs.core

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.delenv("INFERLINE_GCS_ENDPOINT", raising=False)
    # Never ask a cloud metadata server for credentials.
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    fs = gcsfs.core.GCSFileSystem(token="anon", skip_instance_cache=True)
    name = f"models-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    fs.bucket = name
    return fs
