"""Alibi Explain's black-box explainers, answering as MLServer's alibi-explain runtime
(`mlserver_alibi_explain.AlibiExplainRuntime`) answers.

alibi is under the Business Source License 1.1 and pins numpy below 2: it is the optional extra
`alibi-explain`, installed in a virtualenv of its own (see the README).

The explainer calls the model it explains over V2 REST at `parameters.extra.infer_uri`, which a
Seldon Model's `explainer: {type, modelRef | pipelineRef}` block makes the agent point at the
router (`/v2/models/<modelRef>/infer` or `/v2/pipelines/<pipelineRef>/infer`). The calls are the
permissive explainer runtime's (`RemoteModel`): the model's metadata gives the input name and
datatype (not for pipelines), `Seldon-Skip-Logging: true`, `extra.infer_output` or the first
output, read as numbers with a trailing dimension of 1 dropped; text goes as BYTES.

The model folder (or `parameters.uri`) holds an explainer saved with alibi's `explainer.save()`
(`meta.dill`, `explainer.dill`, and for AnchorText its spaCy pipeline): fitted explainers such as
AnchorTabular and KernelShap can only come this way. Without one, `extra.init_parameters` are the
explainer class's constructor arguments (`predictor` is ours), as in MLServer.

`parameters.extra`: `explainer_type` (`anchor_tabular`, `anchor_text`, `anchor_image`,
`kernel_shap`), `infer_uri`, `infer_output`, `ssl_verify_path`, `timeout` (seconds per call,
default 60), `init_parameters`, `explain_parameters` (defaults for `explain()`, overridden by a
request's `parameters.explain_parameters`), `explainer_batch` (whether `explain()` takes every
row of the request; default false for the anchors, which explain one instance, so only the first
row or string is explained, as in MLServer; true for kernel_shap).

The answer is one BYTES output `explanation` holding alibi's `Explanation.to_json()`, and
response `parameters.headers` `{"x-seldon-alibi-type": "explanation", "x-seldon-alibi-method":
<type>}` as MLServer puts them there (our REST layer does not turn them into HTTP headers).
Explanations of one model run one at a time, in a worker thread.
"""

import asyncio
import logging
import threading
from typing import Any

import numpy as np

from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest, InferlineError, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse, ModelMetadata
from inferline.runtimes.base import Runtime
from inferline.runtimes.common import declared, require
from inferline.runtimes.explainer import EXTRA_KEYS, RemoteInferenceError, RemoteModel
from inferline.runtimes.extra_keys import read_extra

# Seldon's explainer type -> alibi's class, for the explainers that only call the model.
BLACK_BOX = {
    "anchor_tabular": "AnchorTabular",
    "anchor_text": "AnchorText",
    "anchor_image": "AnchorImage",
    "kernel_shap": "KernelShap",
}
WHITE_BOX = ("integrated_gradients", "tree_shap", "tree_partial_dependence")
BATCH_BY_DEFAULT = {"kernel_shap"}
log = logging.getLogger(__name__)


class AlibiExplainRuntime(Runtime):
    batchable = False  # one explanation document per request
    explainer: Any = None
    remote: RemoteModel | None = None

    async def load(self) -> None:
        extra = read_extra(self.settings.extra, EXTRA_KEYS, self.name, "alibi-explain")
        explainer_type = extra.get("explainer_type")
        if explainer_type in WHITE_BOX:
            raise self._error(
                f"explainer_type '{explainer_type}' needs the model itself (white-box); only "
                f"black-box explainers are served: {', '.join(BLACK_BOX)}"
            )
        if explainer_type not in BLACK_BOX:
            raise self._error(
                f"'extra.explainer_type' must be one of {', '.join(BLACK_BOX)}, not "
                f"{explainer_type!r}"
            )
        infer_uri = extra.get("infer_uri")
        if not isinstance(infer_uri, str) or not infer_uri.startswith(("http://", "https://")):
            raise self._error(
                f"'extra.infer_uri' must be an http(s) V2 infer URL, not {infer_uri!r}"
            )
        for key in ("init_parameters", "explain_parameters"):
            if not isinstance(extra.get(key) or {}, dict):
                raise self._error(f"'extra.{key}' must be an object")
        self.explain_parameters = extra.get("explain_parameters") or {}
        self.batch = bool(extra.get("explainer_batch", explainer_type in BATCH_BY_DEFAULT))
        try:
            timeout = float(extra.get("timeout", 60))
        except (TypeError, ValueError):
            raise self._error("'extra.timeout' must be a number of seconds") from None
        self.explainer_type = explainer_type
        self.remote = RemoteModel(
            infer_uri,
            extra.get("infer_output") or None,
            timeout,
            extra.get("ssl_verify_path") or True,
        )
        self.init_parameters = extra.get("init_parameters") or {}
        self._explaining = threading.Lock()
        # In a thread: importing alibi takes seconds (it brings spaCy and transformers), and
        # loading may read a spaCy pipeline.
        try:
            self.explainer = await asyncio.to_thread(self._make)
        except RemoteInferenceError as exc:
            # Some explainers (AnchorText) call the model while being made, and the model may
            # not be up yet (loaded after its explainer, or elsewhere): made on first use.
            log.warning("model %s: explainer made on the first request: %s", self.name, exc)

    def _made(self) -> Any:
        if self.explainer is None:
            self.explainer = self._make()
        return self.explainer

    def _make(self) -> Any:
        why = f"explainer_type '{self.explainer_type}'"
        saving = require("alibi.saving", "alibi-explain", self.name, why)
        class_name = BLACK_BOX[self.explainer_type]
        path = self.artifact_path()
        if path.is_dir() and (path / "meta.dill").is_file():
            try:
                explainer = saving.load_explainer(path, predictor=self.remote)
            except Exception as exc:  # a foreign or broken folder fails in many ways
                _raise_remote_failure(exc)
                raise self._error(
                    f"cannot load the alibi explainer saved in {path}: {type(exc).__name__}: {exc}"
                ) from None
            if type(explainer).__name__ != class_name:
                raise self._error(
                    f"{path} holds a saved {type(explainer).__name__}, but explainer_type "
                    f"'{self.explainer_type}' is {class_name}"
                )
            return explainer
        if not self.init_parameters:
            raise self._error(
                f"no saved explainer (meta.dill, from alibi's explainer.save()) in {path} and no "
                "'extra.init_parameters' to make one with"
            )
        explainers = require("alibi.explainers", "alibi-explain", self.name, why)
        init_parameters = dict(self.init_parameters)
        if init_parameters.get("images_background") is not None:
            # JSON gives nested lists; AnchorImage indexes the images with a pixel mask.
            init_parameters["images_background"] = np.asarray(init_parameters["images_background"])
        try:
            return getattr(explainers, class_name)(predictor=self.remote, **init_parameters)
        except InferlineError:
            raise
        except Exception as exc:
            _raise_remote_failure(exc)
            raise self._error(
                f"cannot make {class_name} from 'extra.init_parameters': {type(exc).__name__}: "
                f"{exc}"
            ) from None

    def _error(self, message: str) -> ModelLoadError:
        return ModelLoadError(f"model '{self.name}': {message}")

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        if not request.inputs:
            raise BadRequest(f"model '{self.name}': the request has no inputs")
        tensor = request.inputs[0]
        if tensor.datatype == "BYTES":
            instances: Any = codecs.StringCodec.decode(tensor)
        else:
            instances = tensor.data
            if instances.ndim == 0:
                raise BadRequest(f"model '{self.name}': input '{tensor.name}' needs [N, ...]")
        if len(instances) == 0:
            raise BadRequest(f"model '{self.name}': the request has no instances")
        if not self.batch:
            instances = instances[0]
        parameters = dict(self.explain_parameters)
        asked = request.parameters.get("explain_parameters") or {}
        if not isinstance(asked, dict):
            raise BadRequest("'parameters.explain_parameters' must be an object")
        parameters.update(asked)
        explanation = await asyncio.to_thread(self._explain, instances, parameters)
        return InferenceResponse(
            model_name=self.name,
            outputs=[codecs.StringCodec.encode("explanation", [explanation])],
            parameters={
                "headers": {
                    "x-seldon-alibi-type": "explanation",
                    "x-seldon-alibi-method": self.explainer_type,
                }
            },
        )

    def _explain(self, instances: Any, parameters: dict[str, Any]) -> str:
        # alibi's explainers keep per-call state (samplers, caches) on themselves.
        with self._explaining:
            try:
                explainer = self._made()
                self._check_image(explainer, instances)
                return explainer.explain(instances, **parameters).to_json()
            except InferlineError:
                raise
            except TypeError as exc:
                _raise_remote_failure(exc)
                raise BadRequest(f"model '{self.name}': bad explain_parameters: {exc}") from None
            except Exception as exc:
                _raise_remote_failure(exc)
                raise

    def _check_image(self, explainer: Any, image: Any) -> None:
        """AnchorImage segments whatever array it is given and sends its perturbations to the
        model: an image of another shape would come back as the model's error (a 502), or be
        explained as something it is not (a batch of images read as one image)."""
        shape = getattr(explainer, "image_shape", None)
        if shape is None or np.shape(image) == tuple(shape):
            return
        raise BadRequest(
            f"model '{self.name}': the image to explain has shape {list(np.shape(image))}, but "
            f"the explainer is made for images of shape {list(shape)}: send [1, "
            f"{', '.join(map(str, shape))}]"
        )

    async def unload(self) -> None:
        if self.remote is not None:
            self.remote.close()

    def metadata(self) -> ModelMetadata:
        metadata = super().metadata()
        if not metadata.outputs:
            metadata.outputs = declared(("explanation", "BYTES", [1]))
        return metadata


def _raise_remote_failure(exc: BaseException) -> None:
    """alibi wraps a failing predictor in its own errors; the explained model's failure (a
    502 naming the model's answer) is what the caller needs to see."""
    seen = exc
    while seen is not None:
        if isinstance(seen, RemoteInferenceError):
            raise seen from None
        seen = seen.__cause__ or seen.__context__
