"""A text classifier for the anchor_text test, copied into its model folder as `model.py`:
class 1 for a text with "good" in it, else 0. One rule, so the anchor must name that word."""

import numpy as np

from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest
from inferline.protocol.types import InferenceRequest, InferenceResponse
from inferline.runtimes.base import Runtime


class Sentiment(Runtime):
    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        (tensor,) = request.inputs
        if tensor.datatype != "BYTES":
            raise BadRequest(f"input '{tensor.name}' must be BYTES (text), not {tensor.datatype}")
        texts = codecs.StringCodec.decode(tensor)
        labels = np.array([int("good" in text.split()) for text in texts], dtype=np.int64)
        return InferenceResponse(
            model_name=self.name, outputs=[codecs.NumpyCodec.encode("label", labels)]
        )
