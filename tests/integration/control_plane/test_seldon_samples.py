"""Seldon Core 2's own sample Models against a running `inferline up` (conformance corpus, see
its INDEX.md): the iris ones load with their storageUri pointed at a local iris artifact and
answer; the negative ones fail as Seldon's do, at the CLI, at scheduling or at load.
"""

import json
import shutil

import pytest
import yaml

from ._platform import (
    SAMPLES,
    NotYet,
    Up,
    one_error_line,
    wait_until,
    with_storage_uri,
    write_file,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"SC2 samples not found at {SAMPLES}"),
]

# Iris Models (INDEX.md: "R", an iris classifier on any storage): all load the same artifact.
IRIS_SAMPLES = [
    "models/sklearn1.yaml",
    "models/sklearn2.yaml",
    "models/sklearn3.yaml",
    "models/iris-v1.yaml",
    "models/iris-v2.yaml",
    "models/iris2.yaml",
    "models/sklearn-iris-gs.yaml",
    "models/sklearn-iris-local.yaml",
]

# Rejected by `inferline load -f` before anything is stored: the reason each names.
INVALID_SAMPLES = {
    "models/id1_node.yaml": "model name 'id1_node' is not valid: underscores are not allowed",
    "models/error-bad-spec.yaml": "unknown field 'spec.storagUri'",
    "experiments/error-bad-spec.yaml": "unknown field 'spec.candidate'",
    "pipelines/error-bad-spec.yaml": "unknown field 'spec.steps[1].input'",
}

NO_MATCHING_SERVERS = "Failed to schedule model as no matching servers are available"
SETTLED = ("ModelAvailable", "ModelFailed", "ScheduleFailed")


@pytest.fixture(scope="module")
def up(up_factory) -> Up:
    return up_factory(1)


def sample(path: str) -> tuple[str, str]:
    """A sample's text and its metadata.name."""
    text = (SAMPLES / path).read_text()
    return text, yaml.safe_load(text)["metadata"]["name"]


def remove(up: Up, name: str) -> None:
    """Delete a model and wait until no server holds it, so its name can be used again."""
    up.delete_model(name)
    wait_until(
        lambda: not any(r["loadedModels"] for r in up.server()["replicas"]),
        20,
        f"'{name}' to be unloaded",
    )


def settled(up: Up, name: str, timeout: float = 30) -> dict:
    def check():
        status = up.model(name)
        if status["state"] not in SETTLED:
            raise NotYet(f"{status['state']} {status['reason']!r}")
        return status

    return wait_until(check, timeout, f"model '{name}' to leave ModelProgressing")


@pytest.mark.parametrize("path", IRIS_SAMPLES)
def test_iris_sample_loads_and_answers(up, iris_artifact, path):
    text, name = sample(path)
    manifest = write_file(up.workdir, path.replace("/", "-"), with_storage_uri(text, iris_artifact))
    try:
        assert up.cli("load", "-f", str(manifest)).stdout.strip() == f"model/{name} created"
        status = up.wait_model(name, version=1, replicas=1)
        assert status["versions"][0]["modelDefn"]["requirements"] == ["sklearn"]
        up.wait_iris_answers(name, f"{name}_1")
    finally:
        remove(up, name)


@pytest.mark.parametrize("path", sorted(INVALID_SAMPLES))
def test_invalid_sample_is_rejected_by_load_with_one_line(up, path):
    result = up.cli("load", "-f", str(SAMPLES / path), expect=1)
    line = one_error_line(result)
    assert INVALID_SAMPLES[path] in line
    _, name = sample(path)
    kind = yaml.safe_load((SAMPLES / path).read_text())["kind"].lower()
    assert up.get(f"/v1/{kind}s/{name}").status_code == 404, "nothing may be stored"


def test_bad_capabilities_sample_is_schedule_failed(up):
    path = SAMPLES / "models/error-bad-capabilities.yaml"
    assert up.cli("load", "-f", str(path)).stdout.strip() == "model/badcapabilities created"
    result = up.cli(
        "model", "status", "badcapabilities", "-w", "ScheduleFailed", "-t", "20", "--json"
    )
    status = json.loads(result.stdout)
    assert status["reason"] == NO_MATCHING_SERVERS
    assert status["availableReplicas"] == 0
    up.delete_model("badcapabilities")


def test_uri_that_does_not_exist_is_model_failed_naming_the_path(up):
    text, name = sample("models/error-uri-notexist.yaml")
    missing = up.workdir / "seldon-models" / "scv2" / "xyz"
    manifest = write_file(up.workdir, "error-uri-notexist.yaml", with_storage_uri(text, missing))
    try:
        up.cli("load", "-f", str(manifest))
        status = up.wait_model(name, state="ModelFailed", timeout=30)
        assert str(missing) in status["reason"]
        assert status["versions"][0]["modelReplicaState"]["0"]["state"] == "LoadFailed"
        answer = up.infer(name)
        assert answer.status_code == 503, answer.text
    finally:
        remove(up, name)


def test_an_unreachable_gs_uri_is_model_failed_naming_it(up):
    # This machine resolves no Google host: the model fails at once (not after gcsfs's retries)
    # with the URI and the host in the reason; the server lives on.
    path = SAMPLES / "models/sklearn-iris-gs-baduri.yaml"
    _, name = sample("models/sklearn-iris-gs-baduri.yaml")
    try:
        up.cli("load", "-f", str(path))
        status = up.wait_model(name, state="ModelFailed", timeout=150)
        reason = status["reason"]
        assert "gs://seldon-models/scv2/samples/mlserver_1.6.0/iris-notexistent-uri" in reason
        assert "storage.googleapis.com does not resolve" in reason
    finally:
        remove(up, name)


def test_empty_storage_uri_sample_fails_to_load(up, iris_artifact):
    # The servers run in the folder `inferline up` was started in; put a model there.
    shutil.copy(iris_artifact / "model.joblib", up.workdir / "model.joblib")
    _, name = sample("models/error-no-uri.yaml")
    try:
        up.cli("load", "-f", str(SAMPLES / "models/error-no-uri.yaml"))
        status = settled(up, name)
        assert status["state"] == "ModelFailed", status
        assert "empty" in status["reason"].lower(), status["reason"]
    finally:
        (up.workdir / "model.joblib").unlink()
        remove(up, name)
