"""The runtime contract every model implementation follows."""

from pathlib import Path

from inferline.protocol.types import InferenceRequest, InferenceResponse, ModelMetadata
from inferline.runtimes.settings import ModelSettings
from inferline.storage import fetch


class Runtime:
    """Loads one model version and answers V2 predict calls for it.

    Subclasses implement `load` and `predict`; the server fills in `model_name`, `model_version`
    and `id` of every response and keeps only the outputs the caller asked for, so `predict` may
    leave those alone. Raising any exception from `predict` fails that one request with a 400
    carrying the exception's message.
    """

    # Adaptive batching may merge requests into one `predict` call and split the answer by rows;
    # a runtime whose answer is not one row per input row, or that keeps state across
    # requests, sets this to False and is never batched.
    batchable = True

    def __init__(self, settings: ModelSettings):
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def version(self) -> str | None:
        return self.settings.version

    def artifact_path(self) -> Path:
        """The local path of the model's artifact (`parameters.uri`, else the model folder)."""
        return fetch(self.settings.uri or ".", self.settings.folder)

    async def load(self) -> None:
        """Load the model; raise to fail loading (returning False also fails, as in MLServer)."""

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        raise NotImplementedError

    async def unload(self) -> None:
        """Release what `load` took."""

    def metadata(self) -> ModelMetadata:
        settings = self.settings
        return ModelMetadata(
            name=settings.name,
            platform=settings.platform,
            versions=settings.versions or ([settings.version] if settings.version else []),
            inputs=list(settings.inputs),
            outputs=list(settings.outputs),
        )
