"""Conformance: Seldon Core 2's own sample manifests load, and its negative samples fail.

The samples live beside the repository (`../shared/conformance/seldon-samples`, see its
INDEX.md). The expected failures below are taken from INDEX.md; every other file must load.
"""

from pathlib import Path

import pytest

from inferline.resources import ResourceError, load_resource_file

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "conformance" / "seldon-samples"

pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"Seldon Core 2 samples not found at {SAMPLES}"
)

# The folders of SC2 resources (plus the obsolete Explainer kind), each file loaded in full.
FOLDERS = ("models", "pipelines", "experiments", "servers", "quickstart", "explainers")

# INDEX.md's negative and stale samples, with the reason each must be rejected for.
EXPECTED_INVALID = {
    # Stale underscore names: the scheduler's name rule rejects them.
    "models/id1_node.yaml": "model name 'id1_node' is not valid: underscores are not allowed",
    "models/id2_node.yaml": "model name 'id2_node' is not valid: underscores are not allowed",
    "models/join_node.yaml": "model name 'join_node' is not valid: underscores are not allowed",
    "pipelines/triggers_join_inputs.yaml": (
        "pipeline name 'triggers_join_inputs' is not valid: underscores are not allowed"
    ),
    "pipelines/triggers_join_internal.yaml": (
        "pipeline name 'triggers_join_internal' is not valid: underscores are not allowed"
    ),
    # Strict decoding: typos are unknown fields.
    "models/error-bad-spec.yaml": "unknown field 'spec.storagUri'",
    "pipelines/error-bad-spec.yaml": "unknown field 'spec.steps[1].input'",
    "experiments/error-bad-spec.yaml": "unknown field 'spec.candidate'",
    # Pipeline validation.
    "pipelines/error-empty-input.yaml": "step second has an empty input",
    "pipelines/error-empty-trigger.yaml": "step third has an empty trigger",
    "pipelines/error-step-name.yaml": (
        "must not have a step name with the same name as pipeline name"
    ),
    # A dot in a server name.
    "servers/mlserver-badname.yaml": "server name 'mlserver.name' is not valid: dots",
    # The early Explainer kind.
    "explainers/explainers.yaml": "kind 'Explainer' is obsolete",
}

# Negative samples in INDEX.md that fail only when loaded or scheduled, never when parsed.
FAIL_LATER = (
    "models/error-bad-capabilities.yaml",  # no server has capability foobar: ScheduleFailed
    "models/error-no-uri.yaml",  # empty storageUri: the load fails on the server
    "models/error-uri-notexist.yaml",  # bucket path does not exist: ModelFailed
    "models/sklearn-iris-gs-baduri.yaml",  # same
)

# Outside the SC2 folders: Kubernetes and kind objects that are not SC2 resources.
NOT_SC2 = {
    "auth/agent.yaml": "kind 'ConfigMap' (apiVersion v1) is not an inferline resource",
    "auth/minio-secret.yaml": "kind 'Secret' (apiVersion v1) is not an inferline resource",
    "examples/k8s-pvc/pvc.yaml": "kind 'StorageClass' (apiVersion storage.k8s.io/v1)",
    "examples/k8s-pvc/kind-config.yaml": "kind 'Cluster' (apiVersion kind.x-k8s.io/v1alpha4)",
}


def sample_files(*folders: str) -> list[str]:
    if not SAMPLES.is_dir():
        return []
    return sorted(
        path.relative_to(SAMPLES).as_posix()
        for folder in folders
        for path in (SAMPLES / folder).rglob("*.yaml")
    )


def test_the_expected_lists_name_real_files():
    for name in [*EXPECTED_INVALID, *FAIL_LATER, *NOT_SC2]:
        assert (SAMPLES / name).is_file(), name
    # Every folder has samples, so a moved folder cannot make the tests pass vacuously.
    for folder in FOLDERS:
        assert sample_files(folder), folder


@pytest.mark.parametrize("name", sample_files(*FOLDERS))
def test_sample(name):
    path = SAMPLES / name
    if name in EXPECTED_INVALID:
        with pytest.raises(ResourceError) as caught:
            load_resource_file(path)
        assert EXPECTED_INVALID[name] in caught.value.message
        assert str(path) in caught.value.message
        assert "\n" not in caught.value.message
    else:
        resources = load_resource_file(path)
        assert resources, f"{name} holds no resource"


@pytest.mark.parametrize("name", FAIL_LATER)
def test_load_time_failures_parse(name):
    (resource,) = load_resource_file(SAMPLES / name)
    assert resource.kind == "Model"


@pytest.mark.parametrize("name", sample_files("examples", "auth", "integration-testdata"))
def test_other_folders(name):
    """SC2 resources in the other folders load; Kubernetes objects are rejected by kind."""
    path = SAMPLES / name
    if name in NOT_SC2:
        with pytest.raises(ResourceError) as caught:
            load_resource_file(path)
        assert NOT_SC2[name] in caught.value.message
    else:
        assert load_resource_file(path)


def test_a_few_samples_in_detail():
    (iris,) = load_resource_file(SAMPLES / "models/sklearn-iris-gs.yaml")
    assert iris.spec.memory == 100 * 1024 and iris.spec.requirements == ["sklearn"]
    (scaling,) = load_resource_file(SAMPLES / "models/tfsimple_scaling.yaml")
    assert (scaling.spec.replicas, scaling.spec.min_replicas) == (1, 1)
    (explainer,) = load_resource_file(SAMPLES / "models/income-explainer-pipeline.yaml")
    assert explainer.spec.explainer.pipeline_ref == "income-prod"
    (chained,) = load_resource_file(SAMPLES / "pipelines/tfsimple-extended-step.yaml")
    assert chained.spec.input.external_inputs == ["tfsimple.step.tfsimple1.outputs"]
    (mirror,) = load_resource_file(SAMPLES / "experiments/addmul10-mirror.yaml")
    assert mirror.spec.resource_type == "pipeline" and mirror.spec.mirror.percent == 100
    (server,) = load_resource_file(SAMPLES / "servers/custom-mlserver-capabilities.yaml")
    assert server.spec.effective_capabilities(["mlserver", "sklearn"]) == ["mlserver-1.3.4"]
