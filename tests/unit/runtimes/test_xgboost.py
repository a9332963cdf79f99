import sys

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
from sklearn.datasets import load_iris  # noqa: E402 (after the skip)

from inferline.protocol.errors import BadRequest, InvalidModelURI, ModelLoadError  # noqa: E402
from inferline.protocol.types import InferenceRequest, RequestedOutput, Tensor  # noqa: E402
from inferline.runtimes.registry import runtime_class  # noqa: E402
from inferline.runtimes.settings import ModelSettings  # noqa: E402
from inferline.runtimes.xgboost import XGBoostRuntime  # noqa: E402

TREES = {"n_estimators": 4, "max_depth": 2, "n_jobs": 1}


@pytest.fixture(scope="module")
def iris():
    features, labels = load_iris(return_X_y=True)
    return features.astype(np.float32), labels


@pytest.fixture(scope="module")
def classifier(iris):
    features, labels = iris
    return xgb.XGBClassifier(**TREES).fit(features, labels)


@pytest.fixture(scope="module")
def rows(iris):
    # One row of each class and one between two, so every label appears.
    return iris[0][[0, 50, 100, 77]]


async def loaded(folder, model, filename="model.json", **settings) -> XGBoostRuntime:
    model.save_model(folder / filename)
    runtime = XGBoostRuntime(ModelSettings("m", "xgboost", folder=folder, **settings))
    await runtime.load()
    return runtime


def request(rows, *outputs: str) -> InferenceRequest:
    return InferenceRequest(
        inputs=[Tensor.from_numpy("input-0", rows)],
        outputs=[RequestedOutput(o) for o in outputs] or None,
    )


# xgboost writes (and reads) `.bst` as UBJSON now, warning that it guessed the format.
@pytest.mark.filterwarnings("ignore:.*UBJSON:UserWarning")
@pytest.mark.parametrize("filename", ["model.json", "model.ubj", "model.bst"])
async def test_classifier_predict_and_predict_proba(tmp_path, classifier, rows, filename):
    runtime = await loaded(tmp_path, classifier, filename)
    response = await runtime.predict(request(rows, "predict", "predict_proba"))
    predict, proba = response.outputs
    assert (predict.name, predict.datatype, predict.shape) == ("predict", "INT64", [4, 1])
    assert predict.data.ravel().tolist() == classifier.predict(rows).tolist()
    assert (proba.name, proba.datatype, proba.shape) == ("predict_proba", "FP32", [4, 3])
    np.testing.assert_array_equal(proba.data, classifier.predict_proba(rows))
    # Marked as NumPy content, as MLServer marks its outputs.
    assert predict.parameters == proba.parameters == {"content_type": "np"}


async def test_default_output_is_predict(tmp_path, classifier, rows):
    runtime = await loaded(tmp_path, classifier)
    response = await runtime.predict(request(rows))
    assert [o.name for o in response.outputs] == ["predict"]


async def test_regressor_has_predict_only(tmp_path, iris, rows):
    features, _ = iris
    model = xgb.XGBRegressor(**TREES).fit(features[:, 1:], features[:, 0])
    runtime = await loaded(tmp_path, model)
    response = await runtime.predict(request(rows[:, 1:]))
    (predict,) = response.outputs
    assert (predict.datatype, predict.shape) == ("FP32", [4, 1])
    np.testing.assert_array_equal(predict.data.ravel(), model.predict(rows[:, 1:]))
    with pytest.raises(BadRequest, match=r"XGBRegressor\) has no output 'predict_proba'"):
        await runtime.predict(request(rows[:, 1:], "predict_proba"))


async def test_plain_booster_answers_its_own_predictions(tmp_path, iris, rows):
    features, labels = iris
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
        xgb.DMatrix(features, label=labels == 1),
        num_boost_round=4,
    )
    runtime = await loaded(tmp_path, booster, "model.ubj")
    response = await runtime.predict(request(rows))
    np.testing.assert_allclose(
        response.output("predict").data.ravel(), booster.predict(xgb.DMatrix(rows)), rtol=1e-6
    )


async def test_uri_names_the_file(tmp_path, classifier, rows):
    runtime = await loaded(tmp_path, classifier, "my-model.json", uri="./my-model.json")
    response = await runtime.predict(request(rows))
    assert response.output("predict").data.ravel().tolist() == classifier.predict(rows).tolist()


async def test_one_input_per_feature_column(tmp_path, classifier, rows):
    runtime = await loaded(tmp_path, classifier)
    inputs = [Tensor.from_numpy(f"f{i}", rows[:, i]) for i in range(4)]
    response = await runtime.predict(InferenceRequest(inputs=inputs))
    assert response.output("predict").data.ravel().tolist() == classifier.predict(rows).tolist()


async def test_bad_requests_name_the_problem(tmp_path, classifier, rows):
    runtime = await loaded(tmp_path, classifier)
    with pytest.raises(
        BadRequest, match="no output 'embed'; it can produce: predict, predict_proba"
    ):
        await runtime.predict(request(rows, "embed"))
    with pytest.raises(BadRequest, match="takes 4 features per row; the request has 3"):
        await runtime.predict(request(rows[:, :3]))
    words = InferenceRequest(inputs=[Tensor.from_numpy("input-0", np.array([[b"a"] * 4]))])
    with pytest.raises(BadRequest, match="datatype BYTES; model 'm' needs numbers"):
        await runtime.predict(words)


async def test_missing_file_is_an_invalid_uri(tmp_path):
    with pytest.raises(InvalidModelURI, match="no model.json, model.ubj, model.bst") as caught:
        await XGBoostRuntime(ModelSettings("m", folder=tmp_path)).load()
    assert caught.value.status == 422


async def test_unreadable_file_fails_to_load(tmp_path):
    (tmp_path / "model.json").write_text("{not a model")
    with pytest.raises(ModelLoadError, match="xgboost cannot load"):
        await XGBoostRuntime(ModelSettings("m", folder=tmp_path)).load()


async def test_missing_library_names_the_extra(tmp_path, classifier, monkeypatch):
    classifier.save_model(tmp_path / "model.json")
    monkeypatch.setitem(sys.modules, "xgboost", None)  # `import xgboost` now fails
    with pytest.raises(ModelLoadError, match=r'pip install "inferline\[xgboost\]"'):
        await XGBoostRuntime(ModelSettings("m", folder=tmp_path)).load()


@pytest.mark.parametrize(
    "implementation",
    ["xgboost", "mlserver_xgboost.XGBoostModel", "inferline.runtimes.xgboost.XGBoostRuntime"],
)
def test_names_resolve_to_the_runtime(implementation):
    assert runtime_class(ModelSettings("m", implementation)) is XGBoostRuntime
