"""Seldon Core 2's experiment samples run by a real `inferline up`: A/B splits on a model's own
endpoint and on `<e>.experiment`, sticky sessions through `x-seldon-route`, a mirror seen in its
server's /metrics, candidate swaps and default moves, unloading, and candidates that are missing.
"""

from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml

from inferline.examples import PIPELINE_MODELS, write_runtime_model

from ._platform import (
    IRIS_CLASS,
    IRIS_REQUEST_JSON,
    SAMPLES,
    NotYet,
    Up,
    wait_until,
    with_storage_uri,
    write_file,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"SC2 samples not found at {SAMPLES}"),
]

CALLS = 100


@pytest.fixture(scope="module")
def up(up_factory, iris_artifact) -> Up:
    """One server holding iris, iris2 and iris3 (Seldon's sklearn1-3 samples, one artifact)."""
    platform = up_factory(1)
    for sample in ("sklearn1", "sklearn2", "sklearn3"):
        text = with_storage_uri((SAMPLES / f"models/{sample}.yaml").read_text(), iris_artifact)
        platform.cli("load", "-f", str(write_file(platform.workdir, f"{sample}.yaml", text)))
    for name in ("iris", "iris2", "iris3"):
        platform.wait_model(name)
    return platform


def experiment_file(path: str) -> str:
    return str(SAMPLES / "experiments" / path)


def experiment_status(up: Up, name: str) -> dict:
    answer = up.get(f"/v1/experiments/{name}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def load_experiment(up: Up, path: str, probe: bool = True) -> str:
    """Load a sample experiment, wait until it is active and the router runs it (`probe`: an
    iris request to `<e>.experiment` answers)."""
    name = yaml.safe_load((SAMPLES / "experiments" / path).read_text())["metadata"]["name"]
    up.cli("experiment", "load", "-f", experiment_file(path))

    def active():
        status = experiment_status(up, name)
        if not status["active"]:
            raise NotYet(status["statusDescription"])
        answer = up.infer(f"{name}.experiment")
        if answer.status_code == 404 or (probe and answer.status_code != 200):
            raise NotYet(f"router: {answer.status_code} {answer.text}")
        return True

    wait_until(active, 20, f"experiment '{name}' to be active in the router")
    return name


def unload_experiment(up: Up, name: str) -> None:
    up.cli("experiment", "unload", name)
    wait_until(
        lambda: up.infer(f"{name}.experiment").status_code == 404,
        15,
        f"the router to drop experiment '{name}'",
    )


def routes_of(up: Up, model: str, calls: int = CALLS, headers: dict | None = None) -> Counter:
    """How often each `x-seldon-route` answered `calls` calls for `model`; every answer must
    come from the model its route names."""
    seen = Counter()
    for _ in range(calls):
        answer = up.infer(model, headers=headers)
        assert answer.status_code == 200, answer.text
        route = answer.headers["x-seldon-route"]
        body = answer.json()
        assert f":{body['model_name']}:" == route
        assert body["outputs"][0]["data"] == [IRIS_CLASS]
        seen[route] += 1
    return seen


def test_ab_default_model_splits_iris_and_sticky_sessions_pin(up):
    name = load_experiment(up, "ab-default-model.yaml")
    try:
        status = experiment_status(up, name)
        assert status["statusDescription"] == "experiment active"
        assert {c["type"]: c["status"] for c in status["conditions"]}["ExperimentReady"] == "True"
        # Callers of iris itself are split 50/50 between iris and iris2.
        seen = routes_of(up, "iris")
        assert set(seen) == {":iris_1:", ":iris2_1:"}, seen
        assert min(seen.values()) >= 25, seen
        # The experiment's own name splits too.
        assert set(routes_of(up, f"{name}.experiment", 40)) == {":iris_1:", ":iris2_1:"}
        # Sending the route back pins the candidate.
        for route in (":iris2_1:", ":iris_1:"):
            assert routes_of(up, "iris", 30, {"x-seldon-route": route}) == {route: 30}
        # iris2's own endpoint is not split.
        assert routes_of(up, "iris2", 20) == {":iris2_1:": 20}
    finally:
        unload_experiment(up, name)
    assert routes_of(up, "iris", 30) == {":iris_1:": 30}


def test_the_cli_sticky_session_sends_the_last_answers_route_again(up):
    """Seldon's `infer -s`: the route of every answer is saved, and `-s` sends it back, so
    every call reaches the candidate the last one did (REST and gRPC, one experiment)."""
    name = load_experiment(up, "ab-default-model.yaml")
    try:
        for mode in ("rest", "grpc"):
            infer = ("model", "infer", "iris", IRIS_REQUEST_JSON, "--inference-mode", mode)
            shown = up.cli(*infer, "--show-headers").stdout.splitlines()
            (route,) = [
                line.split(": ", 1)[1] for line in shown if line.startswith("x-seldon-route:")
            ]
            assert route in (":iris_1:", ":iris2_1:")
            # Without -s, 30 calls reach both candidates (all one: 1 in 500 million).
            sticky = up.cli(*infer, "-s", "-i", "30").stdout.strip()
            assert sticky == f"Success: {{'{route}': 30}}", mode
    finally:
        unload_experiment(up, name)


def test_ab_without_default_is_reachable_only_as_experiment_over_grpc_too(up):
    name = load_experiment(up, "ab.yaml")
    try:
        assert routes_of(up, "iris", 30) == {":iris_1:": 30}
        seen = routes_of(up, "iris", 60, {"seldon-model": f"{name}.experiment"})
        assert set(seen) == {":iris_1:", ":iris2_1:"}, seen

        client = triton_grpc.InferenceServerClient(up.grpc_address)
        tensor = triton_grpc.InferInput("predict", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
        answered = Counter()
        for _ in range(40):
            answer = client.infer("iris", [tensor], headers={"seldon-model": f"{name}.experiment"})
            assert answer.as_numpy("predict").tolist() == [[IRIS_CLASS]]
            answered[answer.get_response().model_name] += 1
        assert set(answered) == {"iris_1", "iris2_1"}, answered
        # Sticky over gRPC: the header pins iris2.
        for _ in range(10):
            answer = client.infer(
                "iris",
                [tensor],
                headers={"seldon-model": f"{name}.experiment", "x-seldon-route": ":iris2_1:"},
            )
            assert answer.get_response().model_name == "iris2_1"
        client.close()
    finally:
        unload_experiment(up, name)


def test_reapplied_experiment_moves_candidates_and_default(up):
    name = load_experiment(up, "ab-default-model.yaml")
    try:
        # ab-default-model2: same experiment, candidates iris and iris3.
        up.cli("experiment", "load", "-f", experiment_file("ab-default-model2.yaml"))
        wait_until(
            lambda: ":iris3_1:" in routes_of(up, "iris", 20),
            15,
            "iris's split to reach iris3",
        )
        assert set(routes_of(up, "iris")) == {":iris_1:", ":iris3_1:"}
        # ab-default-model3: the default moves to iris3; iris's route reverts to plain iris.
        up.cli("experiment", "load", "-f", experiment_file("ab-default-model3.yaml"))
        wait_until(
            lambda: routes_of(up, "iris", 20) == {":iris_1:": 20},
            15,
            "iris's route to revert",
        )
        assert set(routes_of(up, "iris3")) == {":iris3_1:", ":iris2_1:"}
    finally:
        unload_experiment(up, name)
    assert routes_of(up, "iris3", 20) == {":iris3_1:": 20}


def mirror_count(up: Up, internal_name: str) -> float:
    replica = up.server()["replicas"][0]
    metrics = up.http.get(f"http://{replica['http']}/metrics").text
    prefix = f'model_infer_request_success_total{{model="{internal_name}"'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


def test_sklearn_mirror_copies_requests_to_iris2_while_callers_see_iris(up):
    name = load_experiment(up, "sklearn-mirror.yaml")
    try:
        before = mirror_count(up, "iris2_1")
        assert routes_of(up, "iris", 50) == {":iris_1:": 50}
        # The copies run in the background: they show up in iris2's counter a moment later.
        wait_until(
            lambda: mirror_count(up, "iris2_1") >= before + 50,
            15,
            "iris2's server to count the 50 mirrored requests",
        )
    finally:
        unload_experiment(up, name)


def test_missing_candidate_keeps_the_experiment_inactive_naming_it(up):
    text = (SAMPLES / "experiments/ab.yaml").read_text().replace("iris2", "iris9")
    path = write_file(up.workdir, "ab-missing.yaml", text)
    up.cli("experiment", "load", "-f", str(path))
    try:
        status = experiment_status(up, "experiment-iris")
        assert status["active"] is False
        assert "iris9 (model not found)" in status["statusDescription"]

        def refused():
            answer = up.infer("experiment-iris.experiment")
            if answer.status_code != 503:  # the router may not have the new table yet
                raise NotYet(f"{answer.status_code} {answer.text}")
            return answer

        answer = wait_until(refused, 10, "the router to refuse the inactive experiment")
        assert answer.json()["error"] == (
            "experiment 'experiment-iris' is not active: "
            "model candidates not ready: iris9 (model not found)"
        )
        listing = up.cli("experiment", "list").stdout
        assert "experiment-iris" in listing and "iris9" in listing
    finally:
        up.cli("experiment", "unload", "experiment-iris")


# --- pipelines: a pipeline experiment, and a model experiment on a pipeline's step ---------------

ADD_REQUEST = {
    "inputs": [{"name": "INPUT", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
}
# What each candidate answers for ADD_REQUEST.
ANSWERS = {"add10": [11, 12, 13, 14], "mul10": [10, 20, 30, 40], "add20": [21, 22, 23, 24]}
PIPELINES = ("add10", "mul10")  # Seldon's pipelines/add10.yaml and mul10.yaml


@pytest.fixture(scope="module")
def pipelines(up, tmp_path_factory) -> Up:
    """Seldon's add10, mul10 and add20 Models (local stand-ins from `inferline.examples`) and
    the pipelines pipeline-add10 and pipeline-mul10."""
    root = tmp_path_factory.mktemp("pipeline-models")
    docs = []
    for name in ("add10", "mul10", "add20"):
        folder = write_runtime_model(root / name, PIPELINE_MODELS[name])
        doc = yaml.safe_load((SAMPLES / f"models/{name}.yaml").read_text())
        doc["spec"]["storageUri"] = str(folder)
        doc["spec"].pop("requirements", None)  # no Triton here: the python stand-in serves it
        docs.append(doc)
    docs += [yaml.safe_load((SAMPLES / f"pipelines/{p}.yaml").read_text()) for p in PIPELINES]
    up.cli("load", "-f", str(write_file(up.workdir, "pipelines.yaml", yaml.safe_dump_all(docs))))
    for name in ("pipeline-add10", "pipeline-mul10"):
        wait_until(
            lambda name=name: up.get(f"/v1/pipelines/{name}").json()["state"] == "PipelineReady",
            60,
            f"pipeline '{name}' to be ready",
        )
    return up


def pipeline_answers(up: Up, path: str, calls: int, headers: dict | None = None) -> Counter:
    """Which candidate answered each call (told by the numbers), checked against the route."""
    seen = Counter()
    for _ in range(calls):
        answer = up.http.post(f"{up.router_url}{path}", json=ADD_REQUEST, headers=headers)
        assert answer.status_code == 200, answer.text
        data = answer.json()["outputs"][0]["data"]
        (model,) = [m for m, values in ANSWERS.items() if values == data]
        seen[(model, answer.headers["x-seldon-route"])] += 1
    return seen


def test_pipeline_experiment_splits_the_default_pipeline_and_sticks(pipelines):
    up = pipelines
    name = load_experiment(up, "addmul10.yaml", probe=False)
    try:
        seen = pipeline_answers(up, "/v2/pipelines/pipeline-add10/infer", 60)
        assert set(seen) == {
            ("add10", ":pipeline-add10.pipeline:"),
            ("mul10", ":pipeline-mul10.pipeline:"),
        }, seen
        sticky = {"x-seldon-route": ":pipeline-mul10.pipeline:"}
        assert pipeline_answers(up, "/v2/pipelines/pipeline-add10/infer", 20, sticky) == {
            ("mul10", ":pipeline-mul10.pipeline:"): 20
        }
        assert set(pipeline_answers(up, f"/v2/models/{name}.experiment/infer", 30)) == set(seen)
    finally:
        unload_experiment(up, name)
    assert pipeline_answers(up, "/v2/pipelines/pipeline-add10/infer", 20) == {
        ("add10", ":pipeline-add10.pipeline:"): 20
    }


def test_model_experiment_applies_to_a_pipeline_step(pipelines):
    up = pipelines
    name = load_experiment(up, "add1020.yaml", probe=False)
    try:
        # pipeline-add10's step calls add10 through the router core: the split reaches it.
        seen = pipeline_answers(up, "/v2/pipelines/pipeline-add10/infer", 60)
        assert {model for model, _ in seen} == {"add10", "add20"}, seen
    finally:
        unload_experiment(up, name)
