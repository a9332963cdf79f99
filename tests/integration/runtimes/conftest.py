"""Model folders for the framework runtimes, from small models trained or built on the spot.

- `xgboost_dir`: an MLServer folder (`model-settings.json` naming `mlserver_xgboost.XGBoostModel`)
  holding an XGBClassifier trained on iris, saved with `save_model` as `model.json`.
- `lightgbm_dir`: the same for a LightGBM multiclass Booster (`model.txt`).
- `onnx_linear_dir`: a bare folder with only `model.onnx` (found by its file name): y = x @ W + b.
- `onnx_two_inputs_dir`: `model.onnx` with two inputs (FP32 and INT64) and an INT64 output, with
  settings that name the runtime `onnx` and set `intra_op_threads`.

Each fixture skips when its library is not installed (the runtimes are optional extras). The
`serve` fixture that starts `inferline serve` comes from `tests/integration/conftest.py`.
"""

import json
from pathlib import Path

import numpy as np
import pytest

# One row of each iris class and one from the edge between two.
IRIS_ROWS = [0, 50, 100, 77]
ONNX_WEIGHTS = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
ONNX_BIAS = np.array([1.0, -1.0], dtype=np.float32)


def _write_settings(folder: Path, settings: dict) -> None:
    (folder / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="session")
def iris_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    return features.astype(np.float32), labels


@pytest.fixture(scope="session")
def iris_rows(iris_data) -> np.ndarray:
    return iris_data[0][IRIS_ROWS]


@pytest.fixture(scope="session")
def xgboost_model(iris_data):
    xgboost = pytest.importorskip("xgboost")
    return xgboost.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1).fit(*iris_data)


@pytest.fixture(scope="session")
def xgboost_dir(tmp_path_factory, xgboost_model) -> Path:
    folder = tmp_path_factory.mktemp("runtimes") / "xgb-iris"
    folder.mkdir()
    xgboost_model.save_model(folder / "model.json")
    _write_settings(
        folder,
        {
            "name": "xgb-iris",
            "implementation": "mlserver_xgboost.XGBoostModel",
            "parameters": {"uri": "./model.json", "version": "v1"},
        },
    )
    return folder


@pytest.fixture(scope="session")
def lightgbm_model(iris_data):
    lightgbm = pytest.importorskip("lightgbm")
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1}
    return lightgbm.train(params, lightgbm.Dataset(*iris_data), num_boost_round=4)


@pytest.fixture(scope="session")
def lightgbm_dir(tmp_path_factory, lightgbm_model) -> Path:
    folder = tmp_path_factory.mktemp("runtimes") / "lgbm-iris"
    folder.mkdir()
    lightgbm_model.save_model(folder / "model.txt")
    _write_settings(
        folder, {"name": "lgbm-iris", "implementation": "mlserver_lightgbm.LightGBMModel"}
    )
    return folder


def _save_onnx(graph, path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def onnx_linear():
    """What the `linear` graph computes, in NumPy."""
    return lambda x: x @ ONNX_WEIGHTS + ONNX_BIAS


@pytest.fixture(scope="session")
def onnx_linear_dir(tmp_path_factory) -> Path:
    onnx = pytest.importorskip("onnx")
    helper, FLOAT = onnx.helper, onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", 2])],
        [
            onnx.numpy_helper.from_array(ONNX_WEIGHTS, "W"),
            onnx.numpy_helper.from_array(ONNX_BIAS, "b"),
        ],
    )
    folder = tmp_path_factory.mktemp("runtimes") / "linear"
    folder.mkdir()
    _save_onnx(graph, folder / "model.onnx")
    return folder


@pytest.fixture(scope="session")
def onnx_two_inputs_dir(tmp_path_factory) -> Path:
    """sum = a + float(b) (FP32 [N, 3]); argmax = argmax(sum, axis 1) (INT64 [N])."""
    onnx = pytest.importorskip("onnx")
    helper, proto = onnx.helper, onnx.TensorProto
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b_float"], to=proto.FLOAT),
            helper.make_node("Add", ["a", "b_float"], ["sum"]),
            helper.make_node("ArgMax", ["sum"], ["argmax"], axis=1, keepdims=0),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", proto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("b", proto.INT64, [None, 3]),
        ],
        [
            helper.make_tensor_value_info("sum", proto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("argmax", proto.INT64, [None]),
        ],
    )
    folder = tmp_path_factory.mktemp("runtimes") / "two-inputs"
    folder.mkdir()
    _save_onnx(graph, folder / "model.onnx")
    _write_settings(
        folder,
        {
            "name": "two-inputs",
            "implementation": "onnx",
            "parameters": {"extra": {"intra_op_threads": 1}},
        },
    )
    return folder
