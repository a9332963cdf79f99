"""Alibi Explain on one `inferline serve` of the Alibi virtualenv, configured as MLServer's
runtime is (model-settings.json with `infer_uri`): a KernelShap of the iris model's
probabilities and an AnchorText of a text classifier, each calling its model on the same
server over V2 REST."""

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

pytestmark = pytest.mark.slow

RUNTIME = "mlserver_alibi_explain.AlibiExplainRuntime"


def settings(folder: Path, name: str, **extra) -> None:
    doc = {"name": name, "implementation": RUNTIME, "parameters": {"extra": extra}}
    (folder / "model-settings.json").write_text(json.dumps(doc, indent=2) + "\n")


@pytest.fixture(scope="module")
def server(alibi_serve, alibi_artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("alibi-explain-serve")
    models = root / "models"
    shutil.copytree(alibi_artifacts / "explain-serve", models)
    sentiment = models / "sentiment"
    sentiment.mkdir()
    shutil.copy(Path(__file__).with_name("sentiment_model.py"), sentiment / "model.py")
    (sentiment / "model-settings.json").write_text(
        json.dumps({"name": "sentiment", "implementation": "model.Sentiment"})
    )
    server = alibi_serve(models, root / "serve.log")
    base = f"http://127.0.0.1:{server.http_port}/v2/models"
    settings(
        models / "iris-shap",
        "iris-shap",
        explainer_type="kernel_shap",
        infer_uri=f"{base}/iris/infer",
        infer_output="predict_proba",
        explain_parameters={"nsamples": 200},
    )
    settings(
        models / "review-anchors",
        "review-anchors",
        explainer_type="anchor_text",
        infer_uri=f"{base}/sentiment/infer",
        explain_parameters={"threshold": 0.95},
    )
    return server.start()


def explain(server, model: str, request: dict) -> dict:
    url = f"http://127.0.0.1:{server.http_port}/v2/models/{model}/infer"
    answer = httpx.post(url, json=request, timeout=120)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "explanation" and output["datatype"] == "BYTES"
    return json.loads(output["data"][0])


def test_kernel_shap_explains_every_row_with_the_model_s_probabilities(server):
    features, _ = load_iris(return_X_y=True)
    rows = features[[0, 120]]  # a setosa and a virginica
    request = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64",
                           "data": rows.ravel().tolist()}]}  # fmt: skip
    doc = explain(server, "iris-shap", request)
    assert doc["meta"]["name"] == "KernelShap"
    shap_values = np.asarray(doc["data"]["shap_values"])
    assert shap_values.shape == (3, 2, 4)  # per class, per row, per feature
    # The rows' own classes are predicted from the real model's probabilities...
    assert np.ravel(doc["data"]["raw"]["prediction"]).tolist() == [0, 2]
    # ...and petal length or width carries the most weight for each row's class.
    names = doc["data"]["feature_names"]
    for row, klass in ((0, 0), (1, 2)):
        top = names[int(np.argmax(np.abs(shap_values[klass, row])))]
        assert top.startswith("petal"), (row, top, shap_values[klass, row])


def test_anchor_text_finds_the_word_that_decides(server):
    text = "the plot was good and the cast was fine"
    request = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    doc = explain(server, "review-anchors", request)
    assert doc["meta"]["name"] == "AnchorText"
    assert doc["data"]["anchor"] == ["good"]
    assert doc["data"]["precision"] >= 0.95
