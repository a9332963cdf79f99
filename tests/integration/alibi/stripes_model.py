"""The image classifier of the anchor_image test, copied into its model folder as `model.py`: the
scikit-learn LogisticRegression make_artifacts.py trained on flattened 24 x 24 RGB images, whose
class is decided by the top-left 8 x 8 square alone (striped: 1, plain grey: 0)."""

import joblib
import numpy as np

from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest
from inferline.protocol.types import InferenceRequest, InferenceResponse
from inferline.runtimes.base import Runtime

SHAPE = (24, 24, 3)


class Stripes(Runtime):
    async def load(self) -> None:
        self.model = joblib.load(self.artifact_path() / "model.joblib")

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        (tensor,) = request.inputs
        images = tensor.data
        if images.shape[1:] != SHAPE:
            raise BadRequest(
                f"input '{tensor.name}' must be images [N, 24, 24, 3], not {tensor.shape}"
            )
        probabilities = self.model.predict_proba(images.reshape(len(images), -1))
        return InferenceResponse(
            model_name=self.name,
            outputs=[codecs.NumpyCodec.encode("probabilities", probabilities.astype(np.float32))],
        )
