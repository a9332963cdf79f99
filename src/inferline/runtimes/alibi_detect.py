"""Alibi Detect detectors, answering as MLServer's alibi-detect runtime (`mlserver_alibi_detect.
AlibiDetectRuntime`) answers.

alibi-detect is under the Business Source License 1.1 and pins numpy below 2: it is the optional
extra `alibi-detect`, installed in a virtualenv of its own (see the README).

The model folder (or `parameters.uri`) holds a detector saved with alibi-detect's
`save_detector`. Drift detectors are saved as `config.toml` plus arrays and load with any
alibi-detect. The outlier detectors IForest and Mahalanobis can only be saved in alibi-detect's
legacy layout (`meta.dill` and `<Name>.dill`), whose reader and writer import TensorFlow, and
TensorFlow cannot be installed next to inferline (it pins protobuf below 6, our gRPC code needs
6.33): for those two this module reads and writes the same files without TensorFlow
(`save_detector` here does both).

The request's first input is the batch (MLServer's NumPy request codec; a BYTES input is a list
of strings, for text detectors). Outputs are the keys of the detector's `data` answer, in order,
each wrapped in one more leading dimension as MLServer does: a drift detector answers `is_drift`
[1], `distance` [1, F], `p_val` [1, F], `threshold` [1]; an outlier detector `instance_score`
[1, N], `is_outlier` [1, N] (and `feature_score` when it has one). An online drift detector
(one with `save_state`, such as FETDriftOnline or CVMDriftOnline) tests the request's N instances
one after the other, as MLServer runs it, and each key holds the N answers: `is_drift` [N],
`time` [N] (the detector's clock `t`), `ert` [N], `test_stat` [N, windows, F], `threshold`
[N, F]. Values the detector left out (None, e.g. scores it was told not to return, or an online
detector's `p_val`) are not sent. The detector's `meta` goes into the
response `parameters`, with `headers` `{"x-seldon-alibi-type": drift | outlier | adversarial,
"x-seldon-alibi-method": <module, e.g. ks>}` as MLServer's runtime puts them there; our REST layer
does not turn response parameters into HTTP headers, so they stay in the JSON.

`parameters.extra`:

- `predict_parameters`: keyword arguments of the detector's `predict` (checked at load);
- `batch_size`: buffer requests, as MLServer does: the first N - 1 get an empty answer
  (`outputs: []`) at once, the N-th is tested with all N requests' rows (online detectors test
  every instance as it comes and ignore it, as MLServer's do);
- `state_save_freq` (100): an online detector saves its state into `<folder>/state` whenever its
  clock `t` reaches a multiple of this, and alibi-detect's `load_detector` reads that state back,
  so a restarted server continues from the last multiple (the instances after it are forgotten:
  the state is not saved at shutdown, as in MLServer).

Each `is_drift` value is observed in the `seldon_model_drift` histogram.
"""

import asyncio
import importlib.util
import inspect
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from inferline import metrics
from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse
from inferline.runtimes.base import Runtime
from inferline.runtimes.common import require
from inferline.runtimes.extra_keys import read_extra

# alibi-detect's package of each detector kind -> what MLServer calls it.
ALIBI_TYPES = {"cd": "drift", "od": "outlier", "ad": "adversarial"}
TYPE_HEADER = "x-seldon-alibi-type"
METHOD_HEADER = "x-seldon-alibi-method"
STATE_FOLDER = "state"
# The outlier detectors whose legacy files this module reads and writes without TensorFlow.
LEGACY_WITHOUT_TENSORFLOW = ("IForest", "Mahalanobis")
_EXTRA_KEYS = {"predict_parameters", "batch_size", "state_save_freq"}
log = logging.getLogger(__name__)


def _tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


# --- the legacy layout of IForest and Mahalanobis ----------------------------------------------
# What alibi-detect's saving/_tensorflow/saving.py (`state_iforest`, `state_mahalanobis`) writes
# and its loading.py (`init_od_iforest`, `init_od_mahalanobis`) reads back.

_LEGACY_STATE = {
    "IForest": ("threshold", "isolationforest"),
    "Mahalanobis": (
        "threshold",
        "n_components",
        "std_clip",
        "start_clip",
        "max_n",
        "cat_vars",
        "ohe",
        "d_abs",
        "clip",
        "mean",
        "C",
        "n",
    ),
}
_LEGACY_INIT = {
    "IForest": ("threshold",),
    "Mahalanobis": (
        "threshold",
        "n_components",
        "std_clip",
        "start_clip",
        "max_n",
        "cat_vars",
        "ohe",
    ),
}


def save_detector(detector: Any, path: str | Path) -> None:
    """Save `detector` as alibi-detect's `save_detector` does, also for IForest and Mahalanobis
    in an environment without TensorFlow (the files alibi-detect would write with it)."""
    name = detector.meta.get("name")
    if name in LEGACY_WITHOUT_TENSORFLOW and not _tensorflow_installed():
        import dill

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "meta.dill", "wb") as f:
            dill.dump(detector.meta, f)
        with open(path / f"{name}.dill", "wb") as f:
            dill.dump({key: getattr(detector, key) for key in _LEGACY_STATE[name]}, f)
        return
    from alibi_detect.saving import save_detector as alibi_save

    alibi_save(detector, path)


def _load_legacy(path: Path, model: str) -> Any:
    import dill

    with open(path / "meta.dill", "rb") as f:
        meta = dill.load(f)
    name = meta.get("name") if isinstance(meta, dict) else None
    if name not in LEGACY_WITHOUT_TENSORFLOW:
        raise ModelLoadError(
            f"model '{model}': {path} holds a {name} detector in alibi-detect's legacy layout, "
            "which alibi-detect reads only with TensorFlow installed; save it again with a "
            "current alibi-detect (config.toml), or serve it where TensorFlow is installed"
        )
    with open(path / f"{name}.dill", "rb") as f:
        state = dill.load(f)
    from alibi_detect import od

    detector = getattr(od, name)(**{key: state[key] for key in _LEGACY_INIT[name]})
    for key in _LEGACY_STATE[name]:
        setattr(detector, key, state[key])
    return detector


def load_detector(path: Path, model: str) -> Any:
    saving = require("alibi_detect.saving", "alibi-detect", model, "the alibi-detect runtime")
    if path.is_dir() and (path / "meta.dill").is_file() and not _tensorflow_installed():
        return _load_legacy(path, model)
    try:
        return saving.load_detector(path)
    except ImportError as exc:
        raise ModelLoadError(
            f"model '{model}': the detector in {path} needs a library that is not installed: {exc}"
        ) from None
    except Exception as exc:  # alibi-detect raises many kinds for a bad or foreign folder
        raise ModelLoadError(
            f"model '{model}': cannot load an alibi-detect detector from {path}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


# --- the runtime -------------------------------------------------------------------------------


class AlibiDetectRuntime(Runtime):
    batchable = False  # one answer per detection over all rows, and its own request buffering
    detector: Any = None

    async def load(self) -> None:
        extra = read_extra(self.settings.extra, _EXTRA_KEYS, self.name, "alibi-detect")
        self.predict_parameters = extra.get("predict_parameters") or {}
        if not isinstance(self.predict_parameters, dict):
            raise self._error("'extra.predict_parameters' must be an object")
        self.batch_size = self._count(extra, "batch_size", None)
        self.state_save_freq = self._count(extra, "state_save_freq", 100)
        self.path = self.artifact_path()
        # Where alibi-detect's load_detector looks for an online detector's state: beside the
        # config.toml, which `uri` may name instead of its folder.
        self.state_path = (self.path if self.path.is_dir() else self.path.parent) / STATE_FOLDER
        # In a thread: importing alibi-detect takes seconds the server's loop should not wait.
        self.detector = await asyncio.to_thread(load_detector, self.path, self.name)
        try:
            inspect.signature(self.detector.predict).bind(None, **self.predict_parameters)
        except TypeError as exc:
            raise self._error(
                f"'extra.predict_parameters' do not fit {type(self.detector).__name__}.predict: "
                f"{exc}"
            ) from None
        module = type(self.detector).__module__.split(".")
        self.headers = {
            TYPE_HEADER: ALIBI_TYPES.get(module[-2] if len(module) > 1 else "", "unknown"),
            METHOD_HEADER: module[-1],
        }
        self.online = hasattr(self.detector, "save_state")
        if self.online and self.batch_size:
            log.warning(
                "model %s: 'extra.batch_size' is ignored: an online detector tests each instance "
                "as it comes",
                self.name,
            )
            self.batch_size = None
        self._batch: list[Any] = []
        # A detector may change as it predicts (Mahalanobis updates its statistics, online
        # detectors their state): one prediction at a time.
        self._predicting = threading.Lock()

    def _error(self, message: str) -> ModelLoadError:
        return ModelLoadError(f"model '{self.name}': {message}")

    def _count(self, extra: dict, key: str, default: int | None) -> int | None:
        value = extra.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._error(f"'extra.{key}' must be a positive integer, not {value!r}")
        return value

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        x = self._instances(request)
        if self.batch_size:
            # Swapped out before the first await, so concurrent requests never share a batch.
            self._batch.append(x)
            if len(self._batch) < self.batch_size:
                return InferenceResponse(model_name=self.name, outputs=[])
            batch, self._batch = self._batch, []
            x = [s for b in batch for s in b] if isinstance(x, list) else np.concatenate(batch)
        answer = await asyncio.to_thread(self._detect, x)
        data = answer.get("data") or {}
        if data.get("is_drift") is not None:
            drift = metrics.DRIFT.labels(model_name=self.name, model_version=self.version or "")
            for value in np.ravel(data["is_drift"]):
                drift.observe(float(value))
        # An online detector's answer holds one value per instance already.
        outputs = [
            codecs.NumpyCodec.encode(key, np.array(value if self.online else [value]))
            for key, value in data.items()
            if value is not None
        ]
        parameters = _json_safe(answer.get("meta") or {})
        parameters["headers"] = dict(self.headers)
        return InferenceResponse(model_name=self.name, outputs=outputs, parameters=parameters)

    def _instances(self, request: InferenceRequest) -> Any:
        if not request.inputs:
            raise BadRequest(f"model '{self.name}': the request has no inputs")
        tensor = request.inputs[0]
        if tensor.datatype == "BYTES":
            return codecs.StringCodec.decode(tensor)
        if tensor.data.ndim == 0 or tensor.data.shape[0] == 0:
            raise BadRequest(
                f"model '{self.name}': input '{tensor.name}' has shape {tensor.shape}; it needs "
                "[N, ...] with at least one instance"
            )
        # Drift detectors test column by column and would quietly ignore extra columns.
        reference = getattr(self.detector, "x_ref", None)
        if isinstance(reference, np.ndarray) and tensor.data.shape[1:] != reference.shape[1:]:
            raise BadRequest(
                f"model '{self.name}': input '{tensor.name}' has instances of shape "
                f"{list(tensor.data.shape[1:])} but the detector's reference data has "
                f"{list(reference.shape[1:])}"
            )
        return tensor.data

    def _detect(self, x: Any) -> dict[str, Any]:
        with self._predicting:
            try:
                if self.online:
                    return self._detect_online(x)
                return self.detector.predict(x, **self.predict_parameters)
            except (ValueError, IndexError, TypeError) as exc:
                raise BadRequest(
                    f"model '{self.name}': {type(self.detector).__name__} cannot test this "
                    f"request: {exc}"
                ) from None

    def _detect_online(self, x: Any) -> dict[str, Any]:
        """Online detectors take one instance per call; their answers are stacked per key."""
        answers = []
        for instance in x:
            answers.append(self.detector.predict(instance, **self.predict_parameters))
            # On the detector's own clock, as MLServer: saved states are at t = N, 2N, ... across
            # restarts (a detector alibi saved at t = 37 saves at 100, not at 137).
            if self.detector.t % self.state_save_freq == 0:
                self.detector.save_state(self.state_path)
        data = {
            key: None if answers[0]["data"][key] is None else [a["data"][key] for a in answers]
            for key in answers[0]["data"]
        }
        return {"meta": answers[-1]["meta"], "data": data}

    async def unload(self) -> None:
        self._batch = []


def _json_safe(value: Any) -> Any:
    """The detector's meta with numpy scalars and arrays made plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
