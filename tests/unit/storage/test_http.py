"""`http(s)://` against a local `http.server` in a thread."""

import io
import json
import logging
import os
import tarfile
import zipfile

import pytest

from inferline.protocol.errors import InvalidModelURI
from inferline.storage import fetch
from inferline.storage.credentials import storage_secret


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


MODEL = {"iris/model-settings.json": b'{"implementation": "sklearn"}', "iris/model.joblib": b"w"}


def test_a_single_file(file_server, artifact_cache):
    (file_server.root / "model.joblib").write_bytes(b"weights")
    path = fetch(f"{file_server.url}/model.joblib")
    assert path.name == "model.joblib" and path.read_bytes() == b"weights"
    assert path.is_relative_to(artifact_cache)
    assert list(path.parent.iterdir()) == [path]


def test_a_tar_gz_archive_is_unpacked(file_server):
    (file_server.root / "iris.tar.gz").write_bytes(tar_gz(MODEL))
    folder = fetch(f"{file_server.url}/iris.tar.gz")
    # The archive's one top-level folder is the model folder.
    assert folder.is_dir() and folder.name == "iris"
    assert json.loads((folder / "model-settings.json").read_text()) == {"implementation": "sklearn"}
    assert not list(folder.parent.parent.glob(".download-*"))  # the archive is not kept


def test_a_zip_archive_without_a_top_folder(file_server):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model-settings.json", "{}")
        archive.writestr("model.joblib", "w")
    (file_server.root / "iris.zip").write_bytes(buffer.getvalue())
    folder = fetch(f"{file_server.url}/iris.zip")
    assert folder.name == "iris"
    assert sorted(p.name for p in folder.iterdir()) == ["model-settings.json", "model.joblib"]


def test_404_names_the_url(file_server):
    url = f"{file_server.url}/missing/model.joblib"
    with pytest.raises(InvalidModelURI, match=rf"'{url}' not found \(HTTP 404\)"):
        fetch(url)


def test_a_url_naming_no_file_is_refused(file_server):
    with pytest.raises(InvalidModelURI, match="names no file"):
        fetch(f"{file_server.url}/models/")


def test_the_second_fetch_asks_only_for_headers(file_server):
    target = file_server.root / "model.joblib"
    target.write_bytes(b"weights")
    first = fetch(f"{file_server.url}/model.joblib")
    second = fetch(f"{file_server.url}/model.joblib")
    assert second == first
    assert file_server.gets("/model.joblib") == 1
    # A new file (new Last-Modified and length) is a new version.
    target.write_bytes(b"retrained weights")
    os.utime(target, (target.stat().st_atime, target.stat().st_mtime + 10))
    third = fetch(f"{file_server.url}/model.joblib")
    assert third != first and third.read_bytes() == b"retrained weights"
    assert file_server.gets("/model.joblib") == 2


def test_a_refused_head_falls_back_to_get(file_server):
    (file_server.root / "nohead").mkdir()
    (file_server.root / "nohead" / "model.joblib").write_bytes(b"weights")
    url = f"{file_server.url}/nohead/model.joblib"
    assert fetch(url).read_bytes() == b"weights"
    assert fetch(url).read_bytes() == b"weights"
    # Two probes (whose bodies are not read) and one download.
    assert file_server.gets("/nohead/model.joblib") == 3


def test_headers_from_a_secret(file_server, tmp_path, monkeypatch):
    (file_server.root / "model.joblib").write_bytes(b"weights")
    file_server.required_headers = {"Authorization": "Bearer s3cret"}
    url = f"{file_server.url}/model.joblib"
    with pytest.raises(InvalidModelURI, match=r"access refused \(HTTP 401\)"):
        fetch(url)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "web.yaml").write_text(
        "type: http\nparameters:\n  headers: 'Authorization,Bearer s3cret'\n"
    )
    monkeypatch.setenv("INFERLINE_STORAGE_SECRET_DIR", str(secrets))
    with storage_secret("web"):
        assert fetch(url).read_bytes() == b"weights"


def test_a_password_in_the_url_stays_out_of_messages_and_files(file_server, artifact_cache):
    (file_server.root / "model.joblib").write_bytes(b"weights")
    host = file_server.url.removeprefix("http://")
    path = fetch(f"http://user:hunter2@{host}/model.joblib")
    assert path.read_bytes() == b"weights"
    written = [p.read_text() for p in artifact_cache.rglob("*") if p.suffix in (".json", ".txt")]
    assert written and not any("hunter2" in text for text in written)
    with pytest.raises(InvalidModelURI) as caught:
        fetch(f"http://user:hunter2@{host}/missing.joblib")
    assert "hunter2" not in caught.value.message


def test_an_unreachable_server_falls_back_to_the_cached_copy(file_server, caplog):
    (file_server.root / "model.joblib").write_bytes(b"weights")
    url = f"{file_server.url}/model.joblib"
    path = fetch(url)
    file_server.stop()
    with caplog.at_level(logging.WARNING, logger="inferline.storage.http"):
        assert fetch(url) == path
    assert "using the copy fetched before" in caplog.text
    with pytest.raises(InvalidModelURI, match="cannot read model URI"):
        fetch(f"{file_server.url}/other.joblib")
