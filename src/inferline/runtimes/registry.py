"""From a settings `implementation` string to a runtime class.

Short names (`sklearn`), our class paths and MLServer's class paths all resolve to our runtimes.
Any other `module.ClassName` is custom code: `module` is first looked for as `<module>.py` in the
model's folder (how MLServer finds a `model.py` next to `model-settings.json`), then imported.
"""

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from inferline.protocol.errors import InvalidModelURI, ModelLoadError
from inferline.runtimes.base import Runtime
from inferline.runtimes.settings import ModelSettings

SKLEARN = "inferline.runtimes.sklearn.SKLearnRuntime"
XGBOOST = "inferline.runtimes.xgboost.XGBoostRuntime"
LIGHTGBM = "inferline.runtimes.lightgbm.LightGBMRuntime"
ONNX = "inferline.runtimes.onnx.OnnxRuntime"
ALIBI_DETECT = "inferline.runtimes.alibi_detect.AlibiDetectRuntime"
ALIBI_EXPLAIN = "inferline.runtimes.alibi_explain.AlibiExplainRuntime"

ALIASES = {
    "sklearn": SKLEARN,
    "mlserver_sklearn.SKLearnModel": SKLEARN,
    "outlier": "inferline.runtimes.outlier.OutlierRuntime",
    "drift": "inferline.runtimes.drift.DriftRuntime",
    "explainer": "inferline.runtimes.explainer.ExplainerRuntime",
    "xgboost": XGBOOST,
    "mlserver_xgboost.XGBoostModel": XGBOOST,
    "lightgbm": LIGHTGBM,
    "mlserver_lightgbm.LightGBMModel": LIGHTGBM,
    "onnx": ONNX,
    "alibi-detect": ALIBI_DETECT,
    "mlserver_alibi_detect.AlibiDetectRuntime": ALIBI_DETECT,
    "alibi-explain": ALIBI_EXPLAIN,
    "mlserver_alibi_explain.AlibiExplainRuntime": ALIBI_EXPLAIN,
}

# The module each runtime's library installs, by the capability tag (Seldon's `requirements`)
# that names the runtime: the runtimes are optional extras, so a server offers a tag only when it
# can import that module.
RUNTIME_LIBRARIES = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnx": "onnxruntime",
    "alibi-detect": "alibi_detect",
    "alibi-explain": "alibi",
}

# Artifact file names that identify a model folder with no `implementation` set. The xgboost
# and lightgbm names (model.json, model.txt, model.bst) are too common to say which runtime.
SKLEARN_FILES = ("model.joblib", "model.pkl", "model.pickle")
ONNX_FILES = ("model.onnx",)
_GUESSES = ((SKLEARN_FILES, SKLEARN), (ONNX_FILES, ONNX))


def installed_runtime_tags() -> list[str]:
    """The runtime tags whose library is installed (found without importing it)."""
    return [tag for tag, module in RUNTIME_LIBRARIES.items() if _installed(module)]


def _installed(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    # A folder of that name on sys.path (tests/integration/alibi) is a namespace package, with
    # no origin: not the library.
    return spec is not None and spec.origin is not None


def guess_implementation(folder: Path | None) -> str:
    if folder is not None:
        for files, implementation in _GUESSES:
            if any((folder / f).exists() for f in files):
                return implementation
    return ""


def runtime_class(settings: ModelSettings) -> type[Runtime]:
    implementation = settings.implementation or guess_implementation(settings.folder)
    if not implementation:
        raise InvalidModelURI(
            f"model '{settings.name}' names no 'implementation' and its folder holds no file "
            f"that identifies one (looked for {', '.join(SKLEARN_FILES + ONNX_FILES)})"
        )
    implementation = ALIASES.get(implementation, implementation)
    module_name, _, class_name = implementation.rpartition(".")
    if not module_name:
        raise ModelLoadError(
            f"model '{settings.name}': implementation '{implementation}' must be "
            "'module.ClassName' or one of: " + ", ".join(sorted(ALIASES))
        )
    module = _import(module_name, settings)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise ModelLoadError(
            f"model '{settings.name}': '{implementation}' is not a subclass of "
            "inferline.runtimes.Runtime"
        )
    return cls


def _import(module_name: str, settings: ModelSettings):
    folder = settings.folder
    local = folder / (module_name.replace(".", "/") + ".py") if folder else None
    try:
        if local is not None and local.exists():
            return _import_file(local, folder)
        return importlib.import_module(module_name)
    except Exception as exc:  # the model's own code may fail in any way while importing
        raise ModelLoadError(
            f"model '{settings.name}': cannot import '{module_name}': {type(exc).__name__}: {exc}"
        ) from None


def _import_file(path: Path, folder: Path):
    # A unique module name per file, so two model folders can each have their own `model.py`.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"inferline_custom_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Sibling modules in the model folder are importable from the model's code.
    sys.path.insert(0, str(folder))
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(folder))
    return module
