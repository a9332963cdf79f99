"""`s3://` against a local moto server."""

import io
import json
import logging
import sys
import tarfile
import threading

import pytest
from storage_servers import Bucket, pin_aws_env, start_moto

from inferline.protocol.errors import InvalidModelURI
from inferline.storage import fetch
from inferline.storage.credentials import storage_secret

pytest.importorskip("s3fs")
pytest.importorskip("moto")

SETTINGS = {"name": "iris", "implementation": "sklearn"}


def put_model(bucket, prefix="iris"):
    bucket.put(f"{prefix}/model-settings.json", json.dumps(SETTINGS).encode())
    bucket.put(f"{prefix}/model.joblib", b"weights")
    bucket.put(f"{prefix}/2/model.joblib", b"weights v2")


def test_a_prefix_is_downloaded_whole(bucket, artifact_cache):
    put_model(bucket)
    bucket.put("iris-other/model.joblib", b"not ours")  # same leading characters, other prefix
    folder = fetch(bucket.uri("iris"))
    assert folder.is_dir() and folder.name == "iris"
    assert folder.is_relative_to(artifact_cache)
    assert json.loads((folder / "model-settings.json").read_text()) == SETTINGS
    assert (folder / "model.joblib").read_bytes() == b"weights"
    assert (folder / "2" / "model.joblib").read_bytes() == b"weights v2"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "2/model.joblib",
        "model-settings.json",
        "model.joblib",
    ]
    assert (fetch(bucket.uri("iris/")) / "model.joblib").read_bytes() == b"weights"


def test_a_whole_bucket(bucket):
    put_model(bucket)
    folder = fetch(bucket.uri())
    assert folder.name == bucket.name
    assert (folder / "iris" / "model.joblib").read_bytes() == b"weights"


def test_a_single_object_keeps_its_name(bucket):
    bucket.put("models/iris.joblib", b"one file")
    path = fetch(bucket.uri("models/iris.joblib"))
    assert path.is_file() and path.name == "iris.joblib"
    assert path.read_bytes() == b"one file"
    assert list(path.parent.iterdir()) == [path]  # a clean folder for settings_from_spec


def test_a_tar_gz_object_is_unpacked(bucket):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in (("iris/model-settings.json", b"{}"), ("iris/model.joblib", b"w")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    bucket.put("iris.tar.gz", buffer.getvalue())
    folder = fetch(bucket.uri("iris.tar.gz"))
    assert folder.is_dir() and folder.name == "iris"
    assert sorted(p.name for p in folder.iterdir()) == ["model-settings.json", "model.joblib"]


def test_a_missing_object_names_the_uri(bucket):
    put_model(bucket)
    with pytest.raises(InvalidModelURI, match=rf"s3://{bucket.name}/nothing-here.*no object"):
        fetch(bucket.uri("nothing-here"))


def test_a_missing_bucket_names_the_uri(bucket):
    with pytest.raises(InvalidModelURI, match=r"s3://no-such-bucket-inferline/iris.*bucket"):
        fetch("s3://no-such-bucket-inferline/iris")


def test_the_second_fetch_uses_the_cache(bucket, download_count):
    put_model(bucket)
    first = fetch(bucket.uri("iris"))
    second = fetch(bucket.uri("iris"))
    assert second == first
    assert len(download_count) == 1
    assert len(download_count[0]) == 3  # the three objects in one batch


def test_a_re_upload_is_a_new_version(bucket, download_count):
    put_model(bucket)
    first = fetch(bucket.uri("iris"))
    bucket.put("iris/model.joblib", b"retrained")
    second = fetch(bucket.uri("iris"))
    assert second != first
    assert (second / "model.joblib").read_bytes() == b"retrained"
    assert (first / "model.joblib").read_bytes() == b"weights"  # a running server may read it
    assert len(download_count) == 2


def test_concurrent_fetches_download_once(bucket, download_count):
    put_model(bucket)
    results, errors = [], []
    start = threading.Barrier(6)

    def worker():
        start.wait()
        try:
            results.append(fetch(bucket.uri("iris")))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(results) == 6 and len(set(results)) == 1
    assert len(download_count) == 1
    leftovers = [p.name for p in results[0].parents[2].iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


def test_refused_credentials_give_the_providers_message(bucket, monkeypatch):
    import moto.settings

    put_model(bucket)
    # From now on moto checks signatures against its IAM users, of which there are none.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(InvalidModelURI) as caught:
        fetch(bucket.uri("iris"))
    message = caught.value.message
    assert bucket.uri("iris") in message
    assert "access refused" in message
    assert "Access Key Id you provided does not exist" in message


def test_credentials_and_endpoint_from_a_secret_file(bucket, monkeypatch, tmp_path):
    put_model(bucket)
    secrets = tmp_path / "secrets"
    (secrets / "minio-secret").mkdir(parents=True)
    # As Kubernetes mounts Seldon's example Secret: one file per key, the rclone remote in YAML.
    (secrets / "minio-secret" / "s3").write_text(
        "type: s3\n"
        "name: s3\n"
        "parameters:\n"
        "  provider: minio\n"
        "  env_auth: false\n"
        "  access_key_id: from-the-secret\n"
        "  secret_access_key: from-the-secret\n"
        f"  endpoint: {bucket.endpoint}\n"
    )
    monkeypatch.setenv("INFERLINE_STORAGE_SECRET_DIR", str(secrets))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "INFERLINE_S3_ENDPOINT"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # fails loudly if not used
    seen_keys = []
    import s3fs

    original = s3fs.S3FileSystem.__init__

    def spy(self, *args, **kwargs):
        seen_keys.append(kwargs.get("key"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "__init__", spy)
    with storage_secret("minio-secret"):
        folder = fetch(bucket.uri("iris"))
    assert (folder / "model.joblib").read_bytes() == b"weights"
    assert seen_keys == ["from-the-secret"]


def test_no_credentials_anywhere_reads_anonymously(bucket, monkeypatch, caplog):
    bucket.client.put_bucket_acl(Bucket=bucket.name, ACL="public-read")
    bucket.put("iris/model.joblib", b"weights", ACL="public-read")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with caplog.at_level(logging.INFO, logger="inferline.storage.remote"):
        folder = fetch(bucket.uri("iris"))
    assert (folder / "model.joblib").read_bytes() == b"weights"
    assert "anonymously" in caplog.text


def test_an_unreachable_store_falls_back_to_the_cached_copy(monkeypatch, caplog):
    server, endpoint = start_moto()
    try:
        pin_aws_env(monkeypatch, endpoint)
        bucket = Bucket(endpoint)
        put_model(bucket)
        folder = fetch(bucket.uri("iris"))
    finally:
        server.stop()
    with caplog.at_level(logging.WARNING, logger="inferline.storage.remote"):
        assert fetch(bucket.uri("iris")) == folder
    assert "using the copy fetched before" in caplog.text
    with pytest.raises(InvalidModelURI, match=rf"cannot reach the store.*{bucket.uri('other')}"):
        fetch(bucket.uri("other"))


def test_without_s3fs_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(InvalidModelURI, match=r'pip install "inferline\[s3\]"'):
        fetch("s3://bucket/iris")
