"""Command-line options to a plan and a target: conflicts are named, defaults are k6-like."""

import json

import pytest

from inferline.bench.schedule import Stage
from inferline.bench.setup import SetupError, make_plan, make_target
from inferline.protocol.proto import inference_pb2 as pb


def test_closed_loop_defaults_to_ten_seconds():
    plan = make_plan({"concurrency": 8})
    assert not plan.open_loop
    assert (plan.concurrency, plan.duration, plan.iterations) == (8, 10.0, None)


def test_durations_take_units():
    plan = make_plan({"duration": "2m", "warmup": "500ms"})
    assert (plan.duration, plan.warmup) == (120.0, 0.5)


def test_constant_rate_is_one_flat_stage():
    plan = make_plan({"rate": 250.0, "duration": "30"})
    assert plan.open_loop
    assert plan.stages == (Stage(30.0, 250.0),) and plan.start_rate == 250.0
    # with an iteration count, the stage lasts long enough for all of them
    plan = make_plan({"rate": 100.0, "iterations": 500})
    assert plan.iterations == 500 and plan.stages[0].duration >= 5.0


def test_stages_run_their_own_length():
    plan = make_plan({"stages": "10s:100,30s:500", "start_rate": 5.0})
    assert plan.stages == (Stage(10, 100), Stage(30, 500))
    assert plan.start_rate == 5.0 and plan.duration is None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rate": 5.0, "stages": "1s:1"}, "give one"),
        ({"duration": "5", "iterations": 10}, "not both"),
        ({"duration": "soon"}, "--duration: 'soon' is not a duration"),
        ({"rate": 0.0}, "--rate must be more than 0"),
        ({"stages": "10s"}, "--stages: stage '10s' needs DURATION:RATE"),
    ],
)
def test_conflicting_or_bad_options_are_named(options, message):
    with pytest.raises(SetupError, match=message):
        make_plan(options)


@pytest.fixture
def request_file(tmp_path):
    path = tmp_path / "request.json"
    doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    path.write_text(json.dumps(doc))
    return path


def test_rest_sends_the_file_as_written_to_the_model_or_pipeline_path(request_file):
    spec = make_target({"name": "iris", "data": request_file}, False, "http://127.0.0.1:9000")
    assert (spec.kind, spec.address) == ("rest", "127.0.0.1:9000")
    assert spec.path == "/v2/models/iris/infer"
    assert spec.body == request_file.read_bytes()
    spec = make_target(
        {"name": "p", "data": request_file, "url": "http://10.0.0.1:8080/"}, True, "unused"
    )
    assert (spec.address, spec.path) == ("10.0.0.1:8080", "/v2/models/p.pipeline/infer")


def test_grpc_sends_a_serialized_request_naming_the_model(request_file):
    spec = make_target(
        {"name": "p", "data": request_file, "grpc": "router"}, True, "http://x:1", "h:9001"
    )
    assert (spec.kind, spec.address) == ("grpc", "h:9001")
    message = pb.ModelInferRequest.FromString(spec.body)
    assert message.model_name == "p.pipeline"
    assert message.inputs[0].name == "x" and list(message.inputs[0].shape) == [1, 2]


def test_kafka_uses_seldon_topic_names(request_file):
    options = {"name": "p", "data": request_file, "kafka": "b:9092", "namespace": "ns"}
    spec = make_target(options, True, "http://x:1")
    assert spec.input_topic == "seldon.ns.pipeline.p.inputs"
    assert spec.output_topic == "seldon.ns.pipeline.p.outputs"
    spec = make_target({**options, "kafka_property": ["acks=1"]}, False, "http://x:1")
    assert spec.input_topic == "seldon.ns.model.p.inputs"
    assert spec.kafka_config == {"acks": "1"}


def test_embedded_uses_the_same_topics(request_file, tmp_path):
    spec = make_target(
        {"name": "p", "data": request_file, "embedded": tmp_path}, True, "http://x:1"
    )
    assert (spec.kind, spec.address) == ("embedded", str(tmp_path))
    assert spec.input_topic == "seldon.default.pipeline.p.inputs"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"url": "https://h:1"}, "https is not supported"),
        ({"url": "http://h"}, "must be http://host:port"),
        ({"grpc": "h:1", "kafka": "b:1"}, "--grpc and --kafka are different transports"),
        ({"embedded": "/tmp/x"}, "--embedded needs the request in a file"),
        ({"header": ["novalue"]}, "--header needs name=value"),
    ],
)
def test_bad_targets_are_named(request_file, options, message):
    options = {"name": "m", "data": request_file, **options}
    if "embedded" in options:
        del options["data"]
    with pytest.raises(SetupError, match=message):
        make_target(options, False, "http://h:1")


def test_metadata_that_cannot_be_read_suggests_a_file():
    with pytest.raises(SetupError, match="cannot reach .*pass a request with --data FILE"):
        make_target({"name": "m", "url": "http://127.0.0.1:9"}, False, "unused")
