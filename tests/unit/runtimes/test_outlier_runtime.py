import sys

import joblib
import numpy as np
import pytest
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from inferline.protocol.errors import BadRequest, InvalidModelURI, ModelLoadError
from inferline.protocol.types import InferenceRequest, Tensor
from inferline.runtimes.outlier import OutlierRuntime
from inferline.runtimes.registry import runtime_class
from inferline.runtimes.settings import ModelSettings

SKLEARN_DETECTORS = {
    "IsolationForest": lambda: IsolationForest(random_state=0),
    "LocalOutlierFactor": lambda: LocalOutlierFactor(novelty=True),
    "OneClassSVM": lambda: OneClassSVM(nu=0.05, gamma="scale"),
    "EllipticEnvelope": lambda: EllipticEnvelope(random_state=0),
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 3))
    inliers = rng.normal(size=(20, 3)) * 0.5
    outliers = rng.normal(size=(5, 3)) + 8.0
    return train, np.vstack([inliers, outliers])


async def loaded(folder, detector, **extra) -> OutlierRuntime:
    joblib.dump(detector, folder / "model.joblib")
    runtime = OutlierRuntime(ModelSettings("od", "outlier", extra=extra, folder=folder))
    await runtime.load()
    return runtime


def request(rows: np.ndarray) -> InferenceRequest:
    return InferenceRequest(inputs=[Tensor.from_numpy("x", rows)])


@pytest.mark.parametrize("name", SKLEARN_DETECTORS)
async def test_sklearn_scores_and_labels_are_the_detectors_own(tmp_path, data, name):
    train, batch = data
    detector = SKLEARN_DETECTORS[name]().fit(train)
    runtime = await loaded(tmp_path, detector)
    response = await runtime.predict(request(batch))

    assert [o.name for o in response.outputs] == ["instance_score", "is_outlier"]
    score, label = response.outputs
    assert (score.datatype, score.shape) == ("FP64", [25, 1])
    assert (label.datatype, label.shape) == ("INT64", [25, 1])
    np.testing.assert_allclose(score.data.ravel(), -detector.score_samples(batch))
    expected = (detector.predict(batch) == -1).astype(int)
    assert label.data.ravel().tolist() == expected.tolist()
    # The far-away rows are outliers and most of the central ones are not.
    assert label.data.ravel()[20:].tolist() == [1] * 5
    assert label.data.ravel()[:20].sum() <= 2
    assert response.parameters == {"detector_type": "outlier", "detector_method": name}


async def test_pyod_scores_and_labels_are_the_detectors_own(tmp_path, data):
    pytest.importorskip("pyod")
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest

    train, batch = data
    for detector in (IForest(random_state=0).fit(train), ECOD().fit(train)):
        runtime = await loaded(tmp_path, detector)
        response = await runtime.predict(request(batch))
        np.testing.assert_allclose(
            response.output("instance_score").data.ravel(), detector.decision_function(batch)
        )
        labels = response.output("is_outlier").data.ravel()
        assert labels.tolist() == detector.predict(batch).tolist()
        assert labels[20:].tolist() == [1] * 5
        assert response.parameters["detector_method"] == type(detector).__name__
        assert runtime.default_threshold() == pytest.approx(detector.threshold_)


async def test_threshold_overrides_the_detectors_decision(tmp_path, data):
    train, batch = data
    detector = IsolationForest(random_state=0).fit(train)
    scores = -detector.score_samples(batch)
    cut = float(np.median(scores))
    runtime = await loaded(tmp_path, detector, threshold=cut)
    labels = (await runtime.predict(request(batch))).output("is_outlier").data.ravel()
    assert labels.tolist() == (scores > cut).astype(int).tolist()
    assert 0 < labels.sum() < len(batch)

    runtime = await loaded(tmp_path, detector, threshold=1e9)
    labels = (await runtime.predict(request(batch))).output("is_outlier").data.ravel()
    assert labels.sum() == 0


async def test_default_threshold_matches_predict(tmp_path, data):
    train, batch = data
    detector = IsolationForest(random_state=0).fit(train)
    runtime = await loaded(tmp_path, detector)
    scores = runtime.scores(batch)
    expected = (detector.predict(batch) == -1).astype(int)
    assert ((scores > runtime.default_threshold()).astype(int) == expected).all()


async def test_instance_score_can_be_left_out(tmp_path, data):
    train, batch = data
    runtime = await loaded(
        tmp_path,
        IsolationForest(random_state=0).fit(train),
        predict_parameters={"return_instance_score": False},
    )
    response = await runtime.predict(request(batch))
    assert [o.name for o in response.outputs] == ["is_outlier"]


async def test_metadata_declares_the_outputs(tmp_path, data):
    train, _ = data
    runtime = await loaded(tmp_path, IsolationForest(random_state=0).fit(train))
    outputs = {t.name: (t.datatype, t.shape) for t in runtime.metadata().outputs}
    assert outputs == {"instance_score": ("FP64", [-1, 1]), "is_outlier": ("INT64", [-1, 1])}


async def test_one_feature_column_per_input_and_images_flattened(tmp_path, data):
    train, batch = data
    detector = IsolationForest(random_state=0).fit(train)
    runtime = await loaded(tmp_path, detector)
    inputs = [Tensor.from_numpy(f"f{i}", batch[:, i]) for i in range(3)]
    labels = (await runtime.predict(InferenceRequest(inputs))).output("is_outlier").data
    assert labels.ravel().tolist() == (detector.predict(batch) == -1).astype(int).tolist()

    images = np.random.default_rng(1).normal(size=(50, 2, 2, 3))
    detector = IsolationForest(random_state=0).fit(images.reshape(50, -1))
    runtime = await loaded(tmp_path, detector)
    response = await runtime.predict(request(images[:4]))
    assert response.output("is_outlier").shape == [4, 1]


async def test_pipeline_ending_in_a_detector(tmp_path, data):
    train, batch = data
    pipeline = make_pipeline(StandardScaler(), IsolationForest(random_state=0)).fit(train)
    runtime = await loaded(tmp_path, pipeline)
    response = await runtime.predict(request(batch))
    np.testing.assert_allclose(
        response.output("instance_score").data.ravel(), -pipeline.score_samples(batch)
    )
    assert response.parameters["detector_method"] == "IsolationForest"
    assert runtime.default_threshold() == -pipeline[-1].offset_


def test_short_name_resolves():
    assert runtime_class(ModelSettings("od", "outlier")) is OutlierRuntime


async def test_lof_without_novelty_is_refused(tmp_path, data):
    train, _ = data
    with pytest.raises(ModelLoadError, match="novelty=True"):
        await loaded(tmp_path, LocalOutlierFactor().fit(train))


async def test_not_a_detector_is_refused(tmp_path, data):
    train, _ = data
    model = LogisticRegression().fit(train, (train[:, 0] > 0).astype(int))
    with pytest.raises(ModelLoadError, match="not an outlier detector"):
        await loaded(tmp_path, model)


async def test_unfitted_detector_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not fitted"):
        await loaded(tmp_path, IsolationForest())


async def test_missing_file_and_bad_threshold(tmp_path, data):
    with pytest.raises(InvalidModelURI, match="model.joblib"):
        await OutlierRuntime(ModelSettings("od", "outlier", folder=tmp_path)).load()
    train, _ = data
    with pytest.raises(ModelLoadError, match="extra.threshold"):
        await loaded(tmp_path, IsolationForest().fit(train), threshold="high")


async def test_extra_keys_seldon_strings_misspellings_and_foreign_keys(tmp_path, data, caplog):
    train, _ = data
    detector = IsolationForest(random_state=0).fit(train)
    # Seldon Model parameters are strings; keys for other runtimes are logged and skipped.
    runtime = await loaded(
        tmp_path, detector, threshold="0.7", predict_parameters='{"return_instance_score": false}',
        explainer_batch="true",
    )  # fmt: skip
    assert (runtime.threshold, runtime.return_instance_score) == (0.7, False)
    assert "ignoring parameters.extra key 'explainer_batch'" in caplog.text
    with pytest.raises(ModelLoadError, match="did you mean 'threshold'"):
        await loaded(tmp_path, detector, treshold=0.7)


async def test_images_are_flattened_to_one_row_each(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(200, 4, 4, 3))
    runtime = await loaded(tmp_path, IsolationForest(random_state=0).fit(images.reshape(200, -1)))
    batch = np.vstack([images[:3], np.full((1, 4, 4, 3), 9.0)])
    response = await runtime.predict(request(batch))
    assert response.output("is_outlier").data.ravel().tolist() == [0, 0, 0, 1]


async def test_text_or_wrong_width_is_a_bad_request(tmp_path, data):
    train, _ = data
    runtime = await loaded(tmp_path, IsolationForest(random_state=0).fit(train))
    text = Tensor.from_numpy("x", np.array([b"a", b"b"], dtype=object))
    with pytest.raises(BadRequest, match="needs numbers"):
        await runtime.predict(InferenceRequest([text]))
    with pytest.raises(BadRequest, match="has 2 features but the detector has 3") as caught:
        await runtime.predict(request(np.zeros((2, 2))))
    assert caught.value.status == 400


async def test_pyod_detector_without_pyod_names_the_extra(tmp_path, data, monkeypatch):
    pytest.importorskip("pyod")
    from pyod.models.iforest import IForest

    train, _ = data
    joblib.dump(IForest(random_state=0).fit(train), tmp_path / "model.joblib")
    for module in [m for m in sys.modules if m == "pyod" or m.startswith("pyod.")]:
        monkeypatch.setitem(sys.modules, module, None)
    runtime = OutlierRuntime(ModelSettings("od", "outlier", folder=tmp_path))
    with pytest.raises(ModelLoadError, match=r'pip install "inferline\[pyod\]"'):
        await runtime.load()
