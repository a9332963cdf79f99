"""LightGBM models, answering as MLServer's lightgbm runtime does.

The model is a Booster file written by `save_model` (`model.txt`, LightGBM's own name, or
`model.bst`, the name MLServer looks for). The one output is `predict`, what `Booster.predict`
returns: values for a regressor, probabilities for a classifier ([N, 1] for a binary one, [N, K]
for K classes). One-dimensional results go out as [N, 1], as MLServer sends them.

lightgbm is an optional extra, so it is imported only when a model loads.
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

LIGHTGBM_FILES = ("model.txt", "model.bst")
INSTALL_HINT = 'pip install "inferline[lightgbm]"'
PREDICT = "predict"


class LightGBMRuntime(Runtime):
    booster = None

    async def load(self) -> None:
        path = find_file(self.artifact_path(), LIGHTGBM_FILES, self.name)
        self.booster = await asyncio.to_thread(_load_booster, path, self.name)

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        for wanted in request.outputs or []:
            if wanted.name != PREDICT:
                raise BadRequest(
                    f"model '{self.name}' has no output '{wanted.name}'; it can produce: {PREDICT}"
                )
        features = tabular_features(request, self.settings, self.booster.num_feature())
        result = np.asarray(self.booster.predict(features))
        if result.ndim == 1:
            result = result.reshape(-1, 1)
        return InferenceResponse(
            model_name=self.name, outputs=[codecs.NumpyCodec.encode(PREDICT, result)]
        )


def _load_booster(path: Path, model_name: str) -> Any:
    try:
        import lightgbm
    except ImportError as exc:
        raise ModelLoadError(
            f"model '{model_name}' needs lightgbm, which is not installed: {INSTALL_HINT} ({exc})"
        ) from None
    try:
        return lightgbm.Booster(model_file=str(path))
    except lightgbm.basic.LightGBMError as exc:
        raise ModelLoadError(
            f"model '{model_name}': lightgbm cannot load {path}: {first_line(exc)}"
        ) from None
