"""The CIFAR-10-shaped example models, made in a temporary folder and used through their
runtimes in-process: what each answers for images like the training ones, brighter ones and
noisy ones, and what a wrong request gets."""

import asyncio

import numpy as np
import pytest

from inferline.examples import EXAMPLES, cifar10
from inferline.protocol.errors import BadRequest
from inferline.protocol.types import InferenceRequest, Tensor
from inferline.runtimes.registry import runtime_class
from inferline.runtimes.settings import read_settings


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Made and loaded once for the module (training the classifier takes seconds)."""
    root = tmp_path_factory.mktemp("cifar10")
    runtimes = {}
    for name in ("cifar10-classifier", "cifar10-outlier", "cifar10-drift"):
        settings = read_settings(EXAMPLES[name](root / name))
        runtimes[name] = runtime_class(settings)(settings)
        asyncio.run(runtimes[name].load())
    return runtimes


def request(pixels: np.ndarray, name: str = "input_1") -> InferenceRequest:
    return InferenceRequest([Tensor.from_numpy(name, pixels)])


async def test_the_classifier_answers_class_probabilities(models):
    pixels, labels = cifar10.images(30, seed=7)
    response = await models["cifar10-classifier"].predict(request(pixels))
    (output,) = response.outputs
    assert (output.name, output.datatype, output.shape) == ("fc10", "FP32", [30, 10])
    assert output.data.argmax(axis=1).tolist() == labels.tolist()
    np.testing.assert_allclose(output.data.sum(axis=1), 1, atol=1e-5)


async def test_the_classifier_names_a_wrong_shape(models):
    with pytest.raises(
        BadRequest, match=r"must be images .* \[N, 32, 32, 3\], not FP32 \[2, 3072\]"
    ):
        await models["cifar10-classifier"].predict(request(np.zeros((2, 3072), np.float32)))


async def test_the_outlier_detector_flags_noisy_and_shifted_images_only(models):
    pixels, _ = cifar10.images(30, seed=8)
    detector = models["cifar10-outlier"]
    assert (await detector.predict(request(pixels))).output("is_outlier").data.sum() == 0
    for changed in (cifar10.corrupted(pixels[:5]), cifar10.brighter(pixels[:5])):
        flags = (await detector.predict(request(changed))).output("is_outlier").data
        assert flags.ravel().tolist() == [1] * 5


async def test_the_drift_detector_finds_brighter_batches_of_20(models):
    detector = models["cifar10-drift"]
    pixels, _ = cifar10.images(20, seed=9)
    same = await detector.predict(request(pixels))
    assert same.output("is_drift").data.tolist() == [0]
    shifted = await detector.predict(request(cifar10.brighter(pixels)))
    assert shifted.output("is_drift").data.tolist() == [1]
