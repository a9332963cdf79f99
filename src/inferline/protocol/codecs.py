"""Content-type codecs: how a tensor or a whole request maps to a Python value.

MLServer's convention (`parameters.content_type`): on a tensor it names an input codec (`np`, `str`,
`base64`, `datetime`), on a request a request codec (`np`, `str`, `pd`/`pd_json`). Request values
win over a model's default. Unlike MLServer, the NumPy codec keeps shapes exactly ([N] stays [N])
so every encode/decode pair round-trips without loss.

pandas is an optional extra, so it is imported only inside the functions that need it.
"""

import base64
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from inferline.protocol.errors import BadRequest
from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor

if TYPE_CHECKING:
    import pandas

# A pd-encoded column records its pandas dtype here when the V2 datatype alone cannot restore it
# (strings, datetimes with their unit and zone name, nullable extension dtypes).
PANDAS_DTYPE = "pandas_dtype"


# --- input (tensor) codecs -------------------------------------------------------------------


class NumpyCodec:
    """`np`: a NumPy array as the tensor of the matching datatype; strings become BYTES."""

    content_type = "np"

    @classmethod
    def encode(cls, name: str, value: Any) -> Tensor:
        return Tensor.from_numpy(
            name, np.asarray(value), parameters={"content_type": cls.content_type}
        )

    @staticmethod
    def decode(tensor: Tensor) -> np.ndarray:
        # Transports already hand over an array shaped to `shape`; nothing to convert.
        return tensor.data


class StringCodec:
    """`str`: a list of str as a BYTES tensor of UTF-8 encodings, shape [N]."""

    content_type = "str"

    @classmethod
    def encode(cls, name: str, value: Iterable[str]) -> Tensor:
        items = _items(value, str, cls.content_type)
        return _bytes_tensor(name, [item.encode() for item in items], cls.content_type)

    @classmethod
    def decode(cls, tensor: Tensor) -> list[str]:
        return _decode_each(tensor, cls.content_type, _utf8)


class Base64Codec:
    """`base64`: a list of bytes carried as their base64 encodings, which any JSON body can hold."""

    content_type = "base64"

    @classmethod
    def encode(cls, name: str, value: Iterable[bytes]) -> Tensor:
        items = _items(value, (bytes, bytearray, memoryview), cls.content_type)
        return _bytes_tensor(name, [base64.b64encode(item) for item in items], cls.content_type)

    @classmethod
    def decode(cls, tensor: Tensor) -> list[bytes]:
        # validate=True: stray characters are an error rather than silently skipped.
        return _decode_each(
            tensor, cls.content_type, lambda raw: base64.b64decode(raw, validate=True)
        )


class DatetimeCodec:
    """`datetime`: a list of datetimes as ISO-8601 strings; naive stays naive, offsets are kept."""

    content_type = "datetime"

    @classmethod
    def encode(cls, name: str, value: Iterable[datetime]) -> Tensor:
        items = _items(value, datetime, cls.content_type)
        return _bytes_tensor(name, [item.isoformat().encode() for item in items], cls.content_type)

    @classmethod
    def decode(cls, tensor: Tensor) -> list[datetime]:
        # A named zone (zoneinfo) comes back as the fixed offset it had: ISO-8601 carries no name.
        return _decode_each(
            tensor, cls.content_type, lambda raw: datetime.fromisoformat(_utf8(raw))
        )


def _items(value: Iterable[Any], kind: type | tuple[type, ...], content_type: str) -> list[Any]:
    # A bare str or bytes is iterable too, and would silently become one element per character.
    if isinstance(value, (str, bytes)):
        raise TypeError(f"content type '{content_type}' encodes a list, not a single {type(value)}")
    items = list(value)
    for item in items:
        if not isinstance(item, kind):
            raise TypeError(f"content type '{content_type}' cannot encode {type(item)}")
    return items


def _bytes_tensor(name: str, items: list[bytes], content_type: str) -> Tensor:
    data = np.fromiter(items, dtype=object, count=len(items))
    return Tensor(name, "BYTES", [len(items)], data, {"content_type": content_type})


def _utf8(raw: bytes) -> str:
    return raw.decode("utf-8")


def _decode_each(tensor: Tensor, content_type: str, parse: Callable[[bytes], Any]) -> list[Any]:
    """Parse every element of a BYTES tensor of shape [N] or [N, 1] (MLServer clients send both)."""
    if tensor.datatype != "BYTES":
        raise BadRequest(
            f"tensor '{tensor.name}' has datatype {tensor.datatype}; "
            f"content type '{content_type}' needs BYTES"
        )
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise BadRequest(
            f"tensor '{tensor.name}' has shape {shape}; "
            f"content type '{content_type}' needs [N] or [N, 1]"
        )
    values = []
    for index, raw in enumerate(tensor.data.reshape(-1)):
        try:
            values.append(parse(raw))
        # UnicodeDecodeError and binascii.Error are ValueErrors; TypeError covers non-bytes data.
        except (ValueError, TypeError) as exc:
            raise BadRequest(
                f"tensor '{tensor.name}' element {index} is not valid {content_type}: {exc}"
            ) from None
    return values


# --- request codecs --------------------------------------------------------------------------


class _FirstTensorCodec:
    """A request codec whose value is its first tensor, read by `input_codec` (as in MLServer)."""

    content_type: str
    input_codec: Any

    @classmethod
    def encode_request(cls, value: Any, name: str = "input-0") -> InferenceRequest:
        tensor = cls.input_codec.encode(name, value)
        return InferenceRequest([tensor], parameters={"content_type": cls.content_type})

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Any:
        return cls.input_codec.decode(_first(request.inputs, "request", cls.content_type))

    @classmethod
    def encode_response(
        cls, model_name: str, value: Any, name: str = "output-0", model_version: str | None = None
    ) -> InferenceResponse:
        tensor = cls.input_codec.encode(name, value)
        return InferenceResponse(
            model_name, [tensor], model_version, parameters={"content_type": cls.content_type}
        )

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Any:
        return cls.input_codec.decode(_first(response.outputs, "response", cls.content_type))


def _first(tensors: list[Tensor], where: str, content_type: str) -> Tensor:
    if not tensors:
        raise BadRequest(f"content type '{content_type}' needs a tensor but the {where} has none")
    return tensors[0]


class NumpyRequestCodec(_FirstTensorCodec):
    content_type = "np"
    input_codec = NumpyCodec


class StringRequestCodec(_FirstTensorCodec):
    content_type = "str"
    input_codec = StringCodec


class PandasCodec:
    """`pd`: a DataFrame as one tensor per column, named after it. The index is not carried."""

    content_type = "pd"

    @classmethod
    def encode_request(cls, df: "pandas.DataFrame") -> InferenceRequest:
        return InferenceRequest(_encode_columns(df), parameters={"content_type": cls.content_type})

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> "pandas.DataFrame":
        return _decode_columns(request.inputs)

    @classmethod
    def encode_response(
        cls, model_name: str, df: "pandas.DataFrame", model_version: str | None = None
    ) -> InferenceResponse:
        return InferenceResponse(
            model_name,
            _encode_columns(df),
            model_version,
            parameters={"content_type": cls.content_type},
        )

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> "pandas.DataFrame":
        return _decode_columns(response.outputs)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "the 'pd' content type needs pandas: pip install inferline[pandas]"
        ) from None
    return pandas


def _encode_columns(df: "pandas.DataFrame") -> list[Tensor]:
    # Tensor names are strings, so a non-str column label comes back as its str().
    return [_encode_column(str(label), series) for label, series in df.items()]


def _encode_column(name: str, series: "pandas.Series") -> Tensor:
    dtype = series.dtype
    if dtype.kind == "M":
        if getattr(dtype, "tz", None) is not None:
            # Written in UTC: historic local offsets can have seconds (LMT +00:09:21), which
            # pandas' ISO parser rejects; the zone itself travels in the pandas_dtype hint.
            series = series.dt.tz_convert("UTC")
        # Timestamp.isoformat keeps nanoseconds (datetime.isoformat would drop them); NaT -> "NaT".
        strings = [ts.isoformat().encode() for ts in series]
        tensor = _bytes_tensor(name, strings, DatetimeCodec.content_type)
    else:
        values = series.to_numpy()
        if values.dtype.kind in "biuf":
            tensor = Tensor.from_numpy(name, values)
        elif all(isinstance(v, str) for v in values):
            tensor = StringCodec.encode(name, values)
        elif all(isinstance(v, bytes) for v in values):
            tensor = Tensor.from_numpy(name, values)  # raw BYTES, no content type
        else:
            raise TypeError(
                f"column '{name}' of dtype {dtype} holds values other than numbers, bools, "
                "str, bytes or datetimes (missing values included)"
            )
    if not (isinstance(dtype, np.dtype) and dtype.kind in "biuf"):
        tensor.parameters[PANDAS_DTYPE] = str(dtype)
    return tensor


def _decode_columns(tensors: list[Tensor]) -> "pandas.DataFrame":
    pd = _pandas()
    columns: dict[str, pandas.Series] = {}
    for tensor in tensors:
        if tensor.name in columns:
            raise BadRequest(
                f"tensor '{tensor.name}' appears twice; a DataFrame needs unique names"
            )
        column = _decode_column(pd, tensor)
        if columns:
            first_name, first = next(iter(columns.items()))
            if len(column) != len(first):
                raise BadRequest(
                    f"tensor '{tensor.name}' has {len(column)} rows but tensor '{first_name}' "
                    f"has {len(first)}; DataFrame columns must be the same length"
                )
        columns[tensor.name] = column
    return pd.DataFrame(columns)


def _decode_column(pd: Any, tensor: Tensor) -> "pandas.Series":
    hint = tensor.parameters.get(PANDAS_DTYPE)
    try:
        if hint is not None and tensor.parameters.get("content_type") == DatetimeCodec.content_type:
            return _decode_datetime_column(pd, tensor, pd.api.types.pandas_dtype(hint))
        series = pd.Series(_column_values(tensor))
        return series if hint is None else series.astype(hint)
    except (ValueError, TypeError) as exc:
        raise BadRequest(
            f"tensor '{tensor.name}' cannot become a column of dtype {hint}: {exc}"
        ) from None


def _column_values(tensor: Tensor) -> Any:
    values = decode_tensor(tensor)
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            raise BadRequest(f"tensor '{tensor.name}' has shape []; a column needs [N]")
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]  # the [N, 1] that MLServer clients send
        elif values.ndim > 1:
            values = list(values)  # one sub-array per row
    return values


def _decode_datetime_column(pd: Any, tensor: Tensor, dtype: Any) -> "pandas.Series":
    # pandas parses nanoseconds, which datetime.fromisoformat cannot. Zoned columns are parsed as
    # UTC (what we write; other clients' per-row offsets may differ with DST), then converted back.
    strings = pd.Series(_decode_each(tensor, DatetimeCodec.content_type, _utf8), dtype=object)
    aware = isinstance(dtype, pd.DatetimeTZDtype)
    values = pd.to_datetime(strings, format="ISO8601", utc=aware)
    if aware:
        values = values.dt.tz_convert(dtype.tz)
    return values.astype(dtype)


# --- registries and dispatch -----------------------------------------------------------------

INPUT_CODECS: dict[str, Any] = {
    codec.content_type: codec for codec in (NumpyCodec, StringCodec, Base64Codec, DatetimeCodec)
}

REQUEST_CODECS: dict[str, Any] = {
    "np": NumpyRequestCodec,
    "str": StringRequestCodec,
    "pd": PandasCodec,
    "pd_json": PandasCodec,
}


def input_codec(content_type: str, tensor_name: str | None = None) -> Any:
    """The input codec for `content_type`, or BadRequest listing the known ones."""
    where = f" on tensor '{tensor_name}'" if tensor_name is not None else ""
    return _lookup(INPUT_CODECS, content_type, f"input content type{where}")


def request_codec(content_type: str) -> Any:
    """The request codec for `content_type`, or BadRequest listing the known ones."""
    return _lookup(REQUEST_CODECS, content_type, "request content type")


def _lookup(registry: dict[str, Any], content_type: Any, what: str) -> Any:
    # isinstance first: a JSON list or object here would not even be hashable.
    if isinstance(content_type, str) and content_type in registry:
        return registry[content_type]
    raise BadRequest(f"unknown {what} {content_type!r}; expected one of {', '.join(registry)}")


def decode_tensor(tensor: Tensor, default_content_type: str | None = None) -> Any:
    """The tensor's value per its own content type, else the default, else its NumPy array."""
    content_type = tensor.parameters.get("content_type") or default_content_type
    if content_type is None:
        return tensor.data
    return input_codec(content_type, tensor.name).decode(tensor)


def decode_request(request: InferenceRequest, default_content_type: str | None = None) -> Any:
    """The request's value per its content type (else the default); without one, a dict of
    input name -> value, each decoded per its own content type."""
    content_type = request.parameters.get("content_type") or default_content_type
    if content_type is None:
        return {tensor.name: decode_tensor(tensor) for tensor in request.inputs}
    return request_codec(content_type).decode_request(request)
