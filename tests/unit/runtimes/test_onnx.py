"""The ONNX runtime on graphs built here with the onnx helper API."""

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402 (after the skips)

from inferline.protocol.errors import (  # noqa: E402
    BadRequest,
    InferenceError,
    InvalidModelURI,
    ModelLoadError,
)
from inferline.protocol.types import (  # noqa: E402
    InferenceRequest,
    RequestedOutput,
    Tensor,
    TensorMetadata,
)
from inferline.runtimes.onnx import OnnxRuntime  # noqa: E402
from inferline.runtimes.registry import runtime_class  # noqa: E402
from inferline.runtimes.settings import ModelSettings  # noqa: E402

WEIGHTS = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
BIAS = np.array([1.0, -1.0], dtype=np.float32)


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def linear_graph(path):
    """y = x @ W + b, x of shape [batch, 4] FP32."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    return save(graph, path)


def two_input_graph(path):
    """sum = a + float(b) (FP32 [N, 3]) and argmax = argmax(sum, axis 1) (INT64 [N])."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "b_float"], ["sum"]),
            helper.make_node("ArgMax", ["sum"], ["argmax"], axis=1, keepdims=0),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [None, 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("argmax", TensorProto.INT64, [None]),
        ],
    )
    return save(graph, path)


def text_graph(path):
    """Strings in, the same strings out, and a sequence output that has no V2 datatype."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["words"], ["same"]),
            helper.make_node("SequenceConstruct", ["words"], ["listed"]),
        ],
        "text",
        [helper.make_tensor_value_info("words", TensorProto.STRING, [None])],
        [
            helper.make_tensor_value_info("same", TensorProto.STRING, [None]),
            helper.make_tensor_sequence_value_info("listed", TensorProto.STRING, [None]),
        ],
    )
    return save(graph, path)


async def loaded(folder, build=linear_graph, **extra) -> OnnxRuntime:
    build(folder / "model.onnx")
    runtime = OnnxRuntime(ModelSettings("m", "onnx", folder=folder, extra=extra))
    await runtime.load()
    return runtime


def infer(*inputs: Tensor, outputs: tuple[str, ...] = ()) -> InferenceRequest:
    return InferenceRequest(
        inputs=list(inputs), outputs=[RequestedOutput(o) for o in outputs] or None
    )


X = np.array([[1, 2, 3, 4], [0.5, -1, 0, 2], [0, 0, 0, 0]], dtype=np.float32)


async def test_metadata_comes_from_the_graph(tmp_path):
    runtime = await loaded(tmp_path)
    metadata = runtime.metadata()
    assert metadata.platform == "onnxruntime_onnx"
    assert metadata.inputs == [TensorMetadata("x", "FP32", [-1, 4])]
    assert metadata.outputs == [TensorMetadata("y", "FP32", [-1, 2])]


async def test_declared_metadata_wins(tmp_path):
    linear_graph(tmp_path / "model.onnx")
    declared = [TensorMetadata("x", "FP32", [-1, 4], {"content_type": "np"})]
    runtime = OnnxRuntime(ModelSettings("m", folder=tmp_path, inputs=declared))
    await runtime.load()
    assert runtime.metadata().inputs == declared
    assert runtime.metadata().outputs == [TensorMetadata("y", "FP32", [-1, 2])]


async def test_predict_equals_onnxruntime_and_numpy(tmp_path):
    runtime = await loaded(tmp_path)
    # One graph input: a request input of any name is fed to it.
    response = await runtime.predict(infer(Tensor.from_numpy("input-0", X)))
    (y,) = response.outputs
    assert (y.name, y.datatype, y.shape) == ("y", "FP32", [3, 2])
    assert y.parameters == {"content_type": "np"}
    session = ort.InferenceSession(tmp_path / "model.onnx", providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(y.data, session.run(None, {"x": X})[0])
    np.testing.assert_allclose(y.data, X @ WEIGHTS + BIAS, rtol=1e-6)


async def test_two_inputs_by_name_and_an_int64_output(tmp_path):
    runtime = await loaded(tmp_path, two_input_graph)
    assert runtime.metadata().inputs == [
        TensorMetadata("a", "FP32", [-1, 3]),
        TensorMetadata("b", "INT64", [-1, 3]),
    ]
    assert runtime.metadata().outputs == [
        TensorMetadata("sum", "FP32", [-1, 3]),
        TensorMetadata("argmax", "INT64", [-1]),
    ]
    a = np.array([[0.5, 0, 0], [0, 0, 0]], dtype=np.float32)
    b = np.array([[0, 0, 1], [2, 0, 0]], dtype=np.int64)
    # Given out of order: inputs are matched by name.
    response = await runtime.predict(infer(Tensor.from_numpy("b", b), Tensor.from_numpy("a", a)))
    assert [o.name for o in response.outputs] == ["sum", "argmax"]
    np.testing.assert_array_equal(response.output("sum").data, a + b)
    argmax = response.output("argmax")
    assert (argmax.datatype, argmax.shape, argmax.data.tolist()) == ("INT64", [2], [2, 0])


async def test_requested_outputs_are_the_ones_computed(tmp_path):
    runtime = await loaded(tmp_path, two_input_graph)
    a, b = np.zeros((1, 3), np.float32), np.array([[0, 5, 0]], np.int64)
    response = await runtime.predict(
        infer(Tensor.from_numpy("a", a), Tensor.from_numpy("b", b), outputs=("argmax",))
    )
    assert [(o.name, o.data.tolist()) for o in response.outputs] == [("argmax", [1])]
    with pytest.raises(BadRequest, match="no output 'proba'; it can produce: sum, argmax"):
        await runtime.predict(
            infer(Tensor.from_numpy("a", a), Tensor.from_numpy("b", b), outputs=("proba",))
        )


async def test_inputs_convert_only_without_loss(tmp_path):
    runtime = await loaded(tmp_path, two_input_graph)
    a = np.array([[1, 2, 3]], dtype=np.float16)
    b = np.array([[1, 1, 1]], dtype=np.int32)
    # FP16 -> FP32 and INT32 -> INT64 lose nothing.
    response = await runtime.predict(infer(Tensor.from_numpy("a", a), Tensor.from_numpy("b", b)))
    assert response.output("sum").data.tolist() == [[2, 3, 4]]
    lossy = [
        ("a", a.astype(np.float64), "b", b, "'a' has datatype FP64 but model 'm' takes FP32"),
        ("a", a, "b", b.astype(np.float32), "'b' has datatype FP32 but model 'm' takes INT64"),
        ("a", a.astype(np.int64), "b", b, "'a' has datatype INT64 but model 'm' takes FP32"),
    ]
    for name_a, value_a, name_b, value_b, message in lossy:
        request = infer(Tensor.from_numpy(name_a, value_a), Tensor.from_numpy(name_b, value_b))
        with pytest.raises(BadRequest, match=message):
            await runtime.predict(request)


async def test_wrong_inputs_name_the_problem(tmp_path):
    runtime = await loaded(tmp_path)
    with pytest.raises(BadRequest, match=r"shape \[3, 3\] but model 'm' expects \[-1, 4\]"):
        await runtime.predict(infer(Tensor.from_numpy("x", X[:, :3])))
    with pytest.raises(BadRequest, match="no output 'z'; it can produce: y"):
        await runtime.predict(infer(Tensor.from_numpy("x", X), outputs=("z",)))
    runtime = await loaded(tmp_path, two_input_graph)
    a = Tensor.from_numpy("a", np.zeros((1, 3), np.float32))
    with pytest.raises(BadRequest, match="needs input"):
        await runtime.predict(infer(a))
    with pytest.raises(BadRequest, match="no input 'c'; its inputs are: a, b"):
        await runtime.predict(infer(a, Tensor.from_numpy("c", np.zeros((1, 3), np.int64))))


async def test_strings_and_outputs_with_no_v2_datatype(tmp_path):
    runtime = await loaded(tmp_path, text_graph)
    # The sequence output is neither described nor sent by default.
    assert [o.name for o in runtime.metadata().outputs] == ["same"]
    words = Tensor.from_numpy("words", np.array(["héllo", "world"], dtype=object))
    response = await runtime.predict(infer(words))
    (same,) = response.outputs
    assert (same.datatype, same.data.tolist()) == ("BYTES", ["héllo".encode(), b"world"])
    with pytest.raises(BadRequest, match="'listed' is seq"):
        await runtime.predict(infer(words, outputs=("listed",)))


async def test_intra_op_threads_is_onnxruntimes_pool_size(tmp_path):
    # Seldon hands a Model's parameters over as strings.
    runtime = await loaded(tmp_path, intra_op_threads="2")
    assert runtime.session.get_session_options().intra_op_num_threads == 2
    for bad in (-1, "many", 1.5, True):
        with pytest.raises(ModelLoadError, match="intra_op_threads must be a whole number"):
            await loaded(tmp_path, intra_op_threads=bad)


async def test_run_failures_are_inference_errors(tmp_path):
    runtime = await loaded(tmp_path, two_input_graph)
    a = Tensor.from_numpy("a", np.zeros((2, 3), np.float32))
    b = Tensor.from_numpy("b", np.zeros((3, 3), np.int64))  # batch sizes disagree
    with pytest.raises(InferenceError, match="onnxruntime failed"):
        await runtime.predict(infer(a, b))


async def test_missing_file_is_an_invalid_uri(tmp_path):
    with pytest.raises(InvalidModelURI, match="no model.onnx") as caught:
        await OnnxRuntime(ModelSettings("m", folder=tmp_path)).load()
    assert caught.value.status == 422


async def test_unreadable_file_fails_to_load(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        await OnnxRuntime(ModelSettings("m", folder=tmp_path)).load()


async def test_missing_library_names_the_extra(tmp_path, monkeypatch):
    linear_graph(tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ModelLoadError, match=r'pip install "inferline\[onnx\]"'):
        await OnnxRuntime(ModelSettings("m", folder=tmp_path)).load()


@pytest.mark.parametrize("implementation", ["onnx", "inferline.runtimes.onnx.OnnxRuntime"])
def test_names_resolve_to_the_runtime(implementation):
    assert runtime_class(ModelSettings("m", implementation)) is OnnxRuntime


def test_a_folder_with_model_onnx_is_onnx(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    assert runtime_class(ModelSettings("m", folder=tmp_path)) is OnnxRuntime
