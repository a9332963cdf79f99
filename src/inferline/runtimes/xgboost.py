"""XGBoost models, answering as MLServer's xgboost runtime does.

The model is a file written by `save_model` (`model.json`, `model.ubj` or `model.bst`), from a
plain Booster or from the scikit-learn API. As MLServer does, it is loaded through the
scikit-learn API: as the estimator class it was saved from (`XGBClassifier`, `XGBRanker`), and
as an `XGBRegressor` when it holds no such record (a plain Booster). Outputs are `predict` (the
default) and, for classifiers, `predict_proba`; one-dimensional results go out as [N, 1].

xgboost is an optional extra, so it is imported only when a model loads.
"""

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest, InvalidModelURI, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse
from inferline.runtimes.base import Runtime
from inferline.runtimes.settings import ModelSettings

XGBOOST_FILES = ("model.json", "model.ubj", "model.bst")
INSTALL_HINT = 'pip install "inferline[xgboost]"'
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"


class XGBoostRuntime(Runtime):
    model = None

    async def load(self) -> None:
        path = find_model_file(self.artifact_path(), XGBOOST_FILES, self.name)
        self.model = await asyncio.to_thread(_load_estimator, path, self.name)

    def output_names(self) -> list[str]:
        names = [PREDICT]
        if hasattr(self.model, PREDICT_PROBA):  # classifiers only
            names.append(PREDICT_PROBA)
        return names

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        available = self.output_names()
        names = [o.name for o in request.outputs] if request.outputs else [PREDICT]
        for name in names:
            if name not in available:
                raise BadRequest(
                    f"model '{self.name}' ({type(self.model).__name__}) has no output '{name}'; "
                    "it can produce: " + ", ".join(available)
                )
        features = tabular_features(request, self.settings, self.model.n_features_in_)
        outputs = []
        for name in names:
            result = np.asarray(getattr(self.model, name)(features))
            if result.ndim == 1:
                result = result.reshape(-1, 1)
            outputs.append(codecs.NumpyCodec.encode(name, result))
        return InferenceResponse(model_name=self.name, outputs=outputs)


def _load_estimator(path: Path, model_name: str) -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise ModelLoadError(
            f"model '{model_name}' needs xgboost, which is not installed: {INSTALL_HINT} ({exc})"
        ) from None
    # A model saved from one estimator class refuses to load into another with a TypeError
    # (xgboost records the class in the file); a plain Booster loads as a regressor.
    problem = ""
    for estimator_class in (xgboost.XGBRegressor, xgboost.XGBClassifier, xgboost.XGBRanker):
        try:
            estimator = estimator_class()
        except ImportError as exc:  # the scikit-learn API needs scikit-learn
            raise ModelLoadError(
                f"model '{model_name}' needs scikit-learn for xgboost's estimator API: "
                f"{INSTALL_HINT} ({exc})"
            ) from None
        try:
            estimator.load_model(str(path))
            return estimator
        except TypeError as exc:
            problem = str(exc)
        except xgboost.core.XGBoostError as exc:
            raise ModelLoadError(
                f"model '{model_name}': xgboost cannot load {path}: {first_line(exc)}"
            ) from None
    raise ModelLoadError(f"model '{model_name}': xgboost cannot load {path}: {problem}")


# --- shared by the tabular runtimes (xgboost, lightgbm) ------------------------------------------


def find_model_file(path: Path, names: tuple[str, ...], model_name: str) -> Path:
    """The artifact itself when `path` is a file, else the first of `names` in that folder."""
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise InvalidModelURI(f"model '{model_name}': no {', '.join(names)} in {path}")


def tabular_features(request: InferenceRequest, settings: ModelSettings, n_features: int) -> Any:
    """The feature matrix, read as the scikit-learn runtime reads it.

    One input is the matrix (a 1-D input is one feature column); several inputs are one column
    each; a `pd` request is a DataFrame. The column count is checked here so a wrong request gets
    a plain message rather than the library's stack trace.
    """
    content_type = request.parameters.get("content_type") or settings.content_type
    if content_type in ("pd", "pd_json"):
        frame = codecs.decode_request(request, "pd")
        _check_columns(frame.shape[1], n_features, settings.name)
        return frame
    if not request.inputs:
        raise BadRequest(f"model '{settings.name}' needs at least one input")
    for tensor in request.inputs:
        if tensor.data.ndim == 0:
            raise BadRequest(f"input '{tensor.name}' is a scalar; send rows of features")
        if tensor.data.dtype.kind not in "biuf":
            raise BadRequest(
                f"input '{tensor.name}' has datatype {tensor.datatype}; model "
                f"'{settings.name}' needs numbers"
            )
    if len(request.inputs) == 1:
        data = request.inputs[0].data
        features = data.reshape(-1, 1) if data.ndim == 1 else data
        if features.ndim != 2:
            raise BadRequest(
                f"input '{request.inputs[0].name}' has shape {list(data.shape)}; model "
                f"'{settings.name}' needs [N, {n_features}] (rows of features)"
            )
    else:
        columns = [t.data.reshape(t.data.shape[0], -1) for t in request.inputs]
        if len({c.shape[0] for c in columns}) > 1:
            raise BadRequest("all inputs must have the same first dimension (the batch size)")
        features = np.hstack(columns)
    _check_columns(features.shape[1], n_features, settings.name)
    return features


def _check_columns(got: int, expected: int, model_name: str) -> None:
    if got != expected:
        raise BadRequest(
            f"model '{model_name}' takes {expected} features per row; the request has {got}"
        )


def first_line(exc: Exception) -> str:
    """The message without the native stack trace xgboost and lightgbm append to it."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
