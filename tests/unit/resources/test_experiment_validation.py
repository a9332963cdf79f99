"""Experiment rules (reference/sc2-semantics.md a.4)."""

import re

import pytest
import yaml

from inferline.resources import (
    ExperimentSpec,
    Resource,
    ResourceError,
    check_experiment_defaults,
    validate_experiment,
)


def spec(text: str) -> ExperimentSpec:
    return ExperimentSpec.from_dict(yaml.safe_load(text))


@pytest.mark.parametrize(
    "text",
    [
        "candidates: [{name: a, weight: 50}, {name: b, weight: 50}]",
        "default: a\ncandidates: [{name: a, weight: 1}, {name: b, weight: 0}]",
        "mirror: {name: m, percent: 100}",
        "candidates: [{name: a, weight: 100}]\nmirror: {name: m, percent: 0}",
        "resourceType: pipeline\ndefault: a\ncandidates: [{name: a, weight: 1}]",
    ],
)
def test_valid_experiments_pass(text):
    validate_experiment(spec(text), "ab")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("candidates: []", "experiment ab must have at least one candidate or a mirror"),
        ("default: a", "experiment ab must have at least one candidate or a mirror"),
        (
            "default: c\ncandidates: [{name: a, weight: 1}, {name: b, weight: 1}]",
            "experiment ab default c must be one of its candidates (a, b)",
        ),
        (
            "default: m\ncandidates: [{name: a, weight: 1}]\nmirror: {name: m, percent: 5}",
            "default m must be one of its candidates (a)",
        ),
        (
            "candidates: [{name: a, weight: 1}, {name: a, weight: 1}]",
            "experiment ab names a more than once; candidate and mirror names must be unique",
        ),
        (
            "candidates: [{name: a, weight: 1}]\nmirror: {name: a, percent: 5}",
            "names a more than once",
        ),
        (
            "candidates: [{name: a, weight: -1}, {name: b, weight: 3}]",
            "experiment ab candidate a weight must be 0 or more, got -1",
        ),
        (
            "candidates: [{name: a, weight: 0}, {name: b}]",
            "experiment ab candidate weights add up to 0",
        ),
        (
            "candidates: [{name: a, weight: 1}]\nmirror: {name: m, percent: 101}",
            "experiment ab mirror percent must be between 0 and 100, got 101",
        ),
        ("mirror: {name: m, percent: -1}", "mirror percent must be between 0 and 100, got -1"),
        (
            "resourceType: Model\ncandidates: [{name: a, weight: 1}]",
            "experiment ab resourceType 'Model' is not valid; use model or pipeline",
        ),
        ("candidates: [{name: '', weight: 1}]", "has a candidate or mirror without a name"),
    ],
)
def test_invalid_experiments(text, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        validate_experiment(spec(text), "ab")


def test_experiment_name_follows_the_name_rule():
    with pytest.raises(ResourceError, match="experiment name 'a_b' is not valid: underscores"):
        validate_experiment(spec("candidates: [{name: a, weight: 1}]"), "a_b")


def test_experiment_defaults_and_round_trip():
    parsed = spec("default: a\ncandidates: [{name: a, weight: 3}]\nmirror: {name: m, percent: 10}")
    assert parsed.resource_type == "model"
    assert parsed.to_dict() == {
        "default": "a",
        "candidates": [{"name": "a", "weight": 3}],
        "mirror": {"name": "m", "percent": 10},
    }
    assert ExperimentSpec.from_dict(parsed.to_dict()) == parsed
    assert spec("candidates: [{name: a}]").candidates[0].weight == 0


def experiment(name: str, default: str | None, resource_type: str = "model", ns: str = "default"):
    candidates = f"[{{name: {default or 'x'}, weight: 1}}]"
    text = f"resourceType: {resource_type}\ncandidates: {candidates}"
    if default:
        text += f"\ndefault: {default}"
    return Resource(kind="Experiment", name=name, namespace=ns, spec=spec(text))


def test_a_model_is_the_default_of_one_experiment_only():
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "model iris is already the default of experiment one; "
            "experiment two cannot also be its default"
        ),
    ):
        check_experiment_defaults([experiment("one", "iris"), experiment("two", "iris")])


@pytest.mark.parametrize(
    "experiments",
    [
        # Re-applying the same experiment replaces it; no conflict with itself.
        [experiment("one", "iris"), experiment("one", "iris")],
        # Models and pipelines are different things even with the same name.
        [experiment("one", "iris"), experiment("two", "iris", "pipeline")],
        # Different namespaces, different models.
        [experiment("one", "iris"), experiment("two", "iris", ns="other")],
        # No default: nothing to own.
        [experiment("one", None), experiment("two", None)],
    ],
)
def test_defaults_that_do_not_conflict(experiments):
    check_experiment_defaults(experiments)
