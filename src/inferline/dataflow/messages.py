"""Payloads on the topics: V2 protobuf requests on inputs topics, responses on outputs topics.

The engine handles tensors as inferline `Tensor`s: raw contents decode without copying, and typed
contents are turned into raw ones on the way out, so joined messages never mix the two forms.
A stage that changes nothing in a message only parses it (`parse`) and names it for its sink
(`readdress`): converting the tensors there and back cost a hop about 60 us.
"""

from dataclasses import dataclass, field

from inferline.dataflow.plan import REQUEST
from inferline.protocol import protobuf
from inferline.protocol.proto import inference_pb2 as pb
from inferline.protocol.types import InferenceRequest, InferenceResponse, Parameters, Tensor


@dataclass(slots=True)
class TensorMessage:
    tensors: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    # The model that answered (responses only), e.g. "tfsimple1_1".
    model_name: str = ""


def decode(value: bytes, payload: str) -> TensorMessage:
    if payload == REQUEST:
        request = protobuf.request_from_proto(pb.ModelInferRequest.FromString(value))
        return TensorMessage(request.inputs, request.id, request.parameters)
    response = protobuf.response_from_proto(pb.ModelInferResponse.FromString(value))
    return TensorMessage(response.outputs, response.id, response.parameters, response.model_name)


def encode(message: TensorMessage, payload: str, model_name: str = "") -> bytes:
    if payload == REQUEST:
        request = InferenceRequest(message.tensors, message.id, message.parameters)
        return protobuf.request_to_proto(request, model_name).SerializeToString()
    response = InferenceResponse(model_name, message.tensors, None, message.id, message.parameters)
    return protobuf.response_to_proto(response).SerializeToString()


def parse(value: bytes, payload: str) -> pb.ModelInferRequest | pb.ModelInferResponse:
    """The message as protobuf, tensors left as they are (raw or typed contents)."""
    if payload == REQUEST:
        return pb.ModelInferRequest.FromString(value)
    return pb.ModelInferResponse.FromString(value)


def readdress(message: pb.ModelInferRequest | pb.ModelInferResponse, model_name: str) -> bytes:
    """A parsed message as `encode(decode(...))` writes it for `model_name`, tensors untouched:
    the same id and parameters, no model version and (requests) no requested outputs."""
    message.model_name = model_name
    message.model_version = ""
    if isinstance(message, pb.ModelInferRequest):
        del message.outputs[:]
    return message.SerializeToString()
