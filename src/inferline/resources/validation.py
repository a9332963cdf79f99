"""Rules that need more than one field: what SC2's scheduler and operator reject on load.

Each rule fails with its own message, in the words of SC2's where it has them (reference/
sc2-semantics.md a.1-a.4), so a user who knows SC2's errors recognises ours. The checks run in
a fixed order and the first failure is reported.
"""

import re
from collections.abc import Iterable

from inferline.resources.errors import ResourceError
from inferline.resources.references import (
    Reference,
    parse_external_reference,
    parse_reference,
)
from inferline.resources.specs import (
    JOIN_TYPES,
    RESOURCE_TYPES,
    ExperimentSpec,
    ModelSpec,
    PipelineSpec,
    Resource,
    ServerSpec,
)

# The scheduler's name rule (scheduler/pkg/store/utils/validate.go). Names become topic names
# and URL path segments, hence lowercase, no dots, no underscores.
NAME_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME_RULE = "names use lowercase letters, digits and '-', and start and end with a letter or digit"


def name_problem(name: str) -> str | None:
    """What is wrong with a resource name, or None when it follows the rule."""
    if NAME_PATTERN.fullmatch(name):
        return None
    if not name:
        return "it is empty"
    if "_" in name:
        return "underscores are not allowed"
    if "." in name:
        return "dots are not allowed"
    if any(c.isupper() for c in name):
        return "uppercase letters are not allowed"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))})
    if bad:
        return "it contains " + ", ".join(repr(c) for c in bad)
    # Only [a-z0-9-] is left, so the dash is at an end.
    return "it starts with '-'" if name.startswith("-") else "it ends with '-'"


def validate_name(name: str, kind: str) -> None:
    problem = name_problem(name)
    if problem:
        raise ResourceError(f"{kind} name '{name}' is not valid: {problem}; {_NAME_RULE}")


def _check_scaling(
    what: str, replicas: int, min_replicas: int | None, max_replicas: int | None
) -> None:
    """SC2's replica bounds (GetValidatedScalingSpec): min <= replicas <= max.

    As in SC2 a maxReplicas of 0 means "no upper bound", and replicas below a positive
    minimum were already raised to it when the spec was read if they were unset or 0.
    """
    for field_name, value in (
        ("replicas", replicas),
        ("minReplicas", min_replicas),
        ("maxReplicas", max_replicas),
    ):
        if value is not None and value < 0:
            raise ResourceError(f"{what} {field_name} must be 0 or more, got {value}")
    minimum = min_replicas or 0
    maximum = max_replicas or 0
    if maximum and minimum > maximum:
        raise ResourceError(f"{what} minReplicas {minimum} must be <= maxReplicas {maximum}")
    if minimum and replicas < minimum:
        raise ResourceError(
            f"{what} number of replicas {replicas} must be >= minReplicas {minimum}"
        )
    if maximum and replicas > maximum:
        raise ResourceError(
            f"{what} number of replicas {replicas} must be <= maxReplicas {maximum}"
        )


# ---------------------------------------------------------------------------------------------
# Model


def validate_model(spec: ModelSpec, name: str) -> None:
    validate_name(name, "model")
    what = f"model {name}"
    _check_scaling(what, spec.replicas, spec.min_replicas, spec.max_replicas)
    if spec.artifact_version is not None and spec.artifact_version < 0:
        raise ResourceError(
            f"{what} artifactVersion must be 0 or more, got {spec.artifact_version}"
        )
    if spec.explainer is not None and spec.llm is not None:
        raise ResourceError(f"{what} can't have both explainer and llm")
    if spec.explainer is not None:
        if not spec.explainer.type:
            raise ResourceError(
                f"{what} explainer needs a type (an alibi-explain type such as anchor_tabular)"
            )
        if bool(spec.explainer.model_ref) == bool(spec.explainer.pipeline_ref):
            raise ResourceError(f"{what} explainer needs exactly one of modelRef and pipelineRef")
    if spec.llm is not None and spec.llm.model_ref and spec.llm.pipeline_ref:
        raise ResourceError(f"{what} llm can have modelRef or pipelineRef, not both")
    for parameter in spec.parameters:
        if not parameter.name:
            raise ResourceError(f"{what} has a parameter without a name")
    percent = spec.logger.percent if spec.logger is not None else None
    if percent is not None and not 0 <= percent <= 100:
        raise ResourceError(f"{what} logger percent must be between 0 and 100, got {percent}")


# ---------------------------------------------------------------------------------------------
# Server


def validate_server(spec: ServerSpec, name: str) -> None:
    validate_name(name, "server")
    what = f"server {name}"
    if not spec.server_config:
        raise ResourceError(f"{what} serverConfig must name a ServerConfig (e.g. mlserver)")
    _check_scaling(what, spec.replicas, spec.min_replicas, spec.max_replicas)


# ---------------------------------------------------------------------------------------------
# Pipeline


def validate_pipeline(spec: PipelineSpec, name: str) -> None:
    """Every rule of a.3, in this order: name, steps, references, cycles, input, settings."""
    validate_name(name, "pipeline")
    what = f"pipeline {name}"
    if not spec.steps:
        raise ResourceError(f"{what} must have at least one step")

    seen: set[str] = set()
    for index, step in enumerate(spec.steps):
        if not step.name:
            raise ResourceError(f"{what} step {index} has an empty name")
        if step.name in seen:
            raise ResourceError(f"{what} has repeated step {step.name}")
        seen.add(step.name)
        if step.name == name:
            raise ResourceError(
                f"{what} must not have a step name with the same name as pipeline name"
            )
        # A step names a model, and the reference syntax splits on dots.
        problem = name_problem(step.name)
        if problem:
            raise ResourceError(
                f"{what} step name '{step.name}' is not a valid model name: {problem}"
            )

    # Empty references first: they are the most likely typo (a bare `-`) and would otherwise
    # surface as a confusing "does not exist".
    for step in spec.steps:
        if any(not ref for ref in step.inputs):
            raise ResourceError(f"{what} step {step.name} has an empty input")
        if any(not ref for ref in step.triggers):
            raise ResourceError(f"{what} step {step.name} has an empty trigger")

    step_names = set(seen)
    # Inputs and triggers must parse; inputs must name existing steps (or the pipeline
    # itself). As in SC2, triggers are not checked for existence.
    for step in spec.steps:
        for kind, refs in (("input", step.inputs), ("trigger", step.triggers)):
            for ref in refs:
                parsed = _parse_in(what, f"step {step.name} {kind}", ref, name)
                if kind == "input" and parsed.source == "step" and parsed.name not in step_names:
                    raise ResourceError(
                        f"{what} step {step.name} has input {ref} for step "
                        f"{parsed.name} that does not exist"
                    )

    if spec.output is not None:
        for ref in spec.output.steps:
            if not ref:
                raise ResourceError(f"{what} output has an empty step")
            parsed = _parse_in(what, "output step", ref, name)
            if parsed.source == "step" and parsed.name not in step_names:
                raise ResourceError(f"{what} output step {parsed.name} not found")

    if not spec.allow_cycles:
        cycle = find_cycle(spec, name)
        if cycle:
            raise ResourceError(
                f"{what} has a cycle: {' -> '.join(cycle)} (set allowCycles: true to allow it)"
            )

    if spec.input is not None:
        if not spec.input.external_inputs:
            raise ResourceError(f"{what} input must list at least one of externalInputs")
        for kind, refs in (
            ("externalInputs", spec.input.external_inputs),
            ("externalTriggers", spec.input.external_triggers),
        ):
            for ref in refs:
                if not ref:
                    raise ResourceError(f"{what} input has an empty entry in {kind}")
                try:
                    parse_external_reference(ref)
                except ResourceError as exc:
                    raise ResourceError(f"{what} input {kind}: {exc.message}") from None

    _check_settings(spec, what)


def _parse_in(what: str, where: str, ref: str, pipeline_name: str) -> Reference:
    try:
        return parse_reference(ref, pipeline_name)
    except ResourceError as exc:
        raise ResourceError(f"{what} {where}: {exc.message}") from None


def _check_settings(spec: PipelineSpec, what: str) -> None:
    """Join types, windows, batch sizes and revisits: the per-field ranges."""
    joins: list[tuple[str, str]] = []
    windows: list[tuple[str, int | None]] = []
    for step in spec.steps:
        at = f"step {step.name}"
        joins += [(f"{at} inputsJoinType", step.inputs_join_type)]
        joins += [(f"{at} triggersJoinType", step.triggers_join_type)]
        windows.append((f"{at} joinWindowMs", step.join_window_ms))
        if step.batch is not None:
            if step.batch.size is not None and step.batch.size < 1:
                raise ResourceError(
                    f"{what} {at} batch size must be 1 or more, got {step.batch.size}"
                )
            windows.append((f"{at} batch windowMs", step.batch.window_ms))
    if spec.input is not None:
        joins += [("input joinType", spec.input.join_type)]
        joins += [("input triggersJoinType", spec.input.triggers_join_type)]
        windows.append(("input joinWindowMs", spec.input.join_window_ms))
    if spec.output is not None:
        joins += [("output stepsJoin", spec.output.steps_join)]
        windows.append(("output joinWindowMs", spec.output.join_window_ms))
    for where, join in joins:
        if join not in JOIN_TYPES:
            raise ResourceError(
                f"{what} {where} '{join}' is not valid; use one of {', '.join(JOIN_TYPES)}"
            )
    for where, window in windows:
        if window is not None and window < 0:
            raise ResourceError(f"{what} {where} must be 0 or more, got {window}")
    if spec.max_step_revisits < 0:
        raise ResourceError(
            f"{what} maxStepRevisits must be 0 or more, got {spec.max_step_revisits}"
        )


def find_cycle(spec: PipelineSpec, pipeline_name: str) -> list[str] | None:
    """A cycle among the steps as a path (`a -> b -> a`), or None when the graph is acyclic.

    An edge runs from each step named in another step's inputs or triggers to that step; the
    pipeline's own request is no step and makes no edge. References that do not parse or
    name no step are skipped: other rules report them.
    """
    fed_by: dict[str, list[str]] = {step.name: [] for step in spec.steps}
    for step in spec.steps:
        for ref in [*step.inputs, *step.triggers]:
            try:
                source = parse_reference(ref, pipeline_name)
            except ResourceError:
                continue
            known = source.source == "step" and source.name in fed_by
            if known and source.name not in fed_by[step.name]:
                fed_by[step.name].append(source.name)

    # Depth-first along "is fed by" edges, in step order so the reported cycle is stable.
    # Iterative, so a long chain of steps cannot exhaust Python's recursion limit.
    order = {name: index for index, name in enumerate(fed_by)}
    done: set[str] = set()
    for start in fed_by:
        if start in done:
            continue
        path = [start]
        on_path = {start}
        pending = [iter(fed_by[start])]
        while pending:
            source = next(pending[-1], None)
            if source is None:
                pending.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif source in on_path:
                return _flow_order(path[path.index(source) :], order)
            elif source not in done:
                path.append(source)
                on_path.add(source)
                pending.append(iter(fed_by[source]))
    return None


def _flow_order(loop: list[str], order: dict[str, int]) -> list[str]:
    """`loop` follows "is fed by" edges: reverse it so each step feeds the next, start it at
    the step written first, and close it (`a -> b -> a`)."""
    forward = list(reversed(loop))
    first = min(range(len(forward)), key=lambda i: order[forward[i]])
    forward = forward[first:] + forward[:first]
    return [*forward, forward[0]]


# ---------------------------------------------------------------------------------------------
# Experiment


def validate_experiment(spec: ExperimentSpec, name: str) -> None:
    validate_name(name, "experiment")
    what = f"experiment {name}"
    if spec.resource_type not in RESOURCE_TYPES:
        raise ResourceError(
            f"{what} resourceType '{spec.resource_type}' is not valid; use model or pipeline"
        )
    if not spec.candidates and spec.mirror is None:
        raise ResourceError(f"{what} must have at least one candidate or a mirror")
    names: set[str] = set()
    targets = [c.name for c in spec.candidates]
    if spec.mirror is not None:
        targets.append(spec.mirror.name)
    for target in targets:
        if not target:
            raise ResourceError(f"{what} has a candidate or mirror without a name")
        if target in names:
            raise ResourceError(
                f"{what} names {target} more than once; candidate and mirror names must be unique"
            )
        names.add(target)
    for candidate in spec.candidates:
        if candidate.weight < 0:
            raise ResourceError(
                f"{what} candidate {candidate.name} weight must be 0 or more, "
                f"got {candidate.weight}"
            )
    if spec.candidates and sum(c.weight for c in spec.candidates) == 0:
        raise ResourceError(f"{what} candidate weights add up to 0; give at least one a weight")
    if spec.mirror is not None and not 0 <= spec.mirror.percent <= 100:
        raise ResourceError(
            f"{what} mirror percent must be between 0 and 100, got {spec.mirror.percent}"
        )
    if spec.default is not None and spec.default not in {c.name for c in spec.candidates}:
        raise ResourceError(
            f"{what} default {spec.default} must be one of its candidates "
            f"({', '.join(c.name for c in spec.candidates) or 'none'})"
        )


def check_experiment_defaults(experiments: Iterable[Resource]) -> None:
    """A model or pipeline may be the `default` of only one experiment at a time.

    `experiments` are the experiments that would exist together (say, the stored ones plus the
    one being applied, which replaces any stored one of the same name).
    """
    owners: dict[tuple[str, str, str], str] = {}
    for resource in experiments:
        spec = resource.spec
        if not isinstance(spec, ExperimentSpec) or spec.default is None:
            continue
        key = (resource.namespace, spec.resource_type, spec.default)
        owner = owners.setdefault(key, resource.name)
        if owner != resource.name:
            raise ResourceError(
                f"{spec.resource_type} {spec.default} is already the default of experiment "
                f"{owner}; experiment {resource.name} cannot also be its default"
            )


def validate_resource(resource: Resource) -> None:
    """The rules of the resource's kind."""
    spec = resource.spec
    if isinstance(spec, ModelSpec):
        validate_model(spec, resource.name)
    elif isinstance(spec, ServerSpec):
        validate_server(spec, resource.name)
    elif isinstance(spec, PipelineSpec):
        validate_pipeline(spec, resource.name)
    elif isinstance(spec, ExperimentSpec):
        validate_experiment(spec, resource.name)
    else:  # pragma: no cover - the loader builds only the four kinds
        raise ResourceError(f"unknown resource spec {type(spec).__name__}")
