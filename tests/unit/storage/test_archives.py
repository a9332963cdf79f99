"""Unpacking archives: a lone top folder is the model folder; nothing lands outside."""

import io
import tarfile
import zipfile

import pytest

from inferline.protocol.errors import InvalidModelURI
from inferline.storage.archives import archive_stem, unpack


def test_archive_names():
    assert archive_stem("iris.tar.gz") == "iris"
    assert archive_stem("iris.TGZ") == "iris"
    assert archive_stem("iris.zip") == "iris"
    assert archive_stem("model.joblib") is None
    assert archive_stem(".tar.gz") is None


def test_a_member_outside_the_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        bundle.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InvalidModelURI, match="evil"):
        unpack(archive, tmp_path / "out", "evil.tar.gz")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as bundle:
        info = tarfile.TarInfo("model.joblib")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        bundle.addfile(info)
    with pytest.raises(InvalidModelURI, match="link.tar"):
        unpack(archive, tmp_path / "out", "link.tar")


def test_a_lone_top_folder_is_the_model_folder(tmp_path):
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("mnist/1/model.onnx", "graph")
    folder = unpack(archive, tmp_path / "out", "m.zip")
    assert folder == tmp_path / "out" / "mnist"
    assert (folder / "1" / "model.onnx").read_text() == "graph"


def test_a_broken_archive_is_an_invalid_uri(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"not an archive at all")
    with pytest.raises(InvalidModelURI, match="not a readable archive"):
        unpack(archive, tmp_path / "out", "broken.tar.gz")
