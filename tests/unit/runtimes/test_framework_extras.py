"""The framework runtimes are optional extras: the core imports without their libraries, a
server offers a runtime's tag only when its library is there, and Seldon's tags pick them."""

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from inferline.agent.settings import settings_from_spec
from inferline.runtimes import registry

LIBRARIES = ("xgboost", "lightgbm", "onnxruntime", "onnx")
CORE_MODULES = (
    "inferline.server.serve",
    "inferline.agent.serve",
    "inferline.cli.main",
    "inferline.runtimes.xgboost",
    "inferline.runtimes.lightgbm",
    "inferline.runtimes.onnx",
)


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_core_imports_none_of_the_libraries():
    loaded = run_python(f"""
        import sys
        for module in {CORE_MODULES!r}:
            __import__(module)
        print(sorted(name for name in {LIBRARIES!r} if name in sys.modules))
    """)
    assert loaded == "[]"


def test_the_core_runs_without_the_libraries():
    # A None entry in sys.modules makes `import name` fail, as if the library were not installed.
    capabilities = run_python(f"""
        import sys
        for name in {LIBRARIES!r}:
            sys.modules[name] = None
        for module in {CORE_MODULES!r}:
            __import__(module)
        from inferline.agent.serve import DEFAULT_CAPABILITIES
        print(",".join(DEFAULT_CAPABILITIES))
    """)
    offered = capabilities.split(",")
    assert {"inferline", "mlserver", "python"} <= set(offered)
    assert not {"xgboost", "lightgbm", "onnx"} & set(offered)


def test_tags_are_offered_only_for_installed_libraries(monkeypatch):
    installed = {"sklearn", "onnxruntime"}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: real_find_spec("json") if name in installed else None,
    )
    assert registry.installed_runtime_tags() == ["sklearn", "onnx"]


@pytest.mark.parametrize(
    ("tag", "implementation"),
    [("xgboost", registry.XGBOOST), ("lightgbm", registry.LIGHTGBM), ("onnx", registry.ONNX)],
)
def test_seldon_requirements_pick_the_runtime(tmp_path, tag, implementation):
    spec = {"storageUri": str(tmp_path), "requirements": [tag]}
    assert settings_from_spec("m", 1, spec).implementation == implementation


def test_model_settings_implementation_wins_over_tags(tmp_path):
    (tmp_path / "model-settings.json").write_text(
        '{"name": "m", "implementation": "mlserver_xgboost.XGBoostModel"}'
    )
    spec = {"storageUri": str(tmp_path), "requirements": ["lightgbm"]}
    settings = settings_from_spec("m", 1, spec)
    assert registry.runtime_class(settings).__name__ == "XGBoostRuntime"
