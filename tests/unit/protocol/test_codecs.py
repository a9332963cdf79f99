"""Content-type codecs: every encode/decode pair round-trips losslessly; bad data is BadRequest."""

import sys
from datetime import datetime, timedelta, timezone

import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from inferline.protocol import codecs
from inferline.protocol.codecs import (
    Base64Codec,
    DatetimeCodec,
    NumpyCodec,
    NumpyRequestCodec,
    PandasCodec,
    StringCodec,
    StringRequestCodec,
    decode_request,
    decode_tensor,
)
from inferline.protocol.errors import BadRequest
from inferline.protocol.types import InferenceRequest, Tensor

SETTINGS = settings(max_examples=100, deadline=None)

NUMERIC_DTYPES = [
    np.dtype(name)
    for name in (
        "bool",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float16",
        "float32",
        "float64",
    )
]

arrays = st.sampled_from(NUMERIC_DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0))
)

# Fixed offsets strictly inside (-24h, 24h), in whole seconds: real zones never use finer ones, and
# Python 3.11's fromisoformat drops the microseconds of an offset (3.12 keeps them).
fixed_offsets = (
    st.integers(min_value=-(24 * 3600 - 1), max_value=24 * 3600 - 1)
    .map(lambda seconds: timedelta(seconds=seconds))
    .map(timezone)
)

datetimes = st.datetimes(timezones=st.none() | fixed_offsets | st.timezones())


def _tensor(name: str, values: list, datatype: str = "BYTES", **parameters) -> Tensor:
    return Tensor.from_numpy(name, np.array(values, dtype=object), datatype, parameters)


# --- input codecs round-trip ------------------------------------------------------------------


@SETTINGS
@given(arrays)
def test_numpy_round_trip_keeps_dtype_and_shape(array):
    tensor = NumpyCodec.encode("x", array)
    assert tensor.parameters == {"content_type": "np"}
    assert tensor.shape == list(array.shape)
    decoded = decode_tensor(tensor)
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    assert np.array_equal(decoded, array, equal_nan=array.dtype.kind == "f")


def test_numpy_string_arrays_become_bytes():
    tensor = NumpyCodec.encode("x", np.array([["a", "é"]]))
    assert tensor.datatype == "BYTES"
    assert tensor.shape == [1, 2]
    assert decode_tensor(tensor).tolist() == [[b"a", "é".encode()]]


@SETTINGS
@given(st.lists(st.text()))
def test_str_round_trip(strings):
    tensor = StringCodec.encode("s", strings)
    assert (tensor.datatype, tensor.shape) == ("BYTES", [len(strings)])
    assert decode_tensor(tensor) == strings


def test_str_decode_accepts_n_by_1():
    tensor = Tensor.from_numpy(
        "s", np.array([[b"a"], [b"b"]], dtype=object), parameters={"content_type": "str"}
    )
    assert decode_tensor(tensor) == ["a", "b"]


@SETTINGS
@given(st.lists(st.binary()))
def test_base64_round_trip(blobs):
    tensor = Base64Codec.encode("b", blobs)
    # What travels is printable ASCII, safe in a JSON string.
    assert all(raw.isascii() for raw in tensor.data)
    assert decode_tensor(tensor) == blobs


def _wall_clock_and_offset(value: datetime) -> tuple:
    # Exactly what ISO-8601 carries. Plain == is not enough: it ignores naive vs aware differences
    # in the offset and is always False across zones for ambiguous (fold=1) times.
    return value.replace(tzinfo=None, fold=0), value.utcoffset()


@SETTINGS
@given(st.lists(datetimes))
def test_datetime_round_trip(values):
    decoded = decode_tensor(DatetimeCodec.encode("t", values))
    assert [_wall_clock_and_offset(v) for v in decoded] == [
        _wall_clock_and_offset(v) for v in values
    ]
    assert [v.tzinfo is None for v in decoded] == [v.tzinfo is None for v in values]


@SETTINGS
@given(st.lists(st.datetimes(timezones=st.none() | fixed_offsets)))
def test_datetime_round_trip_fixed_offsets_is_equal(values):
    decoded = DatetimeCodec.decode(DatetimeCodec.encode("t", values))
    assert decoded == values
    assert [v.tzinfo for v in decoded] == [v.tzinfo for v in values]


# --- pandas -----------------------------------------------------------------------------------

_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_NAT = np.iinfo(np.int64).min


@st.composite
def datetime_columns(draw, rows: int) -> pd.Series:
    unit = draw(st.sampled_from(list(_PER_SECOND)))
    bound = 2 * 10**9 * _PER_SECOND[unit]  # about 1907 to 2033, in range for every unit
    ticks = draw(st.lists(st.integers(-bound, bound) | st.just(_NAT), min_size=rows, max_size=rows))
    series = pd.Series(np.array(ticks, dtype=np.int64).view(f"datetime64[{unit}]"))
    zone = draw(st.sampled_from([None, "UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]))
    return series if zone is None else series.dt.tz_localize("UTC").dt.tz_convert(zone)


@st.composite
def frames(draw) -> pd.DataFrame:
    rows = draw(st.integers(0, 6))
    kinds = draw(st.lists(st.sampled_from(["numeric", "str", "datetime"]), min_size=1, max_size=5))
    columns = {}
    for index, kind in enumerate(kinds):
        if kind == "numeric":
            dtype = draw(st.sampled_from(NUMERIC_DTYPES))
            column = pd.Series(draw(hnp.arrays(dtype, rows)))
        elif kind == "str":
            column = draw(st.lists(st.text(), min_size=rows, max_size=rows))
        else:
            column = draw(datetime_columns(rows))
        columns[f"{kind}{index}"] = column
    return pd.DataFrame(columns)


@SETTINGS
@given(frames())
def test_pandas_round_trip(df):
    request = PandasCodec.encode_request(df)
    assert request.parameters == {"content_type": "pd"}
    assert [tensor.name for tensor in request.inputs] == list(df.columns)
    assert all(tensor.shape == [len(df)] for tensor in request.inputs)
    assert_frame_equal(decode_request(request), df)


@SETTINGS
@given(frames())
def test_pandas_response_round_trip(df):
    response = PandasCodec.encode_response("model", df, model_version="2")
    assert response.model_version == "2"
    assert_frame_equal(PandasCodec.decode_response(response), df)


def test_pandas_column_content_types():
    df = pd.DataFrame(
        {
            "i": np.array([1, 2], dtype=np.int32),
            "b": [True, False],
            "s": ["x", "y"],
            "t": pd.to_datetime(["2024-01-01", "2024-06-01"]),
        }
    )
    request = PandasCodec.encode_request(df)
    by_name = {tensor.name: tensor for tensor in request.inputs}
    assert (by_name["i"].datatype, by_name["i"].parameters) == ("INT32", {})
    assert (by_name["b"].datatype, by_name["b"].parameters) == ("BOOL", {})
    assert by_name["s"].datatype == "BYTES"
    assert by_name["s"].parameters["content_type"] == "str"
    assert by_name["t"].parameters["content_type"] == "datetime"
    assert by_name["t"].data.tolist() == [b"2024-01-01T00:00:00", b"2024-06-01T00:00:00"]


def test_pandas_decode_from_plain_v2_client():
    # No pandas_dtype hints, [N, 1] shapes, pd_json alias: what an MLServer client sends.
    request = InferenceRequest(
        [
            Tensor.from_numpy("a", np.array([[1.5], [2.5]])),
            _tensor("s", [[b"x"], [b"y"]], content_type="str"),
            _tensor(
                "t",
                [b"2024-01-01T00:00:00+01:00", b"2024-01-02T00:00:00+01:00"],
                content_type="datetime",
            ),
        ],
        parameters={"content_type": "pd_json"},
    )
    df = decode_request(request)
    assert df["a"].tolist() == [1.5, 2.5]
    assert df["s"].tolist() == ["x", "y"]
    assert df["t"].iloc[0] == pd.Timestamp("2024-01-01T00:00:00+01:00")


def test_pandas_rejects_ragged_and_duplicate_columns():
    ragged = InferenceRequest(
        [Tensor.from_numpy("a", np.arange(2)), Tensor.from_numpy("b", np.arange(3))]
    )
    with pytest.raises(BadRequest, match="'b' has 3 rows but tensor 'a' has 2"):
        PandasCodec.decode_request(ragged)
    duplicate = InferenceRequest([Tensor.from_numpy("a", np.arange(2))] * 2)
    with pytest.raises(BadRequest, match="'a' appears twice"):
        PandasCodec.decode_request(duplicate)


def test_pandas_bad_datetime_column_names_tensor():
    tensor = _tensor("when", [b"yesterday"], content_type="datetime", pandas_dtype="datetime64[ns]")
    with pytest.raises(BadRequest, match="'when'"):
        PandasCodec.decode_request(InferenceRequest([tensor]))


def test_pandas_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` raise ImportError
    request = InferenceRequest([Tensor.from_numpy("a", np.arange(2))])
    with pytest.raises(ImportError, match=r"pip install inferline\[pandas\]"):
        PandasCodec.decode_request(request)


# --- request codecs and dispatch ----------------------------------------------------------------


def test_numpy_and_str_request_codecs():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    request = NumpyRequestCodec.encode_request(array)
    assert request.parameters == {"content_type": "np"}
    assert np.array_equal(decode_request(request), array)
    request = StringRequestCodec.encode_request(["a", "b"], name="text")
    assert request.inputs[0].name == "text"
    assert decode_request(request) == ["a", "b"]
    response = StringRequestCodec.encode_response("m", ["ok"])
    assert StringRequestCodec.decode_response(response) == ["ok"]


def test_request_without_content_type_decodes_each_input():
    request = InferenceRequest(
        [Tensor.from_numpy("a", np.arange(3)), StringCodec.encode("s", ["x"])]
    )
    decoded = decode_request(request)
    assert np.array_equal(decoded["a"], np.arange(3))
    assert decoded["s"] == ["x"]


def test_defaults_apply_only_without_explicit_content_type():
    raw = _tensor("s", [b"hi"])
    assert decode_tensor(raw).tolist() == [b"hi"]
    assert decode_tensor(raw, default_content_type="str") == ["hi"]
    explicit = _tensor("s", [b"aGk="], content_type="base64")
    assert decode_tensor(explicit, default_content_type="str") == [b"hi"]
    request = InferenceRequest([raw])
    assert decode_request(request, default_content_type="str") == ["hi"]
    request.parameters["content_type"] = "np"
    assert decode_request(request, default_content_type="str").tolist() == [b"hi"]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["nope", 5, ["np"]])
def test_unknown_tensor_content_type(content_type):
    tensor = _tensor("x", [b"a"], content_type=content_type)
    with pytest.raises(BadRequest, match=r"tensor 'x'.*np, str, base64, datetime"):
        decode_tensor(tensor)


def test_unknown_request_content_type():
    request = InferenceRequest([_tensor("x", [b"a"])], parameters={"content_type": "base64"})
    with pytest.raises(BadRequest, match=r"'base64'.*np, str, pd, pd_json"):
        decode_request(request)


@pytest.mark.parametrize(
    ("content_type", "good", "bad"),
    [
        ("base64", b"aGk=", b"not base64!"),
        ("str", b"fine", b"\xff\xfe"),
        ("datetime", b"2024-01-01", b"2024-13-45"),
    ],
)
def test_undecodable_data_names_the_tensor(content_type, good, bad):
    tensor = _tensor("payload", [good, bad], content_type=content_type)
    with pytest.raises(BadRequest, match=f"tensor 'payload' element 1 is not valid {content_type}"):
        decode_tensor(tensor)


def test_list_codecs_need_bytes_vectors():
    with pytest.raises(BadRequest, match="'n' has datatype INT32"):
        StringCodec.decode(Tensor.from_numpy("n", np.arange(2, dtype=np.int32)))
    square = Tensor.from_numpy("sq", np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object))
    with pytest.raises(BadRequest, match=r"'sq' has shape \[2, 2\]"):
        StringCodec.decode(square)


def test_request_codec_needs_a_tensor():
    with pytest.raises(BadRequest, match="has none"):
        decode_request(InferenceRequest([], parameters={"content_type": "np"}))


def test_encode_rejects_wrong_python_types():
    with pytest.raises(TypeError):
        StringCodec.encode("s", "not a list")
    with pytest.raises(TypeError):
        Base64Codec.encode("b", ["text"])
    with pytest.raises(TypeError):
        DatetimeCodec.encode("t", [datetime(2024, 1, 1).date()])


def test_registries_list_every_content_type():
    assert set(codecs.INPUT_CODECS) == {"np", "str", "base64", "datetime"}
    assert set(codecs.REQUEST_CODECS) == {"np", "str", "pd", "pd_json"}
    assert codecs.request_codec("pd_json") is PandasCodec
