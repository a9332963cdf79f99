"""The a.5 reference syntax: step references inside a pipeline, external ones across them."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferline.resources import (
    ExternalReference,
    Reference,
    ResourceError,
    normalise_external_reference,
    normalise_step_reference,
    parse_external_reference,
    parse_reference,
)


@pytest.mark.parametrize(
    ("ref", "normalised"),
    [
        ("step", "step.outputs"),
        ("p", "p.inputs"),
        ("step.outputs", "step.outputs"),
        ("step.inputs.T", "step.inputs.T"),
        ("p.inputs.T", "p.inputs.T"),
        ("", ""),
    ],
)
def test_normalise_step_reference(ref, normalised):
    assert normalise_step_reference(ref, "p") == normalised


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("step", Reference("step", "step", "outputs")),
        ("step.outputs", Reference("step", "step", "outputs")),
        ("step.outputs.OUT", Reference("step", "step", "outputs", "OUT")),
        ("step.inputs", Reference("step", "step", "inputs")),
        ("step.inputs.IN", Reference("step", "step", "inputs", "IN")),
        ("p", Reference("pipeline", "p", "inputs")),
        ("p.inputs.INPUT0", Reference("pipeline", "p", "inputs", "INPUT0")),
        ("p.outputs", Reference("pipeline", "p", "outputs")),
    ],
)
def test_parse_reference(ref, expected):
    parsed = parse_reference(ref, "p")
    assert parsed == expected
    assert str(parsed) == normalise_step_reference(ref, "p")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "reference is empty"),
        ("a.outputs.T.U", "it has 4 dot-separated parts, at most 3 are allowed"),
        ("a.output", "the part after 'a' must be 'inputs' or 'outputs', not 'output'"),
        ("a.OUTPUTS.T", "not 'OUTPUTS'"),
        ("a.", "it has an empty part between dots"),
        (".outputs", "it has an empty part between dots"),
        ("a..T", "it has an empty part between dots"),
    ],
)
def test_invalid_references(ref, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        parse_reference(ref, "p")


@pytest.mark.parametrize(
    ("ref", "expected", "normalised"),
    [
        ("q", ExternalReference("q", None, "outputs"), "q.outputs"),
        ("q.outputs", ExternalReference("q", None, "outputs"), "q.outputs"),
        ("q.inputs", ExternalReference("q", None, "inputs"), "q.inputs"),
        ("q.outputs.T", ExternalReference("q", None, "outputs", "T"), "q.outputs.T"),
        ("q.step.s", ExternalReference("q", "s", "outputs"), "q.step.s.outputs"),
        ("q.step.s.inputs", ExternalReference("q", "s", "inputs"), "q.step.s.inputs"),
        (
            "q.step.s.outputs.T",
            ExternalReference("q", "s", "outputs", "T"),
            "q.step.s.outputs.T",
        ),
        # A tensor may be called "step": position decides.
        ("q.outputs.step", ExternalReference("q", None, "outputs", "step"), "q.outputs.step"),
    ],
)
def test_parse_external_reference(ref, expected, normalised):
    assert parse_external_reference(ref) == expected
    assert normalise_external_reference(ref) == normalised
    assert str(expected) == normalised


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "external reference is empty"),
        ("q.step.s.outputs.T.U", "it has 6 dot-separated parts, at most 5 are allowed"),
        ("q.step", "'step' must be followed by a step name"),
        ("q.result", "expected 'inputs', 'outputs' or 'step' after 'q', not 'result'"),
        ("q.step.s.out", "expected 'inputs' or 'outputs' after 'q.step.s', not 'out'"),
        ("q.outputs.T.U", "only one tensor name may follow 'outputs'"),
        ("q..outputs", "it has an empty part between dots"),
    ],
)
def test_invalid_external_references(ref, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        parse_external_reference(ref)


names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)
tensors = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
directions = st.sampled_from(["inputs", "outputs"])


@given(names, st.one_of(st.none(), directions), st.one_of(st.none(), tensors))
def test_step_references_round_trip(name, direction, tensor):
    ref = name if direction is None else f"{name}.{direction}"
    if direction is not None and tensor is not None:
        ref += f".{tensor}"
    parsed = parse_reference(ref, "the-pipeline")
    assert str(parsed) == normalise_step_reference(ref, "the-pipeline")
    assert parse_reference(str(parsed), "the-pipeline") == parsed


@given(names, st.one_of(st.none(), names), st.one_of(st.none(), directions), tensors)
def test_external_references_round_trip(pipeline, step, direction, tensor):
    ref = pipeline if step is None else f"{pipeline}.step.{step}"
    if direction is not None:
        ref += f".{direction}.{tensor}"
    parsed = parse_external_reference(ref)
    assert (parsed.pipeline, parsed.step) == (pipeline, step)
    assert parse_external_reference(str(parsed)) == parsed
