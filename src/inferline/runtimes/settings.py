"""Per-model settings, read from `model-settings.json`.

The file format is MLServer's, accepted unchanged (its runtime class names are mapped to ours in
`inferline.runtimes.registry`). Unknown keys are errors that name the key, so a typo does not go
unnoticed; MLServer-only keys that have no meaning here are accepted and ignored.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from inferline.protocol.datatypes import DATATYPES
from inferline.protocol.errors import BadRequest, InvalidModelURI
from inferline.protocol.types import TensorMetadata

SETTINGS_FILE = "model-settings.json"

_TOP_LEVEL_KEYS = {
    "name",
    "implementation",
    "parameters",
    "inputs",
    "outputs",
    "platform",
    "versions",
    "max_batch_size",
    "max_batch_time",
    # MLServer keys accepted for compatibility; they change nothing here.
    "cache_enabled",
    "parallel_workers",
    "warm_workers",
}
_PARAMETER_KEYS = {
    "uri",
    "version",
    "format",
    "content_type",
    "extra",
    "environment_path",
    "environment_tarball",
    "inference_pool_gid",
    "autogenerate_inference_pool_gid",
}


@dataclass(slots=True)
class ModelSettings:
    name: str
    implementation: str = ""
    # Where the model's artifact is; relative paths are taken from `folder`.
    uri: str | None = None
    version: str | None = None
    content_type: str | None = None
    format: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    inputs: list[TensorMetadata] = field(default_factory=list)
    outputs: list[TensorMetadata] = field(default_factory=list)
    platform: str = ""
    versions: list[str] = field(default_factory=list)
    max_batch_size: int = 0
    max_batch_time: float = 0.0
    # The folder the settings were read from (None when given directly).
    folder: Path | None = None


def _tensors(docs: Any, key: str, where: str) -> list[TensorMetadata]:
    if docs is None:
        return []
    if not isinstance(docs, list):
        raise BadRequest(f"{where}: '{key}' must be a list")
    tensors = []
    for doc in docs:
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise BadRequest(f"{where}: each of '{key}' needs a 'name'")
        datatype = doc.get("datatype", "")
        if datatype and datatype not in DATATYPES:
            raise BadRequest(f"{where}: {key} '{doc['name']}' has unknown datatype '{datatype}'")
        shape = doc.get("shape", [])
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise BadRequest(f"{where}: {key} '{doc['name']}' needs 'shape' as a list of integers")
        tensors.append(TensorMetadata(doc["name"], datatype, shape, doc.get("parameters") or {}))
    return tensors


def parse_settings(
    doc: Any, folder: Path | None = None, where: str = SETTINGS_FILE
) -> ModelSettings:
    """Build settings from a parsed model-settings document; the name defaults to the folder's."""
    if not isinstance(doc, dict):
        raise BadRequest(f"{where}: must be a JSON object")
    unknown = sorted(set(doc) - _TOP_LEVEL_KEYS)
    if unknown:
        raise BadRequest(f"{where}: unknown field '{unknown[0]}'")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    unknown = sorted(set(parameters) - _PARAMETER_KEYS)
    if unknown:
        raise BadRequest(f"{where}: unknown field 'parameters.{unknown[0]}'")
    name = doc.get("name") or (folder.name if folder else None)
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}: 'name' is required")
    extra = parameters.get("extra") or {}
    if not isinstance(extra, dict):
        raise BadRequest(f"{where}: 'parameters.extra' must be an object")
    version = parameters.get("version")
    try:
        max_batch_size = int(doc.get("max_batch_size") or 0)
        max_batch_time = float(doc.get("max_batch_time") or 0.0)
    except (TypeError, ValueError):
        raise BadRequest(
            f"{where}: 'max_batch_size' and 'max_batch_time' must be numbers"
        ) from None
    return ModelSettings(
        name=name,
        implementation=doc.get("implementation") or "",
        uri=parameters.get("uri"),
        version=str(version) if version is not None else None,
        content_type=parameters.get("content_type"),
        format=parameters.get("format"),
        extra=extra,
        inputs=_tensors(doc.get("inputs"), "inputs", where),
        outputs=_tensors(doc.get("outputs"), "outputs", where),
        platform=doc.get("platform") or "",
        versions=[str(v) for v in doc.get("versions") or []],
        max_batch_size=max_batch_size,
        max_batch_time=max_batch_time,
        folder=folder,
    )


def read_settings(folder: Path) -> ModelSettings:
    path = folder / SETTINGS_FILE
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidModelURI(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{path} is not valid JSON: {exc}") from None
    return parse_settings(doc, folder, str(path))
