"""The artifact cache: keyed by URI and version, written whole or not at all."""

import json
import multiprocessing
import time

import pytest

from inferline.storage.cache import ArtifactCache, cache_dir, without_password


def write_model(folder, body=b"weights"):
    (folder / "iris").mkdir()
    (folder / "iris" / "model.joblib").write_bytes(body)
    return folder / "iris"


def test_the_root_is_the_environment_variable_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("INFERLINE_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("INFERLINE_CACHE_DIR")
    assert cache_dir().parts[-3:] == (".cache", "inferline", "artifacts")


def test_an_entry_is_filled_once_per_version(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def fill(folder):
        calls.append(folder)
        return write_model(folder)

    first = cache.get("s3://b/iris", "v1", fill)
    assert first.name == "iris" and (first / "model.joblib").read_bytes() == b"weights"
    assert cache.get("s3://b/iris", "v1", fill) == first
    assert len(calls) == 1
    second = cache.get("s3://b/iris", "v2", fill)
    assert second != first and len(calls) == 2
    assert cache.get("s3://b/other", "v1", fill) not in (first, second)
    meta = json.loads((first.parents[1] / "meta.json").read_text())
    assert meta["uri"] == "s3://b/iris" and meta["version"] == "v1"
    assert (first.parents[2] / "uri.txt").read_text() == "s3://b/iris\n"


def test_a_failed_fill_leaves_nothing(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken(folder):
        write_model(folder)
        raise RuntimeError("connection dropped")

    with pytest.raises(RuntimeError):
        cache.get("s3://b/iris", "v1", broken)
    assert cache.latest("s3://b/iris") is None
    leftovers = [p.name for p in cache.uri_dir("s3://b/iris").iterdir() if p.is_dir()]
    assert leftovers == []
    assert cache.get("s3://b/iris", "v1", write_model).exists()


def test_latest_is_the_last_version_fetched(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert cache.latest("s3://b/iris") is None
    cache.get("s3://b/iris", "v1", lambda f: write_model(f, b"one"))
    time.sleep(0.02)
    newest = cache.get("s3://b/iris", "v2", lambda f: write_model(f, b"two"))
    assert cache.latest("s3://b/iris") == newest


def _fill_in_process(root, results):
    def fill(folder):
        results.put("filled")
        time.sleep(0.3)
        return write_model(folder)

    from pathlib import Path

    results.put(str(ArtifactCache(Path(root)).get("s3://b/iris", "v1", fill)))


def test_processes_wait_for_one_download(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_fill_in_process, args=(tmp_path, results)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    answers = [results.get(timeout=5) for _ in range(4)]
    assert answers.count("filled") == 1
    assert len({a for a in answers if a != "filled"}) == 1


def test_passwords_are_taken_out_of_uris():
    assert (
        without_password("https://me:pw@host:8080/m.tar.gz?x=1") == "https://host:8080/m.tar.gz?x=1"
    )
    assert without_password("s3://bucket/iris") == "s3://bucket/iris"
