"""V2 REST bodies: JSON, and JSON followed by raw tensors (the binary tensor extension).

A binary body is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw bytes
of every tensor whose parameters carry `binary_data_size`, in the order the tensors appear.
Decoding goes straight to NumPy; encoding hands NumPy arrays to orjson, which writes them natively.
"""

from functools import cache
from typing import Any

import numpy as np
import orjson

from inferline.protocol import raw
from inferline.protocol.datatypes import element_count, numpy_dtype
from inferline.protocol.errors import BadRequest
from inferline.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestedOutput,
    Tensor,
)

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_KINDS_FOR = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


# --- decoding ---------------------------------------------------------------------------------


def _split_body(body: bytes, json_length: int | None) -> tuple[Any, memoryview]:
    if json_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not 0 <= json_length <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {json_length} but the body has "
                f"{len(body)} bytes"
            )
        view = memoryview(body)
        header, binary = view[:json_length], view[json_length:]
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    return doc, binary


def _parameters(doc: dict, where: str) -> Parameters:
    parameters = doc.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"'parameters' of {where} must be an object")
    return parameters


def _shape(doc: dict, where: str) -> list[int]:
    shape = doc.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"{where} needs 'shape', a list of non-negative integers; got {shape!r}")
    return shape


def _array_from_json(data: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        array = _bytes_from_json(data, where)
    else:
        try:
            array = np.asarray(data)
        except ValueError:
            raise BadRequest(f"{where} has ragged nested 'data'") from None
        if array.dtype.kind == "f" and dtype.kind in "iu" and array.size:
            # NumPy reads ints >= 2**63 mixed with others as float64; keep them exact.
            exact = np.asarray(data, dtype=object)
            if exact.shape == array.shape and all(type(v) is int for v in exact.flat):
                low, high = _int_range(dtype)
                if exact.min() < low or exact.max() > high:
                    raise BadRequest(f"{where} has values outside the range of {datatype}")
                array = exact.astype(dtype)
        if array.dtype.kind == "O" and dtype.kind == "f":
            # MLServer's convention: JSON null in a float tensor means NaN.
            if not all(v is None or isinstance(v, int | float) for v in array.flat):
                raise BadRequest(f"{where} has datatype {datatype} but non-numeric data")
            try:
                array = np.asarray(data, dtype=dtype)
            except (TypeError, ValueError):
                raise BadRequest(f"{where} has datatype {datatype} but non-numeric data") from None
        elif array.size and array.dtype.kind not in _KINDS_FOR.get(dtype.kind, ""):
            wanted = (
                "booleans"
                if dtype.kind == "b"
                else "integers"
                if dtype.kind in "iu"
                else ("numbers")
            )
            raise BadRequest(f"{where} has datatype {datatype} but its data are not all {wanted}")
        if dtype.kind in "iu" and array.size and array.dtype.kind in "iu" and array.dtype != dtype:
            # All are Python ints: NumPy converts them straight to the datatype and refuses any
            # out of its range, which costs less than a min() and max() over the array.
            try:
                array = np.asarray(data, dtype=dtype)
            except OverflowError:
                raise BadRequest(f"{where} has values outside the range of {datatype}") from None
        array = array.astype(dtype, copy=False)
    if array.size != element_count(shape):
        raise BadRequest(
            f"{where} has shape {shape} ({element_count(shape)} elements) but its data has "
            f"{array.size} elements"
        )
    return array.reshape(shape)


@cache
def _int_range(dtype: np.dtype) -> tuple[int, int]:
    # np.iinfo builds its object anew on every call: ~5 us, as much as the rest of a small
    # tensor's range check.
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _bytes_from_json(data: Any, where: str) -> np.ndarray:
    flat: list[bytes] = []

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            flat.append(value.encode())
        else:
            raise BadRequest(f"{where} has datatype BYTES but holds {type(value).__name__} data")

    walk(data)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def _decode_tensor(doc: Any, binary: memoryview, offset: int, what: str) -> tuple[Tensor, int]:
    if not isinstance(doc, dict):
        raise BadRequest(f"each of {what} must be an object")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"each of {what} needs a 'name' string")
    where = f"{what[:-1]} '{name}'"
    datatype = doc.get("datatype")
    if not isinstance(datatype, str):
        raise BadRequest(f"{where} needs a 'datatype' string")
    shape = _shape(doc, where)
    parameters = _parameters(doc, where)
    size = parameters.get("binary_data_size")
    if size is not None:
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or offset + size > len(binary)
        ):
            raise BadRequest(
                f"{where} has binary_data_size {size!r} but only {len(binary) - offset} bytes "
                "of binary data remain after the JSON header"
            )
        numpy_dtype(datatype)  # unknown datatype: fail with its own message first
        data = raw.tensor_from_bytes(binary[offset : offset + size], datatype, shape, name)
        parameters = {k: v for k, v in parameters.items() if k != "binary_data_size"}
        return Tensor(name, datatype, shape, data, parameters), offset + size
    if "data" not in doc:
        raise BadRequest(f"{where} has neither 'data' nor a 'binary_data_size' parameter")
    data = _array_from_json(doc["data"], datatype, shape, where)
    return Tensor(name, datatype, shape, data, parameters), offset


def _decode_tensors(docs: Any, binary: memoryview, what: str) -> list[Tensor]:
    if not isinstance(docs, list):
        raise BadRequest(f"'{what}' must be a list")
    tensors, offset = [], 0
    for doc in docs:
        tensor, offset = _decode_tensor(doc, binary, offset, what)
        tensors.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data follow the JSON header but no tensor's "
            "binary_data_size accounts for them"
        )
    return tensors


def _optional_str(doc: dict, key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    return value


def decode_request(body: bytes, json_length: int | None = None) -> InferenceRequest:
    doc, binary = _split_body(body, json_length)
    if "inputs" not in doc:
        raise BadRequest("request has no 'inputs'")
    inputs = _decode_tensors(doc["inputs"], binary, "inputs")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for item in doc["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise BadRequest("each of outputs needs a 'name' string")
            outputs.append(RequestedOutput(item["name"], _parameters(item, "an output")))
    return InferenceRequest(
        inputs=inputs,
        id=_optional_str(doc, "id"),
        parameters=_parameters(doc, "the request"),
        outputs=outputs,
    )


def decode_response(body: bytes, json_length: int | None = None) -> InferenceResponse:
    doc, binary = _split_body(body, json_length)
    if "error" in doc:
        raise BadRequest(str(doc["error"]))
    return InferenceResponse(
        model_name=doc.get("model_name", ""),
        model_version=doc.get("model_version"),
        id=doc.get("id"),
        parameters=_parameters(doc, "the response"),
        outputs=_decode_tensors(doc.get("outputs", []), binary, "outputs"),
    )


# --- encoding ---------------------------------------------------------------------------------


def binary_output_names(request: InferenceRequest) -> set[str] | bool:
    """Which outputs the caller wants as binary: True for all, or a set of names.

    `binary_data_output` on the request asks for all; `binary_data` on a requested output
    overrides it for that output.
    """
    default = bool(request.parameters.get("binary_data_output", False))
    if not request.outputs:
        return default
    overrides = {o.name: o.parameters.get("binary_data") for o in request.outputs}
    if default and all(v is None or v for v in overrides.values()):
        return True
    return {name for name, v in overrides.items() if (default if v is None else v)}


def _json_data(tensor: Tensor) -> Any:
    if tensor.datatype == "BYTES":
        try:
            return [v.decode() if isinstance(v, bytes) else v for v in tensor.data.flat]
        except UnicodeDecodeError:
            raise BadRequest(
                f"tensor '{tensor.name}' holds bytes that are not UTF-8 text, which JSON cannot "
                "carry; ask for it as binary data (binary_data / binary_data_output)"
            ) from None
    return np.ascontiguousarray(tensor.data).ravel()


def _encode_tensors(
    tensors: list[Tensor], binary: set[str] | bool
) -> tuple[list[dict], list[bytes]]:
    docs, chunks = [], []
    for tensor in tensors:
        doc: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        parameters = dict(tensor.parameters)
        if binary is True or (binary and tensor.name in binary):
            chunk = raw.tensor_to_bytes(tensor.data, tensor.datatype)
            chunks.append(chunk)
            parameters["binary_data_size"] = len(chunk)
        else:
            doc["data"] = _json_data(tensor)
        if parameters:
            doc["parameters"] = parameters
        docs.append(doc)
    return docs, chunks


def _dump(doc: dict, chunks: list[bytes]) -> tuple[bytes, int | None]:
    try:
        header = orjson.dumps(doc, option=_NUMPY)
    except TypeError as exc:
        raise BadRequest(f"cannot encode as JSON: {exc}") from None
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def encode_response(
    response: InferenceResponse, binary: set[str] | bool = False
) -> tuple[bytes, int | None]:
    """Encode a response; returns the body and, when any tensor went binary, the JSON length."""
    outputs, chunks = _encode_tensors(response.outputs, binary)
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version:
        doc["model_version"] = response.model_version
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    return _dump(doc, chunks)


def encode_request(request: InferenceRequest, binary: bool = False) -> tuple[bytes, int | None]:
    inputs, chunks = _encode_tensors(request.inputs, binary)
    doc: dict[str, Any] = {}
    if request.id is not None:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = request.parameters
    doc["inputs"] = inputs
    if request.outputs is not None:
        doc["outputs"] = [
            {"name": o.name, **({"parameters": o.parameters} if o.parameters else {})}
            for o in request.outputs
        ]
    return _dump(doc, chunks)
