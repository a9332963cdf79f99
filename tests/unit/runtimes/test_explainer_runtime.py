"""The explainer runtime against an iris model answered in-process through an httpx transport
(the real-server test is in tests/integration/monitoring)."""

import json
import sys

import httpx
import numpy as np
import orjson
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from inferline.protocol import json_encoding
from inferline.protocol.errors import BadRequest, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
from inferline.runtimes.explainer import ExplainerRuntime, RemoteInferenceError
from inferline.runtimes.registry import runtime_class
from inferline.runtimes.settings import ModelSettings

MODEL_URI = "http://router.test/v2/models/iris/infer"
PIPELINE_URI = "http://router.test/v2/pipelines/flowers/infer"


@pytest.fixture(scope="module")
def iris():
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    background = features[::15]  # 10 rows, all three classes
    return model, features, background


class FakeRouter:
    """Serves the iris model's V2 metadata and infer routes; records what it was sent."""

    def __init__(self, model, declare_input=True, fail=False):
        self.model = model
        self.declare_input = declare_input
        self.fail = fail
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail:
            return httpx.Response(503, json={"error": "no replica"})
        if request.method == "GET":
            inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
            return httpx.Response(
                200, json={"name": "iris", "inputs": inputs if self.declare_input else []}
            )
        decoded = json_encoding.decode_request(request.content)
        features = decoded.inputs[0].data
        wanted = [o.name for o in decoded.outputs or []] or ["predict"]
        outputs = [
            Tensor.from_numpy(name, np.asarray(getattr(self.model, name)(features)))
            for name in wanted
        ]
        body, _ = json_encoding.encode_response(InferenceResponse("iris", outputs))
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})


async def loaded(folder, background, router, **extra) -> ExplainerRuntime:
    np.save(folder / "background.npy", background)
    extra = {"explainer_type": "kernel_shap", "infer_uri": MODEL_URI, **extra}
    runtime = ExplainerRuntime(
        ModelSettings("iris-explainer", "explainer", extra=extra, folder=folder)
    )
    runtime.transport = httpx.MockTransport(router)
    await runtime.load()
    return runtime


def explanation_of(response: InferenceResponse) -> dict:
    (output,) = response.outputs
    assert (output.name, output.datatype, output.shape) == ("explanation", "BYTES", [1])
    return json.loads(output.data[0])


async def test_kernel_shap_values_add_up_to_the_prediction(tmp_path, iris):
    model, features, background = iris
    router = FakeRouter(model)
    runtime = await loaded(tmp_path, background, router, infer_output="predict_proba")
    rows = features[[0, 77]]
    response = await runtime.predict(InferenceRequest([Tensor.from_numpy("x", rows)]))
    doc = explanation_of(response)

    assert doc["meta"]["name"] == "KernelShap"
    assert doc["meta"]["type"] == ["blackbox"]
    shap_values = np.array(doc["data"]["shap_values"])
    assert shap_values.shape == (3, 2, 4)  # per class, per row, per feature
    expected_value = np.array(doc["data"]["expected_value"])
    np.testing.assert_allclose(expected_value, model.predict_proba(background).mean(axis=0))
    probabilities = model.predict_proba(rows)
    np.testing.assert_allclose(shap_values.sum(axis=2).T, probabilities - expected_value, atol=1e-6)
    assert doc["data"]["raw"]["prediction"] == model.predict(rows).tolist()
    assert response.parameters == {
        "explainer_type": "kernel_shap",
        "explainer_method": "KernelShap",
    }


async def test_remote_calls_follow_mlservers_black_box_runtime(tmp_path, iris):
    model, features, background = iris
    router = FakeRouter(model)
    runtime = await loaded(tmp_path, background, router, infer_output="predict_proba")
    await runtime.predict(InferenceRequest([Tensor.from_numpy("x", features[:1])]))

    metadata, *calls = router.requests
    assert (metadata.method, str(metadata.url)) == ("GET", "http://router.test/v2/models/iris")
    assert calls and all(str(c.url) == MODEL_URI for c in calls)
    for call in router.requests:
        assert call.headers["Seldon-Skip-Logging"] == "true"
    body = orjson.loads(calls[0].content)
    # The first input's name and datatype come from the metadata; the wanted output is asked for.
    assert body["inputs"][0]["name"] == "x"
    assert body["inputs"][0]["datatype"] == "FP32"
    assert body["outputs"] == [{"name": "predict_proba"}]


async def test_pipeline_uri_skips_metadata_and_sends_predict(tmp_path, iris):
    model, features, background = iris
    router = FakeRouter(model)
    runtime = await loaded(
        tmp_path, background, router, infer_uri=PIPELINE_URI, infer_output="predict_proba"
    )
    await runtime.predict(InferenceRequest([Tensor.from_numpy("x", features[:1])]))
    assert all(r.method == "POST" for r in router.requests)
    assert orjson.loads(router.requests[0].content)["inputs"][0]["name"] == "predict"


async def test_feature_importance_needs_only_numpy(tmp_path, iris):
    model, features, background = iris
    router = FakeRouter(model, declare_input=False)
    runtime = await loaded(
        tmp_path,
        background,
        router,
        explainer_type="feature_importance",
        infer_output="predict_proba",
        init_parameters={"feature_names": ["sl", "sw", "pl", "pw"]},
    )
    rows = features[[0, 100]]
    doc = explanation_of(await runtime.predict(InferenceRequest([Tensor.from_numpy("x", rows)])))
    assert doc["meta"]["name"] == "FeatureImportance"
    importances = np.array(doc["data"]["importances"])
    assert importances.shape == (3, 2, 4)
    # Row 0, class 0, feature "pl": its probability minus the mean over background petal lengths.
    replaced = np.repeat(rows[:1], len(background), axis=0)
    replaced[:, 2] = background[:, 2]
    expected = model.predict_proba(rows[:1])[0, 0] - model.predict_proba(replaced)[:, 0].mean()
    assert importances[0, 0, 2] == pytest.approx(expected)
    # Petal measurements matter more than sepal ones for this model.
    assert set(doc["data"]["raw"]["importances"]["aggregated"]["names"][:2]) == {"pl", "pw"}
    # No metadata declared an input: the default name is used.
    assert orjson.loads(router.requests[-1].content)["inputs"][0]["name"] == "predict"
    # Everything in one call, after the metadata lookup.
    assert len(router.requests) == 2


async def test_feature_importance_refuses_a_request_too_big_to_send(tmp_path, iris, monkeypatch):
    model, features, background = iris
    monkeypatch.setattr("inferline.runtimes.explainer.MAX_REPLACED_ROWS", 100)
    runtime = await loaded(
        tmp_path, background, FakeRouter(model), explainer_type="feature_importance"
    )
    # 3 rows x 4 features x 10 background rows = 120 model rows.
    with pytest.raises(BadRequest, match="needs 120 model rows"):
        await runtime.predict(InferenceRequest([Tensor.from_numpy("x", features[:3])]))


async def test_unreachable_model_is_a_502(tmp_path, iris):
    model, features, background = iris
    runtime = await loaded(tmp_path, background, FakeRouter(model, fail=True))
    with pytest.raises(RemoteInferenceError, match="answered 503") as caught:
        await runtime.predict(InferenceRequest([Tensor.from_numpy("x", features[:1])]))
    assert caught.value.status == 502


async def test_wrong_width_is_a_bad_request(tmp_path, iris):
    model, features, background = iris
    runtime = await loaded(tmp_path, background, FakeRouter(model))
    with pytest.raises(BadRequest, match="has 3 features but the background data has 4"):
        await runtime.predict(InferenceRequest([Tensor.from_numpy("x", features[:1, :3])]))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"explainer_type": "anchor_tabular"}, "anchor explainers need the alibi-explain"),
        ({"infer_uri": "router:80/v2/models/iris/infer"}, "infer_uri"),
        ({"infer_url": "x"}, r"unknown key 'extra.infer_url' \(did you mean 'infer_uri'\?\)"),
        ({"init_parameters": {"link": "probit"}}, "link"),
        ({"init_parameters": {"feature_names": ["a"]}}, "1 feature_names for 4"),
        ({"init_parameters": {"seed": "zero"}}, "seed"),
    ],
)
async def test_bad_settings(tmp_path, iris, extra, message):
    model, _, background = iris
    with pytest.raises(ModelLoadError, match=message):
        await loaded(tmp_path, background, FakeRouter(model), **extra)


async def test_seldon_string_parameters_and_keys_for_others(tmp_path, iris, caplog):
    model, _, background = iris
    runtime = await loaded(
        tmp_path, background, FakeRouter(model),
        explainer_type="feature_importance", timeout="5", query="a > 1",
    )  # fmt: skip
    assert runtime.remote.client.timeout.read == 5
    assert "ignoring parameters.extra key 'query'" in caplog.text


async def test_kernel_shap_without_shap_names_the_extra(tmp_path, iris, monkeypatch):
    model, _, background = iris
    monkeypatch.setitem(sys.modules, "shap", None)
    with pytest.raises(ModelLoadError, match=r'pip install "inferline\[explain\]"'):
        await loaded(tmp_path, background, FakeRouter(model))


def test_short_name_resolves():
    assert runtime_class(ModelSettings("e", "explainer")) is ExplainerRuntime
