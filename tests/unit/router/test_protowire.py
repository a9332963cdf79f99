"""Reading and rewriting the model name of serialized requests, checked against protobuf."""

import numpy as np
import pytest

from inferline.protocol.proto import inference_pb2 as pb
from inferline.router.protowire import WireError, read_string_field, with_string_field


def infer_request(name: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=name, model_version="3", id="r-1")
    request.parameters["big"].int64_param = 2**40
    request.parameters["ratio"].double_param = 0.5
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    tensor.parameters["k"].bool_param = True
    request.outputs.add(name="y")
    request.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    return request


@pytest.mark.parametrize(
    "message",
    [
        infer_request("iris"),
        pb.ModelReadyRequest(name="iris", version="1"),
        pb.ModelMetadataRequest(name="iris"),
    ],
    ids=["infer", "ready", "metadata"],
)
def test_name_is_read_and_rewritten(message):
    raw = message.SerializeToString()
    assert read_string_field(raw, 1) == "iris"
    rewritten = with_string_field(raw, 1, "iris_2")
    assert read_string_field(rewritten, 1) == "iris_2"
    parsed = type(message).FromString(rewritten)
    expected = type(message)()
    expected.CopyFrom(message)
    if isinstance(message, pb.ModelInferRequest):
        expected.model_name = "iris_2"
    else:
        expected.name = "iris_2"
    assert parsed == expected


def test_absent_name_and_unicode():
    assert read_string_field(pb.ModelReadyRequest(version="1").SerializeToString(), 1) == ""
    raw = with_string_field(b"", 1, "modèle-" + "x" * 200)  # a two-byte length varint
    assert pb.ModelReadyRequest.FromString(raw).name == "modèle-" + "x" * 200
    assert read_string_field(raw, 1) == "modèle-" + "x" * 200


@pytest.mark.parametrize("raw", [b"\x0a\x05ab", b"\x0a", b"\x08\xff", b"\x0b"])
def test_malformed_messages_are_rejected(raw):
    with pytest.raises(WireError):
        read_string_field(raw, 1)
