import pytest

from inferline.protocol.errors import InvalidModelURI, ModelLoadError
from inferline.runtimes.registry import runtime_class
from inferline.runtimes.settings import ModelSettings
from inferline.runtimes.sklearn import SKLearnRuntime

CUSTOM = """
from helper import FACTOR
from inferline.runtimes import Runtime

class Scaler(Runtime):
    factor = FACTOR
"""


@pytest.mark.parametrize(
    "implementation",
    ["sklearn", "mlserver_sklearn.SKLearnModel", "inferline.runtimes.sklearn.SKLearnRuntime"],
)
def test_sklearn_names_resolve_to_our_runtime(implementation):
    assert runtime_class(ModelSettings("m", implementation)) is SKLearnRuntime


def test_folder_with_a_joblib_file_is_sklearn(tmp_path):
    (tmp_path / "model.joblib").write_bytes(b"")
    assert runtime_class(ModelSettings("m", folder=tmp_path)) is SKLearnRuntime


def test_custom_runtime_from_the_model_folder_with_sibling_imports(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, factor in ((one, 1), (two, 2)):
        folder.mkdir()
        (folder / "model.py").write_text(CUSTOM)
        (folder / "helper.py").write_text(f"FACTOR = {factor}\n")
    first = runtime_class(ModelSettings("one", "model.Scaler", folder=one))
    second = runtime_class(ModelSettings("two", "model.Scaler", folder=two))
    # Two folders, two `model.py` files: each model gets its own module.
    assert first is not second
    assert first.__module__ != second.__module__


@pytest.mark.parametrize(
    ("implementation", "code", "error", "message"),
    [
        ("", None, InvalidModelURI, "names no 'implementation'"),
        ("Scaler", None, ModelLoadError, "must be 'module.ClassName'"),
        ("model.Missing", "x = 1\n", ModelLoadError, "not a subclass"),
        ("model.Scaler", "raise ValueError('bad code')\n", ModelLoadError, "ValueError: bad code"),
        ("no_such_module.Model", None, ModelLoadError, "cannot import 'no_such_module'"),
    ],
)
def test_bad_implementations_name_the_problem(tmp_path, implementation, code, error, message):
    if code is not None:
        (tmp_path / "model.py").write_text(code)
    with pytest.raises(error, match=message):
        runtime_class(ModelSettings("m", implementation, folder=tmp_path))
