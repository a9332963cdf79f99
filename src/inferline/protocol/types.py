"""V2 request, response and metadata types.

Plain slotted dataclasses, not validation models: the transports decode straight into these, so the
inference hot path builds no pydantic objects. Tensor data is always a NumPy array already shaped to
`shape`; BYTES tensors are object arrays of `bytes`.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferline.protocol.datatypes import datatype_of, numpy_dtype

Parameters = dict[str, Any]


@dataclass(slots=True)
class Tensor:
    """A named tensor: a request input or a response output."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)

    @classmethod
    def from_numpy(
        cls,
        name: str,
        array: np.ndarray,
        datatype: str | None = None,
        parameters: Parameters | None = None,
    ) -> "Tensor":
        array = np.asarray(array)
        datatype = datatype or datatype_of(array)
        if datatype == "BYTES":
            array = _as_bytes_array(array)
        elif array.dtype != numpy_dtype(datatype):
            array = array.astype(numpy_dtype(datatype))
        return cls(name, datatype, list(array.shape), array, parameters or {})


def _as_bytes_array(array: np.ndarray) -> np.ndarray:
    if array.dtype == object and all(isinstance(v, bytes) for v in array.flat):
        return array
    out = np.empty(array.shape, dtype=object)
    for index, value in np.ndenumerate(array):
        out[index] = value.encode() if isinstance(value, str) else bytes(value)
    return out


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    inputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    # None asks for every output the model produces.
    outputs: list[RequestedOutput] | None = None

    def input(self, name: str) -> Tensor | None:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        return None


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    outputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)

    def output(self, name: str) -> Tensor | None:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        return None


@dataclass(slots=True)
class TensorMetadata:
    """A tensor's declared name, datatype and shape; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": self.shape}
        if self.parameters:
            doc["parameters"] = self.parameters
        return doc


@dataclass(slots=True)
class ModelMetadata:
    name: str
    platform: str = ""
    versions: list[str] = field(default_factory=list)
    inputs: list[TensorMetadata] = field(default_factory=list)
    outputs: list[TensorMetadata] = field(default_factory=list)
    parameters: Parameters = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name}
        if self.versions:
            doc["versions"] = self.versions
        doc["platform"] = self.platform
        doc["inputs"] = [t.to_dict() for t in self.inputs]
        doc["outputs"] = [t.to_dict() for t in self.outputs]
        if self.parameters:
            doc["parameters"] = self.parameters
        return doc


@dataclass(slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "extensions": self.extensions}


@dataclass(slots=True)
class RepositoryModel:
    """One row of the repository index: a model the server knows and its state."""

    name: str
    version: str | None
    state: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name}
        if self.version:
            doc["version"] = self.version
        doc["state"] = self.state
        doc["reason"] = self.reason
        return doc
