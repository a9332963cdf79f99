"""What the runtimes share: finding their files, importing their optional libraries with an
error that names the extra, and turning a request into a row matrix."""

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest, InvalidModelURI, ModelLoadError
from inferline.protocol.types import InferenceRequest, TensorMetadata
from inferline.runtimes.settings import ModelSettings


def require(module: str, extra: str, model: str, why: str) -> ModuleType:
    """Import an optional library, or fail loading with the `pip install` line that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(
            f"model '{model}': {why} needs the '{module.split('.')[0]}' package, which is not "
            f'installed ({exc}); install it with: pip install "inferline[{extra}]"'
        ) from None


def find_file(path: Path, names: tuple[str, ...], model: str) -> Path:
    """`path` itself when it is a file, else the first of `names` inside it."""
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise InvalidModelURI(f"model '{model}': no {', '.join(names)} in {path}")


def load_numpy(path: Path, model: str) -> np.ndarray:
    try:
        # allow_pickle=False: a reference or background file is data, never code.
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model '{model}': cannot read {path}: {exc}") from None


def rows(request: InferenceRequest, model: str) -> np.ndarray:
    """The request as a float matrix, one row per instance.

    One input is the batch: [N] is N instances of one feature, [N, F] is used as it is, and
    anything with more dimensions (images) is flattened to [N, F]. Several inputs are one group
    of feature columns each, joined side by side (as the scikit-learn runtime joins them).
    """
    if not request.inputs:
        raise BadRequest(f"model '{model}': the request has no inputs")
    columns = []
    for tensor in request.inputs:
        data = tensor.data
        if tensor.datatype == "BYTES" or data.dtype.kind not in "biuf":
            raise BadRequest(
                f"model '{model}': input '{tensor.name}' has datatype {tensor.datatype}; "
                "it needs numbers"
            )
        if data.ndim == 0:
            raise BadRequest(
                f"model '{model}': input '{tensor.name}' has shape []; it needs [N, ...]"
            )
        columns.append(data.reshape(data.shape[0], -1))
    if len({c.shape[0] for c in columns}) > 1:
        raise BadRequest(
            f"model '{model}': all inputs must have the same first dimension (the batch size)"
        )
    matrix = columns[0] if len(columns) == 1 else np.hstack(columns)
    return matrix.astype(np.float64, copy=False)


def check_width(matrix: np.ndarray, width: int, model: str, against: str) -> None:
    if matrix.shape[1] != width:
        raise BadRequest(
            f"model '{model}': each instance has {matrix.shape[1]} features but the {against} "
            f"has {width}"
        )


def declared(*tensors: tuple[str, str, list[int]]) -> list[TensorMetadata]:
    return [TensorMetadata(name, datatype, shape) for name, datatype, shape in tensors]


# --- the tabular runtimes (scikit-learn, xgboost, lightgbm) ----------------------------------


def tabular_features(request: InferenceRequest, settings: ModelSettings, n_features: int) -> Any:
    """The feature matrix, read as the scikit-learn runtime reads it.

    One input is the matrix (a 1-D input is one feature column); several inputs are one column
    each; a `pd` request is a DataFrame. The column count is checked here so a wrong request gets
    a plain message rather than the library's stack trace.
    """
    content_type = request.parameters.get("content_type") or settings.content_type
    if content_type in ("pd", "pd_json"):
        frame = codecs.decode_request(request, "pd")
        _check_columns(frame.shape[1], n_features, settings.name)
        return frame
    if not request.inputs:
        raise BadRequest(f"model '{settings.name}' needs at least one input")
    for tensor in request.inputs:
        if tensor.data.ndim == 0:
            raise BadRequest(f"input '{tensor.name}' is a scalar; send rows of features")
        if tensor.data.dtype.kind not in "biuf":
            raise BadRequest(
                f"input '{tensor.name}' has datatype {tensor.datatype}; model "
                f"'{settings.name}' needs numbers"
            )
    if len(request.inputs) == 1:
        data = request.inputs[0].data
        features = data.reshape(-1, 1) if data.ndim == 1 else data
        if features.ndim != 2:
            raise BadRequest(
                f"input '{request.inputs[0].name}' has shape {list(data.shape)}; model "
                f"'{settings.name}' needs [N, {n_features}] (rows of features)"
            )
    else:
        columns = [t.data.reshape(t.data.shape[0], -1) for t in request.inputs]
        if len({c.shape[0] for c in columns}) > 1:
            raise BadRequest("all inputs must have the same first dimension (the batch size)")
        features = np.hstack(columns)
    _check_columns(features.shape[1], n_features, settings.name)
    return features


def _check_columns(got: int, expected: int, model_name: str) -> None:
    if got != expected:
        raise BadRequest(
            f"model '{model_name}' takes {expected} features per row; the request has {got}"
        )


def first_line(exc: Exception) -> str:
    """The message without the native stack trace xgboost and lightgbm append to it."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
