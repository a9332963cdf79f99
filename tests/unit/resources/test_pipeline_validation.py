"""Every pipeline rule of reference/sc2-semantics.md a.3, each with its own message."""

import re

import pytest
import yaml

from inferline.resources import PipelineSpec, ResourceError, find_cycle, validate_pipeline


def spec(text: str) -> PipelineSpec:
    return PipelineSpec.from_dict(yaml.safe_load(text))


def rejects(text: str, message: str, name: str = "p") -> None:
    with pytest.raises(ResourceError, match=re.escape(message)):
        validate_pipeline(spec(text), name)


VALID = [
    # A single step; its input is the pipeline's request.
    "steps: [{name: a}]\noutput: {steps: [a]}",
    # Bare step input, normalised to a.outputs.
    "steps: [{name: a}, {name: b, inputs: [a]}]\noutput: {steps: [b]}",
    # Pipeline's own name as input (p -> p.inputs) and a tensor of it.
    "steps: [{name: a, inputs: [p]}, {name: b, inputs: [p.inputs.X]}]",
    # A step's inputs and outputs, one tensor each.
    "steps: [{name: a}, {name: b, inputs: [a.inputs.X, a.outputs.Y]}]",
    # Output listing a tensor of a step, and the pipeline's request.
    "steps: [{name: a}]\noutput: {steps: [a.outputs.Y, p.inputs]}",
    # Triggers are not checked for existence (as in SC2).
    "steps: [{name: a, triggers: [elsewhere.outputs.OK]}]",
    # A cycle is fine when allowed.
    "allowCycles: true\nmaxStepRevisits: 3\n"
    "steps: [{name: a, inputs: [b]}, {name: b, inputs: [a]}]",
    # Every join type, a batch, windows.
    "steps: [{name: a, inputsJoinType: outer, triggersJoinType: any, joinWindowMs: 0,"
    " batch: {size: 1, windowMs: 10}}]\noutput: {steps: [a], stepsJoin: any, joinWindowMs: 5}",
    # External inputs in every form.
    "input: {externalInputs: [q, q.outputs, q.inputs.T, q.step.s, q.step.s.inputs,"
    " q.step.s.outputs.T], externalTriggers: [r], joinType: any, triggersJoinType: outer}\n"
    "steps: [{name: a}]",
    # A diamond is not a cycle.
    "steps: [{name: a}, {name: b, inputs: [a]}, {name: c, inputs: [a]}, {name: d, inputs: [b, c]}]",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_pipelines_pass(text):
    validate_pipeline(spec(text), "p")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        # valid pipeline name
        ("my_pipe", "steps: [{name: a}]", "pipeline name 'my_pipe' is not valid: underscores"),
        ("My-pipe", "steps: [{name: a}]", "uppercase letters are not allowed"),
        ("p.q", "steps: [{name: a}]", "dots are not allowed"),
        ("-p", "steps: [{name: a}]", "it starts with '-'"),
        ("", "steps: [{name: a}]", "it is empty"),
        # at least one step
        ("p", "steps: []", "pipeline p must have at least one step"),
        ("p", "output: {steps: []}", "pipeline p must have at least one step"),
        # step names
        ("p", "steps: [{name: a}, {name: a}]", "pipeline p has repeated step a"),
        (
            "p",
            "steps: [{name: p}]",
            "pipeline p must not have a step name with the same name as pipeline name",
        ),
        ("p", "steps: [{name: ''}]", "pipeline p step 0 has an empty name"),
        ("p", "steps: [{name: id1_node}]", "step name 'id1_node' is not a valid model name"),
    ],
)
def test_names_and_steps(name, text, message):
    rejects(text, message, name)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [{name: a, inputs: ['']}]", "pipeline p step a has an empty input"),
        ("steps: [{name: a, inputs: [null]}]", "pipeline p step a has an empty input"),
        ("steps: [{name: a, triggers: ['']}]", "pipeline p step a has an empty trigger"),
        # Empty references are reported before a missing output step.
        (
            "steps: [{name: a, inputs: [b, '']}]\noutput: {steps: [nowhere]}",
            "step a has an empty input",
        ),
    ],
)
def test_empty_inputs_and_triggers(text, message):
    rejects(text, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "steps: [{name: a}, {name: b, inputs: [a.outputs.T.U]}]",
            "pipeline p step b input: invalid reference 'a.outputs.T.U': it has 4",
        ),
        (
            "steps: [{name: a}, {name: b, inputs: [a.output]}]",
            "the part after 'a' must be 'inputs' or 'outputs', not 'output'",
        ),
        (
            "steps: [{name: a}, {name: b, inputs: [a..T]}]",
            "invalid reference 'a..T': it has an empty part",
        ),
        (
            "steps: [{name: a}, {name: b, triggers: [a.results]}]",
            "pipeline p step b trigger: invalid reference 'a.results'",
        ),
        (
            "steps: [{name: a, inputs: [missing]}]",
            "pipeline p step a has input missing for step missing that does not exist",
        ),
        (
            "steps: [{name: a, inputs: [missing.outputs.T]}]",
            "step a has input missing.outputs.T for step missing that does not exist",
        ),
    ],
)
def test_step_references(text, message):
    rejects(text, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [{name: a}]\noutput: {steps: [b]}", "pipeline p output step b not found"),
        ("steps: [{name: a}]\noutput: {steps: [b.outputs.T]}", "output step b not found"),
        ("steps: [{name: a}]\noutput: {steps: ['']}", "pipeline p output has an empty step"),
        (
            "steps: [{name: a}]\noutput: {steps: [a.out]}",
            "pipeline p output step: invalid reference 'a.out'",
        ),
        (
            "steps: [{name: a}]\noutput: {steps: [a.outputs.T.x]}",
            "at most 3 are allowed",
        ),
    ],
)
def test_output_references(text, message):
    rejects(text, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [{name: a, inputs: [a]}]", "pipeline p has a cycle: a -> a"),
        (
            "steps: [{name: a, inputs: [b]}, {name: b, inputs: [a]}]",
            "pipeline p has a cycle: ",
        ),
        # Triggers are edges too.
        (
            "steps: [{name: a, triggers: [c.outputs.OK]}, {name: b, inputs: [a]},"
            " {name: c, inputs: [b.outputs.X]}]",
            "has a cycle: a -> b -> c -> a (set allowCycles: true to allow it)",
        ),
    ],
)
def test_cycles_are_rejected_unless_allowed(text, message):
    rejects(text, message)
    allowed = spec(text)
    allowed.allow_cycles = True
    validate_pipeline(allowed, "p")


def test_cycle_names_its_steps_in_flow_order():
    pipeline = spec(
        "steps: [{name: x}, {name: a, inputs: [x, c]}, {name: b, inputs: [a]},"
        " {name: c, inputs: [b]}]"
    )
    # Each step feeds the next one, starting from the one written first.
    assert find_cycle(pipeline, "p") == ["a", "b", "c", "a"]
    assert find_cycle(spec("steps: [{name: a}, {name: b, inputs: [a, p]}]"), "p") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "input: {}\nsteps: [{name: a}]",
            "pipeline p input must list at least one of externalInputs",
        ),
        ("input:\nsteps: [{name: a}]", "input must list at least one of externalInputs"),
        (
            "input: {externalTriggers: [q]}\nsteps: [{name: a}]",
            "input must list at least one of externalInputs",
        ),
        (
            "input: {externalInputs: [q.step.s.outputs.T.x]}\nsteps: [{name: a}]",
            "pipeline p input externalInputs: invalid external reference "
            "'q.step.s.outputs.T.x': it has 6 dot-separated parts, at most 5",
        ),
        (
            "input: {externalInputs: [q.output]}\nsteps: [{name: a}]",
            "expected 'inputs', 'outputs' or 'step' after 'q', not 'output'",
        ),
        (
            "input: {externalInputs: [q], externalTriggers: [q.step]}\nsteps: [{name: a}]",
            "input externalTriggers: invalid external reference 'q.step': 'step' must be",
        ),
        (
            "input: {externalInputs: ['']}\nsteps: [{name: a}]",
            "pipeline p input has an empty entry in externalInputs",
        ),
    ],
)
def test_external_input(text, message):
    rejects(text, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "steps: [{name: a, inputsJoinType: left}]",
            "pipeline p step a inputsJoinType 'left' is not valid; use one of inner, outer, any",
        ),
        ("steps: [{name: a, triggersJoinType: all}]", "step a triggersJoinType 'all' is not"),
        ("steps: [{name: a}]\noutput: {stepsJoin: Inner}", "output stepsJoin 'Inner' is not"),
        ("input: {externalInputs: [q], joinType: x}\nsteps: [{name: a}]", "input joinType 'x'"),
        (
            "input: {externalInputs: [q], triggersJoinType: x}\nsteps: [{name: a}]",
            "input triggersJoinType 'x'",
        ),
        ("steps: [{name: a, batch: {size: 0}}]", "step a batch size must be 1 or more, got 0"),
        ("steps: [{name: a, batch: {size: -2}}]", "batch size must be 1 or more, got -2"),
        ("steps: [{name: a}]\nmaxStepRevisits: -1", "maxStepRevisits must be 0 or more, got -1"),
        ("steps: [{name: a, joinWindowMs: -1}]", "step a joinWindowMs must be 0 or more"),
        ("steps: [{name: a}]\noutput: {joinWindowMs: -5}", "output joinWindowMs must be 0 or more"),
    ],
)
def test_settings(text, message):
    rejects(text, message)


def test_batch_size_unset_is_fine():
    validate_pipeline(spec("steps: [{name: a, batch: {windowMs: 100}}]"), "p")


def test_a_long_chain_is_checked_without_recursion():
    steps = [{"name": "s0"}] + [{"name": f"s{i}", "inputs": [f"s{i - 1}"]} for i in range(1, 3000)]
    chain = PipelineSpec.from_dict({"steps": steps})
    validate_pipeline(chain, "p")
    chain.steps[0].inputs = ["s2999"]
    with pytest.raises(ResourceError, match=re.escape("has a cycle: s0 -> s1 -> s2 -> ")):
        validate_pipeline(chain, "p")
