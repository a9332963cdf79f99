"""`inferline pipeline inspect` (reference b.15) run as a user runs it, a subprocess against a real
`inferline up`: after a call through the router, every topic of the pipeline shows that request's
tensors under its key, and `-v` shows the headers the platform wrote.
"""

import json

import pytest

from ._platform import (
    SAMPLES,
    SKIP_REASON,
    Up,
    outputs_by_name,
    sample_documents,
    tfsimple_request,
    to_yaml,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SAMPLES.is_dir(), reason=SKIP_REASON)]

ONE_TO_16 = list(range(1, 17))
TWO_TO_32 = [2 * i for i in ONE_TO_16]
ZEROS = [0] * 16
CALLER_ID = "inspect-me-1"
CALLER_HEADER = ("x-trace-tag", "blue")

# tfsimples (tfsimple1 -> tfsimple2 with a tensorMap): what each topic holds for one request of
# 1..16 twice, in the order `inspect tfsimples` lists the topics.
EXPECTED = {
    "tfsimples.inputs": {"INPUT0": ONE_TO_16, "INPUT1": ONE_TO_16},
    "tfsimples.tfsimple1.inputs": {"INPUT0": ONE_TO_16, "INPUT1": ONE_TO_16},
    "tfsimples.tfsimple1.outputs": {"OUTPUT0": TWO_TO_32, "OUTPUT1": ZEROS},
    "tfsimples.tfsimple2.inputs": {"INPUT0": TWO_TO_32, "INPUT1": ZEROS},
    "tfsimples.tfsimple2.outputs": {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32},
    "tfsimples.outputs": {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32},
}


@pytest.fixture(scope="module")
def up(up_factory, model_root) -> Up:
    platform = up_factory()
    manifest = platform.workdir / "tfsimples.yaml"
    manifest.write_text(
        to_yaml(
            doc
            for path in (
                "models/tfsimple1.yaml",
                "models/tfsimple2.yaml",
                "pipelines/tfsimples.yaml",
            )
            for doc in sample_documents(path, model_root)
        )
    )
    result = platform.cli("load", "-f", str(manifest))
    assert result.stdout.split() == [
        "model/tfsimple1", "created", "model/tfsimple2", "created", "pipeline/tfsimples", "created"
    ], result.stdout  # fmt: skip
    platform.wait_pipeline("tfsimples")
    return platform


@pytest.fixture(scope="module")
def key(up) -> str:
    """The message key of one call made with a caller's request id and an `x-` header; another
    call follows, so `--request-id` has something to leave out."""
    answer = up.infer_ok(
        "tfsimples",
        tfsimple_request(),
        headers={"x-request-id": CALLER_ID, CALLER_HEADER[0]: CALLER_HEADER[1]},
    )
    key = answer.headers["x-request-id"]
    assert key.endswith(f".tfsimples.{CALLER_ID}"), key
    # The caller's x- headers travel with the request and come back (reference b.3).
    assert answer.headers.get(CALLER_HEADER[0]) == CALLER_HEADER[1], dict(answer.headers)
    up.infer_ok("tfsimples", tfsimple_request([1] * 16))
    return key


def inspect(up: Up, *args: str) -> list[dict]:
    result = up.cli("pipeline", "inspect", *args, "--format", "json")
    return json.loads(result.stdout)


def test_every_step_shows_the_requests_inputs_and_outputs(up, key):
    found = inspect(up, "tfsimples", "--request-id", key)
    assert [target["name"] for target in found] == list(EXPECTED)
    for target in found:
        (message,) = target["messages"]
        assert message["key"] == key, target["name"]
        assert "headers" not in message, "headers are shown with -v only"
        payload = message["payload"]
        tensors = payload["inputs"] if target["name"].endswith(".inputs") else payload["outputs"]
        assert {t["name"]: t["data"] for t in tensors} == EXPECTED[target["name"]], target
        assert {t["datatype"] for t in tensors} == {"INT32"}
        assert all(t["shape"] == [1, 16] for t in tensors)


def test_the_caller_request_id_alone_finds_the_request(up, key):
    (target,) = inspect(up, "tfsimples.outputs", "--request-id", CALLER_ID)
    assert [m["key"] for m in target["messages"]] == [key]


def test_verbose_adds_the_headers_the_platform_wrote(up, key):
    found = inspect(up, "tfsimples", "--request-id", key, "-v")
    for target in found:
        (message,) = target["messages"]
        headers = message["headers"]
        assert headers["pipeline"] == "tfsimples", target["name"]
        assert headers["x-request-id"] == key, target["name"]
        assert headers[CALLER_HEADER[0]] == CALLER_HEADER[1], target["name"]
        if target["name"] != "tfsimples.inputs":  # written by the gateway, before any version
            assert headers["x-pipeline-version"] == "1", target["name"]


def test_a_step_expression_shows_its_inputs_and_outputs(up, key):
    found = inspect(up, "tfsimples.tfsimple2", "--request-id", key)
    assert [target["name"] for target in found] == [
        "tfsimples.tfsimple2.inputs",
        "tfsimples.tfsimple2.outputs",
    ]
    assert outputs_by_name(found[1]["messages"][0]["payload"]) == EXPECTED[found[1]["name"]]


def test_a_tensor_expression_shows_only_that_tensor(up, key):
    (target,) = inspect(up, "tfsimples.tfsimple1.outputs.OUTPUT1", "--request-id", key)
    (message,) = target["messages"]
    assert outputs_by_name(message["payload"]) == {"OUTPUT1": ZEROS}


def test_offset_reads_the_last_messages_of_each_topic(up, key):
    (target,) = inspect(up, "tfsimples.outputs", "--offset", "2")
    messages = target["messages"]
    assert len(messages) == 2
    assert messages[0]["key"] == key
    assert outputs_by_name(messages[1]["payload"]) == {"OUTPUT0": [2] * 16, "OUTPUT1": [2] * 16}


def test_raw_format_prints_one_line_per_message(up, key):
    result = up.cli("pipeline", "inspect", "tfsimples", "--request-id", key, "--format", "raw")
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXPECTED), result.stdout
    for line, expected_name in zip(lines, EXPECTED, strict=True):
        name, line_key, body = line.split(maxsplit=2)
        assert (name, line_key) == (expected_name, key)
        tensors = json.loads(body)["inputs" if name.endswith(".inputs") else "outputs"]
        assert {t["name"]: t["data"] for t in tensors} == EXPECTED[name]


def test_raw_format_separates_topic_key_and_payload_with_tabs(up, key):
    result = up.cli(
        "pipeline", "inspect", "tfsimples.outputs", "--request-id", key, "--format", "raw"
    )
    (line,) = result.stdout.splitlines()
    name, line_key, body = line.split("\t")
    assert (name, line_key) == ("tfsimples.outputs", key)
    assert outputs_by_name(json.loads(body)) == EXPECTED[name]


def test_an_unknown_step_is_an_error_naming_the_steps(up):
    result = up.cli("pipeline", "inspect", "tfsimples.nosuchstep", expect=1)
    assert "nosuchstep" in result.stderr, result.stderr
    assert "tfsimple1" in result.stderr and "tfsimple2" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
