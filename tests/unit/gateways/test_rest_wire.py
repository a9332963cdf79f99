"""rest_wire: V2 protobuf to REST with binary tensors and back, read and written by the same
codecs the model server uses (`protocol.json_encoding`), so what a step sends over REST is what
it would have sent over gRPC."""

import numpy as np
import pytest

from inferline.gateways import rest_wire
from inferline.protocol import json_encoding, protobuf
from inferline.protocol.errors import BadRequest
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

INT = np.arange(6, dtype=np.int32).reshape(2, 3)
TEXT = np.array([b"one", b"two"], dtype=object)


def request(use_raw: bool = True) -> bytes:
    request = InferenceRequest(
        [
            Tensor.from_numpy("INT", INT),
            Tensor("TEXT", "BYTES", [2], TEXT, {"content_type": "str"}),
        ],
        id="r1",
        parameters={"tenant": "blue"},
        outputs=[RequestedOutput("OUT", {"binary_data": True})],
    )
    message = protobuf.request_to_proto(request, "m_1")
    if not use_raw:  # as a client writing typed contents would
        del message.raw_input_contents[:]
        message.inputs[0].contents.int_contents[:] = INT.ravel().tolist()
        message.inputs[1].contents.bytes_contents[:] = list(TEXT)
    return message.SerializeToString()


@pytest.mark.parametrize("use_raw", [True, False], ids=["raw contents", "typed contents"])
def test_a_request_reads_back_as_the_server_decodes_it(use_raw):
    body, length = rest_wire.request_body(request(use_raw))
    decoded = json_encoding.decode_request(body, length)
    assert decoded.id == "r1"
    assert decoded.parameters == {"tenant": "blue", "binary_data_output": True}
    assert decoded.input("INT").data.tolist() == INT.tolist()
    assert decoded.input("TEXT").data.tolist() == TEXT.tolist()
    assert decoded.input("TEXT").parameters == {"content_type": "str"}
    assert [(o.name, o.parameters) for o in decoded.outputs] == [("OUT", {"binary_data": True})]


def test_a_message_that_is_not_a_request_is_a_bad_request():
    with pytest.raises(BadRequest, match="not a V2 ModelInferRequest"):
        rest_wire.request_body(b"\xff\xff not protobuf")


def response() -> InferenceResponse:
    return InferenceResponse(
        "m_1",
        [Tensor.from_numpy("OUT", INT * 2), Tensor("TEXT", "BYTES", [2], TEXT, {"x": 1})],
        model_version="1",
        id="r1",
        parameters={"note": "ok"},
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "tensors in JSON"])
def test_an_answer_becomes_the_protobuf_the_grpc_edge_would_send(binary):
    body, length = json_encoding.encode_response(response(), binary)
    message = pb.ModelInferResponse.FromString(rest_wire.response_message(body, length))
    assert message == protobuf.response_to_proto(response())


def test_an_answer_whose_tensor_bytes_do_not_add_up_is_refused():
    body, length = json_encoding.encode_response(response(), True)
    with pytest.raises(BadRequest, match="bytes of tensor data"):
        rest_wire.response_message(body[:-2], length)
