"""V2 gRPC messages <-> inferline types.

Tensors travel as `raw_*_contents` (one little-endian buffer per tensor) when the sender uses them,
as tritonclient does; typed `contents` fields are read too. The server answers in the form the
request came in: raw for raw (tritonclient reads nothing else), typed for typed (MLServer's and
Seldon's clients).
"""

import numpy as np

from inferline.protocol import raw
from inferline.protocol.datatypes import element_count, numpy_dtype
from inferline.protocol.errors import BadRequest
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestedOutput,
    Tensor,
)

# Which InferTensorContents field holds each datatype; FP16 has none and must go raw.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_INT64_MAX = 2**63 - 1


def parameters_from_proto(parameters) -> Parameters:
    if not parameters:  # the usual case: skips building an iterator over an empty map
        return {}
    return {
        key: getattr(p, p.WhichOneof("parameter_choice"))
        for key, p in parameters.items()
        if p.WhichOneof("parameter_choice")
    }


def parameters_to_proto(parameters: Parameters, target) -> None:
    for key, value in parameters.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                slot.uint64_param = value
            else:
                slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        elif isinstance(value, str):
            slot.string_param = value
        else:
            slot.string_param = str(value)


def _shape(shape, what: str, name: str) -> list[int]:
    shape = list(shape)
    if shape and min(shape) < 0:
        raise BadRequest(f"{what[:-1]} '{name}' has a negative dimension in shape {shape}")
    return shape


def _array_from_contents(contents, datatype: str, shape: list[int], where: str) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        numpy_dtype(datatype)  # raises for an unknown datatype
        raise BadRequest(f"{where} has datatype {datatype}, which can only be sent as raw contents")
    values = getattr(contents, field)
    if len(values) != element_count(shape):
        raise BadRequest(
            f"{where} has shape {shape} ({element_count(shape)} elements) but its contents hold "
            f"{len(values)} elements"
        )
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        try:
            array = np.array(values, dtype=numpy_dtype(datatype))
        except OverflowError:  # e.g. 300 in uint_contents for UINT8
            raise BadRequest(f"{where} has values outside the range of {datatype}") from None
    return array.reshape(shape)


def _tensors_from_proto(messages, raw_contents, what: str) -> list[Tensor]:
    if raw_contents and len(raw_contents) != len(messages):
        raise BadRequest(
            f"{len(raw_contents)} raw contents were sent for {len(messages)} {what}; "
            "raw contents need exactly one entry per tensor"
        )
    tensors = []
    for index, message in enumerate(messages):
        name, datatype = message.name, message.datatype
        shape = _shape(message.shape, what, name)
        if raw_contents:
            # tensor_from_bytes raises for an unknown datatype too
            data = raw.tensor_from_bytes(raw_contents[index], datatype, shape, name)
        else:
            where = f"{what[:-1]} '{name}'"
            data = _array_from_contents(message.contents, datatype, shape, where)
        tensors.append(
            Tensor(name, datatype, shape, data, parameters_from_proto(message.parameters))
        )
    return tensors


def request_from_proto(message: pb.ModelInferRequest) -> InferenceRequest:
    outputs = None
    if message.outputs:
        outputs = [
            RequestedOutput(o.name, parameters_from_proto(o.parameters)) for o in message.outputs
        ]
    return InferenceRequest(
        inputs=_tensors_from_proto(message.inputs, message.raw_input_contents, "inputs"),
        id=message.id or None,
        parameters=parameters_from_proto(message.parameters),
        outputs=outputs,
    )


def response_from_proto(message: pb.ModelInferResponse) -> InferenceResponse:
    return InferenceResponse(
        model_name=message.model_name,
        model_version=message.model_version or None,
        id=message.id or None,
        parameters=parameters_from_proto(message.parameters),
        outputs=_tensors_from_proto(message.outputs, message.raw_output_contents, "outputs"),
    )


def _tensors_to_proto(tensors: list[Tensor], messages, raw_contents, use_raw: bool = True) -> None:
    # Typed contents have no field for FP16: then every tensor goes raw (the two cannot mix).
    use_raw = use_raw or any(t.datatype not in CONTENTS_FIELD for t in tensors)
    for tensor in tensors:
        message = messages.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_proto(tensor.parameters, message.parameters)
        if use_raw:
            raw_contents.append(raw.tensor_to_bytes(tensor.data, tensor.datatype))
        else:
            values = getattr(message.contents, CONTENTS_FIELD[tensor.datatype])
            values.extend(tensor.data.ravel().tolist())


def response_to_proto(response: InferenceResponse, use_raw: bool = True) -> pb.ModelInferResponse:
    """Encode a response; `use_raw=False` uses typed contents, for callers that sent them (as
    MLServer's clients do) and may not read raw ones."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    parameters_to_proto(response.parameters, message.parameters)
    _tensors_to_proto(response.outputs, message.outputs, message.raw_output_contents, use_raw)
    return message


def request_to_proto(
    request: InferenceRequest, model_name: str, model_version: str | None = None
) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(
        model_name=model_name, model_version=model_version or "", id=request.id or ""
    )
    parameters_to_proto(request.parameters, message.parameters)
    _tensors_to_proto(request.inputs, message.inputs, message.raw_input_contents)
    for output in request.outputs or []:
        requested = message.outputs.add(name=output.name)
        parameters_to_proto(output.parameters, requested.parameters)
    return message
