"""Requests made up from model metadata (every V2 datatype) and read from files, as each
transport will send them."""

import numpy as np
import orjson
import pytest

from inferline.bench.payload import (
    PayloadError,
    grpc_body,
    request_from_file,
    request_from_metadata,
    rest_body,
)
from inferline.protocol import json_encoding, protobuf
from inferline.protocol.datatypes import DATATYPES, NUMPY_DTYPES
from inferline.protocol.proto import inference_pb2 as pb


def _metadata(inputs):
    return {"name": "m", "platform": "", "inputs": inputs, "outputs": []}


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_over_rest_and_grpc(datatype):
    metadata = _metadata([{"name": "x", "datatype": datatype, "shape": [-1, 3]}])
    request = request_from_metadata(metadata, batch_size=4)
    (tensor,) = request.inputs
    assert tensor.shape == [4, 3]
    assert tensor.data.shape == (4, 3)
    assert tensor.data.dtype == NUMPY_DTYPES[datatype]

    over_rest = json_encoding.decode_request(rest_body(request)).inputs[0]
    message = pb.ModelInferRequest.FromString(grpc_body(request, "m"))
    assert message.model_name == "m"
    over_grpc = protobuf.request_from_proto(message).inputs[0]
    for decoded in (over_rest, over_grpc):
        assert decoded.datatype == datatype
        assert decoded.shape == [4, 3]
        if datatype == "BYTES":
            assert list(decoded.data.ravel()) == list(tensor.data.ravel())
        elif datatype == "FP16":  # JSON carries FP16 as decimal text
            np.testing.assert_allclose(decoded.data, tensor.data, rtol=1e-3)
        else:
            np.testing.assert_array_equal(decoded.data, tensor.data)


def test_values_are_in_a_range_any_model_of_that_type_accepts():
    inputs = [
        {"name": "u8", "datatype": "UINT8", "shape": [1000]},
        {"name": "i8", "datatype": "INT8", "shape": [1000]},
        {"name": "f", "datatype": "FP32", "shape": [1000]},
        {"name": "b", "datatype": "BOOL", "shape": [1000]},
    ]
    u8, i8, f, b = request_from_metadata(_metadata(inputs)).inputs
    assert u8.data.min() >= 0 and u8.data.max() < 100
    assert i8.data.min() >= 0 and i8.data.max() < 100
    assert f.data.min() >= 0 and f.data.max() < 1
    assert set(b.data.tolist()) == {True, False}


def test_several_inputs_and_fixed_shapes():
    inputs = [
        {"name": "a", "datatype": "INT32", "shape": [1, 16]},
        {"name": "b", "datatype": "FP64", "shape": [-1, -1]},
    ]
    a, b = request_from_metadata(_metadata(inputs), batch_size=2).inputs
    assert (a.name, a.shape) == ("a", [1, 16])
    assert (b.name, b.shape) == ("b", [2, 2])


def test_same_seed_same_request():
    metadata = _metadata([{"name": "x", "datatype": "FP32", "shape": [-1, 4]}])
    first = request_from_metadata(metadata).inputs[0].data
    np.testing.assert_array_equal(first, request_from_metadata(metadata).inputs[0].data)


def test_no_declared_inputs_asks_for_a_file():
    with pytest.raises(PayloadError, match="declares no inputs.*--data FILE"):
        request_from_metadata({"name": "iris", "inputs": []})


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([{"name": "x", "datatype": "FP8", "shape": [1]}], "datatype 'FP8'"),
        ([{"name": "x", "datatype": "FP32"}], "input 'x' has no usable shape"),
    ],
)
def test_unusable_metadata_is_named(inputs, message):
    with pytest.raises(PayloadError, match=message):
        request_from_metadata(_metadata(inputs))


def test_request_from_file():
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    )
    (tensor,) = request_from_file(body, "req.json").inputs
    assert tensor.shape == [1, 2]
    with pytest.raises(PayloadError, match="req.json is not a V2 inference request"):
        request_from_file(b'{"inputs": [{"name": "x"}]}', "req.json")
    with pytest.raises(PayloadError, match="bad.json is not a V2 inference request"):
        request_from_file(b"not json", "bad.json")


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "FP16"])
def test_typed_grpc_contents_carry_the_same_tensor(datatype):
    metadata = _metadata([{"name": "x", "datatype": datatype, "shape": [2, 3]}])
    request = request_from_metadata(metadata)
    message = pb.ModelInferRequest.FromString(grpc_body(request, "m", typed=True))
    assert len(message.raw_input_contents) == 0
    decoded = protobuf.request_from_proto(message).inputs[0]
    assert (decoded.datatype, decoded.shape) == (datatype, [2, 3])
    if datatype == "BYTES":
        assert list(decoded.data.ravel()) == list(request.inputs[0].data.ravel())
    else:
        np.testing.assert_array_equal(decoded.data, request.inputs[0].data)


def test_fp16_cannot_be_sent_typed():
    metadata = _metadata([{"name": "half", "datatype": "FP16", "shape": [1]}])
    with pytest.raises(PayloadError, match="'half' is FP16.*raw contents"):
        grpc_body(request_from_metadata(metadata), "m", typed=True)
