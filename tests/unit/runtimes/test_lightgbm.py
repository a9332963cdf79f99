import sys

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")
from sklearn.datasets import load_iris  # noqa: E402 (after the skip)

from inferline.protocol.errors import BadRequest, InvalidModelURI, ModelLoadError  # noqa: E402
from inferline.protocol.types import InferenceRequest, RequestedOutput, Tensor  # noqa: E402
from inferline.runtimes.lightgbm import LightGBMRuntime  # noqa: E402
from inferline.runtimes.registry import runtime_class  # noqa: E402
from inferline.runtimes.settings import ModelSettings  # noqa: E402

PARAMS = {"verbose": -1, "num_threads": 1, "num_leaves": 4, "min_data_in_leaf": 5}


@pytest.fixture(scope="module")
def iris():
    features, labels = load_iris(return_X_y=True)
    return features, labels, features[[0, 50, 100, 77]]


def train(features, target, **params):
    return lgb.train({**PARAMS, **params}, lgb.Dataset(features, target), num_boost_round=4)


async def loaded(folder, booster, filename="model.txt") -> LightGBMRuntime:
    booster.save_model(folder / filename)
    runtime = LightGBMRuntime(ModelSettings("m", "lightgbm", folder=folder))
    await runtime.load()
    return runtime


def request(rows, *outputs: str) -> InferenceRequest:
    return InferenceRequest(
        inputs=[Tensor.from_numpy("input-0", rows)],
        outputs=[RequestedOutput(o) for o in outputs] or None,
    )


@pytest.mark.parametrize("filename", ["model.txt", "model.bst"])
async def test_multiclass_predict_is_the_boosters(tmp_path, iris, filename):
    features, labels, rows = iris
    booster = train(features, labels, objective="multiclass", num_class=3)
    runtime = await loaded(tmp_path, booster, filename)
    response = await runtime.predict(request(rows))
    (predict,) = response.outputs
    assert (predict.name, predict.datatype, predict.shape) == ("predict", "FP64", [4, 3])
    np.testing.assert_array_equal(predict.data, booster.predict(rows))
    assert predict.parameters == {"content_type": "np"}


async def test_one_dimensional_results_go_out_as_a_column(tmp_path, iris):
    features, labels, rows = iris
    booster = train(features, labels == 1, objective="binary")
    runtime = await loaded(tmp_path, booster)
    response = await runtime.predict(request(rows.astype(np.float32), "predict"))
    assert response.output("predict").shape == [4, 1]
    np.testing.assert_array_equal(
        response.output("predict").data.ravel(), booster.predict(rows.astype(np.float32))
    )


async def test_bad_requests_name_the_problem(tmp_path, iris):
    features, _, rows = iris
    runtime = await loaded(tmp_path, train(features[:, 1:], features[:, 0]))
    with pytest.raises(BadRequest, match="no output 'predict_proba'; it can produce: predict"):
        await runtime.predict(request(rows[:, 1:], "predict_proba"))
    with pytest.raises(BadRequest, match="takes 3 features per row; the request has 4"):
        await runtime.predict(request(rows))


async def test_missing_file_is_an_invalid_uri(tmp_path):
    with pytest.raises(InvalidModelURI, match="no model.txt, model.bst") as caught:
        await LightGBMRuntime(ModelSettings("m", folder=tmp_path)).load()
    assert caught.value.status == 422


async def test_unreadable_file_fails_to_load(tmp_path):
    (tmp_path / "model.txt").write_text("not a model\n")
    with pytest.raises(ModelLoadError, match="lightgbm cannot load"):
        await LightGBMRuntime(ModelSettings("m", folder=tmp_path)).load()


async def test_missing_library_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "model.txt").write_text("tree\n")
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # `import lightgbm` now fails
    with pytest.raises(ModelLoadError, match=r'pip install "inferline\[lightgbm\]"'):
        await LightGBMRuntime(ModelSettings("m", folder=tmp_path)).load()


@pytest.mark.parametrize(
    "implementation",
    ["lightgbm", "mlserver_lightgbm.LightGBMModel", "inferline.runtimes.lightgbm.LightGBMRuntime"],
)
def test_names_resolve_to_the_runtime(implementation):
    assert runtime_class(ModelSettings("m", implementation)) is LightGBMRuntime
