import pytest

from inferline.protocol.errors import InvalidModelURI
from inferline.storage import fetch


def test_relative_paths_start_at_the_model_folder(tmp_path):
    (tmp_path / "model.joblib").write_bytes(b"x")
    assert fetch("./model.joblib", tmp_path) == tmp_path / "model.joblib"


def test_file_uri_and_absolute_path(tmp_path):
    (tmp_path / "a b.pkl").write_bytes(b"x")
    assert fetch((tmp_path / "a b.pkl").as_uri()) == tmp_path / "a b.pkl"
    assert fetch(str(tmp_path / "a b.pkl"), None) == tmp_path / "a b.pkl"


def test_missing_path_is_invalid_uri(tmp_path):
    with pytest.raises(InvalidModelURI, match="does not exist"):
        fetch("./nothing.joblib", tmp_path)


def test_unknown_scheme_names_it():
    with pytest.raises(
        InvalidModelURI, match=r"no storage back end for .hdfs://.*available: example, file"
    ):
        fetch("hdfs://cluster/model")
