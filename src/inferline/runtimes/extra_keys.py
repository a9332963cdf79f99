"""How the monitoring runtimes (outlier, drift, explainer) read `parameters.extra`.

Seldon Core 2 writes a Model's free `parameters` list into `parameters.extra`, next to the keys
the agent itself writes, so `extra` may hold keys meant for someone else: those are logged and
ignored. A key that is nearly one of the runtime's own is taken for a misspelling and fails the
load with a did-you-mean, since silently ignoring `bach_size` would serve a wrong model.

Seldon's parameter values are always strings (`value: "20"`); a string that reads as JSON
(a number, true/false, null, an object or a list) is taken as that value, as MLServer's pydantic
settings would coerce it, so `batch_size: "20"` means 20.
"""

import difflib
import logging
from collections.abc import Iterable
from typing import Any

import orjson

from inferline.protocol.errors import ModelLoadError

log = logging.getLogger(__name__)

# How alike a key must be to a known one to count as its misspelling (difflib's ratio):
# `bach_size` / `batch_size` is 0.95, while a different setting that shares a word, like
# alibi-detect's `init_parameters` against `predict_parameters`, stays below it.
MISSPELLING_CUTOFF = 0.8


def read_extra(
    extra: dict[str, Any], known: Iterable[str], model: str, runtime: str
) -> dict[str, Any]:
    """The keys of `extra` this runtime reads, their string values decoded; warns about the rest.

    Raises ModelLoadError for a key that looks like a misspelling of a known one.
    """
    known = set(known)
    kept: dict[str, Any] = {}
    for key, value in extra.items():
        if key in known:
            kept[key] = decode_value(value)
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=MISSPELLING_CUTOFF)
        if close:
            raise ModelLoadError(
                f"model '{model}': unknown key 'extra.{key}' (did you mean '{close[0]}'?)"
            )
        log.warning(
            "model %s: ignoring parameters.extra key '%s': not a setting of the %s runtime "
            "(its settings: %s)",
            model, key, runtime, ", ".join(sorted(known)),
        )  # fmt: skip
    return kept


def decode_value(value: Any) -> Any:
    """A string holding a JSON number, boolean, null, object or list as that value; anything
    else unchanged (so `"ks"` stays the string it is)."""
    if not isinstance(value, str):
        return value
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    return value if isinstance(decoded, str) else decoded
