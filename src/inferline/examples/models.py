"""Local equivalents of the models Seldon Core 2's pipeline samples use (Triton examples there),
as custom runtimes, so the samples run here with nothing downloaded.

- tfsimple: INT32 INPUT0, INPUT1 [1, 16] -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1
- add10 / mul10 / add20: FP32 INPUT -> OUTPUT = INPUT + 10 / INPUT * 10 / INPUT + 20
- conditional: CHOICE INT32, INPUT0, INPUT1 FP32 -> only OUTPUT0 = INPUT0 when CHOICE is 0,
  else only OUTPUT1 = INPUT1 (so only one downstream branch runs)
- check: INPUT -> OUTPUT = INPUT only when every value is below 10, else no output at all
  (Seldon does not publish its rule; this one makes all-ones pass and 1..16 not)
- outlier-error: INPUT FP32 -> OUTPUT = INPUT, or an error when any value is above 10
  ("outlier"), as the error-pipeline sample needs
"""

import numpy as np

from inferline.protocol.errors import BadRequest
from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
from inferline.runtimes.base import Runtime


def _input(request: InferenceRequest, name: str) -> np.ndarray:
    tensor = request.input(name)
    if tensor is None:
        names = ", ".join(t.name for t in request.inputs) or "none"
        raise BadRequest(f"input '{name}' is missing (got {names})")
    return tensor.data


def _answer(self: Runtime, *outputs: Tensor) -> InferenceResponse:
    return InferenceResponse(model_name=self.name, outputs=list(outputs))


class TfSimple(Runtime):
    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        a, b = _input(request, "INPUT0"), _input(request, "INPUT1")
        if a.shape != b.shape:
            raise BadRequest(f"INPUT0 has shape {list(a.shape)} but INPUT1 {list(b.shape)}")
        a, b = a.astype(np.int32), b.astype(np.int32)
        return _answer(
            self, Tensor.from_numpy("OUTPUT0", a + b), Tensor.from_numpy("OUTPUT1", a - b)
        )


class _Arithmetic(Runtime):
    def apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        x = _input(request, "INPUT").astype(np.float32)
        return _answer(self, Tensor.from_numpy("OUTPUT", self.apply(x).astype(np.float32)))


class Add10(_Arithmetic):
    def apply(self, x):
        return x + 10


class Mul10(_Arithmetic):
    def apply(self, x):
        return x * 10


class Add20(_Arithmetic):
    def apply(self, x):
        return x + 20


class Conditional(Runtime):
    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        choice = int(np.ravel(_input(request, "CHOICE"))[0])
        if choice == 0:
            return _answer(self, Tensor.from_numpy("OUTPUT0", _input(request, "INPUT0")))
        return _answer(self, Tensor.from_numpy("OUTPUT1", _input(request, "INPUT1")))


class Check(Runtime):
    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        x = _input(request, "INPUT")
        if np.all(x < 10):
            return _answer(self, Tensor.from_numpy("OUTPUT", x))
        return _answer(self)


class OutlierError(Runtime):
    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        x = _input(request, "INPUT")
        if np.any(x > 10):
            raise BadRequest(f"outlier detected: values above 10 in {np.ravel(x).tolist()}")
        return _answer(self, Tensor.from_numpy("OUTPUT", x))
