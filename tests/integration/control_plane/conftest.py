"""Fixtures for the control-plane tests: real `inferline up` processes and the iris artifact.

Each module starts its own platform through the module-scoped `up_factory`, and all of them are
stopped when the module ends. When a test fails, the tail of every log its module's processes
wrote (the `up` process and its model servers, or the separately started components) is added
to the report. Helpers live in `_platform.py`.
"""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inferline.demo import train_iris

from ._platform import MODULE_LOGS, Up, new_up, tail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for entry in MODULE_LOGS.get(item.module.__name__, []):
            files = sorted(entry.glob("**/*.log")) if entry.is_dir() else [entry]
            for path in files:
                report.sections.append((f"log {path}", tail(path)))


@pytest.fixture(scope="module")
def up_factory(tmp_path_factory, request) -> Iterator[Callable[..., Up]]:
    """`up_factory(servers, workers=1, front=False)`: a started `inferline up`; every one is
    stopped with the module."""
    started: list[Up] = []

    def factory(servers: int, workers: int = 1, front: bool = False) -> Up:
        platform = new_up(tmp_path_factory, request.module.__name__, servers, workers, front)
        started.append(platform)
        return platform.start()

    yield factory
    for platform in started:
        if platform.proc is not None:
            platform.proc.stop()
        platform.http.close()


@pytest.fixture(scope="session")
def iris_artifact(tmp_path_factory) -> Path:
    """The iris classifier in MLServer's format (model.joblib + model-settings.json)."""
    return train_iris(tmp_path_factory.mktemp("artifacts") / "iris")


@pytest.fixture(scope="session")
def iris_artifact_copy(iris_artifact, tmp_path_factory) -> Path:
    """The same model in another folder: a different storageUri, hence a new model version."""
    target = tmp_path_factory.mktemp("artifacts-copy") / "iris"
    shutil.copytree(iris_artifact, target)
    return target
