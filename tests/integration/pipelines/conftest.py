"""Fixtures for the pipeline tests: one real `inferline up --servers 1` per module, and the local
stand-ins for the models Seldon Core 2's pipeline samples use.

Each module starts its platform through the module-scoped `up_factory`; it is stopped with SIGINT
when the module ends. When a test fails, the tail of its module's `up` log and of every model
server log is added to the report. Helpers live in `_platform.py`.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inferline.examples import PIPELINE_MODELS, write_runtime_model

from ._platform import MODULE_LOGS, Up, new_up, tail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for path in MODULE_LOGS.get(item.module.__name__, []):
            files = [path, *sorted((path.parent / "data" / "logs").glob("*.log"))]
            for log_file in dict.fromkeys(files):
                report.sections.append((f"log {log_file}", tail(log_file)))


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    """The samples' models as local folders: root/tfsimple, root/add10, root/mul10, ...

    Only the pipeline models of `inferline.examples.EXAMPLES` (the iris example it also
    writes needs training, and no pipeline here uses it)."""
    root = tmp_path_factory.mktemp("models")
    for name, class_name in PIPELINE_MODELS.items():
        write_runtime_model(root / name, class_name)
    return root


@pytest.fixture(scope="module")
def up_factory(tmp_path_factory, request) -> Iterator[Callable[..., Up]]:
    """`up_factory()`: a started `inferline up --servers 1`; all are stopped with the module."""
    started: list[Up] = []

    def factory(servers: int = 1) -> Up:
        platform = new_up(tmp_path_factory, request.module.__name__, servers)
        started.append(platform)
        return platform.start()

    yield factory
    for platform in started:
        platform.stop()
        platform.http.close()
