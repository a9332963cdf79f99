import json

import numpy as np
import pytest
from prometheus_client import REGISTRY
from scipy import stats

from inferline.protocol.errors import BadRequest, InvalidModelURI, ModelLoadError
from inferline.protocol.types import InferenceRequest, Tensor
from inferline.runtimes.drift import DriftRuntime, DriftSettings, DriftTest, benjamini_hochberg
from inferline.runtimes.registry import runtime_class
from inferline.runtimes.settings import ModelSettings

# 500 reference rows against batches of 200: a shift of one standard deviation gives p-values
# far below 1e-10, and same-distribution batches (these seeds) stay above 0.1 on every feature.
REFERENCE_ROWS, BATCH_ROWS = 500, 200


def write(folder, x_ref, settings=None):
    np.save(folder / "x_ref.npy", x_ref)
    if settings is not None:
        (folder / "drift-settings.json").write_text(json.dumps(settings))
    return folder


async def loaded(folder, name="cd", **extra) -> DriftRuntime:
    runtime = DriftRuntime(ModelSettings(name, "drift", version="1", extra=extra, folder=folder))
    await runtime.load()
    return runtime


def drift_metric(model: str) -> tuple[float, float]:
    """(count, sum) of the model's `seldon_model_drift` observations in this process."""
    labels = {"model_name": model, "model_version": "1"}
    count = REGISTRY.get_sample_value("seldon_model_drift_count", labels) or 0.0
    return count, REGISTRY.get_sample_value("seldon_model_drift_sum", labels) or 0.0


def request(rows) -> InferenceRequest:
    return InferenceRequest(inputs=[Tensor.from_numpy("x", np.asarray(rows))])


@pytest.fixture(scope="module")
def normal():
    reference = np.random.default_rng(1).normal(size=(REFERENCE_ROWS, 3))
    same = np.random.default_rng(2).normal(size=(BATCH_ROWS, 3))
    shifted = np.random.default_rng(3).normal(size=(BATCH_ROWS, 3))
    shifted[:, 0] += 1.0
    return reference, same, shifted


async def test_ks_finds_a_shift_and_not_its_absence(tmp_path, normal):
    reference, same, shifted = normal
    runtime = await loaded(write(tmp_path, reference))

    response = await runtime.predict(request(same))
    assert [o.name for o in response.outputs] == ["is_drift", "distance", "p_val", "threshold"]
    is_drift, distance, p_val, threshold = response.outputs
    assert (is_drift.datatype, is_drift.shape, is_drift.data.tolist()) == ("INT64", [1], [0])
    assert (p_val.datatype, p_val.shape) == ("FP64", [3])
    assert (distance.datatype, distance.shape) == ("FP64", [3])
    assert (threshold.datatype, threshold.shape) == ("FP64", [1])
    assert threshold.data[0] == pytest.approx(0.05 / 3)  # Bonferroni
    assert p_val.data.min() > 0.1
    for f in range(3):
        expected = stats.ks_2samp(reference[:, f], same[:, f], method="asymp")
        assert distance.data[f] == pytest.approx(expected.statistic)
        assert p_val.data[f] == pytest.approx(expected.pvalue)
    assert response.parameters == {"detector_type": "drift", "detector_method": "KSDrift"}

    response = await runtime.predict(request(shifted))
    assert response.output("is_drift").data.tolist() == [1]
    p_val = response.output("p_val").data
    assert p_val[0] < 1e-10 and p_val[1:].min() > 0.01


async def test_chi2_on_categories(tmp_path):
    rng = np.random.default_rng(4)
    reference = rng.choice(3, p=[0.5, 0.3, 0.2], size=(REFERENCE_ROWS, 2))
    same = np.random.default_rng(5).choice(3, p=[0.5, 0.3, 0.2], size=(BATCH_ROWS, 2))
    shifted = same.copy()
    shifted[:, 1] = np.random.default_rng(6).choice(3, p=[0.2, 0.3, 0.5], size=BATCH_ROWS)
    runtime = await loaded(write(tmp_path, reference, {"test": "chi2"}))

    response = await runtime.predict(request(same))
    assert response.output("is_drift").data.tolist() == [0]
    table = [
        [(reference[:, 0] == c).sum() for c in range(3)],
        [(same[:, 0] == c).sum() for c in range(3)],
    ]
    expected = stats.chi2_contingency(table)
    assert response.output("distance").data[0] == pytest.approx(expected.statistic)
    assert response.output("p_val").data[0] == pytest.approx(expected.pvalue)
    assert response.parameters["detector_method"] == "ChiSquareDrift"

    response = await runtime.predict(request(shifted))
    assert response.output("is_drift").data.tolist() == [1]
    assert response.output("p_val").data[1] < 1e-10


async def test_chi2_counts_a_category_only_the_batch_has(tmp_path):
    reference = np.random.default_rng(7).choice(2, size=(REFERENCE_ROWS, 1))
    runtime = await loaded(write(tmp_path, reference, {"test": "chi2"}))
    batch = np.full((50, 1), 2)
    response = await runtime.predict(request(batch))
    assert response.output("is_drift").data.tolist() == [1]


async def test_tabular_uses_chi2_for_categorical_and_ks_for_the_rest(tmp_path):
    rng = np.random.default_rng(8)
    reference = np.column_stack(
        [rng.choice(3, size=REFERENCE_ROWS), rng.normal(size=REFERENCE_ROWS)]
    )
    batch = np.column_stack([rng.choice(3, size=BATCH_ROWS), rng.normal(size=BATCH_ROWS) + 1.0])
    runtime = await loaded(
        write(tmp_path, reference), test="tabular", categories_per_feature={"0": 3}
    )
    response = await runtime.predict(request(batch))
    assert response.output("is_drift").data.tolist() == [1]
    ks = stats.ks_2samp(reference[:, 1], batch[:, 1], method="asymp")
    assert response.output("distance").data[1] == pytest.approx(ks.statistic)
    assert response.output("p_val").data[0] > 0.01  # the categorical column did not move
    assert response.parameters["detector_method"] == "TabularDrift"


async def test_fdr_and_per_feature_decisions(tmp_path, normal):
    reference, _, shifted = normal
    write(tmp_path, reference)
    runtime = await loaded(tmp_path, correction="fdr")
    response = await runtime.predict(request(shifted))
    assert response.output("is_drift").data.tolist() == [1]
    drift, threshold = benjamini_hochberg(response.output("p_val").data, 0.05)
    assert drift and response.output("threshold").data[0] == pytest.approx(threshold)

    runtime = await loaded(tmp_path, predict_parameters={"drift_type": "feature"})
    response = await runtime.predict(request(shifted))
    assert response.output("is_drift").data.tolist() == [1, 0, 0]
    assert response.output("threshold").data.tolist() == [0.05]


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_ks_of_many_columns_is_scipys_column_by_column(alternative):
    rng = np.random.default_rng(5)
    # Clipped values (many ties at 0 and 1) and whole numbers (ties everywhere) as well.
    clipped = np.clip(rng.normal(0.5, 0.5, (307, 400)), 0, 1)
    whole = rng.integers(0, 4, (150, 30)).astype(float)
    cases = [(clipped[:300], clipped[300:] + 0.1), (whole[:100], whole[100:])]
    for reference, batch in cases:
        test = DriftTest(reference, DriftSettings(alternative=alternative), stats)
        distance, p_val = test.feature_scores(batch)
        expected = [
            stats.ks_2samp(reference[:, f], batch[:, f], alternative=alternative, method="asymp")
            for f in range(reference.shape[1])
        ]
        np.testing.assert_allclose(distance, [e.statistic for e in expected], atol=1e-12)
        np.testing.assert_allclose(p_val, [e.pvalue for e in expected], rtol=1e-9)


def test_benjamini_hochberg():
    assert benjamini_hochberg(np.array([0.5, 0.6, 0.9]), 0.05) == (False, pytest.approx(0.05 / 3))
    # p_(1) = 0.001 < 0.05/4 and p_(2) = 0.02 < 0.05*2/4, p_(3) = 0.04 > 0.0375.
    drift, threshold = benjamini_hochberg(np.array([0.04, 0.001, 0.02, 0.9]), 0.05)
    assert drift and threshold == pytest.approx(0.025)


async def test_batch_size_accumulates_requests(tmp_path, normal):
    reference, _, shifted = normal
    runtime = await loaded(write(tmp_path, reference), name="cd-batched", batch_size=3)
    parts = np.array_split(shifted, 3)

    for part in parts[:2]:
        response = await runtime.predict(request(part))
        assert response.outputs == []
    assert drift_metric("cd-batched") == (0, 0), "an empty answer observes nothing"

    response = await runtime.predict(request(parts[2]))
    assert response.output("is_drift").data.tolist() == [1]
    whole = stats.ks_2samp(reference[:, 0], shifted[:, 0], method="asymp")
    assert response.output("p_val").data[0] == pytest.approx(whole.pvalue)
    # The buffer starts again.
    assert (await runtime.predict(request(parts[0]))).outputs == []
    assert drift_metric("cd-batched") == (1, 1)


async def test_every_is_drift_value_is_observed_in_the_drift_metric(tmp_path, normal):
    reference, same, shifted = normal
    runtime = await loaded(write(tmp_path, reference), name="watch")
    await runtime.predict(request(same))
    await runtime.predict(request(shifted))
    await runtime.predict(request(same))
    assert drift_metric("watch") == (3, 1)

    # With drift_type feature, one value per feature, as MLServer logs them.
    per_feature = await loaded(
        tmp_path, name="watch-features", predict_parameters={"drift_type": "feature"}
    )
    await per_feature.predict(request(shifted))
    assert drift_metric("watch-features") == (3, 1)


async def test_image_batches_are_tested_per_pixel(tmp_path):
    rng = np.random.default_rng(4)
    reference = rng.uniform(size=(200, 8, 8, 3)).astype(np.float32)
    runtime = await loaded(write(tmp_path, reference))
    same = rng.uniform(size=(20, 8, 8, 3)).astype(np.float32)
    brighter = np.clip(rng.uniform(size=(20, 8, 8, 3)) + 0.5, 0, 1).astype(np.float32)
    assert (await runtime.predict(request(same))).output("is_drift").data.tolist() == [0]
    response = await runtime.predict(request(brighter))
    assert response.output("is_drift").data.tolist() == [1]
    assert response.output("p_val").data.shape == (8 * 8 * 3,)


async def test_bad_shape_is_a_400(tmp_path, normal):
    reference, same, _ = normal
    runtime = await loaded(write(tmp_path, reference), batch_size=2)
    with pytest.raises(BadRequest, match="has 2 features but the reference data") as caught:
        await runtime.predict(request(same[:, :2]))
    assert caught.value.status == 400
    with pytest.raises(BadRequest, match="needs numbers"):
        await runtime.predict(request(np.array([b"x"], dtype=object)))
    # Refused requests are not buffered.
    assert (await runtime.predict(request(same))).outputs == []


async def test_settings_file_and_extra_override_it(tmp_path, normal):
    reference, _, _ = normal
    write(tmp_path, reference, {"p_val": 0.01, "batch_size": 5})
    runtime = await loaded(tmp_path, batch_size=2)
    assert (runtime.drift_settings.p_val, runtime.drift_settings.batch_size) == (0.01, 2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"test": "mmd"}, "'test' must be one of ks, chi2, tabular"),
        ({"p_val": 2}, "'p_val' must be a number between 0 and 1"),
        ({"bach_size": 3}, r"unknown key 'extra.bach_size' \(did you mean 'batch_size'\?\)"),
        ({"batch_size": -1}, "'batch_size'"),
        ({"test": "tabular", "categories_per_feature": {"7": 2}}, "feature 7"),
        ({"predict_parameters": {"drift_type": "row"}}, "drift_type"),
    ],
)
async def test_bad_settings_name_the_key(tmp_path, normal, extra, message):
    write(tmp_path, normal[0])
    with pytest.raises(ModelLoadError, match=message):
        await loaded(tmp_path, **extra)


async def test_seldon_parameters_are_strings_and_foreign_keys_are_ignored(tmp_path, normal, caplog):
    # A Seldon Model's `parameters` arrive as strings, next to keys meant for other runtimes.
    write(tmp_path, normal[0])
    runtime = await loaded(
        tmp_path,
        batch_size="20",
        p_val="0.01",
        predict_parameters='{"drift_type": "feature"}',
        test="ks",
        query="a > 1",
    )
    settings = runtime.drift_settings
    assert (settings.batch_size, settings.p_val, settings.drift_type) == (20, 0.01, "feature")
    assert "ignoring parameters.extra key 'query'" in caplog.text


async def test_unknown_key_in_the_settings_file_is_refused(tmp_path, normal):
    write(tmp_path, normal[0], {"windw": 3})
    with pytest.raises(ModelLoadError, match="unknown key 'windw'"):
        await loaded(tmp_path)


async def test_missing_reference(tmp_path):
    with pytest.raises(InvalidModelURI, match="x_ref.npy"):
        await loaded(tmp_path)


def test_short_name_resolves():
    assert runtime_class(ModelSettings("cd", "drift")) is DriftRuntime
