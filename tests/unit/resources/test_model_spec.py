"""Model and Server specs: quantities, replica defaults, change kinds and validation (a.1, a.2)."""

import dataclasses
import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from inferline.resources import (
    LoggerSpec,
    ModelSpec,
    ResourceError,
    ServerSpec,
    model_change_kind,
    parse_quantity,
    validate_model,
    validate_server,
)


def model(text: str = "") -> ModelSpec:
    doc = yaml.safe_load(text) or {}
    return ModelSpec.from_dict({"storageUri": "gs://bucket/iris", **doc})


# ---------------------------------------------------------------------------------------------
# Memory quantities


@pytest.mark.parametrize(
    ("quantity", "size"),
    [
        ("100Ki", 102_400),
        ("1Mi", 1_048_576),
        ("1.5Gi", 1_610_612_736),
        ("3Gi", 3 * 2**30),
        ("1Ti", 2**40),
        ("1Ei", 2**60),
        ("2G", 2_000_000_000),
        ("500M", 500_000_000),
        ("1k", 1_000),
        ("1e3", 1_000),
        ("1E3", 1_000),
        ("2.5e2", 250),
        ("1e-3", 1),  # rounded up to a whole byte, as Kubernetes' Value() does
        ("1500m", 2),  # milli-bytes: 1.5 rounds up
        ("1E", 10**18),
        ("0", 0),
        ("+7", 7),
        (".5Ki", 512),
        ("12345", 12_345),
        (12345, 12_345),
        (1.5, 2),
        (0, 0),
    ],
)
def test_parse_quantity(quantity, size):
    assert parse_quantity(quantity) == size


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("1K", "has an unknown suffix 'K'"),
        ("1KB", "has an unknown suffix 'KB'"),
        ("1 Mi", "is not a valid quantity"),
        ("Mi", "is not a valid quantity"),
        ("", "is not a valid quantity"),
        ("1e", "unknown suffix 'e'"),
        ("-1Mi", "is negative"),
        (-5, "is negative"),
        ("1e400", "out of range"),
        ("100Ei", "too large"),
        (True, "must be a number or a string"),
        ([1], "must be a number or a string"),
    ],
)
def test_bad_quantities(quantity, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        parse_quantity(quantity)


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["", "k", "M", "Ki", "Mi"]))
def test_quantity_scales_by_its_suffix(number, suffix):
    factor = {"": 1, "k": 1000, "M": 10**6, "Ki": 1024, "Mi": 1024**2}[suffix]
    assert parse_quantity(f"{number}{suffix}") == number * factor


def test_memory_in_a_model_keeps_what_was_written_for_display():
    parsed = model("memory: 100Ki")
    assert parsed.memory == 102_400
    assert parsed.to_dict()["memory"] == "100Ki"
    # Once changed, the stale text is not shown.
    parsed.memory = 1
    assert parsed.to_dict()["memory"] == 1
    assert model("memory: 4096").memory == 4096


def test_bad_memory_names_the_field():
    with pytest.raises(ResourceError, match=re.escape("field 'spec.memory': '1 Gi' is not a")):
        model("memory: 1 Gi")


# ---------------------------------------------------------------------------------------------
# Fields, defaults, round trip


def test_defaults():
    parsed = model()
    assert parsed.replicas == 1 and parsed.min_replicas is None and parsed.max_replicas is None
    assert parsed.requirements == [] and parsed.memory is None and parsed.logger is None
    assert parsed.to_dict() == {"storageUri": "gs://bucket/iris", "replicas": 1}


@pytest.mark.parametrize(
    ("text", "replicas"),
    [
        ("", 1),
        ("replicas: 3", 3),
        ("minReplicas: 2", 2),  # only minReplicas set: replicas = minReplicas
        ("minReplicas: 0", 1),
        ("replicas: 0", 0),
        ("replicas: 0\nminReplicas: 2", 2),  # SC2 raises an explicit 0 to the minimum
        ("replicas: 4\nminReplicas: 2", 4),
        ("maxReplicas: 5", 1),
    ],
)
def test_replicas_default(text, replicas):
    assert model(text).replicas == replicas


def test_model_type_is_appended_to_requirements():
    parsed = model("requirements: [sklearn]\nmodelType: mlserver")
    assert parsed.requirements == ["sklearn"]
    assert parsed.effective_requirements() == ["sklearn", "mlserver"]
    assert model("modelType: triton").effective_requirements() == ["triton"]
    assert model("requirements: [a]").effective_requirements() == ["a"]


FULL_MODEL = """
storageUri: gs://models/income/explainer
artifactVersion: 2
modelType: sklearn
requirements: [mlserver, alibi-explain]
memory: 1.5Gi
replicas: 2
minReplicas: 1
maxReplicas: 4
server: mlserver-134
secretName: minio-secret
schemaUri: gs://models/schema.json
parameters: [{name: query, value: "choice == 1"}]
explainer: {type: anchor_tabular, modelRef: income}
logger: {percent: 10}
dataflow: {cleanTopicsOnDelete: true}
preloaded: true
dedicated: true
"""


def test_every_model_field_round_trips():
    parsed = ModelSpec.from_dict(yaml.safe_load(FULL_MODEL))
    assert parsed.explainer.model_ref == "income" and parsed.explainer.pipeline_ref is None
    assert parsed.parameters[0].value == "choice == 1"
    assert parsed.dataflow.clean_topics_on_delete and parsed.logger.percent == 10
    assert parsed.to_dict() == yaml.safe_load(FULL_MODEL)
    assert ModelSpec.from_dict(parsed.to_dict()) == parsed


def test_empty_blocks_are_present():
    # `logger: {}` (or a bare `logger:`) turns payload logging on in SC2.
    assert model("logger: {}").logger == LoggerSpec()
    assert model("logger:").logger == LoggerSpec()
    assert model("logger: {}").to_dict()["logger"] == {}
    assert model("llm: {modelRef: gpt}").llm.model_ref == "gpt"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("storagUri: x", "unknown field 'spec.storagUri'"),
        ("explainer: {type: a, modelref: m}", "unknown field 'spec.explainer.modelref'"),
        ("parameters: [{name: a, val: b}]", "unknown field 'spec.parameters[0].val'"),
        ("replicas: two", "field 'spec.replicas' must be an integer, got string 'two'"),
        ("replicas: true", "field 'spec.replicas' must be an integer, got boolean true"),
        ("replicas: 1.5", "must be an integer, got number 1.5"),
        ("requirements: sklearn", "field 'spec.requirements' must be a list of strings"),
        ("requirements: [1]", "field 'spec.requirements[0]' must be a string, got integer 1"),
        ("preloaded: yes please", "field 'spec.preloaded' must be true or false"),
        ("logger: 10", "field 'spec.logger' must be a mapping, got integer 10"),
        ("parameters: {name: a}", "field 'spec.parameters' must be a list, got a mapping"),
        ("parameters: [{value: b}]", "missing required field 'spec.parameters[0].name'"),
        ("parameters: [{name: a, value: 2}]", "'spec.parameters[0].value' must be a string"),
        ("server: 2024-01-01", "got date 2024-01-01 (quote it to make it a string)"),
    ],
)
def test_model_field_errors(text, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        model(text)


def test_storage_uri_is_required_but_may_be_empty():
    with pytest.raises(ResourceError, match="missing required field 'spec.storageUri'"):
        ModelSpec.from_dict({"requirements": ["sklearn"]})
    # An empty URI is accepted, as SC2 does; the load fails later on the server.
    validate_model(ModelSpec.from_dict({"storageUri": ""}), "bad-uri")


# ---------------------------------------------------------------------------------------------
# Change kinds


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        ("", "", "identical"),
        ("memory: 100Ki", "memory: 102400", "identical"),
        ("replicas: 1", "", "identical"),
        ("requirements: [a, b]", "requirements: [a]\nmodelType: b", "identical"),
        ("", "replicas: 3", "scale"),
        ("", "minReplicas: 1\nmaxReplicas: 5", "scale"),
        ("maxReplicas: 5", "maxReplicas: 6", "scale"),
        ("", "logger: {}", "scale"),
        ("logger: {percent: 10}", "logger: {percent: 20}", "scale"),
        ("", "storageUri: gs://bucket/iris-v2", "new_version"),
        ("", "requirements: [sklearn]", "new_version"),
        ("", "memory: 1Mi", "new_version"),
        ("", "server: mlserver", "new_version"),
        ("", "parameters: [{name: a, value: b}]", "new_version"),
        ("", "explainer: {type: anchor_tabular, modelRef: m}", "new_version"),
        ("", "artifactVersion: 2", "new_version"),
        ("", "secretName: s", "new_version"),
        ("replicas: 1", "replicas: 5\nmemory: 1Mi", "new_version"),
    ],
)
def test_model_change_kind(old, new, kind):
    assert model_change_kind(model(old), model(new)) == kind


def test_change_kind_does_not_touch_its_arguments():
    old, new = model("requirements: [a]\nmodelType: b"), model("replicas: 3")
    before = (dataclasses.replace(old), dataclasses.replace(new))
    model_change_kind(old, new)
    assert (old, new) == before and old.model_type == "b"


# ---------------------------------------------------------------------------------------------
# Model validation


@pytest.mark.parametrize(
    "text",
    [
        "replicas: 2\nminReplicas: 1\nmaxReplicas: 3",
        "minReplicas: 2",
        "replicas: 0",
        "replicas: 0\nminReplicas: 0\nmaxReplicas: 4",
        "maxReplicas: 0\nreplicas: 5",  # a maximum of 0 means "no maximum", as in SC2
        "explainer: {type: anchor_text, pipelineRef: sentiment-explain}",
        "llm: {modelRef: gpt}",
        "llm: {}",
        "logger: {percent: 100}",
    ],
)
def test_valid_models(text):
    validate_model(model(text), "iris")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("replicas: 1\nminReplicas: 2", "model iris number of replicas 1 must be >= minReplicas 2"),
        ("replicas: 5\nmaxReplicas: 4", "model iris number of replicas 5 must be <= maxReplicas 4"),
        ("minReplicas: 5\nmaxReplicas: 4", "model iris minReplicas 5 must be <= maxReplicas 4"),
        ("minReplicas: 3\nmaxReplicas: 2\nreplicas: 2", "minReplicas 3 must be <= maxReplicas 2"),
        ("replicas: -1", "model iris replicas must be 0 or more, got -1"),
        ("minReplicas: -1", "model iris minReplicas must be 0 or more, got -1"),
        ("artifactVersion: -1", "artifactVersion must be 0 or more"),
        (
            "explainer: {type: anchor_tabular, modelRef: m}\nllm: {modelRef: m}",
            "model iris can't have both explainer and llm",
        ),
        ("explainer: {modelRef: m}", "model iris explainer needs a type"),
        ("explainer:", "model iris explainer needs a type"),
        (
            "explainer: {type: anchor_tabular}",
            "model iris explainer needs exactly one of modelRef and pipelineRef",
        ),
        (
            "explainer: {type: anchor_tabular, modelRef: m, pipelineRef: p}",
            "explainer needs exactly one of modelRef and pipelineRef",
        ),
        (
            "explainer: {type: anchor_tabular, modelRef: ''}",
            "explainer needs exactly one of modelRef and pipelineRef",
        ),
        ("llm: {modelRef: m, pipelineRef: p}", "llm can have modelRef or pipelineRef, not both"),
        ("parameters: [{name: ''}]", "model iris has a parameter without a name"),
        ("logger: {percent: 101}", "logger percent must be between 0 and 100, got 101"),
    ],
)
def test_invalid_models(text, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        validate_model(model(text), "iris")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("id1_node", "underscores are not allowed"),
        ("Iris", "uppercase letters are not allowed"),
        ("iris.v1", "dots are not allowed"),
        ("iris-", "it ends with '-'"),
        ("iris v1", "it contains ' '"),
        ("", "it is empty"),
    ],
)
def test_model_names(name, problem):
    with pytest.raises(
        ResourceError, match=re.escape(f"model name '{name}' is not valid: {problem}")
    ):
        validate_model(model(), name)


# ---------------------------------------------------------------------------------------------
# Server

MLSERVER_DEFAULT = ["mlserver", "sklearn", "xgboost"]


@pytest.mark.parametrize(
    ("text", "capabilities"),
    [
        ("", MLSERVER_DEFAULT),
        ("capabilities: [custom]", ["custom"]),
        ("extraCapabilities: [pvc]", [*MLSERVER_DEFAULT, "pvc"]),
        ("capabilities: [custom]\nextraCapabilities: [gpu]", ["custom", "gpu"]),
        ("capabilities: []", MLSERVER_DEFAULT),
    ],
)
def test_server_capabilities(text, capabilities):
    doc = {"serverConfig": "mlserver", **(yaml.safe_load(text) or {})}
    assert ServerSpec.from_dict(doc).effective_capabilities(MLSERVER_DEFAULT) == capabilities


FULL_SERVER = """
serverConfig: mlserver
capabilities: [mlserver-1.3.4]
extraCapabilities: [pvc]
replicas: 2
minReplicas: 1
maxReplicas: 3
podSpec: {containers: [{name: mlserver, image: "seldonio/mlserver:1.3.4"}]}
imageOverrides: {agent: {image: my-agent}}
statefulSetPersistentVolumeClaimRetentionPolicy: {whenDeleted: Delete}
deploymentStrategy: {type: RollingUpdate}
disableAutoUpdate: true
"""


def test_every_server_field_round_trips():
    parsed = ServerSpec.from_dict(yaml.safe_load(FULL_SERVER))
    assert parsed.pod_spec["containers"][0]["name"] == "mlserver"
    assert parsed.disable_auto_update and parsed.replicas == 2
    assert parsed.to_dict() == yaml.safe_load(FULL_SERVER)
    assert ServerSpec.from_dict(parsed.to_dict()) == parsed
    validate_server(parsed, "mlserver-134")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "missing required field 'spec.serverConfig'"),
        ({"serverConfig": "mlserver", "capability": ["x"]}, "unknown field 'spec.capability'"),
        ({"serverConfig": "mlserver", "podSpec": []}, "field 'spec.podSpec' must be a mapping"),
    ],
)
def test_server_field_errors(doc, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        ServerSpec.from_dict(doc)


@pytest.mark.parametrize(
    ("doc", "name", "message"),
    [
        ({"serverConfig": "mlserver"}, "mlserver.name", "server name 'mlserver.name' is not valid"),
        ({"serverConfig": ""}, "s", "server s serverConfig must name a ServerConfig"),
        (
            {"serverConfig": "mlserver", "replicas": 5, "maxReplicas": 2},
            "s",
            "server s number of replicas 5 must be <= maxReplicas 2",
        ),
    ],
)
def test_invalid_servers(doc, name, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        validate_server(ServerSpec.from_dict(doc), name)
