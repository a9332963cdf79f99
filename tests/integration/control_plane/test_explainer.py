"""A Model with an `explainer` block, as Seldon Core 2 runs one: a kernel_shap explainer is
placed on a server offering our `explainer` runtime (Alibi is not needed for that type), and it
calls the model it explains through the router."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_iris

from ._platform import model_yaml, write_file

EXPLAINER = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata:
  name: iris-explainer
spec:
  storageUri: "{uri}"
  explainer:
    type: kernel_shap
    modelRef: iris
"""


@pytest.fixture(scope="module")
def up(up_factory):
    return up_factory(1)


def test_an_explainer_model_explains_its_model_ref_through_the_router(up, iris_artifact, tmp_path):
    features, _ = load_iris(return_X_y=True)
    folder = tmp_path / "explainer"
    folder.mkdir()
    np.save(folder / "background.npy", features[::10])
    up.cli("load", "-f", str(write_file(tmp_path, "iris.yaml", model_yaml("iris", iris_artifact))))
    up.cli("load", "-f", str(write_file(tmp_path, "e.yaml", EXPLAINER.format(uri=folder))))
    up.wait_model("iris")
    up.wait_model("iris-explainer")
    row = [[6.7, 3.0, 5.2, 2.3]]
    request = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP64", "data": row}]}
    answer = up.infer("iris-explainer", request)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "explanation" and output["datatype"] == "BYTES"
    explanation = json.loads(output["data"][0])
    assert explanation["meta"]["name"] == "KernelShap"
    # One [rows, features] array of SHAP values per output column of the explained model.
    assert np.asarray(explanation["data"]["shap_values"]).shape[-1] == 4
