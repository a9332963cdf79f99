import json

import pytest

from inferline.protocol.errors import BadRequest, InvalidModelURI
from inferline.runtimes.settings import parse_settings, read_settings

# MLServer's documented example, unchanged.
MLSERVER_SETTINGS = {
    "name": "mnist-svm",
    "implementation": "mlserver_sklearn.SKLearnModel",
    "max_batch_size": 8,
    "max_batch_time": 0.5,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
    "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
    "parameters": {
        "uri": "./model.joblib",
        "version": "v0.1.0",
        "content_type": "np",
        "environment_tarball": "./env.tar.gz",
        "extra": {"threads": 2},
    },
    "parallel_workers": 1,
}


def test_mlserver_settings_are_read_unchanged(tmp_path):
    (tmp_path / "model-settings.json").write_text(json.dumps(MLSERVER_SETTINGS))
    settings = read_settings(tmp_path)
    assert settings.name == "mnist-svm"
    assert settings.implementation == "mlserver_sklearn.SKLearnModel"
    assert settings.uri == "./model.joblib" and settings.version == "v0.1.0"
    assert settings.extra == {"threads": 2} and settings.content_type == "np"
    assert (settings.max_batch_size, settings.max_batch_time) == (8, 0.5)
    assert settings.inputs[0].shape == [-1, 64] and settings.outputs[0].datatype == "INT64"
    assert settings.folder == tmp_path


def test_name_defaults_to_the_folder(tmp_path):
    assert parse_settings({}, tmp_path / "income").name == "income"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"name": "m", "implmentation": "x"}, "unknown field 'implmentation'"),
        ({"name": "m", "parameters": {"uri": "a", "urii": "b"}}, "unknown field 'parameters.urii'"),
        ({"name": "m", "inputs": [{"name": "x", "datatype": "FLOAT"}]}, "unknown datatype 'FLOAT'"),
        ({"name": "m", "max_batch_size": "many"}, "must be numbers"),
        ([], "must be a JSON object"),
    ],
)
def test_bad_settings_name_the_problem(doc, message):
    with pytest.raises(BadRequest, match=message):
        parse_settings(doc, None)


def test_unreadable_settings(tmp_path):
    with pytest.raises(InvalidModelURI):
        read_settings(tmp_path)
    (tmp_path / "model-settings.json").write_text("{oops")
    with pytest.raises(BadRequest, match="not valid JSON"):
        read_settings(tmp_path)
