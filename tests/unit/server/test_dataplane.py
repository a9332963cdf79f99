import numpy as np
import pytest

from inferline.protocol.errors import (
    BadRequest,
    InferenceError,
    InvalidModelURI,
    ModelNotFound,
    ModelNotReady,
)
from inferline.protocol.types import InferenceRequest, RequestedOutput, Tensor
from inferline.runtimes.settings import ModelSettings
from inferline.server.dataplane import DataPlane
from inferline.server.repository import ModelRepository

IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture
async def dataplane(model_root):
    plane = DataPlane(ModelRepository([model_root]))
    assert not plane.ready()
    await plane.load_repository()
    yield plane
    await plane.unload_all()


def doubler_request(**parameters) -> InferenceRequest:
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    return InferenceRequest(inputs=[Tensor.from_numpy("x", x)], id="r1", parameters=parameters)


async def test_ready_after_loading_and_failures_are_kept(dataplane):
    assert dataplane.ready()
    index = {row.name: row for row in dataplane.repository_index()}
    assert index["iris"].state == "READY"
    assert index["doubler"].state == "READY"
    assert index["broken"].state == "UNAVAILABLE"
    assert "weights are corrupt" in index["broken"].reason
    assert {r.name for r in dataplane.repository_index(ready_only=True)} == {"doubler", "iris"}


async def test_infer_sklearn_fills_name_version_and_id(dataplane):
    request = InferenceRequest(inputs=[Tensor.from_numpy("predict", IRIS_ROWS)], id="abc")
    response = await dataplane.infer("iris", None, request)
    assert response.model_name == "iris"
    assert response.model_version == "v0.1.0"
    assert response.id == "abc"
    assert response.output("predict").data.ravel().tolist() == [0, 2]


async def test_requested_outputs_are_honoured_in_order(dataplane):
    request = doubler_request()
    request.outputs = [RequestedOutput("same"), RequestedOutput("doubled")]
    response = await dataplane.infer("doubler", None, request)
    assert [o.name for o in response.outputs] == ["same", "doubled"]
    request.outputs = [RequestedOutput("nope")]
    with pytest.raises(BadRequest, match="no output 'nope'.*doubled, same"):
        await dataplane.infer("doubler", None, request)


async def test_parameters_reach_the_model(dataplane):
    response = await dataplane.infer("doubler", None, doubler_request(tag="blue", n=3))
    assert response.parameters == {"tag": "blue", "n": 3}


async def test_declared_inputs_are_checked(dataplane):
    wrong_type = InferenceRequest(inputs=[Tensor.from_numpy("x", np.array([[1, 2]]))])
    with pytest.raises(BadRequest, match="datatype INT64 but model 'doubler' expects FP32"):
        await dataplane.infer("doubler", None, wrong_type)
    wrong_shape = InferenceRequest(inputs=[Tensor.from_numpy("x", np.zeros((1, 3), np.float32))])
    with pytest.raises(BadRequest, match=r"shape \[1, 3\] but model 'doubler' expects \[-1, 2\]"):
        await dataplane.infer("doubler", None, wrong_shape)


async def test_model_exception_becomes_inference_error(dataplane):
    with pytest.raises(InferenceError, match="model 'doubler' failed: exploded on purpose"):
        await dataplane.infer("doubler", None, doubler_request(explode=True))
    # and the model keeps answering
    assert (await dataplane.infer("doubler", None, doubler_request())).outputs


async def test_unknown_and_unready_models(dataplane):
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        await dataplane.infer("nope", None, doubler_request())
    with pytest.raises(ModelNotFound, match="version '9'"):
        dataplane.model_metadata("iris", "9")
    with pytest.raises(ModelNotReady, match="broken.*UNAVAILABLE.*weights are corrupt"):
        await dataplane.infer("broken", None, doubler_request())
    assert dataplane.model_ready("broken") is False


async def test_unload_then_load_by_name(dataplane):
    await dataplane.unload("doubler")
    with pytest.raises(ModelNotFound):
        await dataplane.infer("doubler", None, doubler_request())
    assert {"name": "doubler", "state": "UNAVAILABLE", "reason": "not loaded"} in [
        r.to_dict() for r in dataplane.repository_index()
    ]
    await dataplane.load("doubler")
    assert dataplane.model_ready("doubler")
    with pytest.raises(ModelNotFound):
        await dataplane.unload("doubler-nope")
    with pytest.raises(ModelNotFound):
        await dataplane.load("doubler-nope")


async def test_versions_default_to_newest_load(dataplane, iris_folder):
    v2 = ModelSettings(
        name="iris", implementation="sklearn", uri=str(iris_folder / "model.joblib"), version="v2"
    )
    await dataplane.load_model(v2)
    assert dataplane.model_metadata("iris").versions == ["v2"]
    assert dataplane.model_metadata("iris", "v0.1.0").versions == ["v0.1.0"]
    request = InferenceRequest(inputs=[Tensor.from_numpy("predict", IRIS_ROWS)])
    assert (await dataplane.infer("iris", "v0.1.0", request)).model_version == "v0.1.0"
    assert (await dataplane.infer("iris", None, request)).model_version == "v2"
    await dataplane.unload("iris", "v2")
    assert (await dataplane.infer("iris", None, request)).model_version == "v0.1.0"


async def test_failed_reload_keeps_the_old_version_serving(dataplane, tmp_path):
    bad = ModelSettings(
        name="iris",
        implementation="sklearn",
        uri=str(tmp_path / "missing.joblib"),
        version="v0.1.0",
    )
    with pytest.raises(InvalidModelURI, match="does not exist"):
        await dataplane.load_model(bad)
    request = InferenceRequest(inputs=[Tensor.from_numpy("predict", IRIS_ROWS)])
    assert (await dataplane.infer("iris", None, request)).outputs


async def test_server_metadata_lists_extensions(dataplane):
    meta = dataplane.server_metadata()
    assert meta.name == "inferline"
    assert {"binary_tensor_data", "model_repository"} <= set(meta.extensions)


EMPTY = """
from inferline.protocol.types import InferenceResponse
from inferline.runtimes import Runtime


class Buffering(Runtime):
    async def predict(self, request):
        return InferenceResponse(model_name=self.name, outputs=[])
"""


async def test_an_empty_answer_passes_even_with_requested_outputs(tmp_path):
    # A detector still buffering its batch answers with no outputs (MLServer's behaviour).
    folder = tmp_path / "buffering"
    folder.mkdir()
    (folder / "model.py").write_text(EMPTY)
    (folder / "model-settings.json").write_text('{"implementation": "model.Buffering"}')
    plane = DataPlane(ModelRepository([tmp_path]))
    await plane.load_repository()
    request = doubler_request()
    request.outputs = [RequestedOutput("is_drift")]
    response = await plane.infer("buffering", None, request)
    assert response.outputs == []
    await plane.unload_all()
