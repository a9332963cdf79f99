"""An online drift detector (alibi-detect's FETDriftOnline, watching the share of positive answers
of a binary classifier: 30% in its reference data) saved by alibi-detect, served by
`inferline serve` from the Alibi virtualenv and called with tritonclient: instances are tested
one at a time, a sustained shift is flagged after a short delay, and the state saved every
`state_save_freq` instances carries the detector across a restart."""

import json
import shutil

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

pytestmark = pytest.mark.slow

MODEL = "positive-rate"
# The keys of the answer in alibi-detect's order, less `distance` and `p_val` (None: not sent).
OUTPUTS = ["is_drift", "threshold", "time", "ert", "test_stat"]


def stream(count: int, positive_rate: float, seed: int) -> np.ndarray:
    """`count` answers of the classifier, [count, 1], 1 with probability `positive_rate`."""
    rng = np.random.default_rng(seed)
    return (rng.random((count, 1)) < positive_rate).astype(np.float32)


def copy_detector(alibi_artifacts, tmp_path_factory, **extra):
    """A fresh copy of the saved detector (its state is written into its folder)."""
    models = tmp_path_factory.mktemp("online-detectors")
    folder = models / MODEL
    shutil.copytree(alibi_artifacts / "online" / MODEL, folder)
    settings = json.loads((folder / "model-settings.json").read_text())
    settings["parameters"]["extra"].update(extra)
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return models


def http_detect(server, x: np.ndarray, model: str = MODEL):
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(model, [tensor])


def grpc_detect(server, x: np.ndarray):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(MODEL, [tensor])
    finally:
        client.close()


@pytest.fixture(scope="module")
def server(alibi_serve, alibi_artifacts, tmp_path_factory):
    models = copy_detector(alibi_artifacts, tmp_path_factory)
    # The same detector with MLServer's request buffering asked for, which online detectors
    # ignore: each instance is tested when it comes.
    batched = models / f"{MODEL}-batched"
    shutil.copytree(models / MODEL, batched)
    settings = json.loads((batched / "model-settings.json").read_text())
    settings["name"] = batched.name
    settings["parameters"]["extra"]["batch_size"] = 3
    (batched / "model-settings.json").write_text(json.dumps(settings))
    return alibi_serve(models, models / "serve.log").start()


def test_each_instance_is_tested_in_turn_and_a_shift_is_flagged_after_a_delay(server):
    # 40 answers as the reference had them, in one request: one answer per instance, in order.
    same = http_detect(server, stream(40, 0.3, seed=1))
    assert [o["name"] for o in same.get_response()["outputs"]] == OUTPUTS
    assert same.as_numpy("time").tolist() == list(range(1, 41))
    assert same.as_numpy("is_drift").tolist() == [0] * 40
    assert same.as_numpy("test_stat").shape == (40, 1, 1)  # per instance: windows x features
    assert same.as_numpy("threshold").shape == (40, 1)
    parameters = same.get_response()["parameters"]
    assert parameters["name"] == "FETDriftOnline" and parameters["online"] is True
    assert parameters["headers"] == {
        "x-seldon-alibi-type": "drift",
        "x-seldon-alibi-method": "fet_online",
    }

    # Then positives become three times as common, one answer per request, over gRPC.
    flags = []
    for x in stream(30, 0.9, seed=2):
        answer = grpc_detect(server, x[None])
        assert answer.as_numpy("time").tolist() == [41 + len(flags)]
        flags.append(int(answer.as_numpy("is_drift")[0]))
    delay = flags.index(1)  # ValueError (a failure) if the shift was never flagged
    # Not flagged on the first shifted instance, and well within the 10-instance window's reach.
    assert 1 <= delay <= 20, flags
    assert flags[-1] == 1, flags

    # Every instance's decision is observed in the drift histogram, as MLServer logs them.
    text = httpx.get(f"http://127.0.0.1:{server.http_port}/metrics", timeout=30).text
    label = f'model_name="{MODEL}"'
    samples = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("seldon_model_drift_count", "seldon_model_drift_sum")) and label in line
    }
    assert samples == {"seldon_model_drift_count": 70, "seldon_model_drift_sum": sum(flags)}


def test_batch_size_does_not_hold_back_an_online_detector_s_answers(server):
    for expected_time in (1, 2, 3):
        answer = http_detect(server, stream(1, 0.3, seed=3), model=f"{MODEL}-batched")
        assert answer.as_numpy("time").tolist() == [expected_time]
    assert "ignored" in server.log() and "batch_size" in server.log()


def test_a_restarted_server_continues_from_the_state_saved_every_n_instances(
    alibi_serve, alibi_artifacts, tmp_path_factory
):
    models = copy_detector(alibi_artifacts, tmp_path_factory, state_save_freq=10)
    state = models / MODEL / "state" / "state.npz"
    first = alibi_serve(models, models / "first.log").start()
    http_detect(first, stream(10, 0.3, seed=4))
    assert np.load(state)["t"] == 10  # saved as the clock reached 10
    # Then only positives: flagged within the 15, which take the clock to 25.
    before = http_detect(first, np.ones((15, 1), dtype=np.float32))
    assert before.as_numpy("time").tolist() == list(range(11, 26))
    assert before.as_numpy("is_drift")[-1] == 1
    assert np.load(state)["t"] == 20  # saved at 20, not yet at 25
    first.stop()

    second = alibi_serve(models, models / "second.log").start()
    after = http_detect(second, np.ones((1, 1), dtype=np.float32))
    # The clock goes on from the saved 20 (the 5 instances after it are lost), and the 21st
    # instance gets the statistic it got before the restart: the same window of positives and
    # the same smoothing history. A detector starting from zero would answer t = 1 with no
    # statistic to flag drift by (its window is not yet full).
    assert after.as_numpy("time").tolist() == [21]
    assert after.as_numpy("is_drift").tolist() == [1]
    np.testing.assert_allclose(after.as_numpy("test_stat")[0], before.as_numpy("test_stat")[10])
    second.stop()
