"""Reading SC2 manifests (multi-document YAML) into validated `Resource`s.

Strict like SC2's CLI: the apiVersion must be `mlops.seldon.io/v1alpha1`, the kind one of Model,
Server, Pipeline, Experiment, and an unknown field anywhere is an error. Every error is one line
that says where: `<source> document 2 (Experiment ab): unknown field 'spec.candidate'`.
Loading is all or nothing: one bad document fails the whole text, so a half-applied file
cannot happen.
"""

import os
from pathlib import Path
from typing import Any

import yaml

from inferline.resources._fields import Fields, describe
from inferline.resources.errors import ResourceError
from inferline.resources.specs import (
    API_VERSION,
    DEFAULT_NAMESPACE,
    KINDS,
    SPEC_TYPES,
    Resource,
)
from inferline.resources.validation import check_experiment_defaults, validate_resource

_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
# Kubernetes sets these on objects it stores; they are accepted (so the output of
# `kubectl get -o yaml` loads) and ignored, as is `status`.
_SERVER_SET_METADATA = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
        "finalizers",
        "ownerReferences",
        "managedFields",
        "selfLink",
    }
)
_METADATA = frozenset({"name", "namespace", "labels", "annotations"}) | _SERVER_SET_METADATA
# SC2 kinds inferline does not read: install-level configuration, and the early Explainer kind.
_SC2_OTHER_KINDS = ("ServerConfig", "SeldonConfig", "SeldonRuntime")


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader, except that a key repeated in one mapping is an error.

    Plain PyYAML keeps the last value silently; SC2's decoder rejects the repeat, and a
    repeated key in a hand-written manifest is almost always a mistake.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_resources(text: str, source: str = "<input>") -> list[Resource]:
    """Parse and validate every document of a YAML text; empty documents are skipped."""
    try:
        documents = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as exc:
        raise ResourceError(f"{source}: {_yaml_problem(exc)}") from None
    resources = []
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        resources.append(resource_from_dict(document, f"{source} document {number}"))
    try:
        check_experiment_defaults(r for r in resources if r.kind == "Experiment")
    except ResourceError as exc:
        raise ResourceError(f"{source}: {exc.message}") from None
    return resources


def load_resource_file(path: str | os.PathLike[str]) -> list[Resource]:
    """`load_resources` on a file's text; the file's path is the source in messages."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ResourceError(f"{path} is not UTF-8 text") from None
    return load_resources(text, str(path))


def resource_from_dict(document: Any, source: str = "<input>") -> Resource:
    """One parsed manifest (from YAML or JSON) as a validated Resource."""
    where = _where(document, source)
    try:
        resource = _parse(document)
        validate_resource(resource)
    except ResourceError as exc:
        raise ResourceError(f"{where}: {exc.message}") from None
    return resource


def _where(document: Any, source: str) -> str:
    """`source (Kind name)`, with whatever of kind and name the document has."""
    if not isinstance(document, dict):
        return source
    kind = document.get("kind")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    label = " ".join(str(part) for part in (kind, name) if isinstance(part, str) and part)
    return f"{source} ({label})" if label else source


def _parse(document: Any) -> Resource:
    if not isinstance(document, dict):
        raise ResourceError(
            "a resource must be a mapping with apiVersion, kind, metadata and spec, "
            f"got {describe(document)}"
        )
    # Kind before anything else: for a non-SC2 document (a Kubernetes Secret, say) the kind is
    # what tells the user what went wrong, not its fields.
    kind = document.get("kind")
    api_version = document.get("apiVersion")
    if kind is None:
        raise ResourceError("missing required field 'kind'")
    if not isinstance(kind, str):
        raise ResourceError(f"field 'kind' must be a string, got {describe(kind)}")
    if kind not in KINDS:
        raise ResourceError(_unsupported_kind(kind, api_version))
    if api_version != API_VERSION:
        if api_version is None:
            raise ResourceError("missing required field 'apiVersion'")
        raise ResourceError(
            f"apiVersion '{api_version}' is not supported for kind {kind}; use {API_VERSION}"
        )

    fields = Fields(document, "", _TOP_LEVEL)
    metadata = fields.child("metadata", _METADATA)
    if metadata is None:
        raise ResourceError("missing required field 'metadata.name'")
    name = metadata.string("name", required=True)
    if "spec" not in document or document["spec"] is None:
        raise ResourceError("missing required field 'spec'")
    return Resource(
        kind=kind,
        name=name,
        namespace=metadata.string("namespace") or DEFAULT_NAMESPACE,
        labels=metadata.string_map("labels"),
        annotations=metadata.string_map("annotations"),
        spec=SPEC_TYPES[kind].from_dict(document["spec"], "spec"),
    )


def _unsupported_kind(kind: str, api_version: Any) -> str:
    supported = ", ".join(KINDS)
    if kind == "Explainer":
        return (
            "kind 'Explainer' is obsolete and not supported; an explainer is a Model with an "
            "'explainer' block (type and modelRef or pipelineRef)"
        )
    if kind in _SC2_OTHER_KINDS:
        return f"kind '{kind}' is not supported; inferline reads {supported}"
    version = f" (apiVersion {api_version})" if isinstance(api_version, str) else ""
    return (
        f"kind '{kind}'{version} is not an inferline resource; expected one of {supported} "
        f"with apiVersion {API_VERSION}"
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: what is wrong and at which line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        return f"invalid YAML: {problem}"
    return "invalid YAML: " + " ".join(str(exc).split())
