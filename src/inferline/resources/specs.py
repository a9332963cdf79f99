"""The four resource kinds (Model, Server, Pipeline, Experiment) as plain dataclasses.

Attributes are snake_case; `to_dict()` gives back the camelCase spec as SC2 writes it, for storing
as JSON and for display, and `from_dict()` reads one strictly (unknown fields and wrong types are
errors naming the field). Reading a whole manifest (apiVersion, kind, metadata) is
`inferline.resources.loading`'s job; the rules that need more than one field are in
`inferline.resources.validation`.

Field meanings and defaults follow reference/sc2-semantics.md a.1-a.4.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from inferline.resources._fields import Fields
from inferline.resources.errors import ResourceError
from inferline.resources.quantity import parse_quantity

API_VERSION = "mlops.seldon.io/v1alpha1"
KINDS = ("Model", "Server", "Pipeline", "Experiment")
DEFAULT_NAMESPACE = "default"
JOIN_TYPES = ("inner", "outer", "any")
RESOURCE_TYPES = ("model", "pipeline")

ChangeKind = Literal["identical", "scale", "new_version"]


def _put(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set a key only when it says something: unset, false and empty values are left out."""
    if value is None or value is False or value == [] or value == {}:
        return
    doc[key] = value


def _block(fields: Fields, key: str, block: Any, *, empty_is_present: bool = False) -> Any:
    """A nested block read with its own class, or None when absent.

    With `empty_is_present`, a key written with nothing under it (`logger:`) reads as an empty
    block, because for these blocks being there is what matters.
    """
    if key not in fields.doc:
        return None
    value = fields.doc[key]
    if value is None:
        return block() if empty_is_present else None
    return block.from_dict(value, fields.at(key))


def _resolve_replicas(replicas: int | None, min_replicas: int | None) -> int:
    """The desired replica count, as SC2's operator works it out (GetValidatedScalingSpec).

    Unset replicas default to 1; unset or zero replicas with a positive minReplicas become
    minReplicas. An explicit 0 without a minimum stays 0, and a negative count is kept so that
    validation can reject it rather than have it silently replaced.
    """
    if replicas is not None and replicas != 0:
        return replicas
    if min_replicas is not None and min_replicas > 0:
        return min_replicas
    return 1 if replicas is None else replicas


# ---------------------------------------------------------------------------------------------
# Model (a.1)


@dataclass(slots=True)
class ParameterSpec:
    """One `{name, value}` pair, written into MLServer's `parameters.extra`."""

    name: str
    value: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value}

    @classmethod
    def from_dict(cls, value: Any, path: str = "parameter") -> "ParameterSpec":
        fields = Fields(value, path, {"name", "value"})
        return cls(name=fields.string("name", required=True), value=fields.string("value") or "")


@dataclass(slots=True)
class ExplainerSpec:
    """Makes a Model a black-box explainer of another model or pipeline."""

    type: str = ""
    model_ref: str | None = None
    pipeline_ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        _put(doc, "type", self.type or None)
        _put(doc, "modelRef", self.model_ref)
        _put(doc, "pipelineRef", self.pipeline_ref)
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "explainer") -> "ExplainerSpec":
        fields = Fields(value, path, {"type", "modelRef", "pipelineRef"})
        return cls(
            type=fields.string("type") or "",
            model_ref=fields.string("modelRef"),
            pipeline_ref=fields.string("pipelineRef"),
        )


@dataclass(slots=True)
class LlmSpec:
    """Points an LLM-module model at the model or pipeline it calls."""

    model_ref: str | None = None
    pipeline_ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        _put(doc, "modelRef", self.model_ref)
        _put(doc, "pipelineRef", self.pipeline_ref)
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "llm") -> "LlmSpec":
        fields = Fields(value, path, {"modelRef", "pipelineRef"})
        return cls(model_ref=fields.string("modelRef"), pipeline_ref=fields.string("pipelineRef"))


@dataclass(slots=True)
class LoggerSpec:
    """Payload logging. As in SC2 only its presence matters; `percent` is kept for display."""

    percent: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {} if self.percent is None else {"percent": self.percent}

    @classmethod
    def from_dict(cls, value: Any, path: str = "logger") -> "LoggerSpec":
        return cls(percent=Fields(value, path, {"percent"}).integer("percent"))


@dataclass(slots=True)
class DataflowSpec:
    """Whether deleting the resource also deletes its topics (kept by default, for replay)."""

    clean_topics_on_delete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"cleanTopicsOnDelete": self.clean_topics_on_delete}

    @classmethod
    def from_dict(cls, value: Any, path: str = "dataflow") -> "DataflowSpec":
        fields = Fields(value, path, {"cleanTopicsOnDelete"})
        return cls(clean_topics_on_delete=fields.boolean("cleanTopicsOnDelete"))


_MODEL_FIELDS = frozenset(
    {
        "storageUri",
        "artifactVersion",
        "modelType",
        "requirements",
        "memory",
        "replicas",
        "minReplicas",
        "maxReplicas",
        "server",
        "secretName",
        "schemaUri",
        "parameters",
        "explainer",
        "llm",
        "logger",
        "dataflow",
        "preloaded",
        "dedicated",
    }
)

# What a scale changes: SC2 keeps these in the model's DeploymentSpec, and a difference only
# here updates the latest version in place instead of creating a new one.
_DEPLOYMENT_FIELDS = ("replicas", "min_replicas", "max_replicas", "logger")


@dataclass(slots=True)
class ModelSpec:
    # Any rclone URI or local path. Required, but may be empty: like SC2 we accept it and the
    # load then fails on the server.
    storage_uri: str
    artifact_version: int | None = None
    model_type: str | None = None
    # As written; `effective_requirements()` adds `model_type`, as SC2 does.
    requirements: list[str] = field(default_factory=list)
    # Bytes per replica (None: no requirement, i.e. 0 bytes).
    memory: int | None = None
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    server: str | None = None
    secret_name: str | None = None
    schema_uri: str | None = None
    parameters: list[ParameterSpec] = field(default_factory=list)
    explainer: ExplainerSpec | None = None
    llm: LlmSpec | None = None
    logger: LoggerSpec | None = None
    dataflow: DataflowSpec | None = None
    preloaded: bool = False
    dedicated: bool = False
    # The quantity as written (`100Ki`), so display shows what the user wrote. Not compared:
    # `100Ki` and `102400` are the same requirement.
    memory_quantity: str | None = field(default=None, compare=False)

    def effective_requirements(self) -> list[str]:
        """The capabilities a server must advertise: `requirements`, then `modelType` if set."""
        if self.model_type:
            return [*self.requirements, self.model_type]
        return list(self.requirements)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"storageUri": self.storage_uri}
        _put(doc, "artifactVersion", self.artifact_version)
        _put(doc, "modelType", self.model_type)
        _put(doc, "requirements", list(self.requirements))
        if self.memory is not None:
            # The text as written only while it still says the same number of bytes.
            written = self.memory_quantity
            doc["memory"] = written if _says(written, self.memory) else self.memory
        doc["replicas"] = self.replicas
        _put(doc, "minReplicas", self.min_replicas)
        _put(doc, "maxReplicas", self.max_replicas)
        _put(doc, "server", self.server)
        _put(doc, "secretName", self.secret_name)
        _put(doc, "schemaUri", self.schema_uri)
        _put(doc, "parameters", [p.to_dict() for p in self.parameters])
        # Sub-blocks are written even when empty: `logger: {}` turns logging on.
        for key, block in (
            ("explainer", self.explainer),
            ("llm", self.llm),
            ("logger", self.logger),
            ("dataflow", self.dataflow),
        ):
            if block is not None:
                doc[key] = block.to_dict()
        _put(doc, "preloaded", self.preloaded)
        _put(doc, "dedicated", self.dedicated)
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "spec") -> "ModelSpec":
        fields = Fields(value, path, _MODEL_FIELDS)
        replicas = fields.integer("replicas")
        min_replicas = fields.integer("minReplicas")
        memory_written = fields.get("memory")
        return cls(
            storage_uri=fields.string("storageUri", required=True),
            artifact_version=fields.integer("artifactVersion"),
            model_type=fields.string("modelType"),
            requirements=fields.strings("requirements"),
            memory=fields.parsed("memory", parse_quantity),
            memory_quantity=memory_written if isinstance(memory_written, str) else None,
            replicas=_resolve_replicas(replicas, min_replicas),
            min_replicas=min_replicas,
            max_replicas=fields.integer("maxReplicas"),
            server=fields.string("server"),
            secret_name=fields.string("secretName"),
            schema_uri=fields.string("schemaUri"),
            parameters=[ParameterSpec.from_dict(v, p) for v, p in fields.items("parameters")],
            # `logger: {}` or a bare `logger:` is how SC2 users switch logging on, so these
            # blocks count as present even when empty.
            explainer=_block(fields, "explainer", ExplainerSpec, empty_is_present=True),
            llm=_block(fields, "llm", LlmSpec, empty_is_present=True),
            logger=_block(fields, "logger", LoggerSpec, empty_is_present=True),
            dataflow=_block(fields, "dataflow", DataflowSpec),
            preloaded=fields.boolean("preloaded"),
            dedicated=fields.boolean("dedicated"),
        )


def _says(quantity: str | None, size: int) -> bool:
    if quantity is None:
        return False
    try:
        return parse_quantity(quantity) == size
    except ResourceError:
        return False


def model_change_kind(old: ModelSpec, new: ModelSpec) -> ChangeKind:
    """What re-applying a model means, after SC2's scheduler (memory.go, equality.go).

    - "identical": nothing to do;
    - "scale": only replicas, minReplicas, maxReplicas or logger differ, so the latest version
      is updated in place;
    - "new_version": anything else differs (URI, requirements, memory, server, parameters,
      explainer, ...), so a new model version is created.

    Requirements are compared as the scheduler sees them (with `modelType` appended), and memory
    as bytes, so `100Ki` and `102400` are the same.
    """
    if _artifact_view(old) != _artifact_view(new):
        return "new_version"
    if _deployment_view(old) != _deployment_view(new):
        return "scale"
    return "identical"


def _artifact_view(spec: ModelSpec) -> ModelSpec:
    return dataclasses.replace(
        spec,
        requirements=spec.effective_requirements(),
        model_type=None,
        replicas=1,
        min_replicas=None,
        max_replicas=None,
        logger=None,
    )


def _deployment_view(spec: ModelSpec) -> tuple[Any, ...]:
    return tuple(getattr(spec, name) for name in _DEPLOYMENT_FIELDS)


# ---------------------------------------------------------------------------------------------
# Server (a.2)

_SERVER_FIELDS = frozenset(
    {
        "serverConfig",
        "capabilities",
        "extraCapabilities",
        "replicas",
        "minReplicas",
        "maxReplicas",
        "podSpec",
        "imageOverrides",
        "statefulSetPersistentVolumeClaimRetentionPolicy",
        "deploymentStrategy",
        "disableAutoUpdate",
    }
)


@dataclass(slots=True)
class ServerSpec:
    # The ServerConfig (pod template) this server is made from, e.g. `mlserver`, `triton`.
    server_config: str
    # Replaces the ServerConfig's capability list when non-empty.
    capabilities: list[str] = field(default_factory=list)
    # Appended to whichever list is in force.
    extra_capabilities: list[str] = field(default_factory=list)
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    # Kubernetes passthroughs: kept as written, for the platform that runs the server.
    pod_spec: dict[str, Any] | None = None
    image_overrides: dict[str, Any] | None = None
    stateful_set_persistent_volume_claim_retention_policy: dict[str, Any] | None = None
    deployment_strategy: dict[str, Any] | None = None
    disable_auto_update: bool = False

    def effective_capabilities(self, default: list[str]) -> list[str]:
        """The capabilities the server advertises, given its ServerConfig's default list.

        An empty `capabilities` list counts as unset, as it does for SC2's Go code, where an
        empty list and an absent one are the same value.
        """
        base = self.capabilities if self.capabilities else default
        return [*base, *self.extra_capabilities]

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"serverConfig": self.server_config}
        _put(doc, "capabilities", list(self.capabilities))
        _put(doc, "extraCapabilities", list(self.extra_capabilities))
        doc["replicas"] = self.replicas
        _put(doc, "minReplicas", self.min_replicas)
        _put(doc, "maxReplicas", self.max_replicas)
        _put(doc, "podSpec", self.pod_spec)
        _put(doc, "imageOverrides", self.image_overrides)
        _put(
            doc,
            "statefulSetPersistentVolumeClaimRetentionPolicy",
            self.stateful_set_persistent_volume_claim_retention_policy,
        )
        _put(doc, "deploymentStrategy", self.deployment_strategy)
        _put(doc, "disableAutoUpdate", self.disable_auto_update)
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "spec") -> "ServerSpec":
        fields = Fields(value, path, _SERVER_FIELDS)
        replicas = fields.integer("replicas")
        min_replicas = fields.integer("minReplicas")
        return cls(
            server_config=fields.string("serverConfig", required=True),
            capabilities=fields.strings("capabilities"),
            extra_capabilities=fields.strings("extraCapabilities"),
            replicas=_resolve_replicas(replicas, min_replicas),
            min_replicas=min_replicas,
            max_replicas=fields.integer("maxReplicas"),
            pod_spec=fields.mapping("podSpec"),
            image_overrides=fields.mapping("imageOverrides"),
            stateful_set_persistent_volume_claim_retention_policy=fields.mapping(
                "statefulSetPersistentVolumeClaimRetentionPolicy"
            ),
            deployment_strategy=fields.mapping("deploymentStrategy"),
            disable_auto_update=fields.boolean("disableAutoUpdate"),
        )


# ---------------------------------------------------------------------------------------------
# Pipeline (a.3)


@dataclass(slots=True)
class BatchSpec:
    """Batching of a step's requests; only `size` has behaviour in SC2 (b.8)."""

    size: int | None = None
    window_ms: int | None = None
    rolling: bool = False

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        _put(doc, "size", self.size)
        _put(doc, "windowMs", self.window_ms)
        _put(doc, "rolling", self.rolling)
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "batch") -> "BatchSpec":
        fields = Fields(value, path, {"size", "windowMs", "rolling"})
        return cls(
            size=fields.integer("size"),
            window_ms=fields.integer("windowMs"),
            rolling=fields.boolean("rolling"),
        )


_STEP_FIELDS = frozenset(
    {
        "name",
        "inputs",
        "tensorMap",
        "inputsJoinType",
        "joinWindowMs",
        "triggers",
        "triggersJoinType",
        "batch",
    }
)


@dataclass(slots=True)
class StepSpec:
    # The Model this step runs: a step IS a model.
    name: str
    # References as written (see `references`); none means the pipeline's own inputs.
    inputs: list[str] = field(default_factory=list)
    # `<fully qualified source tensor>: <new name>`.
    tensor_map: dict[str, str] = field(default_factory=dict)
    inputs_join_type: str = "inner"
    # None: the dataflow default window.
    join_window_ms: int | None = None
    triggers: list[str] = field(default_factory=list)
    triggers_join_type: str = "inner"
    batch: BatchSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name}
        _put(doc, "inputs", list(self.inputs))
        _put(doc, "tensorMap", dict(self.tensor_map))
        if self.inputs_join_type != "inner":
            doc["inputsJoinType"] = self.inputs_join_type
        _put(doc, "joinWindowMs", self.join_window_ms)
        _put(doc, "triggers", list(self.triggers))
        if self.triggers_join_type != "inner":
            doc["triggersJoinType"] = self.triggers_join_type
        if self.batch is not None:
            doc["batch"] = self.batch.to_dict()
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "step") -> "StepSpec":
        fields = Fields(value, path, _STEP_FIELDS)
        return cls(
            name=fields.string("name", required=True),
            inputs=fields.strings("inputs"),
            tensor_map=fields.string_map("tensorMap"),
            inputs_join_type=fields.string("inputsJoinType") or "inner",
            join_window_ms=fields.integer("joinWindowMs"),
            triggers=fields.strings("triggers"),
            triggers_join_type=fields.string("triggersJoinType") or "inner",
            batch=_block(fields, "batch", BatchSpec),
        )


_INPUT_FIELDS = frozenset(
    {
        "externalInputs",
        "externalTriggers",
        "joinType",
        "triggersJoinType",
        "joinWindowMs",
        "tensorMap",
    }
)


@dataclass(slots=True)
class PipelineInput:
    """Makes a pipeline consume other pipelines' topics (pipeline chaining, b.9)."""

    external_inputs: list[str] = field(default_factory=list)
    external_triggers: list[str] = field(default_factory=list)
    # Named `joinType` here, not `inputsJoinType` as on a step.
    join_type: str = "inner"
    triggers_join_type: str = "inner"
    join_window_ms: int | None = None
    tensor_map: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        _put(doc, "externalInputs", list(self.external_inputs))
        _put(doc, "externalTriggers", list(self.external_triggers))
        if self.join_type != "inner":
            doc["joinType"] = self.join_type
        if self.triggers_join_type != "inner":
            doc["triggersJoinType"] = self.triggers_join_type
        _put(doc, "joinWindowMs", self.join_window_ms)
        _put(doc, "tensorMap", dict(self.tensor_map))
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "input") -> "PipelineInput":
        fields = Fields(value, path, _INPUT_FIELDS)
        return cls(
            external_inputs=fields.strings("externalInputs"),
            external_triggers=fields.strings("externalTriggers"),
            join_type=fields.string("joinType") or "inner",
            triggers_join_type=fields.string("triggersJoinType") or "inner",
            join_window_ms=fields.integer("joinWindowMs"),
            tensor_map=fields.string_map("tensorMap"),
        )


@dataclass(slots=True)
class PipelineOutput:
    """What a synchronous call returns; without it only errors reach the output topic."""

    steps: list[str] = field(default_factory=list)
    steps_join: str = "inner"
    join_window_ms: int | None = None
    tensor_map: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        _put(doc, "steps", list(self.steps))
        if self.steps_join != "inner":
            doc["stepsJoin"] = self.steps_join
        _put(doc, "joinWindowMs", self.join_window_ms)
        _put(doc, "tensorMap", dict(self.tensor_map))
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "output") -> "PipelineOutput":
        fields = Fields(value, path, {"steps", "stepsJoin", "joinWindowMs", "tensorMap"})
        return cls(
            steps=fields.strings("steps"),
            steps_join=fields.string("stepsJoin") or "inner",
            join_window_ms=fields.integer("joinWindowMs"),
            tensor_map=fields.string_map("tensorMap"),
        )


_PIPELINE_FIELDS = frozenset(
    {"steps", "input", "output", "dataflow", "allowCycles", "maxStepRevisits"}
)


@dataclass(slots=True)
class PipelineSpec:
    steps: list[StepSpec] = field(default_factory=list)
    input: PipelineInput | None = None
    output: PipelineOutput | None = None
    dataflow: DataflowSpec | None = None
    allow_cycles: bool = False
    # With cycles: how often one request may re-enter a step before it is aborted.
    max_step_revisits: int = 0

    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.input is not None:
            doc["input"] = self.input.to_dict()
        doc["steps"] = [step.to_dict() for step in self.steps]
        if self.output is not None:
            doc["output"] = self.output.to_dict()
        if self.dataflow is not None:
            doc["dataflow"] = self.dataflow.to_dict()
        _put(doc, "allowCycles", self.allow_cycles)
        if self.max_step_revisits != 0:
            doc["maxStepRevisits"] = self.max_step_revisits
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "spec") -> "PipelineSpec":
        fields = Fields(value, path, _PIPELINE_FIELDS)
        return cls(
            steps=[StepSpec.from_dict(v, p) for v, p in fields.items("steps")],
            # `input:` with nothing under it is still an input block (an invalid one: it must
            # list external inputs), so presence is what counts.
            input=_block(fields, "input", PipelineInput, empty_is_present=True),
            output=_block(fields, "output", PipelineOutput),
            dataflow=_block(fields, "dataflow", DataflowSpec),
            allow_cycles=fields.boolean("allowCycles"),
            max_step_revisits=fields.integer("maxStepRevisits") or 0,
        )


# ---------------------------------------------------------------------------------------------
# Experiment (a.4)


@dataclass(slots=True)
class CandidateSpec:
    """A model or pipeline in the split; its share is weight / sum of weights."""

    name: str
    weight: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight}

    @classmethod
    def from_dict(cls, value: Any, path: str = "candidate") -> "CandidateSpec":
        fields = Fields(value, path, {"name", "weight"})
        return cls(name=fields.string("name", required=True), weight=fields.integer("weight") or 0)


@dataclass(slots=True)
class MirrorSpec:
    """A shadow target: `percent` of requests are also sent there; its answers are dropped."""

    name: str
    percent: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "percent": self.percent}

    @classmethod
    def from_dict(cls, value: Any, path: str = "mirror") -> "MirrorSpec":
        fields = Fields(value, path, {"name", "percent"})
        return cls(
            name=fields.string("name", required=True), percent=fields.integer("percent") or 0
        )


@dataclass(slots=True)
class ExperimentSpec:
    # The model or pipeline whose own endpoint receives the split (None: experiment endpoint only).
    default: str | None = None
    candidates: list[CandidateSpec] = field(default_factory=list)
    mirror: MirrorSpec | None = None
    resource_type: str = "model"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        _put(doc, "default", self.default)
        if self.resource_type != "model":
            doc["resourceType"] = self.resource_type
        doc["candidates"] = [c.to_dict() for c in self.candidates]
        if self.mirror is not None:
            doc["mirror"] = self.mirror.to_dict()
        return doc

    @classmethod
    def from_dict(cls, value: Any, path: str = "spec") -> "ExperimentSpec":
        fields = Fields(value, path, {"default", "candidates", "mirror", "resourceType"})
        return cls(
            default=fields.string("default"),
            candidates=[CandidateSpec.from_dict(v, p) for v, p in fields.items("candidates")],
            mirror=_block(fields, "mirror", MirrorSpec),
            resource_type=fields.string("resourceType") or "model",
        )


# ---------------------------------------------------------------------------------------------
# The envelope

Spec = ModelSpec | ServerSpec | PipelineSpec | ExperimentSpec

SPEC_TYPES: dict[str, type[ModelSpec | ServerSpec | PipelineSpec | ExperimentSpec]] = {
    "Model": ModelSpec,
    "Server": ServerSpec,
    "Pipeline": PipelineSpec,
    "Experiment": ExperimentSpec,
}


@dataclass(slots=True)
class Resource:
    """One manifest: its kind, identity and spec."""

    kind: str
    name: str
    spec: Spec
    namespace: str = DEFAULT_NAMESPACE
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the resource: re-applying the same key replaces it."""
        return (self.kind, self.namespace, self.name)

    def to_dict(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        _put(metadata, "labels", dict(self.labels))
        _put(metadata, "annotations", dict(self.annotations))
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": metadata,
            "spec": self.spec.to_dict(),
        }
