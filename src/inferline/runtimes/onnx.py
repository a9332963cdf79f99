"""ONNX models on onnxruntime, described by their own graph.

The graph's inputs and outputs (names, datatypes, shapes with -1 for dynamic dimensions) are the
model's metadata unless `model-settings.json` declares its own. Request inputs are matched by
name, or by position when the graph has one input; an input of another datatype is converted
only when no value can change (INT32 to INT64, FP32 to FP64, ...), otherwise the request fails
with a 400 naming the input and both datatypes. Without requested outputs every tensor output of
the graph is returned, shaped as the graph made it.

Inference runs in a worker thread (onnxruntime releases the GIL); onnxruntime's own pool size is
`parameters.extra.intra_op_threads` (0, the default, lets onnxruntime choose), and its execution
providers `parameters.extra.providers` (default: the CPU provider).

onnxruntime is an optional extra, so it is imported only when a model loads.
"""

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferline.protocol import codecs
from inferline.protocol.datatypes import numpy_dtype
from inferline.protocol.errors import BadRequest, InferenceError, InvalidModelURI, ModelLoadError
from inferline.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    TensorMetadata,
)
from inferline.runtimes.base import Runtime
from inferline.runtimes.registry import ONNX_FILES

INSTALL_HINT = 'pip install "inferline[onnx]"'
# Triton's platform name for the same models, so clients that branch on it see what they know.
PLATFORM = "onnxruntime_onnx"

# onnxruntime's type strings for the tensor element types that have a V2 datatype.
ONNX_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


@dataclass(slots=True)
class GraphInput:
    spec: TensorMetadata
    dtype: np.dtype


class OnnxRuntime(Runtime):
    session = None

    def __init__(self, settings):
        super().__init__(settings)
        self.graph_inputs: list[GraphInput] = []
        self.graph_outputs: list[TensorMetadata] = []
        # Outputs with no V2 datatype (sequences, maps), left out of metadata and defaults.
        self.other_outputs: dict[str, str] = {}

    async def load(self) -> None:
        path = self._model_file(self.artifact_path())
        options = _session_options(self.settings.extra, self.name)
        self.session = await asyncio.to_thread(_open_session, path, options, self.name)
        for node in self.session.get_inputs():
            datatype = ONNX_DATATYPES.get(node.type)
            if datatype is None:
                raise ModelLoadError(
                    f"model '{self.name}': input '{node.name}' is {node.type}, which has no "
                    "V2 datatype, so no request can fill it"
                )
            spec = TensorMetadata(node.name, datatype, _shape(node.shape))
            self.graph_inputs.append(GraphInput(spec, numpy_dtype(datatype)))
        for node in self.session.get_outputs():
            datatype = ONNX_DATATYPES.get(node.type)
            if datatype is None:
                self.other_outputs[node.name] = node.type
            else:
                self.graph_outputs.append(TensorMetadata(node.name, datatype, _shape(node.shape)))

    def _model_file(self, path: Path) -> Path:
        if path.is_file():
            return path
        for name in ONNX_FILES:
            if (path / name).is_file():
                return path / name
        raise InvalidModelURI(f"model '{self.name}': no {', '.join(ONNX_FILES)} in {path}")

    async def unload(self) -> None:
        self.session = None

    def metadata(self) -> ModelMetadata:
        metadata = super().metadata()
        metadata.platform = metadata.platform or PLATFORM
        metadata.inputs = metadata.inputs or [i.spec for i in self.graph_inputs]
        metadata.outputs = metadata.outputs or list(self.graph_outputs)
        return metadata

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        names = self._output_names(request)
        feeds = self._feeds(request)
        try:
            results = await asyncio.to_thread(self.session.run, names, feeds)
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise InferenceError(f"model '{self.name}': onnxruntime failed: {exc}") from None
        outputs = [codecs.NumpyCodec.encode(n, r) for n, r in zip(names, results, strict=True)]
        return InferenceResponse(model_name=self.name, outputs=outputs)

    def _output_names(self, request: InferenceRequest) -> list[str]:
        available = [o.name for o in self.graph_outputs]
        if not available:
            raise BadRequest(f"model '{self.name}' has no output with a V2 datatype")
        if not request.outputs:
            return available
        names = []
        for wanted in request.outputs:
            if wanted.name in self.other_outputs:
                raise BadRequest(
                    f"model '{self.name}': output '{wanted.name}' is "
                    f"{self.other_outputs[wanted.name]}, which has no V2 datatype"
                )
            if wanted.name not in available:
                raise BadRequest(
                    f"model '{self.name}' has no output '{wanted.name}'; it can produce: "
                    + ", ".join(available)
                )
            if wanted.name not in names:
                names.append(wanted.name)
        return names

    def _feeds(self, request: InferenceRequest) -> dict[str, np.ndarray]:
        if len(self.graph_inputs) == 1 and len(request.inputs) == 1:
            pairs = [(self.graph_inputs[0], request.inputs[0])]
        else:
            known = {i.spec.name for i in self.graph_inputs}
            unknown = [t.name for t in request.inputs if t.name not in known]
            if unknown:
                raise BadRequest(
                    f"model '{self.name}' has no input '{unknown[0]}'; its inputs are: "
                    + ", ".join(i.spec.name for i in self.graph_inputs)
                )
            given = {t.name: t for t in request.inputs}
            missing = [i.spec.name for i in self.graph_inputs if i.spec.name not in given]
            if missing:
                raise BadRequest(f"model '{self.name}' needs input(s): " + ", ".join(missing))
            pairs = [(i, given[i.spec.name]) for i in self.graph_inputs]
        return {graph.spec.name: self._array(graph, tensor) for graph, tensor in pairs}

    def _array(self, graph: GraphInput, tensor: Tensor) -> np.ndarray:
        spec, data = graph.spec, tensor.data
        if not _shape_fits(list(data.shape), spec.shape):
            raise BadRequest(
                f"input '{tensor.name}' has shape {list(data.shape)} but model '{self.name}' "
                f"expects {spec.shape} for '{spec.name}'"
            )
        if spec.datatype == "BYTES" and tensor.datatype == "BYTES":
            # onnxruntime reads string tensors from str objects (bytes would become "b'...'").
            return np.vectorize(_text, otypes=[object])(data) if data.size else data
        if data.dtype == graph.dtype:
            return data
        if tensor.datatype != "BYTES" and _lossless(data.dtype, graph.dtype):
            return data.astype(graph.dtype)
        raise BadRequest(
            f"input '{tensor.name}' has datatype {tensor.datatype} but model '{self.name}' "
            f"takes {spec.datatype} for '{spec.name}', and {tensor.datatype} does not convert "
            f"to {spec.datatype} without loss"
        )


def _session_options(extra: dict[str, Any], model_name: str) -> tuple[int, list[str]]:
    raw = extra.get("intra_op_threads", 0)
    # Seldon passes a Model's `parameters` as strings, so "4" is as good as 4.
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise ModelLoadError(
            f"model '{model_name}': parameters.extra.intra_op_threads must be a whole number "
            f">= 0, not {raw!r}"
        )
    providers = extra.get("providers") or ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    return raw, list(providers)


def _open_session(path: Path, options: tuple[int, list[str]], model_name: str) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelLoadError(
            f"model '{model_name}' needs onnxruntime, which is not installed: {INSTALL_HINT} "
            f"({exc})"
        ) from None
    threads, providers = options
    session_options = onnxruntime.SessionOptions()
    session_options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), session_options, providers=providers)
    except Exception as exc:  # onnxruntime's load errors share no base class but Exception
        raise ModelLoadError(
            f"model '{model_name}': onnxruntime cannot load {path}: {exc}"
        ) from None


def _shape(dims: list[Any] | None) -> list[int]:
    # onnxruntime names a dynamic dimension by its symbol (a str) or leaves it None.
    return [d if isinstance(d, int) and d >= 0 else -1 for d in dims or []]


def _shape_fits(shape: list[int], expected: list[int]) -> bool:
    # A graph input of unknown rank reports no dimensions: anything fits.
    if not expected:
        return True
    return len(shape) == len(expected) and all(
        e in (-1, s) for s, e in zip(shape, expected, strict=True)
    )


def _lossless(source: np.dtype, target: np.dtype) -> bool:
    """Whether every value of `source` is exactly a value of `target`.

    NumPy's "safe" casting, less its one lossy case: 64-bit integers to FP64 (53-bit mantissa).
    """
    if source.kind in "iu" and target.kind == "f":
        return source.itemsize * 8 <= np.finfo(target).nmant + 1 and np.can_cast(source, target)
    return bool(np.can_cast(source, target, casting="safe"))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("a string input holds bytes that are not UTF-8") from None
    return str(value)
