import json

import pytest

from inferline.protocol.errors import InvalidModelURI
from inferline.storage import fetch


@pytest.fixture(autouse=True)
def examples_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERLINE_EXAMPLES_DIR", str(tmp_path / "examples"))
    return tmp_path / "examples"


def test_an_example_is_written_on_first_use_and_reused(examples_dir):
    folder = fetch("example://tfsimple")
    assert folder == examples_dir / "tfsimple"
    settings = json.loads((folder / "model-settings.json").read_text())
    assert settings["implementation"] == "inferline.examples.models.TfSimple"
    (folder / "marker").write_text("kept")
    assert fetch("example://tfsimple") == folder
    assert (folder / "marker").read_text() == "kept"  # not written again
    assert [p.name for p in examples_dir.iterdir()] == ["tfsimple"]  # no scratch left


def test_iris_is_trained_here(examples_dir):
    folder = fetch("example://iris")
    assert (folder / "model.joblib").stat().st_size > 0
    assert json.loads((folder / "model-settings.json").read_text())["name"] == "iris"


def test_an_unknown_example_lists_the_known_ones():
    with pytest.raises(InvalidModelURI, match=r"names no example model; the examples are: .*iris"):
        fetch("example://resnet")
