"""The model server's core: health, metadata, inference and the model repository.

Transport-agnostic: it takes and returns plain inferline types and raises `InferlineError`s; the
REST and gRPC adapters only translate. The scheduler's agent drives the same `load_model` /
`unload` calls that the repository API uses.
"""

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field

from inferline import __version__, metrics
from inferline.protocol.errors import (
    BadRequest,
    InferenceError,
    InferlineError,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
)
from inferline.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RepositoryModel,
    ServerMetadata,
    TensorMetadata,
)
from inferline.runtimes.base import Runtime
from inferline.runtimes.registry import runtime_class
from inferline.runtimes.settings import ModelSettings
from inferline.server.batching import AdaptiveBatcher, batcher_for
from inferline.server.repository import ModelRepository, load_found_models

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "model_repository", "parameters"]


class ModelState(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class LoadedModel:
    settings: ModelSettings
    runtime: Runtime | None
    state: ModelState
    reason: str = ""
    metadata: ModelMetadata | None = None
    # Set when adaptive batching is on for this version: requests go through it.
    batcher: AdaptiveBatcher | None = None
    # `runtime.predict` or `batcher.predict`, chosen once so `infer` pays nothing for the choice.
    predict: object = field(init=False, repr=False)
    # This version's metric series, looked up once rather than on every request.
    success: object = field(init=False, repr=False)
    failure: object = field(init=False, repr=False)
    duration: object = field(init=False, repr=False)

    def __post_init__(self):
        labels = metrics.labels(self.settings.name, self.settings.version)
        self.success = metrics.INFER_SUCCESS.labels(**labels)
        self.failure = metrics.INFER_FAILURE.labels(**labels)
        self.duration = metrics.INFER_DURATION.labels(**labels)
        if self.batcher is not None:
            self.predict = self.batcher.predict
        else:
            self.predict = self.runtime.predict if self.runtime is not None else None


class DataPlane:
    def __init__(self, repository: ModelRepository | None = None, name: str = "inferline"):
        self.repository = repository or ModelRepository([])
        self.name = name
        # name -> version ("" when unversioned) -> model; the last ready version is the default.
        self._models: dict[str, dict[str, LoadedModel]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._started = False
        # A worker's own request counter (`metrics.WORKER_REQUESTS`); None in a lone server.
        self.worker_requests = None

    # --- health and metadata ------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the models given at start-up have been loaded (or failed to)."""
        return self._started

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(self.name, __version__, list(EXTENSIONS))

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self._find(name, version).state is ModelState.READY

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        return self._ready_model(name, version).metadata

    # --- inference ----------------------------------------------------------------------------

    async def infer(
        self, name: str, version: str | None, request: InferenceRequest
    ) -> InferenceResponse:
        if self.worker_requests is not None:
            self.worker_requests.inc()
        model = self._ready_model(name, version)
        _check_inputs(request, model.metadata)
        started = time.perf_counter()
        try:
            response = await model.predict(request)
        except InferlineError:
            model.failure.inc()
            raise
        except Exception as exc:
            model.failure.inc()
            log.info("model %s failed on request %s: %r", name, request.id, exc)
            raise InferenceError(f"model '{name}' failed: {exc}") from exc
        model.duration.observe(time.perf_counter() - started)
        model.success.inc()
        response.model_name = model.settings.name
        response.model_version = model.settings.version
        response.id = request.id
        # An empty answer (a detector still buffering its batch) has nothing to select from.
        if request.outputs and response.outputs:
            response.outputs = _select_outputs(name, response, request)
        return response

    # --- repository ---------------------------------------------------------------------------

    async def load_repository(self) -> None:
        """Load every model found in the repository; failures are kept as UNAVAILABLE."""
        try:
            await load_found_models(self.repository, self.load_model, self.mark_unavailable)
        finally:
            self._started = True

    async def load(self, name: str) -> None:
        """Load (or reload) a model by name from the repository."""
        await self.load_model(self.repository.find(name))

    async def load_model(self, settings: ModelSettings) -> None:
        """Load one model version; a version already served keeps serving until its
        replacement is ready."""
        version_key = settings.version or ""
        async with self._lock(settings.name):
            versions = self._models.setdefault(settings.name, {})
            previous = versions.get(version_key)
            if previous is None:
                versions[version_key] = LoadedModel(settings, None, ModelState.LOADING)
            try:
                runtime = runtime_class(settings)(settings)
                if await runtime.load() is False:
                    raise ModelLoadError(f"model '{settings.name}': load() returned False")
                metadata = runtime.metadata()
                batcher = batcher_for(settings, runtime)
            except Exception as exc:
                message = exc.message if isinstance(exc, InferlineError) else f"{exc!r}"
                if previous is None or previous.runtime is None:
                    versions[version_key] = LoadedModel(
                        settings, None, ModelState.UNAVAILABLE, message
                    )
                if isinstance(exc, InferlineError):
                    raise
                raise ModelLoadError(f"model '{settings.name}' failed to load: {exc}") from exc
            versions.pop(version_key, None)  # re-insert last: the newest load is the default
            versions[version_key] = LoadedModel(
                settings, runtime, ModelState.READY, "", metadata, batcher
            )
        if previous is not None and previous.runtime is not None:
            await _unload_quietly(previous)

    def mark_unavailable(self, name: str, version: str | None, reason: str) -> None:
        """Record a model that could not even be prepared for loading (e.g. a bad URI)."""
        versions = self._models.setdefault(name, {})
        if (version or "") not in versions:
            settings = ModelSettings(name=name, version=version)
            versions[version or ""] = LoadedModel(settings, None, ModelState.UNAVAILABLE, reason)

    async def unload(self, name: str, version: str | None = None) -> None:
        async with self._lock(name):
            versions = self._models.get(name)
            if not versions or (version is not None and version not in versions):
                raise ModelNotFound(name, version)
            keys = [version] if version is not None else list(versions)
            for key in keys:
                model = versions.pop(key)
                model.state = ModelState.UNLOADING
                if model.runtime is not None:
                    await _unload_quietly(model)
            if not versions:
                del self._models[name]

    async def unload_all(self) -> None:
        for name in list(self._models):
            await self.unload(name)

    def loaded_models(self) -> list[RepositoryModel]:
        """Every model version this server holds, in any state."""
        return [
            RepositoryModel(name, key or None, model.state.value, model.reason)
            for name, versions in self._models.items()
            for key, model in versions.items()
        ]

    def repository_index(self, ready_only: bool = False) -> list[RepositoryModel]:
        rows = self.loaded_models()
        if ready_only:
            return [r for r in rows if r.state == ModelState.READY]
        # Models on disk that are not loaded are listed too, as Triton does.
        found, broken = self.repository.scan()
        rows += [
            RepositoryModel(s.name, s.version, ModelState.UNAVAILABLE.value, "not loaded")
            for s in found
            if s.name not in self._models
        ]
        rows += [
            RepositoryModel(folder.name, None, ModelState.UNAVAILABLE.value, reason)
            for folder, reason in broken
            if folder.name not in self._models
        ]
        return rows

    # --- helpers ------------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _find(self, name: str, version: str | None) -> LoadedModel:
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(name)
        if version:
            try:
                return versions[version]
            except KeyError:
                raise ModelNotFound(name, version) from None
        for model in reversed(versions.values()):
            if model.state is ModelState.READY:
                return model
        return next(reversed(versions.values()))

    def _ready_model(self, name: str, version: str | None) -> LoadedModel:
        model = self._find(name, version)
        if model.state is not ModelState.READY:
            reason = f": {model.reason}" if model.reason else ""
            raise ModelNotReady(f"model '{name}' is not ready ({model.state.value}{reason})")
        return model


def _check_inputs(request: InferenceRequest, metadata: ModelMetadata) -> None:
    """Inputs the model declares must match in datatype and shape (-1 matches any size)."""
    if not request.inputs:
        raise BadRequest("request has no inputs")
    declared = {t.name: t for t in metadata.inputs}
    for tensor in request.inputs:
        spec: TensorMetadata | None = declared.get(tensor.name)
        if spec is None:
            continue
        if spec.datatype and tensor.datatype != spec.datatype:
            raise BadRequest(
                f"input '{tensor.name}' has datatype {tensor.datatype} but model "
                f"'{metadata.name}' expects {spec.datatype}"
            )
        if spec.shape and not _shape_matches(tensor.shape, spec.shape):
            raise BadRequest(
                f"input '{tensor.name}' has shape {tensor.shape} but model '{metadata.name}' "
                f"expects {spec.shape}"
            )


def _shape_matches(shape: list[int], expected: list[int]) -> bool:
    return len(shape) == len(expected) and all(
        e == -1 or e == s for s, e in zip(shape, expected, strict=True)
    )


def _select_outputs(name: str, response: InferenceResponse, request: InferenceRequest):
    produced = {t.name: t for t in response.outputs}
    selected = []
    for wanted in request.outputs:
        tensor = produced.get(wanted.name)
        if tensor is None:
            raise BadRequest(
                f"model '{name}' has no output '{wanted.name}'; it produced: " + ", ".join(produced)
            )
        selected.append(tensor)
    return selected


async def _unload_quietly(model: LoadedModel) -> None:
    # Callers waiting in a batch are answered before the runtime goes.
    if model.batcher is not None:
        await model.batcher.close()
    try:
        await model.runtime.unload()
    except Exception:
        log.exception("model %s failed to unload cleanly", model.settings.name)
