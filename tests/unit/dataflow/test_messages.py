"""messages.relay: what a one-source stage writes, built on the protobuf, must read back as the
decode -> filter -> rename -> encode path would have written it."""

import numpy as np

from inferline.dataflow import messages
from inferline.dataflow.plan import REQUEST, RESPONSE, Source
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.types import Tensor

A = np.arange(4, dtype=np.int32).reshape(2, 2)
B = np.array([1.5, 2.5], dtype=np.float32)


def answer(typed: bool = False) -> pb.ModelInferResponse:
    value = messages.encode(
        messages.TensorMessage(
            [Tensor.from_numpy("A", A), Tensor("B", "FP32", [2], B, {"unit": "m"})],
            id="rid",
            parameters={"tenant": "blue"},
        ),
        RESPONSE,
        "m1_1",
    )
    message = pb.ModelInferResponse.FromString(value)
    message.model_version = "3"
    if typed:
        del message.raw_output_contents[:]
        message.outputs[0].contents.int_contents[:] = A.ravel().tolist()
        message.outputs[1].contents.fp32_contents[:] = B.tolist()
    return message


def source(tensors=None) -> Source:
    return Source("t", "p", RESPONSE, "m1.outputs", tensors)


def test_outputs_become_the_next_steps_inputs_renamed_with_id_and_parameters():
    for typed in (False, True):
        value = messages.relay(answer(typed), source(), {"m1.outputs.A": "X"}, REQUEST, "m2")
        request = pb.ModelInferRequest.FromString(value)
        assert (request.model_name, request.model_version, request.id) == ("m2", "", "rid")
        assert request.parameters["tenant"].string_param == "blue"
        read = messages.decode(value, REQUEST)
        assert [t.name for t in read.tensors] == ["X", "B"]
        assert read.tensors[0].data.tolist() == A.tolist()
        assert read.tensors[1].data.tolist() == B.tolist()
        assert read.tensors[1].parameters == {"unit": "m"}


def test_a_tensor_filter_keeps_the_wanted_tensor_or_writes_nothing():
    value = messages.relay(answer(), source(frozenset({"B"})), {}, RESPONSE)
    read = messages.decode(value, RESPONSE)
    assert [(t.name, t.data.tolist()) for t in read.tensors] == [("B", B.tolist())]
    assert messages.relay(answer(), source(frozenset({"C"})), {}, RESPONSE) is None
