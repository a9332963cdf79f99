import pickle

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest, InvalidModelURI, ModelLoadError
from inferline.protocol.types import InferenceRequest, RequestedOutput, Tensor
from inferline.runtimes.settings import ModelSettings
from inferline.runtimes.sklearn import SKLearnRuntime


@pytest.fixture(scope="module")
def estimator():
    features, labels = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(features, labels), features[:5]


async def loaded(folder, filename, estimator) -> SKLearnRuntime:
    if filename.endswith(".joblib"):
        joblib.dump(estimator, folder / filename)
    else:
        (folder / filename).write_bytes(pickle.dumps(estimator))
    runtime = SKLearnRuntime(ModelSettings("iris", "sklearn", folder=folder))
    await runtime.load()
    return runtime


@pytest.mark.parametrize("filename", ["model.joblib", "model.pkl"])
async def test_predict_and_predict_proba(tmp_path, estimator, filename):
    model, rows = estimator
    runtime = await loaded(tmp_path, filename, model)
    request = InferenceRequest(
        inputs=[Tensor.from_numpy("x", rows)],
        outputs=[RequestedOutput("predict"), RequestedOutput("predict_proba")],
    )
    response = await runtime.predict(request)
    assert response.output("predict").shape == [5, 1]
    assert response.output("predict").data.ravel().tolist() == model.predict(rows).tolist()
    np.testing.assert_allclose(response.output("predict_proba").data, model.predict_proba(rows))


async def test_default_output_is_predict(tmp_path, estimator):
    model, rows = estimator
    runtime = await loaded(tmp_path, "model.joblib", model)
    response = await runtime.predict(InferenceRequest(inputs=[Tensor.from_numpy("x", rows)]))
    assert [o.name for o in response.outputs] == ["predict"]


async def test_one_input_per_feature_column(tmp_path, estimator):
    model, rows = estimator
    runtime = await loaded(tmp_path, "model.joblib", model)
    inputs = [Tensor.from_numpy(f"f{i}", rows[:, i]) for i in range(4)]
    response = await runtime.predict(InferenceRequest(inputs=inputs))
    assert response.output("predict").data.ravel().tolist() == model.predict(rows).tolist()


async def test_pandas_request(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(frame, [0, 1, 0, 1])
    runtime = await loaded(tmp_path, "model.joblib", model)
    response = await runtime.predict(codecs.PandasCodec.encode_request(frame))
    assert response.output("predict").data.ravel().tolist() == [0, 1, 0, 1]


async def test_unknown_output_lists_the_available_ones(tmp_path, estimator):
    model, rows = estimator
    runtime = await loaded(tmp_path, "model.joblib", model)
    request = InferenceRequest(
        inputs=[Tensor.from_numpy("x", rows)], outputs=[RequestedOutput("embed")]
    )
    with pytest.raises(BadRequest, match="no output 'embed'.*predict, predict_proba"):
        await runtime.predict(request)


async def test_load_errors(tmp_path):
    with pytest.raises(InvalidModelURI, match="no model.joblib"):
        await SKLearnRuntime(ModelSettings("m", folder=tmp_path)).load()
    joblib.dump({"not": "a model"}, tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError, match="holds a dict, not an estimator"):
        await SKLearnRuntime(ModelSettings("m", folder=tmp_path)).load()


async def test_nan_or_infinity_is_a_bad_request_naming_the_input(tmp_path, estimator):
    model, rows = estimator
    runtime = await loaded(tmp_path, "model.joblib", model)
    for bad in (np.nan, np.inf, -np.inf):
        columns = [Tensor.from_numpy(f"f{i}", rows[:, i].copy()) for i in range(4)]
        columns[2].data[1] = bad
        with pytest.raises(BadRequest, match="rejected input 'f2', which holds NaN or infinity"):
            await runtime.predict(InferenceRequest(inputs=columns))
    columns[1].data[0] = np.nan
    with pytest.raises(BadRequest, match="rejected inputs 'f1', 'f2', which hold NaN or infinity"):
        await runtime.predict(InferenceRequest(inputs=columns))
    # The same model still answers finite rows (the checks are per request).
    response = await runtime.predict(InferenceRequest(inputs=[Tensor.from_numpy("x", rows)]))
    assert response.output("predict").data.ravel().tolist() == model.predict(rows).tolist()


@pytest.mark.parametrize("kind", ["imputer pipeline", "hist gradient boosting"])
async def test_models_that_take_nan_still_get_it(tmp_path, estimator, kind):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    _, rows = estimator
    features, labels = load_iris(return_X_y=True)
    if kind == "imputer pipeline":
        model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1000))
    else:
        model = HistGradientBoostingClassifier(max_iter=20)
    model.fit(features, labels)
    runtime = await loaded(tmp_path, "model.joblib", model)
    holes = rows.copy()
    holes[0, 1] = np.nan
    response = await runtime.predict(InferenceRequest(inputs=[Tensor.from_numpy("x", holes)]))
    assert response.output("predict").data.ravel().tolist() == model.predict(holes).tolist()
