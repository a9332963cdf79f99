"""anchor_image on one `inferline serve` of the Alibi virtualenv: alibi's AnchorImage explains a
scikit-learn image classifier served beside it, calling it over V2 REST as MLServer's runtime
does. The classifier's class is decided by the top-left 8 x 8 square of its 24 x 24 images
(striped: 1, plain: 0), so the anchor must be superpixels over that square.

Two explainers: the one alibi saved (as a Seldon Model's storageUri holds it), and one made from
`init_parameters` as MLServer's model-settings.json configures it, with background images."""

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow

RUNTIME = "mlserver_alibi_explain.AlibiExplainRuntime"
SHAPE = [24, 24, 3]
SQUARE = 8
SEGMENTATION = {"n_segments": 9, "compactness": 100, "start_label": 0}  # as make_artifacts.py
# Small samples keep an explanation to a few model calls; the classifier is sure of its answer.
EXPLAIN = {"threshold": 0.95, "batch_size": 50, "coverage_samples": 200}


def write_settings(folder: Path, doc: dict) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(doc, indent=2) + "\n")


@pytest.fixture(scope="module")
def server(alibi_serve, alibi_artifacts, tmp_path_factory):
    images = alibi_artifacts / "image"
    models = tmp_path_factory.mktemp("anchor-image") / "models"
    shutil.copytree(images / "stripes", models / "stripes")
    shutil.copy(Path(__file__).with_name("stripes_model.py"), models / "stripes" / "model.py")
    write_settings(
        models / "stripes",
        {
            "name": "stripes",
            "implementation": "model.Stripes",
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, *SHAPE]}],
        },
    )
    server = alibi_serve(models, models.parent / "serve.log")
    infer_uri = f"http://127.0.0.1:{server.http_port}/v2/models/stripes/infer"
    shutil.copytree(images / "stripes-anchors", models / "saved-anchors")
    for name, extra in (
        ("saved-anchors", {}),
        (
            "configured-anchors",
            {
                "init_parameters": {
                    "image_shape": SHAPE,
                    "segmentation_fn": "slic",
                    "segmentation_kwargs": SEGMENTATION,
                    # Hidden superpixels take these images' pixels instead of their own mean.
                    "images_background": np.load(images / "plain.npy").tolist(),
                    "seed": 0,
                }
            },
        ),
    ):
        write_settings(
            models / name,
            {
                "name": name,
                "implementation": RUNTIME,
                "parameters": {
                    "extra": {
                        "explainer_type": "anchor_image",
                        "infer_uri": infer_uri,
                        "explain_parameters": EXPLAIN,
                        **extra,
                    }
                },
            },
        )
    return server.start()


@pytest.fixture(scope="module")
def striped(alibi_artifacts) -> np.ndarray:
    return np.load(alibi_artifacts / "image" / "striped.npy")


def explain(server, model: str, image: np.ndarray) -> httpx.Response:
    url = f"http://127.0.0.1:{server.http_port}/v2/models/{model}/infer"
    request = {"inputs": [{"name": "image", "shape": list(image.shape), "datatype": "FP32",
                           "data": image.ravel().tolist()}]}  # fmt: skip
    return httpx.post(url, json=request, timeout=120)


@pytest.mark.parametrize("model", ["saved-anchors", "configured-anchors"])
def test_the_anchor_is_the_superpixels_over_the_deciding_square(server, striped, model):
    answer = explain(server, model, striped[None])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["parameters"]["headers"]["x-seldon-alibi-method"] == "anchor_image"
    (output,) = body["outputs"]
    doc = json.loads(output["data"][0])
    assert doc["meta"]["name"] == "AnchorImage"
    data = doc["data"]
    assert np.ravel(data["raw"]["prediction"]).tolist() == [1]
    segments = np.asarray(data["segments"])
    assert segments.shape == tuple(SHAPE[:2])
    assert len(np.unique(segments)) > 4, segments  # slic's grid, not one segment
    anchor = data["raw"]["feature"]
    assert anchor, "an empty anchor: the class would not depend on the image at all"
    for segment in anchor:
        pixels = segments == segment
        inside = pixels[:SQUARE, :SQUARE].sum()
        # Each superpixel of the anchor lies mostly over the deciding square.
        assert inside / pixels.sum() > 0.5, (segment, segments)
    assert data["precision"] >= EXPLAIN["threshold"], data["precision"]
    # The anchor image shows the anchor's superpixels and blanks the rest.
    shown = np.asarray(data["anchor"]).any(axis=-1)
    assert not shown[SQUARE + 4 :, SQUARE + 4 :].any()


def test_an_image_of_another_shape_is_a_400_naming_both_shapes(server, striped):
    answer = explain(server, "configured-anchors", striped[None, :16, :16])
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "[16, 16, 3]" in error and "[24, 24, 3]" in error
