"""Drift detection with scipy's two-sample tests, answering as MLServer's alibi-detect runtime
answers for a drift detector, so a pipeline cannot tell which one it calls.

The model folder holds the reference data as `x_ref.npy` (numbers, [M, F]; more dimensions are
flattened to F features) and, optionally, `drift-settings.json`; `parameters.extra` in
model-settings.json overrides the file key by key (keys of `extra` that are not settings here are
logged and ignored, near-misses of one are refused, and string values such as Seldon's Model
`parameters` are read as JSON: see `extra_keys`). Settings:

- `test`: `ks` (default; per feature two-sample Kolmogorov-Smirnov, as alibi-detect's KSDrift),
  `chi2` (per feature chi-square test of category counts, as ChiSquareDrift) or `tabular` (chi2
  for the categorical features, KS for the others, as TabularDrift);
- `p_val`: the significance level, default 0.05;
- `correction`: `bonferroni` (default: drift when any feature's p-value is below p_val / F) or
  `fdr` (Benjamini-Hochberg at level p_val);
- `categories_per_feature`: {feature index: None, a count N (categories 0..N-1) or a list of
  values}; for `tabular` the categorical features (a plain list of indices also works), for
  `chi2` optional (features not named get the categories seen in x_ref). Categories seen only in
  a test batch are counted too, as alibi-detect counts them;
- `alternative`: for KS, `two-sided` (default), `less` or `greater`;
- `batch_size`: see below;
- `predict_parameters`: alibi-detect's `drift_type` (`batch`, default, or `feature`: one decision
  per feature at p_val, uncorrected), `return_p_val`, `return_distance` (both default true).

Outputs, in alibi-detect's order: `is_drift` (INT64 [1]; [F] with drift_type feature), `distance`
(FP64 [F], the KS statistic or the chi-square statistic), `p_val` (FP64 [F]) and `threshold`
(FP64 [1], the level a p-value was compared with). The response carries `parameters`
`{"detector_type": "drift", "detector_method": <alibi-detect class the test matches>}`.

With `batch_size = N` requests are buffered: each of the first N - 1 gets an empty response
(`outputs: []`) at once, and the N-th runs the test on all N requests' rows together, then the
buffer starts again. This is MLServer's documented behaviour for its alibi-detect runtime, and
unlike adaptive batching nobody waits: earlier callers simply get no result. In a Seldon
pipeline the step's `batch: {size: N}` does the same job before the request reaches the model,
so set one or the other: both would wait for N batches of N.

Each `is_drift` value a test run reports is observed in the `seldon_model_drift` histogram
(labels model_name, model_version), as MLServer's alibi-detect runtime logs it; an empty answer
while buffering observes nothing.
"""

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from inferline import metrics
from inferline.protocol import codecs
from inferline.protocol.errors import BadRequest, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse, ModelMetadata
from inferline.runtimes.base import Runtime
from inferline.runtimes.common import (
    check_width,
    declared,
    find_file,
    load_numpy,
    require,
    rows,
)
from inferline.runtimes.extra_keys import read_extra

DETECTOR_TYPE = "drift"
REFERENCE_FILE = "x_ref.npy"
SETTINGS_FILE = "drift-settings.json"
# The alibi-detect detector whose test each of ours runs; sent as `detector_method`.
METHODS = {"ks": "KSDrift", "chi2": "ChiSquareDrift", "tabular": "TabularDrift"}
CORRECTIONS = ("bonferroni", "fdr")
ALTERNATIVES = ("two-sided", "less", "greater")
DRIFT_TYPES = ("batch", "feature")
KNOWN_KEYS = (
    "test",
    "p_val",
    "correction",
    "alternative",
    "batch_size",
    "categories_per_feature",
    "predict_parameters",
)
# MLServer alibi-detect keys that mean nothing for a stateless test; accepted and ignored.
_IGNORED_KEYS = {"state_save_freq"}


# --- settings ----------------------------------------------------------------------------------


@dataclass(slots=True)
class DriftSettings:
    test: str = "ks"
    p_val: float = 0.05
    correction: str = "bonferroni"
    alternative: str = "two-sided"
    batch_size: int = 0
    # Feature index -> None (the categories x_ref has) or the list of possible values.
    categories_per_feature: dict[int, list[float] | None] = field(default_factory=dict)
    drift_type: str = "batch"
    return_p_val: bool = True
    return_distance: bool = True


def parse_drift_settings(doc: dict[str, Any], model: str) -> DriftSettings:
    """Settings from the merged drift-settings.json and `extra`; errors name the key."""

    def fail(message: str) -> ModelLoadError:
        return ModelLoadError(f"model '{model}': drift settings: {message}")

    known = set(KNOWN_KEYS)
    unknown = sorted(set(doc) - known - _IGNORED_KEYS)
    if unknown:
        raise fail(f"unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    settings = DriftSettings()

    def choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise fail(f"'{key}' must be one of {', '.join(allowed)}, not {value!r}")
        return value

    settings.test = choice("test", doc.get("test", settings.test), tuple(METHODS))
    settings.correction = choice(
        "correction", doc.get("correction", settings.correction), CORRECTIONS
    )
    settings.alternative = choice(
        "alternative", doc.get("alternative", settings.alternative), ALTERNATIVES
    )
    p_val = doc.get("p_val", settings.p_val)
    if isinstance(p_val, bool) or not isinstance(p_val, (int, float)) or not 0 < p_val < 1:
        raise fail(f"'p_val' must be a number between 0 and 1, not {p_val!r}")
    settings.p_val = float(p_val)
    batch_size = doc.get("batch_size") or 0
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise fail(f"'batch_size' must be a whole number of requests, not {batch_size!r}")
    settings.batch_size = batch_size
    settings.categories_per_feature = _categories(doc.get("categories_per_feature"), fail)

    predict_parameters = doc.get("predict_parameters") or {}
    if not isinstance(predict_parameters, dict):
        raise fail("'predict_parameters' must be an object")
    unknown = sorted(set(predict_parameters) - {"drift_type", "return_p_val", "return_distance"})
    if unknown:
        raise fail(f"unknown key 'predict_parameters.{unknown[0]}'")
    settings.drift_type = choice(
        "predict_parameters.drift_type",
        predict_parameters.get("drift_type", settings.drift_type),
        DRIFT_TYPES,
    )
    settings.return_p_val = bool(predict_parameters.get("return_p_val", True))
    settings.return_distance = bool(predict_parameters.get("return_distance", True))
    return settings


def _categories(value: Any, fail) -> dict[int, list[float] | None]:
    if value is None:
        return {}
    if isinstance(value, list):
        value = dict.fromkeys(value)
    if not isinstance(value, dict):
        raise fail("'categories_per_feature' must be an object {feature index: categories}")
    categories: dict[int, list[float] | None] = {}
    for key, spec in value.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise fail(f"'categories_per_feature' key {key!r} is not a feature index") from None
        if spec is None:
            categories[index] = None
        elif isinstance(spec, int) and not isinstance(spec, bool) and spec > 0:
            categories[index] = [float(v) for v in range(spec)]
        elif isinstance(spec, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec
        ):
            categories[index] = [float(v) for v in spec]
        else:
            raise fail(f"'categories_per_feature.{key}' must be null, a count or a list of numbers")
    return categories


# --- the tests ---------------------------------------------------------------------------------


@dataclass(slots=True)
class DriftResult:
    is_drift: np.ndarray  # [1] or, with drift_type feature, [F]
    distance: np.ndarray  # [F]
    p_val: np.ndarray  # [F]
    threshold: float


class DriftTest:
    """The per-feature tests against a fixed reference, and the decision over all features."""

    def __init__(self, x_ref: np.ndarray, settings: DriftSettings, stats: Any):
        self.x_ref = x_ref
        self.settings = settings
        self.stats = stats
        features = x_ref.shape[1]
        if settings.test == "ks":
            categorical: dict[int, list[float] | None] = {}
        elif settings.test == "chi2":
            categorical = {f: settings.categories_per_feature.get(f) for f in range(features)}
        else:
            categorical = dict(settings.categories_per_feature)
        outside = [f for f in categorical if not 0 <= f < features]
        if outside:
            raise ValueError(f"categorical feature {outside[0]} is not one of x_ref's {features}")
        # The categories each categorical feature is counted over (test batches may add more).
        self.categories = {
            f: np.unique(x_ref[:, f]) if values is None else np.asarray(values, dtype=np.float64)
            for f, values in categorical.items()
        }

    def feature_scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = self.x_ref.shape[1]
        p_val = np.empty(features, dtype=np.float64)
        distance = np.empty(features, dtype=np.float64)
        for f in self.categories:
            distance[f], p_val[f] = self._chi2(f, x[:, f])
        numeric = np.array([f for f in range(features) if f not in self.categories], dtype=int)
        if len(numeric):
            distance[numeric], p_val[numeric] = self._ks(self.x_ref[:, numeric], x[:, numeric])
        return distance, p_val

    def _ks(self, reference: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """scipy's two-sample KS test of every column, run once per distinct statistic.

        Images have thousands of features, and scipy's test costs about a millisecond a column
        (its p-value, mostly). The p-value depends only on the statistic and the two sample
        sizes, and with small batches most columns share one of a few hundred statistics, so
        the statistics are found for all columns at once here and scipy runs for one column of
        each.
        """
        m, n = len(reference), len(x)
        both = np.concatenate([reference, x])
        order = np.argsort(both, axis=0, kind="stable")
        from_reference = order < m
        # m * n * (reference CDF - batch CDF) after each value, in integers so that equal
        # statistics compare equal; only after the last of equal values, as the CDFs step there.
        gap = np.cumsum(from_reference, axis=0) * n - np.cumsum(~from_reference, axis=0) * m
        values = np.take_along_axis(both, order, axis=0)
        gap[:-1][values[1:] == values[:-1]] = 0  # 0 never changes a maximum: both CDFs end at 1
        alternative = self.settings.alternative
        if alternative == "two-sided":
            statistic = np.abs(gap).max(axis=0)
        else:
            statistic = (gap if alternative == "greater" else -gap).max(axis=0)
        _, columns, group = np.unique(statistic, return_index=True, return_inverse=True)
        distance = np.empty(len(columns), dtype=np.float64)
        p_val = np.empty(len(columns), dtype=np.float64)
        for i, column in enumerate(columns):
            result = self.stats.ks_2samp(
                reference[:, column], x[:, column], alternative=alternative, method="asymp"
            )
            distance[i], p_val[i] = result.statistic, result.pvalue
        return distance[group], p_val[group]

    def _chi2(self, feature: int, column: np.ndarray) -> tuple[float, float]:
        categories = np.union1d(self.categories[feature], np.unique(column))
        reference = self.x_ref[:, feature]
        table = np.vstack(
            [
                [(reference == value).sum() for value in categories],
                [(column == value).sum() for value in categories],
            ]
        )
        # Categories in neither sample (declared but unseen) would make expected counts zero.
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return 0.0, 1.0  # one category in both: nothing can have changed
        result = self.stats.chi2_contingency(table)
        return float(result.statistic), float(result.pvalue)

    def run(self, x: np.ndarray) -> DriftResult:
        distance, p_val = self.feature_scores(x)
        level = self.settings.p_val
        if self.settings.drift_type == "feature":
            return DriftResult((p_val < level).astype(np.int64), distance, p_val, level)
        if self.settings.correction == "bonferroni":
            threshold = level / len(p_val)
            is_drift = bool((p_val < threshold).any())
        else:
            is_drift, threshold = benjamini_hochberg(p_val, level)
        return DriftResult(np.array([int(is_drift)], dtype=np.int64), distance, p_val, threshold)


def benjamini_hochberg(p_val: np.ndarray, q_val: float) -> tuple[bool, float]:
    """Whether any hypothesis is rejected at false discovery rate `q_val`, and the p-value
    threshold used: the largest q*k/n with p_(k) below it, else the smallest one, q/n."""
    n = len(p_val)
    levels = q_val * np.arange(1, n + 1) / n
    below = np.sort(p_val) < levels
    if not below.any():
        return False, float(levels[0])
    return True, float(levels[np.flatnonzero(below).max()])


# --- the runtime -------------------------------------------------------------------------------


class DriftRuntime(Runtime):
    batchable = False  # one answer per test over all rows, and its own request buffering
    drift: DriftTest | None = None
    drift_settings: DriftSettings | None = None

    async def load(self) -> None:
        stats = await asyncio.to_thread(
            require, "scipy.stats", "detect", self.name, "the drift runtime"
        )
        path = self.artifact_path()
        reference_file = find_file(path, (REFERENCE_FILE,), self.name)
        folder = path if path.is_dir() else path.parent
        extra = read_extra(self.settings.extra, {*KNOWN_KEYS, *_IGNORED_KEYS}, self.name, "drift")
        doc = {**_read_settings_file(folder / SETTINGS_FILE, self.name), **extra}
        self.drift_settings = parse_drift_settings(doc, self.name)
        x_ref = load_numpy(reference_file, self.name)
        if x_ref.ndim < 1 or x_ref.shape[0] < 2 or x_ref.dtype.kind not in "biuf":
            raise ModelLoadError(
                f"model '{self.name}': {reference_file.name} must hold at least two rows of "
                f"numbers, not {x_ref.dtype} of shape {list(x_ref.shape)}"
            )
        x_ref = x_ref.reshape(x_ref.shape[0], -1).astype(np.float64, copy=False)
        try:
            self.drift = DriftTest(x_ref, self.drift_settings, stats)
        except ValueError as exc:
            raise ModelLoadError(f"model '{self.name}': drift settings: {exc}") from None
        self._batch: list[np.ndarray] = []
        self._drift_metric = metrics.DRIFT.labels(
            model_name=self.name, model_version=self.version or ""
        )

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        x = rows(request, self.name)
        if x.shape[0] == 0:
            raise BadRequest(f"model '{self.name}': the request has no instances")
        check_width(x, self.drift.x_ref.shape[1], self.name, "reference data (x_ref)")
        batch_size = self.drift_settings.batch_size
        if batch_size:
            # Swapped out before the first await, so concurrent requests never share a batch.
            self._batch.append(x)
            if len(self._batch) < batch_size:
                return InferenceResponse(model_name=self.name, outputs=[])
            x, self._batch = np.vstack(self._batch), []
        result = await asyncio.to_thread(self.drift.run, x)
        for value in result.is_drift:
            self._drift_metric.observe(int(value))
        return InferenceResponse(
            model_name=self.name,
            outputs=self._outputs(result),
            parameters={
                "detector_type": DETECTOR_TYPE,
                "detector_method": METHODS[self.drift_settings.test],
            },
        )

    def _outputs(self, result: DriftResult) -> list:
        settings = self.drift_settings
        outputs = [codecs.NumpyCodec.encode("is_drift", result.is_drift)]
        if settings.return_distance:
            outputs.append(codecs.NumpyCodec.encode("distance", result.distance))
        if settings.return_p_val:
            outputs.append(codecs.NumpyCodec.encode("p_val", result.p_val))
            threshold = np.array([result.threshold], dtype=np.float64)
            outputs.append(codecs.NumpyCodec.encode("threshold", threshold))
        return outputs

    async def unload(self) -> None:
        self._batch = []

    def metadata(self) -> ModelMetadata:
        metadata = super().metadata()
        if not metadata.outputs:
            metadata.outputs = declared(
                ("is_drift", "INT64", [-1]),
                ("distance", "FP64", [-1]),
                ("p_val", "FP64", [-1]),
                ("threshold", "FP64", [1]),
            )
        return metadata


def _read_settings_file(path: Path, model: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ModelLoadError(f"model '{model}': {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelLoadError(f"model '{model}': {path} must hold a JSON object")
    return doc
