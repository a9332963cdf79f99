"""From a Pipeline spec to the stages that run it: which topics each stage reads (with which
tensors, from which pipeline's messages), how it joins them, and where it writes.

One stage per step (writing the step model's inputs topic), one for `input` (external pipelines
into this pipeline's inputs topic), one for `output` (into its outputs topic) and one that moves
this pipeline's errors into its outputs topic so a waiting caller hears of them.
"""

import dataclasses
from dataclasses import dataclass, field

from inferline.dataflow.topics import INPUTS, OUTPUTS, TopicNames
from inferline.resources import PipelineSpec, parse_external_reference, parse_reference

DEFAULT_JOIN_WINDOW_MS = 60_000

REQUEST = "request"  # payloads on inputs topics are ModelInferRequest
RESPONSE = "response"  # on outputs topics, ModelInferResponse


@dataclass(frozen=True, slots=True)
class Source:
    """One topic a stage reads, restricted to one pipeline's messages and maybe some tensors."""

    topic: str
    # Only messages whose `pipeline` header is this are read (topics are shared by pipelines).
    pipeline: str
    payload: str  # REQUEST or RESPONSE
    # The reference as written without its tensor, e.g. "tfsimple1.outputs": tensorMap keys
    # are this plus "." plus a tensor name.
    reference: str
    # None reads every tensor; otherwise only these, and a message with none of them is dropped.
    tensors: frozenset[str] | None = None
    # What a caller waits on when this source is missing (a step or pipeline name).
    waits_on: str = ""


@dataclass(frozen=True, slots=True)
class Stage:
    name: str  # "step mul10", "input", "output", "errors"
    pipeline: str
    inputs: tuple[Source, ...]
    sink_topic: str
    sink_payload: str
    inputs_join: str = "inner"
    triggers: tuple[Source, ...] = ()
    triggers_join: str = "inner"
    window_ms: int = DEFAULT_JOIN_WINDOW_MS
    tensor_map: dict[str, str] = field(default_factory=dict)
    batch_size: int | None = None
    batch_window_ms: int | None = None
    # The errors stage forwards messages whole, error header included.
    forward_errors: bool = False
    # The model a step stage feeds (named in the requests it writes).
    sink_model: str = ""
    # With allowCycles: how often one request may enter this stage's sink; None: no limit kept.
    max_revisits: int | None = None
    # The pipeline's output cannot be made without this stage: a request it drops (a trigger
    # that never fired) is ended with an error rather than left to time out.
    required: bool = False

    @property
    def topics(self) -> set[str]:
        return {s.topic for s in (*self.inputs, *self.triggers)}


@dataclass(frozen=True, slots=True)
class PipelinePlan:
    name: str
    version: int
    stages: tuple[Stage, ...]
    # Steps in the order written, for status and inspect.
    steps: tuple[str, ...]

    @property
    def models(self) -> tuple[str, ...]:
        return self.steps


def plan_pipeline(name: str, version: int, spec: PipelineSpec, topics: TopicNames) -> PipelinePlan:
    stages: list[Stage] = []
    if spec.input is not None:
        stages.append(
            Stage(
                name="input",
                pipeline=name,
                inputs=_external_sources(spec.input.external_inputs, topics),
                triggers=_external_sources(spec.input.external_triggers, topics),
                inputs_join=spec.input.join_type or "inner",
                triggers_join=spec.input.triggers_join_type or "inner",
                window_ms=spec.input.join_window_ms or DEFAULT_JOIN_WINDOW_MS,
                tensor_map=dict(spec.input.tensor_map),
                sink_topic=topics.pipeline(name, INPUTS),
                sink_payload=REQUEST,
            )
        )
    for step in spec.steps:
        batch = step.batch
        stages.append(
            Stage(
                name=f"step {step.name}",
                pipeline=name,
                inputs=_sources(step.inputs or [name], name, topics),
                triggers=_sources(step.triggers, name, topics),
                inputs_join=step.inputs_join_type,
                triggers_join=step.triggers_join_type,
                window_ms=step.join_window_ms or DEFAULT_JOIN_WINDOW_MS,
                tensor_map=dict(step.tensor_map),
                sink_topic=topics.model(step.name, INPUTS),
                sink_payload=REQUEST,
                sink_model=step.name,
                batch_size=batch.size if batch else None,
                batch_window_ms=batch.window_ms if batch else None,
                max_revisits=spec.max_step_revisits if spec.allow_cycles else None,
            )
        )
    if spec.output is not None:
        stages.append(
            Stage(
                name="output",
                pipeline=name,
                inputs=_sources(spec.output.steps, name, topics),
                inputs_join=spec.output.steps_join,
                window_ms=spec.output.join_window_ms or DEFAULT_JOIN_WINDOW_MS,
                tensor_map=dict(spec.output.tensor_map),
                sink_topic=topics.pipeline(name, OUTPUTS),
                sink_payload=RESPONSE,
            )
        )
    stages.append(
        Stage(
            name="errors",
            pipeline=name,
            inputs=(Source(topics.errors, name, RESPONSE, "errors"),),
            sink_topic=topics.pipeline(name, OUTPUTS),
            sink_payload=RESPONSE,
            forward_errors=True,
        )
    )
    required = _required_steps(spec, name)
    stages = [
        dataclasses.replace(stage, required=stage.sink_model in required)
        if stage.sink_model
        else stage
        for stage in stages
    ]
    return PipelinePlan(name, version, tuple(stages), tuple(s.name for s in spec.steps))


def _required_steps(spec: PipelineSpec, pipeline: str) -> set[str]:
    """Steps every answer depends on: those an inner (or single-source) output join reads, and,
    going upstream, those their inner joins and triggers read. Cyclic pipelines loop by design,
    so none of their steps counts as required."""
    if spec.allow_cycles or spec.output is None:
        return set()

    def step_sources(refs: list[str], join: str) -> set[str]:
        if len(refs) > 1 and join != "inner":
            return set()
        parsed = [parse_reference(ref, pipeline) for ref in refs]
        return {r.name for r in parsed if r.source == "step"}

    steps = {step.name: step for step in spec.steps}
    required: set[str] = set()
    pending = list(step_sources(spec.output.steps, spec.output.steps_join))
    while pending:
        name = pending.pop()
        if name in required or name not in steps:
            continue
        required.add(name)
        step = steps[name]
        pending += step_sources(step.inputs, step.inputs_join_type)
        pending += step_sources(step.triggers, step.triggers_join_type)
    return required


def _sources(refs: list[str], pipeline: str, topics: TopicNames) -> tuple[Source, ...]:
    """References to the same topic merge into one source with the union of their tensors."""
    merged: dict[tuple[str, str], Source] = {}
    for text in refs:
        ref = parse_reference(text, pipeline)
        if ref.source == "pipeline":
            topic = topics.pipeline(pipeline, ref.direction)
        else:
            topic = topics.model(ref.name, ref.direction)
        source = Source(
            topic=topic,
            pipeline=pipeline,
            payload=REQUEST if ref.direction == INPUTS else RESPONSE,
            reference=f"{ref.name}.{ref.direction}",
            tensors=None if ref.tensor is None else frozenset([ref.tensor]),
            waits_on=ref.name,
        )
        merged[topic, pipeline] = _merge(merged.get((topic, pipeline)), source)
    return tuple(merged.values())


def _external_sources(refs: list[str], topics: TopicNames) -> tuple[Source, ...]:
    merged: dict[tuple[str, str], Source] = {}
    for text in refs:
        ref = parse_external_reference(text)
        if ref.step is None:
            topic = topics.pipeline(ref.pipeline, ref.direction)
            reference = f"{ref.pipeline}.{ref.direction}"
        else:
            topic = topics.model(ref.step, ref.direction)
            reference = f"{ref.pipeline}.step.{ref.step}.{ref.direction}"
        source = Source(
            topic=topic,
            pipeline=ref.pipeline,
            payload=REQUEST if ref.direction == INPUTS else RESPONSE,
            reference=reference,
            tensors=None if ref.tensor is None else frozenset([ref.tensor]),
            waits_on=ref.pipeline if ref.step is None else f"{ref.pipeline}.{ref.step}",
        )
        key = (topic, ref.pipeline)
        merged[key] = _merge(merged.get(key), source)
    return tuple(merged.values())


def _merge(existing: Source | None, new: Source) -> Source:
    if existing is None:
        return new
    if existing.tensors is None or new.tensors is None:
        return dataclasses.replace(existing, tensors=None)
    return dataclasses.replace(existing, tensors=existing.tensors | new.tensors)
