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
from inferline.protocol.errors import BadRequest, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse
from inferline.runtimes.base import Runtime
from inferline.runtimes.common import find_file, first_line, tabular_features

XGBOOST_FILES = ("model.json", "model.ubj", "model.bst")
INSTALL_HINT = 'pip install "inferline[xgboost]"'
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"


class XGBoostRuntime(Runtime):
    model = None

    async def load(self) -> None:
        path = find_file(self.artifact_path(), XGBOOST_FILES, self.name)
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
