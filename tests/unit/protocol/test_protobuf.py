"""gRPC messages <-> inferline types, checked against tritonclient.grpc."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

from inferline.protocol import raw
from inferline.protocol.datatypes import DATATYPES, NUMPY_DTYPES
from inferline.protocol.errors import BadRequest
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.protobuf import (
    CONTENTS_FIELD,
    request_from_proto,
    request_to_proto,
    response_from_proto,
    response_to_proto,
)
from inferline.protocol.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

SETTINGS = settings(max_examples=50, deadline=None)

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
TEXT = st.text(max_size=8)
PARAMETER_VALUES = (
    st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
)
PARAMETERS = st.dictionaries(TEXT, PARAMETER_VALUES, max_size=4)


def _objects(values: list, shape=None) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape if shape is not None else (len(values),))


@st.composite
def arrays(draw, datatype: str, shapes=SHAPES) -> np.ndarray:
    shape = draw(shapes)
    if datatype == "BYTES":
        count = int(np.prod(shape))
        return _objects(
            draw(st.lists(st.binary(max_size=8), min_size=count, max_size=count)), shape
        )
    return draw(hnp.arrays(NUMPY_DTYPES[datatype], shape))


@st.composite
def tensors_of_every_datatype(draw) -> list[Tensor]:
    tensors = []
    for datatype in DATATYPES:
        array = draw(arrays(datatype))
        parameters = draw(st.dictionaries(TEXT, PARAMETER_VALUES, max_size=2))
        tensors.append(Tensor(datatype.lower(), datatype, list(array.shape), array, parameters))
    return tensors


def assert_same_tensor(actual: Tensor, expected: Tensor) -> None:
    assert actual.name == expected.name
    assert actual.datatype == expected.datatype
    assert actual.shape == list(expected.shape)
    assert actual.data.shape == tuple(expected.shape)
    assert actual.data.dtype == NUMPY_DTYPES[expected.datatype]
    if expected.datatype == "BYTES":
        assert all(type(v) is bytes for v in actual.data.flat)
        assert actual.data.tolist() == expected.data.tolist()
    else:
        assert actual.data.tobytes() == expected.data.tobytes()  # bit-exact, NaNs included
    assert actual.parameters == expected.parameters
    for key, value in expected.parameters.items():
        assert type(actual.parameters[key]) is type(value)


def _wire(message, message_type):
    """Serialize and parse again, as the other end of a channel would."""
    return message_type.FromString(message.SerializeToString())


# --- round trips ------------------------------------------------------------------------------


@SETTINGS
@given(
    tensors_of_every_datatype(),
    st.none() | st.text(min_size=1, max_size=8),
    PARAMETERS,
    st.none() | st.lists(st.builds(RequestedOutput, st.text(max_size=5), PARAMETERS), min_size=1),
)
def test_request_round_trips_for_every_datatype(inputs, request_id, parameters, outputs):
    request = InferenceRequest(inputs, id=request_id, parameters=parameters, outputs=outputs)
    message = _wire(request_to_proto(request, "iris", "2"), pb.ModelInferRequest)
    assert message.model_name == "iris"
    assert message.model_version == "2"
    # One raw buffer per input, in input order.
    assert list(message.raw_input_contents) == [
        raw.tensor_to_bytes(t.data, t.datatype) for t in inputs
    ]
    decoded = request_from_proto(message)
    assert decoded.id == request_id
    assert decoded.parameters == parameters
    assert decoded.outputs == outputs
    for actual, expected in zip(decoded.inputs, inputs, strict=True):
        assert_same_tensor(actual, expected)


@SETTINGS
@given(tensors_of_every_datatype(), PARAMETERS)
def test_response_round_trips_for_every_datatype(outputs, parameters):
    response = InferenceResponse("iris", outputs, "7", "req-1", parameters)
    message = _wire(response_to_proto(response), pb.ModelInferResponse)
    assert len(message.raw_output_contents) == len(outputs)
    decoded = response_from_proto(message)
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("iris", "7", "req-1")
    assert decoded.parameters == parameters
    for actual, expected in zip(decoded.outputs, outputs, strict=True):
        assert_same_tensor(actual, expected)


def test_absent_id_and_version_stay_absent():
    request = InferenceRequest([Tensor.from_numpy("x", np.zeros(1, np.float32))])
    decoded = request_from_proto(_wire(request_to_proto(request, "m"), pb.ModelInferRequest))
    assert decoded.id is None
    assert decoded.outputs is None
    response = response_from_proto(response_to_proto(InferenceResponse("m", [])))
    assert response.model_version is None
    assert response.id is None


# --- parameters -------------------------------------------------------------------------------


def test_every_parameter_kind_uses_its_own_field_and_round_trips():
    parameters = {
        "yes": True,
        "no": False,
        "small": -5,
        "int64_max": 2**63 - 1,
        "int64_min": -(2**63),
        "big": 2**64 - 1,
        "ratio": 0.25,
        "name": "héllo",
    }
    request = InferenceRequest(
        [Tensor.from_numpy("x", np.zeros(1, np.int32), parameters=parameters)],
        parameters=parameters,
        outputs=[RequestedOutput("y", parameters)],
    )
    message = _wire(request_to_proto(request, "m"), pb.ModelInferRequest)
    fields = {key: p.WhichOneof("parameter_choice") for key, p in message.parameters.items()}
    assert fields == {
        "yes": "bool_param",
        "no": "bool_param",
        "small": "int64_param",
        "int64_max": "int64_param",
        "int64_min": "int64_param",
        "big": "uint64_param",
        "ratio": "double_param",
        "name": "string_param",
    }
    decoded = request_from_proto(message)
    for got in (decoded.parameters, decoded.inputs[0].parameters, decoded.outputs[0].parameters):
        assert got == parameters
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in parameters.items()}


@SETTINGS
@given(PARAMETERS)
def test_any_parameters_round_trip_on_responses(parameters):
    output = Tensor.from_numpy("y", np.ones(2, np.float64), parameters=parameters)
    response = InferenceResponse("m", [output], parameters=parameters)
    decoded = response_from_proto(_wire(response_to_proto(response), pb.ModelInferResponse))
    for got in (decoded.parameters, decoded.outputs[0].parameters):
        assert got == parameters
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in parameters.items()}


# --- typed contents ---------------------------------------------------------------------------


def _contents_request(datatype: str, shape: list[int], values: list) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    return message


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False, False, True]),
        ("INT8", [-128, 127, 0, -1]),
        ("INT16", [-(2**15), 2**15 - 1, 0, 1]),
        ("INT32", [-(2**31), 2**31 - 1, 0, 1]),
        ("INT64", [-(2**63), 2**63 - 1, 0, 1]),
        ("UINT8", [0, 255, 1, 2]),
        ("UINT16", [0, 2**16 - 1, 1, 2]),
        ("UINT32", [0, 2**32 - 1, 1, 2]),
        ("UINT64", [0, 2**64 - 1, 2**63, 2]),
        ("FP32", [0.5, -1.5, 3.4028234663852886e38, -0.0]),
        ("FP64", [0.1, -1e308, 5e-324, -0.0]),
        ("BYTES", [b"", b"\x00\xff", "é".encode(), b"abc"]),
    ],
)
def test_typed_contents_decode_for_every_datatype_with_a_field(datatype, values):
    message = _wire(_contents_request(datatype, [2, 2], values), pb.ModelInferRequest)
    assert not message.raw_input_contents
    tensor = request_from_proto(message).inputs[0]
    assert tensor.datatype == datatype
    assert tensor.shape == [2, 2]
    assert tensor.data.shape == (2, 2)
    assert tensor.data.dtype == NUMPY_DTYPES[datatype]
    assert tensor.data.ravel().tolist() == values
    if datatype.startswith("FP"):
        assert np.signbit(tensor.data.ravel()[-1])  # -0.0 keeps its sign


def test_every_datatype_but_fp16_has_a_contents_field():
    assert set(CONTENTS_FIELD) == set(DATATYPES) - {"FP16"}


@SETTINGS
@given(
    st.sampled_from(sorted(CONTENTS_FIELD)).flatmap(lambda dt: st.tuples(st.just(dt), arrays(dt)))
)
def test_typed_contents_match_any_array(datatype_and_array):
    datatype, array = datatype_and_array
    message = _contents_request(datatype, list(array.shape), array.ravel().tolist())
    tensor = request_from_proto(_wire(message, pb.ModelInferRequest)).inputs[0]
    assert tensor.data.shape == array.shape
    assert tensor.data.dtype == NUMPY_DTYPES[datatype]
    if datatype == "BYTES":
        assert tensor.data.tolist() == array.tolist()
    else:
        assert tensor.data.tobytes() == array.tobytes()


def test_typed_contents_on_response_outputs():
    message = pb.ModelInferResponse(model_name="m")
    output = message.outputs.add(name="y", datatype="FP64", shape=[3])
    output.contents.fp64_contents.extend([1.0, 2.0, 3.0])
    tensor = response_from_proto(message).outputs[0]
    assert tensor.data.tolist() == [1.0, 2.0, 3.0]
    assert tensor.data.dtype == np.float64


# --- errors -----------------------------------------------------------------------------------


def test_fp16_in_typed_contents_is_rejected():
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="half", datatype="FP16", shape=[2])
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(BadRequest) as info:
        request_from_proto(message)
    assert info.value.status == 400
    assert info.value.message == (
        "input 'half' has datatype FP16, which can only be sent as raw contents"
    )


def test_unknown_datatype_is_rejected_in_both_forms():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="BF16", shape=[1])
    with pytest.raises(BadRequest, match="unknown datatype 'BF16'"):
        request_from_proto(message)
    message.raw_input_contents.append(b"\x00\x00")
    with pytest.raises(BadRequest, match="unknown datatype 'BF16'"):
        request_from_proto(message)


def test_raw_contents_count_must_match_the_inputs():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="a", datatype="INT32", shape=[1])
    message.inputs.add(name="b", datatype="INT32", shape=[1])
    message.raw_input_contents.append(b"\x01\x00\x00\x00")
    with pytest.raises(
        BadRequest, match="1 raw contents were sent for 2 inputs; raw contents need exactly one"
    ):
        request_from_proto(message)


def test_raw_output_contents_count_must_match_the_outputs():
    message = pb.ModelInferResponse(model_name="m")
    message.outputs.add(name="a", datatype="INT8", shape=[1])
    message.raw_output_contents.extend([b"\x01", b"\x02"])
    with pytest.raises(BadRequest, match="2 raw contents were sent for 1 outputs"):
        response_from_proto(message)


def test_typed_contents_element_count_must_match_the_shape():
    message = _contents_request("INT32", [2, 2], [1, 2, 3])
    with pytest.raises(
        BadRequest,
        match=r"input 'x' has shape \[2, 2\] \(4 elements\) but its contents hold 3 elements",
    ):
        request_from_proto(message)


def test_raw_contents_size_must_match_the_shape():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    message.raw_input_contents.append(b"\x00" * 12)
    with pytest.raises(BadRequest, match=r"input 'x'.*needs 16 bytes, but 12 bytes were sent"):
        request_from_proto(message)


def test_truncated_raw_bytes_contents():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="s", datatype="BYTES", shape=[2])
    message.raw_input_contents.append(b"\x01\x00\x00\x00a\x05\x00\x00\x00ab")
    with pytest.raises(BadRequest, match="input 's': BYTES element 1 claims 5 bytes"):
        request_from_proto(message)


def test_negative_dimension_is_rejected():
    message = _contents_request("INT32", [-1, 2], [1, 2])
    with pytest.raises(BadRequest, match=r"input 'x' has a negative dimension in shape \[-1, 2\]"):
        request_from_proto(message)


@pytest.mark.parametrize(
    ("datatype", "values"),
    [("UINT8", [300, 1]), ("INT8", [-200, 1]), ("INT16", [2**15, 0]), ("UINT16", [2**16, 0])],
)
def test_typed_contents_outside_the_datatype_range_are_bad_request(datatype, values):
    message = _contents_request(datatype, [2], values)
    with pytest.raises(BadRequest, match=f"input 'x' has values outside the range of {datatype}"):
        request_from_proto(message)


# --- tritonclient.grpc interop ----------------------------------------------------------------


def _client_request(pairs, **overrides):
    inputs = []
    for index, (datatype, array) in enumerate(pairs):
        infer_input = grpcclient.InferInput(f"in{index}", list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    arguments = {
        "model_name": "iris",
        "inputs": inputs,
        "model_version": "",
        "request_id": "",
        "outputs": None,
        "sequence_id": 0,
        "sequence_start": False,
        "sequence_end": False,
        "priority": 0,
        "timeout": None,
        "parameters": None,
    }
    arguments.update(overrides)
    triton_message = _get_inference_request(**arguments)
    return pb.ModelInferRequest.FromString(triton_message.SerializeToString())


@SETTINGS
@given(
    st.lists(
        st.sampled_from(DATATYPES).flatmap(lambda dt: st.tuples(st.just(dt), arrays(dt))),
        max_size=4,
    )
)
def test_tritonclient_requests_decode_to_the_same_arrays(pairs):
    message = _client_request(pairs)
    assert message.model_name == "iris"
    request = request_from_proto(message)
    assert len(request.inputs) == len(pairs)
    for index, (tensor, (datatype, array)) in enumerate(zip(request.inputs, pairs, strict=True)):
        assert_same_tensor(tensor, Tensor(f"in{index}", datatype, list(array.shape), array))


def test_tritonclient_request_id_outputs_and_parameters():
    pairs = [
        ("BOOL", np.array([[True, False]])),
        ("FP16", np.array([0.1, -65504, np.inf], dtype=np.float16)),
        ("BYTES", _objects([b"\xff\x00", b"text"])),
        ("UINT64", np.array([2**64 - 1], dtype=np.uint64)),
    ]
    outputs = [grpcclient.InferRequestedOutput("y"), grpcclient.InferRequestedOutput("z")]
    message = _client_request(
        pairs,
        model_version="3",
        request_id="req-9",
        outputs=outputs,
        sequence_id=42,
        sequence_start=True,
        priority=2,
        timeout=1000,
        parameters={"mode": "fast", "k": 2, "ratio": 0.5, "flag": False},
    )
    assert message.model_version == "3"
    request = request_from_proto(message)
    assert request.id == "req-9"
    assert [o.name for o in request.outputs] == ["y", "z"]
    assert request.parameters == {
        "mode": "fast",
        "k": 2,
        "ratio": 0.5,
        "flag": False,
        "sequence_id": 42,
        "sequence_start": True,
        "sequence_end": False,
        "priority": 2,
        "timeout": 1000,
    }
    for tensor, (datatype, array) in zip(request.inputs, pairs, strict=True):
        assert tensor.datatype == datatype
        assert tensor.data.dtype == NUMPY_DTYPES[datatype]
        assert tensor.data.tolist() == array.tolist()


@SETTINGS
@given(tensors_of_every_datatype())
def test_tritonclient_reads_our_responses(outputs):
    response = InferenceResponse("iris", outputs, "1", "req-3", {"n": 1})
    triton_message = service_pb2.ModelInferResponse.FromString(
        response_to_proto(response).SerializeToString()
    )
    result = grpcclient.InferResult(triton_message)
    assert result.get_response().model_name == "iris"
    assert result.get_response().id == "req-3"
    for tensor in outputs:
        array = result.as_numpy(tensor.name)
        assert array.shape == tensor.data.shape
        if tensor.datatype == "BYTES":
            assert array.tolist() == tensor.data.tolist()
        else:
            assert array.dtype == tensor.data.dtype
            assert array.tobytes() == tensor.data.tobytes()
        assert result.get_output(tensor.name).datatype == tensor.datatype
