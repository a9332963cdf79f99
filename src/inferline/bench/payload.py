"""The request a benchmark sends: read from a V2 JSON file, or made up from the model's metadata.

Bodies are encoded once, before the load starts: every request of a run sends the same bytes
(REST: the JSON as written; gRPC: a serialized ModelInferRequest with raw tensor contents).
"""

from typing import Any

import numpy as np

from inferline.protocol import json_encoding, protobuf
from inferline.protocol.datatypes import DATATYPES, numpy_dtype
from inferline.protocol.types import InferenceRequest, Tensor


class PayloadError(ValueError):
    pass


def request_from_file(data: bytes, where: str) -> InferenceRequest:
    try:
        return json_encoding.decode_request(data)
    except Exception as exc:  # BadRequest and anything else a malformed file raises
        raise PayloadError(f"{where} is not a V2 inference request: {exc}") from None


def _shape(declared: Any, batch_size: int, where: str) -> list[int]:
    if not isinstance(declared, list) or not all(isinstance(d, int) for d in declared):
        raise PayloadError(f"{where} has no usable shape in the model's metadata: {declared!r}")
    return [batch_size if d < 0 else d for d in declared]


def random_tensor(name: str, datatype: str, shape: list[int], rng: np.random.Generator) -> Tensor:
    """Values any model taking this datatype should accept: small non-negative integers,
    floats in [0, 1), booleans, short byte strings."""
    if datatype not in DATATYPES:
        raise PayloadError(
            f"input '{name}' has datatype '{datatype}'; expected one of {', '.join(DATATYPES)}"
        )
    if datatype == "BYTES":
        data = np.empty(shape, dtype=object)
        for index in np.ndindex(*shape):
            data[index] = f"bench-{rng.integers(1000)}".encode()
        return Tensor(name, datatype, shape, data)
    dtype = numpy_dtype(datatype)
    if datatype == "BOOL":
        data = rng.integers(0, 2, size=shape).astype(dtype)
    elif dtype.kind in "iu":
        data = rng.integers(0, 100, size=shape).astype(dtype)
    else:
        data = rng.random(size=shape).astype(dtype)
    return Tensor(name, datatype, shape, data)


def request_from_metadata(metadata: dict, batch_size: int = 1, seed: int = 0) -> InferenceRequest:
    """A request with one tensor per declared input: -1 dimensions become `batch_size`."""
    inputs = metadata.get("inputs") or []
    if not inputs:
        name = metadata.get("name", "the model")
        raise PayloadError(
            f"'{name}' declares no inputs in its metadata, so no request can be made up for it; "
            "pass one with --data FILE (a V2 JSON inference request)"
        )
    rng = np.random.default_rng(seed)
    tensors = []
    for declared in inputs:
        name = declared.get("name")
        where = f"input '{name}'"
        tensors.append(
            random_tensor(
                name,
                declared.get("datatype"),
                _shape(declared.get("shape"), batch_size, where),
                rng,
            )
        )
    return InferenceRequest(inputs=tensors)


def rest_body(request: InferenceRequest) -> bytes:
    body, _ = json_encoding.encode_request(request)
    return body


def grpc_body(request: InferenceRequest, model_name: str, typed: bool = False) -> bytes:
    """A serialized ModelInferRequest: tensors in `raw_input_contents` (as tritonclient sends
    them), or with `typed` in each tensor's typed `contents` (as MLServer's clients and k6
    scenarios do), which costs a server more to read."""
    message = protobuf.request_to_proto(request, model_name)
    if typed:
        untyped = [t.name for t in request.inputs if t.datatype not in protobuf.CONTENTS_FIELD]
        if untyped:
            raise PayloadError(
                f"input '{untyped[0]}' is FP16, which gRPC can only carry as raw contents"
            )
        del message.raw_input_contents[:]
        for tensor, sent in zip(request.inputs, message.inputs, strict=True):
            contents = getattr(sent.contents, protobuf.CONTENTS_FIELD[tensor.datatype])
            contents.extend(tensor.data.ravel().tolist())
    return message.SerializeToString()


def metadata_from_proto(message) -> dict:
    """A ModelMetadataResponse as the REST metadata document."""
    return {
        "name": message.name,
        "platform": message.platform,
        "versions": list(message.versions),
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in message.inputs
        ],
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
            for t in message.outputs
        ],
    }
