"""Outlier detection on permissively licensed detectors, answering as MLServer's alibi-detect
runtime answers for an outlier detector, so a pipeline cannot tell which one it calls.

The model folder holds a fitted detector saved with joblib (`model.joblib`, `model.pkl` or
`model.pickle`, or the file `parameters.uri` names):

- scikit-learn (BSD-3): IsolationForest, LocalOutlierFactor(novelty=True), OneClassSVM,
  EllipticEnvelope, or a Pipeline ending in one; any object with `score_samples` and `predict`
  (-1 for outliers) works. The score is `score_samples` negated.
- PyOD (BSD-2, extra `pyod`): any `pyod.models` detector. The score is `decision_function`.

Outputs, in alibi-detect's order: `instance_score` (FP64 [N, 1], higher is more anomalous) and
`is_outlier` (INT64 [N, 1], 1 for an outlier). Images and other [N, ...] inputs are flattened to
one row per instance. `parameters.extra` (other keys are logged and ignored, near-misses of these
refused, string values read as JSON where they parse: see `extra_keys`):

- `threshold`: an instance is an outlier when its score is above this, instead of the detector's
  own decision (`predict`);
- `predict_parameters.return_instance_score` (alibi-detect's name, default true): false leaves
  `instance_score` out.

The response carries `parameters` `{"detector_type": "outlier", "detector_method": <class>}`
(for a Pipeline, its last step's class), which MLServer sends as the `x-seldon-alibi-type` /
`x-seldon-alibi-method` headers.
"""

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from inferline.protocol import codecs
from inferline.protocol.errors import ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse, ModelMetadata
from inferline.runtimes.base import Runtime
from inferline.runtimes.common import check_width, declared, find_file, require, rows
from inferline.runtimes.extra_keys import read_extra
from inferline.runtimes.registry import SKLEARN_FILES

DETECTOR_TYPE = "outlier"
KNOWN_KEYS = ("threshold", "predict_parameters")


class OutlierRuntime(Runtime):
    batchable = False  # detectors follow alibi-detect's per-request semantics; never merged
    detector: Any = None
    # "sklearn" or "pyod": which score and decision convention the detector follows.
    family = ""
    threshold: float | None = None
    return_instance_score = True

    async def load(self) -> None:
        extra = read_extra(self.settings.extra, KNOWN_KEYS, self.name, "outlier")
        self.threshold = _number(extra.get("threshold"), "threshold", self.name)
        predict_parameters = extra.get("predict_parameters") or {}
        if not isinstance(predict_parameters, dict):
            raise ModelLoadError(f"model '{self.name}': 'predict_parameters' must be an object")
        self.return_instance_score = bool(predict_parameters.get("return_instance_score", True))

        path = find_file(self.artifact_path(), SKLEARN_FILES, self.name)
        self.detector = await asyncio.to_thread(_load_detector, path, self.name)
        self.family = _family(self.detector, path, self.name)

    @property
    def final_detector(self) -> Any:
        """The detector itself, or the last step of a scikit-learn Pipeline."""
        steps = getattr(self.detector, "steps", None)
        return steps[-1][1] if isinstance(steps, list) and steps else self.detector

    @property
    def method(self) -> str:
        return type(self.final_detector).__name__

    def default_threshold(self) -> float | None:
        """The detector's own cut-off on the score scale we answer with, where it has one."""
        if self.family == "pyod":
            return float(self.detector.threshold_)
        offset = getattr(self.final_detector, "offset_", None)
        return None if offset is None else -float(offset)

    def scores(self, features: np.ndarray) -> np.ndarray:
        if self.family == "pyod":
            return np.asarray(self.detector.decision_function(features), dtype=np.float64)
        return -np.asarray(self.detector.score_samples(features), dtype=np.float64)

    def labels(self, features: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.threshold is not None:
            # Strictly above, as both scikit-learn's and PyOD's own decisions are.
            return (scores > self.threshold).astype(np.int64)
        if self.family == "pyod":
            return np.asarray(self.detector.predict(features), dtype=np.int64)
        return (np.asarray(self.detector.predict(features)) == -1).astype(np.int64)

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        features = rows(request, self.name)
        width = getattr(self.detector, "n_features_in_", None)
        if isinstance(width, int):
            check_width(features, width, self.name, "detector")
        scores = self.scores(features)
        labels = self.labels(features, scores)
        outputs = []
        if self.return_instance_score:
            outputs.append(codecs.NumpyCodec.encode("instance_score", scores.reshape(-1, 1)))
        outputs.append(codecs.NumpyCodec.encode("is_outlier", labels.reshape(-1, 1)))
        return InferenceResponse(
            model_name=self.name,
            outputs=outputs,
            parameters={"detector_type": DETECTOR_TYPE, "detector_method": self.method},
        )

    def metadata(self) -> ModelMetadata:
        metadata = super().metadata()
        if not metadata.outputs:
            metadata.outputs = declared(
                ("instance_score", "FP64", [-1, 1]), ("is_outlier", "INT64", [-1, 1])
            )
        return metadata


def _number(value: Any, key: str, model: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ModelLoadError(f"model '{model}': 'extra.{key}' must be a number, not {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ModelLoadError(
            f"model '{model}': 'extra.{key}' must be a number, not {value!r}"
        ) from None


def _load_detector(path: Path, model: str) -> Any:
    joblib = require("joblib", "detect", model, "the outlier runtime")
    try:
        return joblib.load(path)
    except ModuleNotFoundError as exc:
        # Unpickling names the library the detector was made with; say which extra brings it.
        missing = (exc.name or "").split(".")[0]
        extra = {"pyod": "pyod", "sklearn": "detect"}.get(missing)
        if extra is not None:
            require(missing, extra, model, f"the detector in {path.name}")
        raise ModelLoadError(f"model '{model}': cannot load {path}: {exc}") from None
    except Exception as exc:
        raise ModelLoadError(
            f"model '{model}': cannot load {path}: {type(exc).__name__}: {exc}"
        ) from None


def _family(detector: Any, path: Path, model: str) -> str:
    if type(detector).__module__.split(".")[0] == "pyod":
        if not (hasattr(detector, "decision_function") and hasattr(detector, "threshold_")):
            raise ModelLoadError(f"model '{model}': the PyOD detector in {path} is not fitted")
        return "pyod"
    if hasattr(detector, "score_samples") and hasattr(detector, "predict"):
        if type(detector).__module__.split(".")[0] == "sklearn":
            _check_fitted(detector, path, model)
        return "sklearn"
    name = type(detector).__name__
    hint = " (fit it with novelty=True)" if name == "LocalOutlierFactor" else ""
    raise ModelLoadError(
        f"model '{model}': {path} holds a {name}{hint}, which is not an outlier detector: "
        "it needs score_samples and predict (scikit-learn) or to be a PyOD detector"
    )


def _check_fitted(detector: Any, path: Path, model: str) -> None:
    # An unfitted estimator would only fail on the first request; refuse it at load instead.
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(detector)
    except NotFittedError:
        raise ModelLoadError(
            f"model '{model}': the {type(detector).__name__} in {path} is not fitted"
        ) from None
