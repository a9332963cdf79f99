"""Loading manifests: multi-document YAML, the envelope, strictness and one-line errors."""

import re
import textwrap

import pytest

from inferline.resources import (
    ExperimentSpec,
    ModelSpec,
    PipelineSpec,
    Resource,
    ResourceError,
    ServerSpec,
    load_resource_file,
    load_resources,
    resource_from_dict,
)

MODEL = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: iris
spec:
  storageUri: "gs://seldon-models/mlserver/iris"
  requirements:
  - sklearn
"""

MULTI = """
# A model, a server, a pipeline and an experiment in one file.
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: iris
  namespace: seldon-mesh
  labels: {team: ml}
  annotations: {note: "first"}
spec:
  storageUri: "gs://seldon-models/mlserver/iris"
---
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Server
metadata:
  name: mlserver1
spec:
  serverConfig: mlserver
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: iris-pipeline
spec:
  steps:
  - name: iris
  output:
    steps: [iris]
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Experiment
metadata:
  name: ab
spec:
  default: iris
  candidates:
  - {name: iris, weight: 50}
  - {name: iris2, weight: 50}
---
# only a comment
"""


def doc(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def test_multi_document_file_loads_every_kind_and_skips_empty_documents():
    resources = load_resources(MULTI, "all.yaml")
    assert [(r.kind, r.name) for r in resources] == [
        ("Model", "iris"),
        ("Server", "mlserver1"),
        ("Pipeline", "iris-pipeline"),
        ("Experiment", "ab"),
    ]
    model, server, pipeline, experiment = resources
    assert isinstance(model.spec, ModelSpec) and model.spec.requirements == []
    assert (model.namespace, model.labels, model.annotations) == (
        "seldon-mesh",
        {"team": "ml"},
        {"note": "first"},
    )
    assert model.key == ("Model", "seldon-mesh", "iris")
    assert isinstance(server.spec, ServerSpec) and server.namespace == "default"
    assert isinstance(pipeline.spec, PipelineSpec) and pipeline.spec.step_names() == ["iris"]
    assert isinstance(experiment.spec, ExperimentSpec) and experiment.spec.default == "iris"


def test_empty_text_loads_nothing():
    assert load_resources("") == []
    assert load_resources("---\n# nothing\n---\n") == []


def test_resources_round_trip_through_to_dict():
    for resource in load_resources(MULTI):
        manifest = resource.to_dict()
        assert manifest["apiVersion"] == "mlops.seldon.io/v1alpha1"
        assert manifest["kind"] == resource.kind
        assert resource_from_dict(manifest) == resource


def test_to_dict_gives_camel_case_spec():
    (resource,) = load_resources(MULTI.split("---")[0])
    assert resource.to_dict() == {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Model",
        "metadata": {
            "name": "iris",
            "namespace": "seldon-mesh",
            "labels": {"team": "ml"},
            "annotations": {"note": "first"},
        },
        "spec": {"storageUri": "gs://seldon-models/mlserver/iris", "replicas": 1},
    }


def test_pipeline_to_dict_keeps_what_was_written():
    (resource,) = load_resources(
        doc(
            """
            apiVersion: mlops.seldon.io/v1alpha1
            kind: Pipeline
            metadata: {name: chain}
            spec:
              input:
                externalInputs: [tfsimple.outputs]
                tensorMap: {tfsimple.outputs.OUTPUT0: INPUT0}
              steps:
              - name: a
                inputsJoinType: any
                batch: {size: 2}
              - name: b
                inputs: [a]
                triggers: [a.outputs.OK]
                joinWindowMs: 500
              output:
                steps: [b]
                stepsJoin: outer
              dataflow: {cleanTopicsOnDelete: true}
              allowCycles: true
              maxStepRevisits: 2
            """
        )
    )
    assert resource.spec.to_dict() == {
        "input": {
            "externalInputs": ["tfsimple.outputs"],
            "tensorMap": {"tfsimple.outputs.OUTPUT0": "INPUT0"},
        },
        "steps": [
            {"name": "a", "inputsJoinType": "any", "batch": {"size": 2}},
            {"name": "b", "inputs": ["a"], "triggers": ["a.outputs.OK"], "joinWindowMs": 500},
        ],
        "output": {"steps": ["b"], "stepsJoin": "outer"},
        "dataflow": {"cleanTopicsOnDelete": True},
        "allowCycles": True,
        "maxStepRevisits": 2,
    }
    step = resource.spec.steps[0]
    assert (step.inputs_join_type, step.triggers_join_type, step.join_window_ms) == (
        "any",
        "inner",
        None,
    )


def test_kubernetes_bookkeeping_is_accepted_and_ignored():
    text = MODEL.replace(
        "  name: iris\n",
        "  name: iris\n  uid: 1234\n  resourceVersion: '42'\n  generation: 3\n",
    )
    text += "status:\n  replicas: 1\n"
    (resource,) = load_resources(text)
    assert resource.name == "iris"


def test_load_resource_file(tmp_path):
    path = tmp_path / "iris.yaml"
    path.write_text(MODEL)
    (resource,) = load_resource_file(path)
    assert resource.name == "iris"
    path.write_text(MODEL.replace("storageUri", "storagUri"))
    with pytest.raises(ResourceError, match=re.escape(f"{path} document 1 (Model iris): unknown")):
        load_resource_file(path)
    with pytest.raises(ResourceError, match="cannot read"):
        load_resource_file(tmp_path / "missing.yaml")


def model_with(spec_lines: str, name: str = "iris") -> str:
    return (
        f"apiVersion: mlops.seldon.io/v1alpha1\nkind: Model\nmetadata:\n  name: {name}\n"
        f"spec:\n  storageUri: gs://x\n{textwrap.indent(textwrap.dedent(spec_lines), '  ')}"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The example from the brief, word for word.
        (
            "---\n"
            + MODEL
            + "---\napiVersion: mlops.seldon.io/v1alpha1\nkind: Experiment\nmetadata:\n"
            "  name: ab\nspec:\n  candidate:\n  - {name: iris, weight: 1}\n",
            "f.yaml document 2 (Experiment ab): unknown field 'spec.candidate'",
        ),
        (
            model_with("storagUri: y"),
            "f.yaml document 1 (Model iris): unknown field 'spec.storagUri'",
        ),
        (
            MODEL.replace("kind: Model", "kind: Model\nextra: 1"),
            "f.yaml document 1 (Model iris): unknown field 'extra'",
        ),
        (
            MODEL.replace("  name: iris", "  name: iris\n  nmespace: x"),
            "unknown field 'metadata.nmespace'",
        ),
        (
            doc(
                """
                apiVersion: mlops.seldon.io/v1alpha1
                kind: Pipeline
                metadata: {name: p}
                spec:
                  steps:
                  - name: a
                  - name: b
                    batch: {sise: 2}
                """
            ),
            "(Pipeline p): unknown field 'spec.steps[1].batch.sise'",
        ),
        (
            doc(
                """
                apiVersion: mlops.seldon.io/v1alpha1
                kind: Pipeline
                metadata: {name: p}
                spec:
                  steps: [{name: a}]
                  output: {steps: [a], tensormap: {}}
                """
            ),
            "unknown field 'spec.output.tensormap'",
        ),
        (
            doc(
                """
                apiVersion: mlops.seldon.io/v1alpha1
                kind: Pipeline
                metadata: {name: p}
                spec:
                  input: {externalInput: [q]}
                  steps: [{name: a}]
                """
            ),
            "unknown field 'spec.input.externalInput'",
        ),
        (
            doc(
                """
                apiVersion: mlops.seldon.io/v1alpha1
                kind: Experiment
                metadata: {name: ab}
                spec:
                  candidates: [{name: a, weight: 1}]
                  mirror: {name: m, percentage: 5}
                """
            ),
            "unknown field 'spec.mirror.percentage'",
        ),
    ],
)
def test_unknown_fields_are_named_by_full_path(text, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        load_resources(text, "f.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (model_with("replicas: '2'"), "field 'spec.replicas' must be an integer, got string '2'"),
        (model_with("memory: lots"), "field 'spec.memory': 'lots' is not a valid quantity"),
        (
            doc(
                """
                apiVersion: mlops.seldon.io/v1alpha1
                kind: Pipeline
                metadata: {name: p}
                spec:
                  steps: [{name: a, tensorMap: {a.outputs.X: 3}}]
                """
            ),
            "field 'spec.steps[0].tensorMap['a.outputs.X']' must be a string, got integer 3",
        ),
        (
            doc(
                """
                apiVersion: mlops.seldon.io/v1alpha1
                kind: Pipeline
                metadata: {name: p}
                spec:
                  steps: {name: a}
                """
            ),
            "field 'spec.steps' must be a list, got a mapping",
        ),
        (
            doc(
                """
                apiVersion: mlops.seldon.io/v1alpha1
                kind: Experiment
                metadata: {name: ab}
                spec:
                  candidates: [{name: a, weight: fifty}]
                """
            ),
            "field 'spec.candidates[0].weight' must be an integer, got string 'fifty'",
        ),
        (MODEL.replace("  name: iris", "  name: 7"), "field 'metadata.name' must be a string"),
        (
            MODEL.replace("  name: iris", "  name: iris\n  labels: [a]"),
            "field 'metadata.labels' must be a mapping, got a list",
        ),
        (MODEL.replace("metadata:\n  name: iris\n", ""), "missing required field 'metadata.name'"),
        (MODEL.replace("  name: iris", "  namespace: x"), "missing required field 'metadata.name'"),
        (MODEL.split("spec:")[0], "(Model iris): missing required field 'spec'"),
        (MODEL.split("spec:")[0] + "spec: []\n", "field 'spec' must be a mapping, got a list"),
        ("- a\n- b\n", "document 1: a resource must be a mapping with apiVersion, kind"),
        ("just text\n", "got string 'just text'"),
        (MODEL.replace("kind: Model\n", ""), "missing required field 'kind'"),
        (MODEL.replace("kind: Model", "kind: [Model]"), "field 'kind' must be a string"),
        (MODEL.replace("spec:", "spec:\n  on: 1"), "field names must be strings: boolean true"),
    ],
)
def test_wrong_types_and_missing_fields(text, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        load_resources(text, "f.yaml")


@pytest.mark.parametrize(
    ("api_version", "kind", "message"),
    [
        (
            "mlops.seldon.io/v1alpha1",
            "Explainer",
            "f.yaml document 1 (Explainer x): kind 'Explainer' is obsolete and not supported",
        ),
        ("v1", "Secret", "kind 'Secret' (apiVersion v1) is not an inferline resource"),
        ("v1", "ConfigMap", "kind 'ConfigMap' (apiVersion v1) is not an inferline resource"),
        ("mlops.seldon.io/v1alpha1", "ServerConfig", "kind 'ServerConfig' is not supported"),
        ("mlops.seldon.io/v1alpha1", "model", "kind 'model' (apiVersion mlops.seldon.io/v1alpha1)"),
        (
            "mlops.seldon.io/v1",
            "Model",
            "apiVersion 'mlops.seldon.io/v1' is not supported for kind Model; use "
            "mlops.seldon.io/v1alpha1",
        ),
        (None, "Model", "(Model x): missing required field 'apiVersion'"),
    ],
)
def test_api_version_and_kind(api_version, kind, message):
    head = f"apiVersion: {api_version}\n" if api_version else ""
    text = head + f"kind: {kind}\nmetadata:\n  name: x\nspec:\n  storageUri: gs://x\n"
    with pytest.raises(ResourceError, match=re.escape(message)):
        load_resources(text, "f.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MODEL.replace("  requirements:", "  requirements: [\n"), "f.yaml: invalid YAML at line"),
        ("a: b\n  c: d\n", "f.yaml: invalid YAML at line 2, column 4: mapping values are not"),
        ("key: 'unterminated\n", "invalid YAML at line 2"),
        (MODEL + "  storageUri: again\n", "duplicate key 'storageUri'"),
        (MODEL + "\n\tx: 1\n", "invalid YAML at line"),
    ],
)
def test_yaml_syntax_errors_give_the_line(text, message):
    with pytest.raises(ResourceError, match=re.escape(message)) as caught:
        load_resources(text, "f.yaml")
    assert "\n" not in caught.value.message


def test_duplicate_key_error_gives_its_line():
    with pytest.raises(ResourceError, match=re.escape("invalid YAML at line 10, column 3")):
        load_resources(MODEL + "  storageUri: again\n", "f.yaml")


def test_yaml_merge_keys_still_work():
    text = doc(
        """
        apiVersion: mlops.seldon.io/v1alpha1
        kind: Model
        metadata: {name: iris}
        spec:
          <<: {storageUri: gs://base, requirements: [sklearn]}
          storageUri: gs://override
        """
    )
    (resource,) = load_resources(text)
    assert resource.spec.storage_uri == "gs://override"
    assert resource.spec.requirements == ["sklearn"]


@pytest.mark.parametrize(
    ("kind", "name", "problem"),
    [
        ("Model", "id1_node", "underscores are not allowed"),
        ("Model", "Iris", "uppercase letters are not allowed"),
        ("Server", "mlserver.name", "dots are not allowed"),
        ("Pipeline", "-p", "it starts with '-'"),
        ("Experiment", "a_b", "underscores are not allowed"),
        ("Model", "iris!", "it contains '!'"),
    ],
)
def test_names_follow_the_scheduler_rule(kind, name, problem):
    spec = {
        "Model": "storageUri: gs://x",
        "Server": "serverConfig: mlserver",
        "Pipeline": "steps: [{name: a}]",
        "Experiment": "candidates: [{name: a, weight: 1}]",
    }[kind]
    text = (
        f"apiVersion: mlops.seldon.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: '{name}'\n"
        f"spec: {{{spec}}}\n"
    )
    message = f"({kind} {name}): {kind.lower()} name '{name}' is not valid: {problem}"
    with pytest.raises(ResourceError, match=re.escape(message)):
        load_resources(text)


def test_validation_errors_carry_the_document_context():
    text = MODEL + doc(
        """
        ---
        apiVersion: mlops.seldon.io/v1alpha1
        kind: Pipeline
        metadata: {name: p}
        spec:
          steps: [{name: a, inputs: [b]}]
        """
    )
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "f.yaml document 2 (Pipeline p): pipeline p step a has input b for step b that "
            "does not exist"
        ),
    ):
        load_resources(text, "f.yaml")


def test_one_bad_document_fails_the_whole_text():
    with pytest.raises(ResourceError):
        load_resources(MODEL + "---\n" + MODEL.replace("storageUri", "storagUri"))


def test_experiment_defaults_are_checked_across_documents():
    experiment = (
        "apiVersion: mlops.seldon.io/v1alpha1\nkind: Experiment\nmetadata:\n  name: {name}\n"
        "spec:\n  default: iris\n  candidates: [{{name: iris, weight: 1}}]\n"
    )
    text = experiment.format(name="one") + "---\n" + experiment.format(name="two")
    with pytest.raises(
        ResourceError, match=re.escape("f.yaml: model iris is already the default of experiment")
    ):
        load_resources(text, "f.yaml")
    # The same experiment twice is an update, not a conflict.
    assert (
        len(load_resources(experiment.format(name="one") + "---\n" + experiment.format(name="one")))
        == 2
    )


def test_resource_from_dict_validates():
    manifest = {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {"steps": [{"name": "p"}]},
    }
    with pytest.raises(ResourceError, match=re.escape("api (Pipeline p): pipeline p must not")):
        resource_from_dict(manifest, "api")
    manifest["spec"]["steps"][0]["name"] = "a"
    resource = resource_from_dict(manifest)
    assert isinstance(resource, Resource) and resource.spec.steps[0].name == "a"


def test_resource_error_is_a_bad_request():
    from inferline.protocol.errors import BadRequest

    with pytest.raises(BadRequest) as caught:
        load_resources("kind: Secret\n")
    assert caught.value.status == 400
