"""From a Model resource's spec to the settings the server loads it with.

The artifact folder may hold MLServer's `model-settings.json` (its runtime and metadata are kept);
otherwise the runtime comes from the model's `requirements` / `modelType` tags, or from the files
in the folder. The name becomes the internal `<model>_<version>` and the spec's `parameters` go
into `parameters.extra`, as Seldon Core 2's agent writes them; `max_batch_size` and
`max_batch_time` among them set the server's adaptive batching instead (MLServer's keys and units).
"""

from pathlib import Path
from typing import Any

from inferline.protocol.errors import ModelLoadError
from inferline.runtimes.registry import (
    ALIBI_DETECT,
    ALIBI_EXPLAIN,
    LIGHTGBM,
    ONNX,
    SKLEARN,
    XGBOOST,
)
from inferline.runtimes.settings import SETTINGS_FILE, ModelSettings, read_settings
from inferline.scheduler.placement import PERMISSIVE_EXPLAINER_TYPES
from inferline.storage import fetch

# Capability tags that name one runtime.
RUNTIME_TAGS = {
    "sklearn": SKLEARN,
    "xgboost": XGBOOST,
    "lightgbm": LIGHTGBM,
    "onnx": ONNX,
    "alibi-detect": ALIBI_DETECT,
}


EXPLAINER = "inferline.runtimes.explainer.ExplainerRuntime"


def settings_from_spec(
    name: str, version: int, spec: dict[str, Any], router: str | None = None
) -> ModelSettings:
    """`router` ("host:port" of the router's REST) is where an explainer calls its target."""
    path = fetch(spec["storageUri"])
    if path.is_dir():
        path = _version_folder(path, spec.get("artifactVersion"))
    if path.is_dir() and (path / SETTINGS_FILE).exists():
        settings = read_settings(path)
    elif path.is_dir():
        settings = ModelSettings(name=name, folder=path)
    else:
        settings = ModelSettings(name=name, folder=path.parent, uri=str(path))
    settings.name = name
    settings.version = str(version)
    settings.versions = []
    if not settings.implementation:
        tags = [*spec.get("requirements", []), spec.get("modelType") or ""]
        settings.implementation = next((RUNTIME_TAGS[t] for t in tags if t in RUNTIME_TAGS), "")
    parameters = {p["name"]: p["value"] for p in spec.get("parameters", [])}
    _take_batching(settings, parameters)
    settings.extra = {**settings.extra, **parameters}
    if spec.get("explainer"):
        _make_explainer(settings, spec["explainer"], router)
    return settings


def _make_explainer(settings: ModelSettings, explainer: dict[str, Any], router: str | None) -> None:
    """What Seldon Core 2's agent writes for a Model with an `explainer` block: the explainer
    runtime, its type, and the router URI of the model or pipeline it explains.

    Types our permissive runtime implements run on it, unless the folder holds an explainer
    saved with alibi (`meta.dill`): the rest, and saved alibi explainers, run on Alibi Explain."""
    if not router:
        raise ModelLoadError(
            f"model '{settings.name}' is an explainer, and this server was started without the "
            "router's address to call its target with (inferline server --router HOST:PORT)"
        )
    if explainer.get("modelRef"):
        target = f"http://{router}/v2/models/{explainer['modelRef']}/infer"
    else:
        target = f"http://{router}/v2/pipelines/{explainer['pipelineRef']}/infer"
    alibi_saved = settings.folder is not None and (settings.folder / "meta.dill").is_file()
    if explainer.get("type") in PERMISSIVE_EXPLAINER_TYPES and not alibi_saved:
        settings.implementation = EXPLAINER
    else:
        settings.implementation = ALIBI_EXPLAIN
    settings.extra = {
        **settings.extra,
        "explainer_type": explainer.get("type"),
        "infer_uri": target,
    }


def _version_folder(path: Path, artifact_version: int | None) -> Path:
    """MLServer's rule: a top-level settings file wins, else the asked or the highest version."""
    if artifact_version is not None:
        return path / str(artifact_version) if (path / str(artifact_version)).is_dir() else path
    if (path / SETTINGS_FILE).exists():
        return path
    numbered = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbered, key=lambda p: int(p.name)) if numbered else path


def _take_batching(settings: ModelSettings, parameters: dict[str, Any]) -> None:
    """Batching is the server's job, so these parameters override model-settings.json and do not
    reach the runtime (whose own keys, like a detector's `batch_size`, mean something else)."""
    for key, kind in (("max_batch_size", int), ("max_batch_time", float)):
        if key in parameters:
            value = parameters.pop(key)
            try:
                setattr(settings, key, kind(value))
            except (TypeError, ValueError):
                raise ModelLoadError(
                    f"model '{settings.name}': parameter {key} must be a number, not {value!r}"
                ) from None
