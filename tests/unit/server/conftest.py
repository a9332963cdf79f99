import json
from pathlib import Path

import pytest

from inferline.demo import train_iris

DOUBLER = """
import numpy as np

from inferline.protocol.types import InferenceResponse, Tensor
from inferline.runtimes import Runtime


class Doubler(Runtime):
    async def load(self):
        self.loaded = True

    async def predict(self, request):
        x = request.inputs[0].data
        if request.parameters.get("explode"):
            raise RuntimeError("exploded on purpose")
        return InferenceResponse(
            model_name="ignored",
            outputs=[Tensor.from_numpy("doubled", x * 2), Tensor.from_numpy("same", x)],
            parameters=dict(request.parameters),
        )
"""

BROKEN = """
from inferline.runtimes import Runtime


class Broken(Runtime):
    async def load(self):
        raise RuntimeError("weights are corrupt")
"""


def write_custom_model(folder: Path, name: str, code: str, cls: str, **settings) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(code)
    doc = {"name": name, "implementation": f"model.{cls}", **settings}
    (folder / "model-settings.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="session")
def iris_folder(tmp_path_factory) -> Path:
    return train_iris(tmp_path_factory.mktemp("models") / "iris")


@pytest.fixture
def model_root(tmp_path, iris_folder) -> Path:
    """A repository with iris (MLServer format), a custom doubler and a model that fails to load."""
    import shutil

    shutil.copytree(iris_folder, tmp_path / "iris")
    write_custom_model(
        tmp_path / "doubler",
        "doubler",
        DOUBLER,
        "Doubler",
        inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    )
    write_custom_model(tmp_path / "broken", "broken", BROKEN, "Broken")
    return tmp_path
