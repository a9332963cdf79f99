"""scikit-learn models saved with joblib or pickle, answering as MLServer's sklearn runtime does.

Outputs are named after the estimator method that makes them (`predict`, `predict_proba`, ...);
without requested outputs the answer is `predict`. One-dimensional results go out as [N, 1], as
MLServer's NumPy codec sends them, so its clients see the same shapes.

Speed: on one row, scikit-learn spends most of `predict` checking its input, not computing. The
server has already turned the request into a typed NumPy array, so each call runs with
scikit-learn's own switches: `skip_parameter_validation` always, and `assume_finite` when every
input is numeric and `np.isfinite` (a few microseconds here, against about 15 for scikit-learn's
pass) found no NaN or infinity. An input holding them goes to scikit-learn with its checks on, so
a model that takes NaN (HistGradientBoosting, a pipeline starting with an imputer) still does,
and one that does not answers 400 naming the input.
"""

import asyncio

import numpy as np

from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
from inferline.runtimes.base import Runtime
from inferline.runtimes.common import find_file, require
from inferline.runtimes.registry import SKLEARN_FILES

DEFAULT_OUTPUT = "predict"
OUTPUT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform")


class SKLearnRuntime(Runtime):
    model = None

    async def load(self) -> None:
        path = find_file(self.artifact_path(), SKLEARN_FILES, self.name)
        # Both are the optional `sklearn` extra: without them, one line says what to install.
        require("sklearn", "sklearn", self.name, "the scikit-learn runtime")
        joblib = require("joblib", "sklearn", self.name, "the scikit-learn runtime")
        # joblib reads both its own files and plain pickles, whatever the file is called.
        self.model = await asyncio.to_thread(joblib.load, path)
        # The estimator's methods by output name, bound once rather than looked up per request.
        self._methods = {
            m: getattr(self.model, m) for m in OUTPUT_METHODS if hasattr(self.model, m)
        }
        if not self._methods:
            raise ModelLoadError(f"{path} holds a {type(self.model).__name__}, not an estimator")
        # scikit-learn is an optional extra: imported with the model (joblib.load already did).
        import sklearn

        self._config_context = sklearn.config_context

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        features = self._features(request)
        names = [o.name for o in request.outputs] if request.outputs else [DEFAULT_OUTPUT]
        methods = [self._method(name) for name in names]
        non_finite = _non_finite_inputs(request.inputs)
        checked = not non_finite and all(_numeric(t) for t in request.inputs)
        with self._config_context(assume_finite=checked, skip_parameter_validation=True):
            try:
                results = [method(features) for method in methods]
            except ValueError as exc:
                if not non_finite:
                    raise
                which = "input {}, which holds" if len(non_finite) == 1 else "inputs {}, which hold"
                raise BadRequest(
                    f"model '{self.name}' rejected {which.format(', '.join(non_finite))} NaN or "
                    f"infinity: {exc}"
                ) from None
        outputs = []
        for name, result in zip(names, results, strict=True):
            result = np.asarray(result)
            if result.ndim == 1:
                result = result.reshape(-1, 1)
            # Marked as NumPy content, as MLServer marks them, so its clients decode alike.
            outputs.append(codecs.NumpyCodec.encode(name, result))
        return InferenceResponse(model_name=self.name, outputs=outputs)

    def _method(self, name: str):
        method = self._methods.get(name)
        if method is None:
            raise BadRequest(
                f"model '{self.name}' has no output '{name}'; it can produce: "
                + ", ".join(self._methods)
            )
        return method

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


def _numeric(tensor: Tensor) -> bool:
    return tensor.data.dtype.kind in "biuf"


def _non_finite_inputs(inputs: list[Tensor]) -> list[str]:
    """Names (quoted) of the float inputs holding NaN or infinity."""
    return [
        f"'{t.name}'" for t in inputs if t.data.dtype.kind == "f" and not np.isfinite(t.data).all()
    ]
