"""`gs://` against gcp-storage-emulator, a local stand-in for the GCS JSON API."""

import json
import sys
import time

import pytest

from inferline.protocol.errors import InvalidModelURI
from inferline.storage import fetch

pytest.importorskip("gcsfs")
pytest.importorskip("gcp_storage_emulator")


def put_model(gcs, prefix="iris"):
    gcs.pipe(f"{gcs.bucket}/{prefix}/model-settings.json", b'{"implementation": "sklearn"}')
    gcs.pipe(f"{gcs.bucket}/{prefix}/model.joblib", b"weights")


def test_a_prefix_is_downloaded_whole(gcs, download_count):
    put_model(gcs)
    folder = fetch(f"gs://{gcs.bucket}/iris")
    assert folder.name == "iris"
    assert json.loads((folder / "model-settings.json").read_text()) == {"implementation": "sklearn"}
    assert (folder / "model.joblib").read_bytes() == b"weights"
    assert fetch(f"gs://{gcs.bucket}/iris") == folder
    assert len(download_count) == 1


def test_a_single_object(gcs):
    put_model(gcs)
    path = fetch(f"gs://{gcs.bucket}/iris/model.joblib")
    assert path.name == "model.joblib" and path.read_bytes() == b"weights"


def test_a_re_upload_is_a_new_version(gcs):
    put_model(gcs)
    first = fetch(f"gs://{gcs.bucket}/iris")
    gcs.pipe(f"{gcs.bucket}/iris/model.joblib", b"retrained")
    second = fetch(f"gs://{gcs.bucket}/iris")
    assert second != first and (second / "model.joblib").read_bytes() == b"retrained"


def test_missing_object_and_bucket_name_the_uri(gcs):
    put_model(gcs)
    with pytest.raises(InvalidModelURI, match=rf"gs://{gcs.bucket}/nothing.*no object"):
        fetch(f"gs://{gcs.bucket}/nothing")
    with pytest.raises(InvalidModelURI, match=r"gs://no-such-bucket-inferline/iris.*no object"):
        fetch("gs://no-such-bucket-inferline/iris")


def test_without_gcsfs_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(InvalidModelURI, match=r'pip install "inferline\[gcs\]"'):
        fetch("gs://bucket/iris")


def test_a_store_host_that_does_not_resolve_fails_at_once_naming_it(monkeypatch):
    # gcsfs alone retries this for about 50 s; ".invalid" never resolves (RFC 2606).
    monkeypatch.setenv("INFERLINE_GCS_ENDPOINT", "http://gcs.inferline.invalid:4443")
    started = time.monotonic()
    with pytest.raises(
        InvalidModelURI,
        match=r"cannot reach the store for model URI 'gs://bucket/iris'.*gcs\.inferline\.invalid "
        r"does not resolve",
    ):
        fetch("gs://bucket/iris")
    assert time.monotonic() - started < 10
