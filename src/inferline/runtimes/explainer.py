"""Black-box explanations on permissively licensed code, answering as MLServer's alibi-explain
runtime answers: one BYTES output `explanation` holding a JSON document.

The explainer calls the model it explains over V2 REST at `parameters.extra.infer_uri` (what
Seldon's `explainer` field makes the agent write: `http://<router>/v2/models/<modelRef>/infer` or
`.../v2/pipelines/<pipelineRef>/infer`), as MLServer's black-box runtime does: before the first
call it GETs the model's metadata (the URI without `/infer`; not for pipelines) for the first
input's name (else `predict`) and datatype; it sends `Seldon-Skip-Logging: true`; it asks for
`extra.infer_output` when set (else the first declared output) and reads that output (else the
first one) as numbers, dropping a trailing dimension of 1.

`parameters.extra` (other keys are logged and ignored, near-misses of these refused; string values
are read as JSON where they parse, as Seldon's Model `parameters` are strings: see `extra_keys`):

- `explainer_type`: `kernel_shap` (SHAP's model-agnostic KernelExplainer; MIT; extra `explain`)
  or `feature_importance` (numpy only: for each feature, how much the prediction moves when that
  feature alone takes the background rows' values, averaged over them);
- `infer_uri` (required), `infer_output`, `ssl_verify_path` (a CA bundle), `timeout` (seconds per
  call, default 60);
- `init_parameters`: `feature_names`, `task` (`classification`, the default, or `regression`);
  for kernel_shap also `link` (`identity` or `logit`), `seed` (seeds numpy's global generator
  before each explanation, as alibi's KernelShap does), `summarise_background` (k-means the
  background to `n_background_samples` rows, default 100);
- `explain_parameters`: defaults for each explanation (kernel_shap: `nsamples`, `l1_reg`),
  overridden by a request's `parameters.explain_parameters`.

The background data is `background.npy` in the model folder (numbers, [B, F]). Every row of the
request is explained. The JSON is shaped like alibi's `Explanation.to_json()`: `meta` (`name`,
`type`, `explanations`, `params`, `version`) and `data`; for kernel_shap `data.shap_values` (per
model output, [rows, F]), `data.expected_value` (per output), `data.raw` (`raw_prediction`,
`prediction`, `instances`, `importances`). Explanations of one model run one at a time.
"""

import asyncio
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson

from inferline import __version__
from inferline.protocol import codecs, json_encoding
from inferline.protocol.errors import BadRequest, InferlineError, ModelLoadError
from inferline.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestedOutput,
    Tensor,
)
from inferline.runtimes.base import Runtime
from inferline.runtimes.common import (
    check_width,
    declared,
    find_file,
    load_numpy,
    require,
    rows,
)
from inferline.runtimes.extra_keys import read_extra

BACKGROUND_FILE = "background.npy"
# Explainer type tag -> the name the explanation's `meta.name` carries.
EXPLAINERS = {"kernel_shap": "KernelShap", "feature_importance": "FeatureImportance"}
DEFAULT_INPUT_NAME = "predict"  # MLServer's black-box runtime's default too
SKIP_LOGGING_HEADER = "Seldon-Skip-Logging"
# feature_importance sends rows x features x background rows to the model in one request.
MAX_REPLACED_ROWS = 200_000
# MLServer's black-box explainer settings (`parameters.extra`); the Alibi runtime reads the same.
EXTRA_KEYS = {
    "explainer_type",
    "infer_uri",
    "infer_output",
    "ssl_verify_path",
    "timeout",
    "init_parameters",
    "explain_parameters",
    # MLServer's: batch explanation is always on here.
    "explainer_batch",
}


class RemoteInferenceError(InferlineError):
    """The explained model could not be reached or answered with an error."""

    status = 502


# --- the model being explained -----------------------------------------------------------------


class RemoteModel:
    """The explained model as a function of a row matrix, called over V2 REST (JSON)."""

    def __init__(
        self,
        infer_uri: str,
        output: str | None,
        timeout: float,
        verify: str | bool = True,
        transport: httpx.BaseTransport | None = None,
    ):
        self.infer_uri = infer_uri
        self.output = output
        self.client = httpx.Client(timeout=timeout, verify=verify, transport=transport)
        self._input: tuple[str, str | None] | None = None
        self._default_output: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def _learn_input(self) -> tuple[str, str | None]:
        with self._lock:
            if self._input is not None:
                return self._input
            name, datatype = DEFAULT_INPUT_NAME, None
            if "/v2/pipelines/" not in self.infer_uri:
                url = self.infer_uri.removesuffix("/infer")
                try:
                    doc = orjson.loads(self._send("GET", url, "its metadata"))
                except orjson.JSONDecodeError as exc:
                    raise RemoteInferenceError(
                        f"the metadata at {url} is not JSON: {exc}"
                    ) from None
                if not isinstance(doc, dict):
                    raise RemoteInferenceError(f"the metadata at {url} is not a JSON object")
                inputs = doc.get("inputs") or []
                if inputs and isinstance(inputs[0], dict) and inputs[0].get("name"):
                    name, datatype = inputs[0]["name"], inputs[0].get("datatype") or None
                outputs = doc.get("outputs") or []
                if outputs and isinstance(outputs[0], dict):
                    self._default_output = outputs[0].get("name")
            self._input = (name, datatype)
            return self._input

    def _send(self, method: str, url: str, what: str, body: bytes | None = None) -> bytes:
        headers = {SKIP_LOGGING_HEADER: "true"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            answer = self.client.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise RemoteInferenceError(
                f"cannot reach the explained model at {url} for {what}: {exc}"
            ) from None
        if answer.status_code != 200:
            raise RemoteInferenceError(
                f"the explained model at {url} answered {answer.status_code} for {what}: "
                f"{answer.text[:500]}"
            )
        return answer.content

    def __call__(self, x: np.ndarray) -> np.ndarray:
        name, datatype = self._learn_input()
        x = np.asarray(x)
        wanted = self.output or self._default_output
        request = InferenceRequest(
            # Text (alibi's AnchorText) goes as BYTES whatever the metadata says.
            inputs=[Tensor.from_numpy(name, x, datatype=_datatype(x, datatype))],
            parameters={"content_type": "np"},
            outputs=[RequestedOutput(wanted)] if wanted else None,
        )
        body, _ = json_encoding.encode_request(request)
        raw = self._send("POST", self.infer_uri, f"{x.shape[0]} rows", body)
        try:
            response = json_encoding.decode_response(raw)
        except InferlineError as exc:
            raise RemoteInferenceError(f"the explained model's answer is not V2: {exc}") from None
        tensor = response.output(self.output) if self.output else None
        if tensor is None and self.output:
            raise RemoteInferenceError(
                f"the explained model's answer has no output '{self.output}' (it has: "
                + ", ".join(t.name for t in response.outputs)
                + ")"
            )
        if tensor is None:
            if not response.outputs:
                raise RemoteInferenceError("the explained model answered with no outputs")
            tensor = response.outputs[0]
        if tensor.datatype == "BYTES" or tensor.data.dtype.kind not in "biuf":
            raise RemoteInferenceError(
                f"output '{tensor.name}' of the explained model is {tensor.datatype}, not numbers"
            )
        data = tensor.data.astype(np.float64)
        if data.ndim == 2 and data.shape[1] == 1:
            data = data[:, 0]
        if data.ndim == 0 or data.shape[0] != x.shape[0]:
            raise RemoteInferenceError(
                f"output '{tensor.name}' of the explained model has shape {tensor.shape} "
                f"for {x.shape[0]} rows"
            )
        return data


def _datatype(x: np.ndarray, declared: str | None) -> str:
    if x.dtype.kind in "USO":
        return "BYTES"
    return declared or "FP64"


# --- explanations ------------------------------------------------------------------------------


@dataclass(slots=True)
class ExplainerConfig:
    explainer_type: str
    feature_names: list[str]
    task: str
    init_parameters: dict[str, Any]
    explain_parameters: dict[str, Any]


def _as_columns(predictions: np.ndarray) -> np.ndarray:
    """Model outputs as [N, K] (a one-output model's [N] becomes [N, 1])."""
    return predictions.reshape(predictions.shape[0], -1)


def _prediction(raw: np.ndarray, task: str) -> list:
    if task == "classification" and raw.ndim == 2 and raw.shape[1] > 1:
        return raw.argmax(axis=1).tolist()
    return raw.tolist()


def _importances(attributions: list[np.ndarray], names: list[str]) -> dict[str, Any]:
    """Features ranked by mean absolute attribution, per output and summed over outputs
    (alibi's `raw.importances`)."""

    def ranked(values: np.ndarray) -> dict[str, list]:
        effect = np.abs(values).mean(axis=0)
        order = np.argsort(-effect, kind="stable")
        return {"ranked_effect": effect[order].tolist(), "names": [names[i] for i in order]}

    doc = {str(k): ranked(values) for k, values in enumerate(attributions)}
    doc["aggregated"] = ranked(np.sum([np.abs(v) for v in attributions], axis=0))
    return doc


class KernelShapExplainer:
    def __init__(self, shap: Any, model: RemoteModel, background: np.ndarray, config):
        self.shap = shap
        self.model = model
        self.config = config
        init = config.init_parameters
        self.link = init.get("link", "identity")
        if self.link not in ("identity", "logit"):
            raise ValueError(f"'init_parameters.link' must be identity or logit, not {self.link!r}")
        self.seed = init.get("seed")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"'init_parameters.seed' must be an integer, not {self.seed!r}")
        self.background = background
        if init.get("summarise_background"):
            count = int(init.get("n_background_samples", 100))
            if count < len(background):
                self.background = shap.kmeans(background, count)
        self.explainer = None

    def explain(self, x: np.ndarray, parameters: dict[str, Any]) -> dict[str, Any]:
        if self.seed is not None:
            np.random.seed(self.seed)  # shap samples coalitions from numpy's global generator
        if self.explainer is None:
            # Made on first use: it calls the model on the background data.
            self.explainer = self.shap.KernelExplainer(
                self.model,
                self.background,
                feature_names=self.config.feature_names,
                link=self.link,
            )
        values = np.asarray(self.explainer.shap_values(x, silent=True, **parameters))
        # shap answers [rows, F] for one model output, [rows, F, K] for K of them.
        if values.ndim == 2:
            values = values[:, :, None]
        attributions = [values[:, :, k] for k in range(values.shape[2])]
        expected = np.atleast_1d(np.asarray(self.explainer.expected_value, dtype=np.float64))
        raw = _as_columns(self.model(x))
        names = self.config.feature_names
        return {
            "meta": {
                "name": EXPLAINERS["kernel_shap"],
                "type": ["blackbox"],
                "task": self.config.task,
                "explanations": ["local"],
                "params": {
                    "link": self.link,
                    "summarise_background": bool(
                        self.config.init_parameters.get("summarise_background", False)
                    ),
                    **parameters,
                },
                "version": __version__,
                "library": f"shap {self.shap.__version__}",
            },
            "data": {
                "shap_values": [a.tolist() for a in attributions],
                "expected_value": expected.tolist(),
                "link": self.link,
                "feature_names": names,
                "categorical_names": {},
                "raw": {
                    "raw_prediction": raw.tolist(),
                    "prediction": _prediction(raw, self.config.task),
                    "instances": x.tolist(),
                    "importances": _importances(attributions, names),
                },
            },
        }


class FeatureImportanceExplainer:
    """Local importance by replacement: feature j of row x scores f(x) - mean_b f(x with x_j :=
    background_b[j]). No sampling and no dependency beyond numpy; unlike SHAP values the scores
    need not add up to f(x) - E f when features interact."""

    def __init__(self, model: RemoteModel, background: np.ndarray, config: ExplainerConfig):
        self.model = model
        self.background = background
        self.config = config

    def explain(self, x: np.ndarray, parameters: dict[str, Any]) -> dict[str, Any]:
        if parameters:
            raise BadRequest(
                "feature_importance takes no explain_parameters, got: " + ", ".join(parameters)
            )
        rows_, features = x.shape
        background = self.background
        count = len(background)
        if rows_ * features * count > MAX_REPLACED_ROWS:
            raise BadRequest(
                f"feature_importance of {rows_} rows with {features} features against {count} "
                f"background rows needs {rows_ * features * count} model rows, over the "
                f"{MAX_REPLACED_ROWS} allowed: send fewer rows or use a smaller background"
            )
        # One call for everything: the background, the rows, and every row with each feature
        # replaced by each background value, in that order.
        replaced = np.repeat(x, features * count, axis=0).reshape(rows_, features, count, features)
        for j in range(features):
            replaced[:, j, :, j] = background[:, j]
        batch = np.vstack([background, x, replaced.reshape(-1, features)])
        outputs = _as_columns(self.model(batch))
        outputs_count = outputs.shape[1]
        expected = outputs[:count].mean(axis=0)
        raw = outputs[count : count + rows_]
        perturbed = outputs[count + rows_ :].reshape(rows_, features, count, outputs_count)
        scores = raw[:, None, :] - perturbed.mean(axis=2)  # [rows, F, K]
        attributions = [scores[:, :, k] for k in range(outputs_count)]
        names = self.config.feature_names
        return {
            "meta": {
                "name": EXPLAINERS["feature_importance"],
                "type": ["blackbox"],
                "task": self.config.task,
                "explanations": ["local"],
                "params": {"background_rows": count},
                "version": __version__,
            },
            "data": {
                "importances": [a.tolist() for a in attributions],
                "expected_value": expected.tolist(),
                "feature_names": names,
                "raw": {
                    "raw_prediction": raw.tolist(),
                    "prediction": _prediction(raw, self.config.task),
                    "instances": x.tolist(),
                    "importances": _importances(attributions, names),
                },
            },
        }


# --- the runtime -------------------------------------------------------------------------------


def _import_shap(model: str) -> Any:
    with warnings.catch_warnings():
        # shap's plotting colours use matplotlib calls matplotlib has scheduled for removal.
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return require("shap", "explain", model, "explainer_type 'kernel_shap'")


class ExplainerRuntime(Runtime):
    batchable = False  # one explanation document per request, not one row per input row
    explainer: Any = None
    remote: RemoteModel | None = None
    # An httpx transport to reach the explained model through instead of the network (tests).
    transport: httpx.BaseTransport | None = None

    async def load(self) -> None:
        # Keys for others (a Seldon Model's free parameters) are logged and ignored.
        extra = read_extra(self.settings.extra, EXTRA_KEYS, self.name, "explainer")
        explainer_type = extra.get("explainer_type")
        if explainer_type not in EXPLAINERS:
            raise self._error(
                f"'extra.explainer_type' must be one of {', '.join(EXPLAINERS)}, not "
                f"{explainer_type!r} (anchor explainers need the alibi-explain runtime)"
            )
        infer_uri = extra.get("infer_uri")
        if not isinstance(infer_uri, str) or not infer_uri.startswith(("http://", "https://")):
            raise self._error(
                f"'extra.infer_uri' must be an http(s) V2 infer URL, not {infer_uri!r}"
            )
        init_parameters = self._object(extra, "init_parameters")
        explain_parameters = self._object(extra, "explain_parameters")
        shap = None
        if explainer_type == "kernel_shap":
            # In a thread: importing shap takes seconds, which the server's loop should not wait.
            shap = await asyncio.to_thread(_import_shap, self.name)

        path = find_file(self.artifact_path(), (BACKGROUND_FILE,), self.name)
        background = load_numpy(path, self.name)
        if background.ndim != 2 or len(background) == 0 or background.dtype.kind not in "biuf":
            raise self._error(
                f"{path.name} must hold a [rows, features] matrix of numbers, not "
                f"{background.dtype} of shape {list(background.shape)}"
            )
        background = background.astype(np.float64)
        features = background.shape[1]
        names = init_parameters.get("feature_names") or [f"feature_{i}" for i in range(features)]
        if len(names) != features:
            raise self._error(f"{len(names)} feature_names for {features} background features")
        task = init_parameters.get("task", "classification")
        if task not in ("classification", "regression"):
            raise self._error("'init_parameters.task' must be classification or regression")
        config = ExplainerConfig(
            explainer_type, [str(n) for n in names], task, init_parameters, explain_parameters
        )
        try:
            timeout = float(extra.get("timeout", 60))
        except (TypeError, ValueError):
            raise self._error("'extra.timeout' must be a number of seconds") from None
        self.remote = RemoteModel(
            infer_uri,
            extra.get("infer_output") or None,
            timeout,
            extra.get("ssl_verify_path") or True,
            self.transport,
        )
        try:
            if shap is not None:
                self.explainer = KernelShapExplainer(shap, self.remote, background, config)
            else:
                self.explainer = FeatureImportanceExplainer(self.remote, background, config)
        except ValueError as exc:
            raise self._error(str(exc)) from None
        self.background = background
        self._explaining = threading.Lock()

    def _error(self, message: str) -> ModelLoadError:
        return ModelLoadError(f"model '{self.name}': {message}")

    def _object(self, extra: dict, key: str) -> dict[str, Any]:
        value = extra.get(key) or {}
        if not isinstance(value, dict):
            raise self._error(f"'extra.{key}' must be an object")
        return value

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        x = rows(request, self.name)
        check_width(x, self.background.shape[1], self.name, "background data")
        parameters = dict(self.explainer.config.explain_parameters)
        asked = request.parameters.get("explain_parameters") or {}
        if not isinstance(asked, dict):
            raise BadRequest("'parameters.explain_parameters' must be an object")
        parameters.update(asked)
        document = await asyncio.to_thread(self._explain, x, parameters)
        explanation = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        return InferenceResponse(
            model_name=self.name,
            outputs=[codecs.StringCodec.encode("explanation", [explanation])],
            parameters={
                "explainer_type": self.explainer.config.explainer_type,
                "explainer_method": EXPLAINERS[self.explainer.config.explainer_type],
            },
        )

    def _explain(self, x: np.ndarray, parameters: dict[str, Any]) -> dict[str, Any]:
        # shap's explainer keeps per-call state on itself, so one explanation at a time.
        with self._explaining:
            try:
                return self.explainer.explain(x, parameters)
            except InferlineError:
                raise
            except TypeError as exc:
                raise BadRequest(f"bad explain_parameters: {exc}") from None

    async def unload(self) -> None:
        if self.remote is not None:
            self.remote.close()

    def metadata(self) -> ModelMetadata:
        metadata = super().metadata()
        if not metadata.outputs:
            metadata.outputs = declared(("explanation", "BYTES", [1]))
        return metadata
