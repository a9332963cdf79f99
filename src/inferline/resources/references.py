"""The reference syntax of pipelines (reference/sc2-semantics.md a.5).

Inside a pipeline P, a step's inputs and triggers and the output's steps name a source:

    step                 -> step.outputs        (all output tensors of a step)
    step.outputs.T       -> tensor T of the step's response
    step.inputs[.T]      -> the request sent to the step (or one tensor of it)
    P                    -> P.inputs            (the pipeline's own request)
    P.inputs[.T]         -> the pipeline request (or one tensor of it)

A pipeline's `input.externalInputs` / `externalTriggers` name another pipeline Q's topics:

    Q                    -> Q.outputs
    Q.(inputs|outputs)[.T]
    Q.step.S             -> Q.step.S.outputs
    Q.step.S.(inputs|outputs)[.T]

Each reference stands for one topic plus an optional tensor filter; the dataflow engine turns the
parsed form into topic names.
"""

from dataclasses import dataclass
from typing import Literal

from inferline.resources.errors import ResourceError

INPUTS = "inputs"
OUTPUTS = "outputs"
_DIRECTIONS = (INPUTS, OUTPUTS)
_STEP = "step"
# Q.step.S.outputs.T is the longest external reference.
MAX_EXTERNAL_PARTS = 5

Direction = Literal["inputs", "outputs"]


@dataclass(frozen=True, slots=True)
class Reference:
    """A source inside one pipeline: the pipeline's own request, or a step's request/response."""

    source: Literal["pipeline", "step"]
    # The pipeline's name when `source` is "pipeline", else the step's.
    name: str
    direction: Direction
    # One tensor of the message, or None for all of them.
    tensor: str | None = None

    def __str__(self) -> str:
        text = f"{self.name}.{self.direction}"
        return text if self.tensor is None else f"{text}.{self.tensor}"


@dataclass(frozen=True, slots=True)
class ExternalReference:
    """A topic of another pipeline: its request or response, or one of its steps'."""

    pipeline: str
    # None: the pipeline's own topics; else a step inside it.
    step: str | None
    direction: Direction
    tensor: str | None = None

    def __str__(self) -> str:
        text = self.pipeline if self.step is None else f"{self.pipeline}.{_STEP}.{self.step}"
        text = f"{text}.{self.direction}"
        return text if self.tensor is None else f"{text}.{self.tensor}"


def normalise_step_reference(ref: str, pipeline_name: str) -> str:
    """Give a bare name its implied direction: `step` -> `step.outputs`, `P` -> `P.inputs`.

    A bare step means what the step produced; a bare pipeline name can only mean the request
    the pipeline received (its outputs are what the pipeline is still making). Anything with a
    dot is returned unchanged; `parse_reference` checks it.
    """
    if "." in ref or not ref:
        return ref
    return f"{ref}.{INPUTS}" if ref == pipeline_name else f"{ref}.{OUTPUTS}"


def parse_reference(ref: str, pipeline_name: str) -> Reference:
    """Parse a step input, trigger or output reference of pipeline `pipeline_name`."""
    if not ref:
        raise ResourceError("reference is empty")
    normalised = normalise_step_reference(ref, pipeline_name)
    parts = normalised.split(".")
    if len(parts) > 3:
        raise ResourceError(
            f"invalid reference '{ref}': it has {len(parts)} dot-separated parts, at most 3 "
            "are allowed (<step>.<inputs|outputs>.<tensor>)"
        )
    _check_parts(ref, parts)
    name, direction = parts[0], parts[1]
    if direction not in _DIRECTIONS:
        raise ResourceError(
            f"invalid reference '{ref}': the part after '{name}' must be 'inputs' or "
            f"'outputs', not '{direction}'"
        )
    return Reference(
        source="pipeline" if name == pipeline_name else "step",
        name=name,
        direction=direction,  # type: ignore[arg-type]
        tensor=parts[2] if len(parts) == 3 else None,
    )


def normalise_external_reference(ref: str) -> str:
    """The full form of an external reference: `Q` -> `Q.outputs`, `Q.step.S` -> `...S.outputs`."""
    return str(parse_external_reference(ref))


def parse_external_reference(ref: str) -> ExternalReference:
    """Parse one of `input.externalInputs` / `input.externalTriggers`."""
    if not ref:
        raise ResourceError("external reference is empty")
    parts = ref.split(".")
    if len(parts) > MAX_EXTERNAL_PARTS:
        raise ResourceError(
            f"invalid external reference '{ref}': it has {len(parts)} dot-separated parts, at "
            f"most {MAX_EXTERNAL_PARTS} are allowed (<pipeline>.step.<step>.<inputs|outputs>."
            "<tensor>)"
        )
    _check_parts(ref, parts)
    pipeline, rest = parts[0], parts[1:]
    step = None
    if rest and rest[0] == _STEP:
        if len(rest) == 1:
            raise ResourceError(
                f"invalid external reference '{ref}': 'step' must be followed by a step name"
            )
        step, rest = rest[1], rest[2:]
    if not rest:
        # A bare pipeline or step means what it produced.
        return ExternalReference(pipeline, step, OUTPUTS)
    direction = rest[0]
    if direction not in _DIRECTIONS:
        expected = "'inputs' or 'outputs'" if step else "'inputs', 'outputs' or 'step'"
        raise ResourceError(
            f"invalid external reference '{ref}': expected {expected} after "
            f"'{'.'.join(parts[: len(parts) - len(rest)])}', not '{direction}'"
        )
    if len(rest) > 2:
        raise ResourceError(
            f"invalid external reference '{ref}': only one tensor name may follow '{direction}'"
        )
    return ExternalReference(
        pipeline=pipeline,
        step=step,
        direction=direction,  # type: ignore[arg-type]
        tensor=rest[1] if len(rest) == 2 else None,
    )


def _check_parts(ref: str, parts: list[str]) -> None:
    if any(not part for part in parts):
        raise ResourceError(f"invalid reference '{ref}': it has an empty part between dots")
