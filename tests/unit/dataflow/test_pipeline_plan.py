"""plan_pipeline: Seldon pipeline YAML -> the stages that run it, on the shapes of Seldon Core 2's
own samples (reference a.3, a.5, b.1, b.4, b.9)."""

import textwrap

import pytest

from inferline.dataflow.plan import (
    DEFAULT_JOIN_WINDOW_MS,
    REQUEST,
    RESPONSE,
    PipelinePlan,
    Source,
    Stage,
    plan_pipeline,
)
from inferline.dataflow.topics import TopicNames
from inferline.resources import load_resources

TOPICS = TopicNames()


def plan(yaml_text: str, version: int = 1, topics: TopicNames = TOPICS) -> PipelinePlan:
    (resource,) = load_resources(textwrap.dedent(yaml_text))
    return plan_pipeline(resource.name, version, resource.spec, topics)


def pipeline_yaml(name: str, spec: str) -> str:
    return (
        "apiVersion: mlops.seldon.io/v1alpha1\nkind: Pipeline\nmetadata:\n"
        f"  name: {name}\nspec:\n" + textwrap.indent(textwrap.dedent(spec), "  ")
    )


def stage(p: PipelinePlan, name: str) -> Stage:
    (found,) = [s for s in p.stages if s.name == name]
    return found


def model(name: str, direction: str) -> str:
    return f"seldon.default.model.{name}.{direction}"


def pipe(name: str, direction: str) -> str:
    return f"seldon.default.pipeline.{name}.{direction}"


ERRORS = "seldon.default.errors.errors"

TFSIMPLES = pipeline_yaml(
    "tfsimples",
    """
    steps:
      - name: tfsimple1
      - name: tfsimple2
        inputs:
        - tfsimple1
        tensorMap:
          tfsimple1.outputs.OUTPUT0: INPUT0
          tfsimple1.outputs.OUTPUT1: INPUT1
    output:
      steps:
      - tfsimple2
    """,
)


def test_topic_names_follow_seldon():
    assert TOPICS.model("m", "inputs") == "seldon.default.model.m.inputs"
    assert TOPICS.pipeline("p", "outputs") == "seldon.default.pipeline.p.outputs"
    assert TOPICS.errors == "seldon.default.errors.errors"
    other = TopicNames(prefix="acme", namespace="prod")
    assert other.model("m", "outputs") == "acme.prod.model.m.outputs"
    assert other.errors == "acme.prod.errors.errors"


def test_chain_stages_and_topics():
    p = plan(TFSIMPLES, version=3)
    assert p.name == "tfsimples"
    assert p.version == 3
    assert p.steps == ("tfsimple1", "tfsimple2")
    assert p.models == ("tfsimple1", "tfsimple2")
    assert [s.name for s in p.stages] == ["step tfsimple1", "step tfsimple2", "output", "errors"]

    first = stage(p, "step tfsimple1")
    assert first.inputs == (
        Source(
            pipe("tfsimples", "inputs"), "tfsimples", REQUEST, "tfsimples.inputs", None, "tfsimples"
        ),
    ), "a step without inputs reads the pipeline's request"
    assert first.sink_topic == model("tfsimple1", "inputs")
    assert first.sink_payload == REQUEST
    assert first.sink_model == "tfsimple1"
    assert first.triggers == ()
    assert first.window_ms == DEFAULT_JOIN_WINDOW_MS == 60_000

    second = stage(p, "step tfsimple2")
    (source,) = second.inputs
    assert source.topic == model("tfsimple1", "outputs"), "a bare step means its outputs"
    assert source.payload == RESPONSE
    assert source.pipeline == "tfsimples"
    assert source.reference == "tfsimple1.outputs"
    assert source.tensors is None
    assert source.waits_on == "tfsimple1"
    assert second.tensor_map == {
        "tfsimple1.outputs.OUTPUT0": "INPUT0",
        "tfsimple1.outputs.OUTPUT1": "INPUT1",
    }
    assert second.sink_topic == model("tfsimple2", "inputs")

    output = stage(p, "output")
    assert [s.topic for s in output.inputs] == [model("tfsimple2", "outputs")]
    assert output.sink_topic == pipe("tfsimples", "outputs")
    assert output.sink_payload == RESPONSE
    assert output.sink_model == ""

    errors = stage(p, "errors")
    assert errors.forward_errors
    assert [(s.topic, s.pipeline) for s in errors.inputs] == [(ERRORS, "tfsimples")]
    assert errors.sink_topic == pipe("tfsimples", "outputs")
    assert not any(s.forward_errors for s in p.stages if s.name != "errors")


def test_every_stage_is_labelled_with_its_pipeline_and_reads_its_topics():
    p = plan(TFSIMPLES)
    assert {s.pipeline for s in p.stages} == {"tfsimples"}
    assert stage(p, "step tfsimple2").topics == {model("tfsimple1", "outputs")}


def test_without_output_there_is_no_output_stage_but_errors_still_reach_the_caller():
    p = plan(pipeline_yaml("async", "steps:\n  - name: drift\n"))
    assert [s.name for s in p.stages] == ["step drift", "errors"]
    assert stage(p, "errors").sink_topic == pipe("async", "outputs")


def test_join_of_two_steps_with_tensor_subsets():
    p = plan(
        pipeline_yaml(
            "join",
            """
            steps:
              - name: tfsimple1
              - name: tfsimple2
              - name: tfsimple3
                inputs:
                - tfsimple1.outputs.OUTPUT0
                - tfsimple2.outputs.OUTPUT1
                tensorMap:
                  tfsimple1.outputs.OUTPUT0: INPUT0
                  tfsimple2.outputs.OUTPUT1: INPUT1
            output:
              steps:
              - tfsimple3
            """,
        )
    )
    third = stage(p, "step tfsimple3")
    assert [(s.topic, s.tensors, s.reference) for s in third.inputs] == [
        (model("tfsimple1", "outputs"), frozenset({"OUTPUT0"}), "tfsimple1.outputs"),
        (model("tfsimple2", "outputs"), frozenset({"OUTPUT1"}), "tfsimple2.outputs"),
    ]
    assert third.inputs_join == "inner"
    assert [s.waits_on for s in third.inputs] == ["tfsimple1", "tfsimple2"]


def test_pipeline_input_tensors_on_one_topic_merge_into_one_source():
    p = plan(
        pipeline_yaml(
            "pipeline-inputs",
            """
            steps:
            - name: mul10
              inputs:
              - pipeline-inputs.inputs.INPUT0
              tensorMap:
                pipeline-inputs.inputs.INPUT0: INPUT
            - name: both
              inputs:
              - pipeline-inputs.inputs.INPUT0
              - pipeline-inputs.inputs.INPUT1
            output:
              steps:
              - mul10
              - both
            """,
        )
    )
    (mul10,) = stage(p, "step mul10").inputs
    assert mul10.topic == pipe("pipeline-inputs", "inputs")
    assert mul10.payload == REQUEST
    assert mul10.tensors == frozenset({"INPUT0"})
    assert mul10.reference == "pipeline-inputs.inputs"
    assert stage(p, "step mul10").tensor_map == {"pipeline-inputs.inputs.INPUT0": "INPUT"}

    both = stage(p, "step both")
    assert len(both.inputs) == 1, "no join for two tensors of one message"
    assert both.inputs[0].tensors == frozenset({"INPUT0", "INPUT1"})

    output = stage(p, "output")
    assert [s.topic for s in output.inputs] == [model("mul10", "outputs"), model("both", "outputs")]


def test_a_whole_reference_and_a_tensor_of_the_same_topic_merge_into_the_whole():
    p = plan(
        pipeline_yaml(
            "p",
            """
            steps:
            - name: m
            - name: n
              inputs: [m.outputs.A, m, m.outputs.B]
            """,
        )
    )
    (source,) = stage(p, "step n").inputs
    assert source.tensors is None


def test_step_inputs_reference_reads_the_request_sent_to_the_step():
    p = plan(
        pipeline_yaml(
            "p",
            """
            steps:
            - name: m
            - name: n
              inputs: [m.inputs.X]
            """,
        )
    )
    (source,) = stage(p, "step n").inputs
    assert (source.topic, source.payload, source.tensors) == (
        model("m", "inputs"),
        REQUEST,
        frozenset({"X"}),
    )


def test_tensor_map_is_kept_on_a_step_without_explicit_inputs():
    p = plan(
        pipeline_yaml(
            "sentiment-explain",
            """
            steps:
              - name: sentiment
                tensorMap:
                  sentiment-explain.inputs.predict: array_inputs
              - name: sentiment-output-transform
                inputs:
                - sentiment
            output:
              steps:
              - sentiment-output-transform
            """,
        )
    )
    s = stage(p, "step sentiment")
    assert [i.topic for i in s.inputs] == [pipe("sentiment-explain", "inputs")]
    assert s.inputs[0].reference + ".predict" in s.tensor_map


def test_conditional_routing_and_any_output_join():
    p = plan(
        pipeline_yaml(
            "tfsimple-conditional",
            """
            steps:
            - name: conditional
            - name: mul10
              inputs:
              - conditional.outputs.OUTPUT0
              tensorMap:
                conditional.outputs.OUTPUT0: INPUT
            - name: add10
              inputs:
              - conditional.outputs.OUTPUT1
              tensorMap:
                conditional.outputs.OUTPUT1: INPUT
            output:
              steps:
              - mul10
              - add10
              stepsJoin: any
            """,
        )
    )
    assert stage(p, "step mul10").inputs[0].tensors == frozenset({"OUTPUT0"})
    assert stage(p, "step add10").inputs[0].tensors == frozenset({"OUTPUT1"})
    assert stage(p, "output").inputs_join == "any"


def test_triggers_and_join_types():
    p = plan(
        pipeline_yaml(
            "trigger-joins",
            """
            steps:
            - name: mul10
              inputs:
              - trigger-joins.inputs.INPUT
              triggers:
              - trigger-joins.inputs.ok1
              - trigger-joins.inputs.ok2
              triggersJoinType: any
            - name: add10
              inputs:
              - trigger-joins.inputs.INPUT
              - mul10
              inputsJoinType: outer
              joinWindowMs: 250
              triggers:
              - trigger-joins.inputs.ok3
              - mul10.outputs.ok
            output:
              steps:
              - mul10
              - add10
              stepsJoin: any
              joinWindowMs: 1500
            """,
        )
    )
    mul10 = stage(p, "step mul10")
    assert mul10.triggers_join == "any"
    assert mul10.inputs_join == "inner"
    (trigger,) = mul10.triggers
    assert trigger.topic == pipe("trigger-joins", "inputs")
    assert trigger.tensors == frozenset({"ok1", "ok2"})
    assert mul10.topics == {pipe("trigger-joins", "inputs")}

    add10 = stage(p, "step add10")
    assert add10.inputs_join == "outer"
    assert add10.triggers_join == "inner"
    assert add10.window_ms == 250
    assert [(t.topic, t.tensors) for t in add10.triggers] == [
        (pipe("trigger-joins", "inputs"), frozenset({"ok3"})),
        (model("mul10", "outputs"), frozenset({"ok"})),
    ]
    assert add10.topics == {pipe("trigger-joins", "inputs"), model("mul10", "outputs")}
    assert stage(p, "output").window_ms == 1500


def test_a_step_with_triggers_and_no_inputs_reads_the_pipeline_request():
    p = plan(
        pipeline_yaml(
            "outlier",
            """
            steps:
              - name: outlier-error
              - name: add10
                triggers:
                - outlier-error
            output:
              steps:
              - add10
            """,
        )
    )
    add10 = stage(p, "step add10")
    assert [s.topic for s in add10.inputs] == [pipe("outlier", "inputs")]
    assert [(s.topic, s.tensors) for s in add10.triggers] == [
        (model("outlier-error", "outputs"), None)
    ]


def test_zero_join_window_means_the_default():
    p = plan(
        pipeline_yaml(
            "p",
            """
            steps:
            - name: m
              joinWindowMs: 0
            output:
              steps: [m]
              joinWindowMs: 0
            """,
        )
    )
    assert stage(p, "step m").window_ms == 60_000
    assert stage(p, "output").window_ms == 60_000


def test_external_inputs_read_the_upstream_pipeline_messages():
    p = plan(
        pipeline_yaml(
            "tfsimple-combined",
            """
            input:
              externalInputs:
                - tfsimple-extended.outputs.OUTPUT0
                - tfsimple-extended2.outputs.OUTPUT1
                - tfsimple.step.tfsimple1.outputs
              externalTriggers:
                - tfsimple-trigger
              joinType: outer
              triggersJoinType: any
              joinWindowMs: 300
              tensorMap:
                tfsimple-extended.outputs.OUTPUT0: INPUT0
                tfsimple-extended2.outputs.OUTPUT1: INPUT1
                tfsimple.step.tfsimple1.outputs.OUTPUT0: INPUT2
            steps:
              - name: tfsimple2
            output:
              steps:
              - tfsimple2
            """,
        )
    )
    assert [s.name for s in p.stages] == ["input", "step tfsimple2", "output", "errors"]
    source = stage(p, "input")
    assert source.pipeline == "tfsimple-combined"
    assert source.sink_topic == pipe("tfsimple-combined", "inputs")
    assert source.sink_payload == REQUEST
    assert [(s.topic, s.pipeline, s.payload, s.tensors, s.reference) for s in source.inputs] == [
        (
            pipe("tfsimple-extended", "outputs"),
            "tfsimple-extended",
            RESPONSE,
            frozenset({"OUTPUT0"}),
            "tfsimple-extended.outputs",
        ),
        (
            pipe("tfsimple-extended2", "outputs"),
            "tfsimple-extended2",
            RESPONSE,
            frozenset({"OUTPUT1"}),
            "tfsimple-extended2.outputs",
        ),
        (
            model("tfsimple1", "outputs"),
            "tfsimple",
            RESPONSE,
            None,
            "tfsimple.step.tfsimple1.outputs",
        ),
    ], "each external source is filtered on the upstream pipeline's header"
    assert [s.waits_on for s in source.inputs] == [
        "tfsimple-extended",
        "tfsimple-extended2",
        "tfsimple.tfsimple1",
    ]
    (trig,) = source.triggers
    assert (trig.topic, trig.pipeline, trig.tensors) == (
        pipe("tfsimple-trigger", "outputs"),
        "tfsimple-trigger",
        None,
    ), "a bare external pipeline means its outputs"
    assert source.inputs_join == "outer"
    assert source.triggers_join == "any"
    assert source.window_ms == 300
    assert source.tensor_map["tfsimple.step.tfsimple1.outputs.OUTPUT0"] == "INPUT2"
    # Every key of the tensorMap names a source's reference plus a tensor.
    references = {s.reference for s in source.inputs}
    assert all(key.rsplit(".", 1)[0] in references for key in source.tensor_map)

    # The steps of this pipeline read its own inputs topic, with its own header.
    (own,) = stage(p, "step tfsimple2").inputs
    assert (own.topic, own.pipeline) == (pipe("tfsimple-combined", "inputs"), "tfsimple-combined")


def test_external_inputs_of_two_pipelines_on_one_topic_stay_apart():
    p = plan(
        pipeline_yaml(
            "downstream",
            """
            input:
              externalInputs:
                - up1.step.shared.outputs.A
                - up2.step.shared.outputs.A
                - up1.step.shared.outputs.B
              externalTriggers:
                - up1.inputs.go
            steps:
              - name: m
            """,
        )
    )
    source = stage(p, "input")
    assert [(s.topic, s.pipeline, s.tensors) for s in source.inputs] == [
        (model("shared", "outputs"), "up1", frozenset({"A", "B"})),
        (model("shared", "outputs"), "up2", frozenset({"A"})),
    ]
    assert source.inputs_join == "inner"
    assert source.window_ms == 60_000
    (trig,) = source.triggers
    assert (trig.topic, trig.pipeline, trig.payload, trig.tensors) == (
        pipe("up1", "inputs"),
        "up1",
        REQUEST,
        frozenset({"go"}),
    )


def test_batch_settings():
    p = plan(
        pipeline_yaml(
            "iris-batch",
            """
            steps:
              - name: iris
                batch:
                 size: 2
              - name: drift
                batch:
                  size: 20
                  windowMs: 500
              - name: other
            output:
              steps:
              - iris
            """,
        )
    )
    assert (stage(p, "step iris").batch_size, stage(p, "step iris").batch_window_ms) == (2, None)
    assert (stage(p, "step drift").batch_size, stage(p, "step drift").batch_window_ms) == (20, 500)
    assert (stage(p, "step other").batch_size, stage(p, "step other").batch_window_ms) == (
        None,
        None,
    )


@pytest.mark.parametrize(
    ("allow", "revisits", "expected"),
    [("true", 3, 3), ("true", None, 0), ("false", None, None)],
)
def test_max_step_revisits_applies_only_with_allow_cycles(allow, revisits, expected):
    extra = f"maxStepRevisits: {revisits}\n" if revisits is not None else ""
    cycle = "    inputs: [p.inputs, b.outputs.again]\n    inputsJoinType: any\n"
    if allow != "true":
        cycle = ""
    p = plan(
        pipeline_yaml(
            "p",
            f"allowCycles: {allow}\n{extra}steps:\n  - name: a\n{cycle}  - name: b\n"
            "    inputs: [a]\n",
        )
    )
    assert [s.max_revisits for s in p.stages if s.name.startswith("step ")] == [expected] * 2
    assert stage(p, "errors").max_revisits is None


def test_cyclic_step_reads_both_the_request_and_the_loop():
    p = plan(
        pipeline_yaml(
            "p",
            """
            allowCycles: true
            maxStepRevisits: 5
            steps:
            - name: a
              inputs: [p.inputs, b.outputs.continue]
              inputsJoinType: any
              joinWindowMs: 1
            - name: b
              inputs: [a]
            output:
              steps: [b.outputs.stop]
            """,
        )
    )
    a = stage(p, "step a")
    assert [(s.topic, s.tensors) for s in a.inputs] == [
        (pipe("p", "inputs"), None),
        (model("b", "outputs"), frozenset({"continue"})),
    ]
    assert a.window_ms == 1
    assert a.inputs_join == "any"
    assert a.max_revisits == 5
    assert stage(p, "output").inputs[0].tensors == frozenset({"stop"})


def test_topic_prefix_and_namespace_are_used_everywhere():
    topics = TopicNames(prefix="acme", namespace="ns1")
    p = plan(TFSIMPLES, topics=topics)
    every = {t for s in p.stages for t in (*s.topics, s.sink_topic)}
    assert every == {
        "acme.ns1.pipeline.tfsimples.inputs",
        "acme.ns1.model.tfsimple1.inputs",
        "acme.ns1.model.tfsimple1.outputs",
        "acme.ns1.model.tfsimple2.inputs",
        "acme.ns1.model.tfsimple2.outputs",
        "acme.ns1.pipeline.tfsimples.outputs",
        "acme.ns1.errors.errors",
    }


def test_steps_the_answer_depends_on_are_required():
    joincheck = plan(
        pipeline_yaml(
            "joincheck",
            """
        steps:
        - name: tfsimple1
        - name: tfsimple2
        - name: check
          inputs: [tfsimple1.outputs.OUTPUT0]
        - name: tfsimple3
          inputs: [tfsimple1.outputs.OUTPUT0, tfsimple2.outputs.OUTPUT1]
          triggers: [check.outputs.OUTPUT]
        output:
          steps: [tfsimple3]
        """,
        )
    )
    required = {s.sink_model for s in joincheck.stages if s.required}
    assert required == {"tfsimple1", "tfsimple2", "check", "tfsimple3"}
    # Branches joined by `any` are alternatives: none of them is required.
    conditional = plan(
        pipeline_yaml(
            "cond",
            """
        steps:
        - name: conditional
        - name: mul10
          inputs: [conditional.outputs.OUTPUT0]
        - name: add10
          inputs: [conditional.outputs.OUTPUT1]
        output:
          steps: [mul10, add10]
          stepsJoin: any
        """,
        )
    )
    assert not any(s.required for s in conditional.stages)
