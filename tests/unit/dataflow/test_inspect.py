"""`pipeline inspect`: which topics an expression names, and what is read back from them
(reference b.15)."""

import numpy as np
import pytest

from inferline.dataflow import messages
from inferline.dataflow.inspect import inspect, resolve
from inferline.dataflow.plan import REQUEST, RESPONSE
from inferline.dataflow.topics import ERROR_HEADER, TopicNames
from inferline.protocol.errors import BadRequest
from inferline.protocol.types import Tensor

TOPICS = TopicNames()
STEPS = ["tfsimple1", "tfsimple2"]


def targets(expression: str, steps=STEPS):
    return [(t.label, t.topic, t.payload, t.tensor) for t in resolve(expression, steps, TOPICS)]


def test_a_pipeline_name_alone_names_every_topic_in_flow_order():
    assert targets("tfsimples") == [
        ("tfsimples.inputs", "seldon.default.pipeline.tfsimples.inputs", REQUEST, None),
        ("tfsimples.tfsimple1.inputs", "seldon.default.model.tfsimple1.inputs", REQUEST, None),
        ("tfsimples.tfsimple1.outputs", "seldon.default.model.tfsimple1.outputs", RESPONSE, None),
        ("tfsimples.tfsimple2.inputs", "seldon.default.model.tfsimple2.inputs", REQUEST, None),
        ("tfsimples.tfsimple2.outputs", "seldon.default.model.tfsimple2.outputs", RESPONSE, None),
        ("tfsimples.outputs", "seldon.default.pipeline.tfsimples.outputs", RESPONSE, None),
    ]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            "tfsimples.inputs",
            [("tfsimples.inputs", "seldon.default.pipeline.tfsimples.inputs", REQUEST, None)],
        ),
        (
            "tfsimples.outputs",
            [("tfsimples.outputs", "seldon.default.pipeline.tfsimples.outputs", RESPONSE, None)],
        ),
        (
            "tfsimples.tfsimple2",
            [
                (
                    "tfsimples.tfsimple2.inputs",
                    "seldon.default.model.tfsimple2.inputs",
                    REQUEST,
                    None,
                ),
                (
                    "tfsimples.tfsimple2.outputs",
                    "seldon.default.model.tfsimple2.outputs",
                    RESPONSE,
                    None,
                ),
            ],
        ),
        (
            "tfsimples.tfsimple1.outputs",
            [
                (
                    "tfsimples.tfsimple1.outputs",
                    "seldon.default.model.tfsimple1.outputs",
                    RESPONSE,
                    None,
                )
            ],
        ),
        (
            "tfsimples.tfsimple1.inputs.INPUT0",
            [
                (
                    "tfsimples.tfsimple1.inputs.INPUT0",
                    "seldon.default.model.tfsimple1.inputs",
                    REQUEST,
                    "INPUT0",
                )
            ],
        ),
    ],
)
def test_narrower_expressions(expression, expected):
    assert targets(expression) == expected


def test_topic_prefix_and_namespace_are_used():
    (target,) = resolve("p.m.outputs", ["m"], TopicNames("acme", "ns"))
    assert target.topic == "acme.ns.model.m.outputs"


def test_an_unknown_step_is_named_with_the_steps_there_are():
    with pytest.raises(BadRequest) as error:
        resolve("tfsimples.nope.outputs", STEPS, TOPICS)
    text = str(error.value)
    assert "'tfsimples'" in text and "'nope'" in text
    assert "tfsimple1, tfsimple2" in text


@pytest.mark.parametrize(
    "expression",
    ["tfsimples.tfsimple1.sideways", "tfsimples.tfsimple1.outputs.OUTPUT0.extra"],
)
def test_malformed_expressions_say_what_is_expected(expression):
    with pytest.raises(BadRequest, match=r"invalid inspect expression .*inputs\|outputs"):
        resolve(expression, STEPS, TOPICS)


# --- reading back ---------------------------------------------------------------------------


def response_bytes(**tensors) -> bytes:
    message = messages.TensorMessage(
        [Tensor.from_numpy(name, np.asarray(value)) for name, value in tensors.items()], id="r1"
    )
    return messages.encode(message, RESPONSE, "tfsimple1_1")


async def test_inspect_shows_only_this_pipelines_messages_decoded(bus):
    topic = TOPICS.model("tfsimple1", "outputs")
    await bus.produce(
        topic, response_bytes(OUTPUT0=[[2, 4]]), key=b"0.other.a", headers=[("pipeline", b"other")]
    )
    await bus.produce(
        topic,
        response_bytes(OUTPUT0=[[1, 2]], OUTPUT1=[[3, 4]]),
        key=b"0.tfsimples.b",
        headers=[("pipeline", b"tfsimples"), ("x-request-id", b"0.tfsimples.b")],
    )
    (result,) = await inspect(
        bus, TOPICS, "tfsimples", STEPS, "tfsimples.tfsimple1.outputs", offset=5
    )
    assert result["name"] == "tfsimples.tfsimple1.outputs"
    assert result["topic"] == topic
    (message,) = result["messages"]
    assert message["key"] == "0.tfsimples.b"
    assert message["headers"]["x-request-id"] == "0.tfsimples.b"
    payload = message["payload"]
    assert payload["model_name"] == "tfsimple1_1"
    assert [(o["name"], o["data"]) for o in payload["outputs"]] == [
        ("OUTPUT0", [1, 2]),
        ("OUTPUT1", [3, 4]),
    ]

    (one,) = await inspect(
        bus, TOPICS, "tfsimples", STEPS, "tfsimples.tfsimple1.outputs.OUTPUT1", offset=5
    )
    assert [o["name"] for o in one["messages"][0]["payload"]["outputs"]] == ["OUTPUT1"]


async def test_inspect_by_request_id_and_of_missing_topics(bus):
    topic = TOPICS.pipeline("tfsimples", "outputs")
    for rid in ("aa", "bb"):
        await bus.produce(
            topic,
            response_bytes(OUTPUT0=[1]),
            key=f"0.tfsimples.{rid}".encode(),
            headers=[("pipeline", b"tfsimples")],
        )
    await bus.produce(
        topic,
        b"tfsimple1 : bad shape",
        key=b"0.tfsimples.cc",
        headers=[("pipeline", b"tfsimples"), (ERROR_HEADER, b"tfsimple1")],
    )
    results = await inspect(bus, TOPICS, "tfsimples", STEPS, "tfsimples", request_id="bb")
    by_name = {r["name"]: r["messages"] for r in results}
    assert by_name["tfsimples.inputs"] == [], "a topic never written is shown empty"
    assert [m["key"] for m in by_name["tfsimples.outputs"]] == ["0.tfsimples.bb"]

    (errors,) = await inspect(bus, TOPICS, "tfsimples", STEPS, "tfsimples.outputs", offset=1)
    (error,) = errors["messages"]
    assert error["error"] == "tfsimple1 : bad shape"
    assert "payload" not in error
