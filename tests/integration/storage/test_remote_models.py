"""A model in S3 or behind a URL becomes settings whose runtime loads and predicts.

The path a Model resource's `storageUri` takes on a server: `settings_from_spec` fetches it
(into the artifact cache), reads its model-settings.json, and the runtime loads from there.
"""

import tarfile
import uuid

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

from inferline.agent.settings import settings_from_spec
from inferline.examples import train_iris
from inferline.protocol.types import InferenceRequest, Tensor
from inferline.runtimes.registry import runtime_class
from inferline.storage.credentials import storage_secret

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def iris_folder(tmp_path_factory):
    return train_iris(tmp_path_factory.mktemp("trained") / "iris")


def upload(client, bucket: str, prefix: str, folder) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


async def assert_predicts_like(settings, iris_folder):
    runtime = runtime_class(settings)(settings)
    await runtime.load()
    rows = load_iris().data[[0, 50, 100, 77]]
    response = await runtime.predict(InferenceRequest(inputs=[Tensor.from_numpy("x", rows)]))
    expected = joblib.load(iris_folder / "model.joblib").predict(rows)
    assert np.asarray(response.outputs[0].data).ravel().tolist() == expected.tolist()
    await runtime.unload()


async def test_an_s3_model_loads_and_predicts(s3_client, iris_folder, artifact_cache):
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    upload(s3_client, bucket, "iris", iris_folder)
    settings = settings_from_spec("iris_1", 1, {"storageUri": f"s3://{bucket}/iris"})
    assert settings.name == "iris_1" and settings.version == "1"
    assert settings.folder.is_relative_to(artifact_cache)
    await assert_predicts_like(settings, iris_folder)
    # A second replica on this machine gets the same folder without downloading.
    again = settings_from_spec("iris_1", 1, {"storageUri": f"s3://{bucket}/iris"})
    assert again.folder == settings.folder


async def test_numbered_versions_and_a_secret(s3_client, iris_folder, tmp_path, monkeypatch):
    """Seldon's `artifactVersion` folders, read with credentials from the Model's secretName."""
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    upload(s3_client, bucket, "iris/1", iris_folder)
    upload(s3_client, bucket, "iris/2", iris_folder)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    endpoint = s3_client.meta.endpoint_url
    (secrets / "s3-models.yaml").write_text(
        "type: s3\nparameters:\n  access_key_id: k\n  secret_access_key: s\n"
        f"  endpoint: {endpoint}\n"
    )
    monkeypatch.setenv("INFERLINE_STORAGE_SECRET_DIR", str(secrets))
    monkeypatch.delenv("INFERLINE_S3_ENDPOINT")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # fails loudly if not used
    spec = {"storageUri": f"s3://{bucket}/iris", "secretName": "s3-models"}
    # How the agent hands the Model's secretName to storage.
    with storage_secret(spec.get("secretName")):
        settings = settings_from_spec("iris_3", 3, spec)
    assert settings.folder.name == "2"  # the highest version folder
    await assert_predicts_like(settings, iris_folder)


async def test_a_tar_gz_behind_a_url_loads_and_predicts(web_root, iris_folder):
    root, url = web_root
    with tarfile.open(root / "iris.tar.gz", "w:gz") as archive:
        archive.add(iris_folder, arcname="iris")
    settings = settings_from_spec("iris_2", 2, {"storageUri": f"{url}/iris.tar.gz"})
    assert settings.folder.name == "iris"
    await assert_predicts_like(settings, iris_folder)
