"""`inferline up` stopped with SIGINT and started again on the same data dir: its pipelines come
back ready at the versions they had and answer, and what flowed through them before the restart
can still be read back (the embedded bus is durable on disk)."""

import pytest

from ._platform import (
    SAMPLES,
    SKIP_REASON,
    Up,
    outputs_by_name,
    sample_documents,
    tensor,
    tfsimple_request,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SAMPLES.is_dir(), reason=SKIP_REASON)]

TWO_TO_32 = [2 * i for i in range(1, 17)]
MUL_REQUEST = {"inputs": [tensor("INPUT", "FP32", [4], [1, 2, 3, 4])]}
MODELS = ("tfsimple1", "tfsimple2", "add10", "mul10")


def call_both(up: Up) -> dict[str, str]:
    """Call tfsimples and version-test once, check their answers; their keys by pipeline."""
    tfsimples = up.infer_ok("tfsimples", tfsimple_request())
    assert tfsimples.headers["x-pipeline-version"] == "1"
    assert outputs_by_name(tfsimples.json()) == {"OUTPUT0": TWO_TO_32, "OUTPUT1": TWO_TO_32}
    versioned = up.infer_ok("version-test", MUL_REQUEST)
    assert versioned.headers["x-pipeline-version"] == "2"
    assert outputs_by_name(versioned.json()) == {"OUTPUT": [10, 20, 30, 40]}
    return {
        "tfsimples": tfsimples.headers["x-request-id"],
        "version-test": versioned.headers["x-request-id"],
    }


@pytest.fixture(scope="module")
def up(up_factory, model_root) -> Up:
    platform = up_factory()
    platform.apply(
        doc for name in MODELS for doc in sample_documents(f"models/{name}.yaml", model_root)
    )
    platform.apply(sample_documents("pipelines/tfsimples.yaml", model_root))
    platform.apply(sample_documents("pipelines/version-test-a.yaml", model_root))
    platform.wait_pipeline("version-test", version=1)
    platform.apply(sample_documents("pipelines/version-test-b.yaml", model_root))
    platform.wait_pipeline("version-test", version=2)
    platform.wait_pipeline("tfsimples", version=1)
    return platform


def test_pipelines_come_back_after_a_restart_at_the_same_version(up):
    before = call_both(up)

    assert up.stop() == 0, "SIGINT stops `inferline up` cleanly"
    up.start()

    assert up.wait_pipeline("tfsimples", version=1)["models"] == {
        "tfsimple1": "ModelAvailable",
        "tfsimple2": "ModelAvailable",
    }
    assert up.wait_pipeline("version-test", version=2)["models"] == {"mul10": "ModelAvailable"}
    after = call_both(up)

    for pipeline in ("tfsimples", "version-test"):
        (target,) = up.inspect(f"{pipeline}.outputs", offset=10)
        keys = [message["key"] for message in target["messages"]]
        # The call from before the restart is still there, and nothing was answered twice.
        assert keys == [before[pipeline], after[pipeline]], keys
