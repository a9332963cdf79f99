"""scikit-learn models saved with joblib or pickle, answering as MLServer's sklearn runtime does.

Outputs are named after the estimator method that makes them (`predict`, `predict_proba`, ...);
without requested outputs the answer is `predict`. One-dimensional results go out as [N, 1], as
MLServer's NumPy codec sends them, so its clients see the same shapes.
"""

import asyncio
from pathlib import Path

import numpy as np

from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse
from inferline.runtimes.base import Runtime
from inferline.runtimes.common import find_file
from inferline.runtimes.registry import SKLEARN_FILES

DEFAULT_OUTPUT = "predict"
OUTPUT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform")


class SKLearnRuntime(Runtime):
    model = None

    async def load(self) -> None:
        path = find_file(self.artifact_path(), SKLEARN_FILES, self.name)
        self.model = await asyncio.to_thread(_load_file, path)
        if not any(hasattr(self.model, m) for m in OUTPUT_METHODS):
            raise ModelLoadError(f"{path} holds a {type(self.model).__name__}, not an estimator")

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        features = self._features(request)
        names = [o.name for o in request.outputs] if request.outputs else [DEFAULT_OUTPUT]
        outputs = []
        for name in names:
            method = getattr(self.model, name, None) if name in OUTPUT_METHODS else None
            if method is None:
                available = [m for m in OUTPUT_METHODS if hasattr(self.model, m)]
                raise BadRequest(
                    f"model '{self.name}' has no output '{name}'; it can produce: "
                    + ", ".join(available)
                )
            result = np.asarray(method(features))
            if result.ndim == 1:
                result = result.reshape(-1, 1)
            # Marked as NumPy content, as MLServer marks them, so its clients decode alike.
            outputs.append(codecs.NumpyCodec.encode(name, result))
        return InferenceResponse(model_name=self.name, outputs=outputs)

    def _features(self, request: InferenceRequest):
        content_type = request.parameters.get("content_type") or self.settings.content_type
        if content_type in ("pd", "pd_json"):
            return codecs.decode_request(request, "pd")
        if len(request.inputs) == 1:
            data = request.inputs[0].data
            return data.reshape(-1, 1) if data.ndim == 1 else data
        # Several inputs are several feature columns, one row per element of the first dimension.
        columns = [t.data.reshape(t.data.shape[0], -1) for t in request.inputs]
        if len({c.shape[0] for c in columns}) > 1:
            raise BadRequest("all inputs must have the same first dimension (the batch size)")
        return np.hstack(columns)


def _load_file(path: Path):
    # joblib reads both its own files and plain pickles, whatever the file is called.
    import joblib

    return joblib.load(path)
