"""Raw tensor bytes, shared by the REST binary extension and gRPC raw contents."""

import struct

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from inferline.protocol.datatypes import NUMPY_DTYPES
from inferline.protocol.errors import BadRequest
from inferline.protocol.raw import pack_bytes, tensor_from_bytes, tensor_to_bytes, unpack_bytes

SETTINGS = settings(max_examples=60, deadline=None)

FIXED = [name for name in NUMPY_DTYPES if name != "BYTES"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def _objects(values: list, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape if shape is not None else (len(values),))


@st.composite
def bytes_arrays(draw, max_size: int = 12) -> np.ndarray:
    shape = draw(SHAPES)
    count = int(np.prod(shape))
    values = draw(st.lists(st.binary(max_size=max_size), min_size=count, max_size=count))
    return _objects(values, shape)


# --- BYTES packing ----------------------------------------------------------------------------


def test_pack_bytes_is_little_endian_length_then_bytes():
    packed = pack_bytes(_objects([b"ab", b"", b"\x00\xff\x10"]))
    assert packed == (b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x03\x00\x00\x00\x00\xff\x10")


def test_pack_bytes_length_prefix_is_little_endian_for_long_elements():
    element = bytes(range(256)) + b"xy"  # 258 bytes = 0x0102
    packed = pack_bytes(_objects([element]))
    assert packed[:4] == b"\x02\x01\x00\x00"
    assert packed[4:] == element


def test_pack_bytes_encodes_str_elements_as_utf8():
    assert pack_bytes(_objects(["é", "a"])) == b"\x02\x00\x00\x00\xc3\xa9\x01\x00\x00\x00a"


def test_pack_bytes_walks_row_major():
    array = _objects([b"a", b"b", b"c", b"d"], (2, 2))
    assert pack_bytes(array.T) == pack_bytes(_objects([b"a", b"c", b"b", b"d"]))


@SETTINGS
@given(st.lists(st.binary(max_size=20), max_size=8))
def test_pack_bytes_matches_the_wire_format(values):
    expected = b"".join(struct.pack("<I", len(v)) + v for v in values)
    assert pack_bytes(_objects(values)) == expected
    assert unpack_bytes(expected, len(values), "x").tolist() == values


# --- fixed-size datatypes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "values", "expected"),
    [
        ("BOOL", [True, False, True], b"\x01\x00\x01"),
        ("UINT8", [1, 255], b"\x01\xff"),
        ("UINT16", [1, 0xABCD], b"\x01\x00\xcd\xab"),
        ("UINT32", [0x01020304], b"\x04\x03\x02\x01"),
        ("UINT64", [2**64 - 1], b"\xff" * 8),
        ("INT8", [-1, 127], b"\xff\x7f"),
        ("INT16", [-2], b"\xfe\xff"),
        ("INT32", [1, -2], b"\x01\x00\x00\x00\xfe\xff\xff\xff"),
        ("INT64", [-(2**63)], b"\x00" * 7 + b"\x80"),
        ("FP16", [1.0, -2.0], b"\x00\x3c\x00\xc0"),
        ("FP32", [1.0], b"\x00\x00\x80\x3f"),
        ("FP64", [1.0], b"\x00" * 6 + b"\xf0\x3f"),
    ],
)
def test_fixed_size_layout_is_little_endian_native_size(datatype, values, expected):
    array = np.array(values, dtype=NUMPY_DTYPES[datatype])
    assert tensor_to_bytes(array, datatype) == expected
    decoded = tensor_from_bytes(expected, datatype, [len(values)], "x")
    assert decoded.dtype == NUMPY_DTYPES[datatype]
    assert decoded.tolist() == array.tolist()


def test_big_endian_and_non_contiguous_arrays_are_written_little_endian_row_major():
    array = np.arange(6, dtype=">i4").reshape(2, 3).T  # big-endian, Fortran-ordered view
    packed = tensor_to_bytes(array, "INT32")
    assert packed == np.ascontiguousarray(array, dtype="<i4").tobytes()
    assert tensor_from_bytes(packed, "INT32", [3, 2], "x").tolist() == array.tolist()


@SETTINGS
@given(st.sampled_from(FIXED).flatmap(lambda dt: st.tuples(st.just(dt), SHAPES)), st.data())
def test_every_fixed_size_datatype_round_trips_bit_exactly(datatype_and_shape, data):
    datatype, shape = datatype_and_shape
    dtype = NUMPY_DTYPES[datatype]
    array = data.draw(hnp.arrays(dtype, shape))
    packed = tensor_to_bytes(array, datatype)
    assert len(packed) == array.size * dtype.itemsize
    decoded = tensor_from_bytes(packed, datatype, list(shape), "x")
    assert decoded.dtype == dtype
    assert decoded.shape == shape
    # Bit-exact: NaN payloads, signed zeros and infinities all survive.
    assert decoded.tobytes() == array.tobytes()


@SETTINGS
@given(bytes_arrays())
def test_bytes_round_trip_arbitrary_binary(array):
    packed = tensor_to_bytes(array, "BYTES")
    assert len(packed) == 4 * array.size + sum(len(v) for v in array.flat)
    decoded = tensor_from_bytes(packed, "BYTES", list(array.shape), "x")
    assert decoded.dtype == object
    assert decoded.shape == array.shape
    assert all(type(v) is bytes for v in decoded.flat)
    assert decoded.tolist() == array.tolist()


def test_tensor_from_bytes_reads_a_memoryview_slice():
    body = b"HEADER" + np.array([1.5, -2.5], dtype="<f8").tobytes() + b"TAIL"
    view = memoryview(body)[6:-4]
    assert tensor_from_bytes(view, "FP64", [2], "x").tolist() == [1.5, -2.5]
    packed = pack_bytes(_objects([b"q", b"rs"]))
    view = memoryview(b"!!" + packed + b"??")[2:-2]
    assert tensor_from_bytes(view, "BYTES", [2, 1], "x").tolist() == [[b"q"], [b"rs"]]


# --- errors -----------------------------------------------------------------------------------


def test_short_fixed_size_buffer_names_input_shape_and_sizes():
    with pytest.raises(BadRequest) as info:
        tensor_from_bytes(b"\x00" * 12, "FP32", [2, 2], "pixels")
    assert info.value.status == 400
    message = info.value.message
    assert "input 'pixels'" in message
    assert "[2, 2]" in message
    assert "FP32" in message
    assert "16 bytes" in message
    assert "12 bytes were sent" in message


def test_oversized_fixed_size_buffer_is_rejected():
    with pytest.raises(BadRequest, match=r"input 'ids'.*needs 8 bytes, but 9 bytes were sent"):
        tensor_from_bytes(b"\x00" * 9, "INT64", [1], "ids")


@SETTINGS
@given(st.sampled_from(FIXED), SHAPES, st.integers(-16, 16).filter(bool))
def test_any_wrong_fixed_size_length_is_bad_request(datatype, shape, delta):
    expected = int(np.prod(shape)) * NUMPY_DTYPES[datatype].itemsize
    length = expected + delta
    assume(length >= 0)
    with pytest.raises(BadRequest, match="input 'x'"):
        tensor_from_bytes(b"\x01" * length, datatype, list(shape), "x")


def test_bytes_truncated_inside_a_length_prefix():
    packed = pack_bytes(_objects([b"abc", b"de"]))
    with pytest.raises(BadRequest, match=r"input 'text': BYTES data ends after 1 of 2 elements"):
        tensor_from_bytes(packed[:9], "BYTES", [2], "text")


def test_bytes_element_longer_than_the_buffer():
    packed = pack_bytes(_objects([b"abc", b"de"]))
    with pytest.raises(
        BadRequest, match=r"input 'text': BYTES element 1 claims 2 bytes but only 1 remain"
    ):
        tensor_from_bytes(packed[:-1], "BYTES", [2], "text")


def test_bytes_with_leftover_data():
    packed = pack_bytes(_objects([b"abc"]))
    with pytest.raises(BadRequest, match=r"input 'text': 3 bytes left over after 1 BYTES elements"):
        tensor_from_bytes(packed + b"xyz", "BYTES", [1], "text")


def test_bytes_for_an_empty_shape_rejects_any_data():
    with pytest.raises(BadRequest, match="left over after 0 BYTES elements"):
        tensor_from_bytes(b"\x00\x00\x00\x00", "BYTES", [0, 3], "text")
    assert tensor_from_bytes(b"", "BYTES", [0, 3], "text").shape == (0, 3)


@SETTINGS
@given(bytes_arrays().filter(lambda a: a.size > 0), st.data())
def test_any_truncated_or_extended_bytes_buffer_is_bad_request(array, data):
    packed = pack_bytes(array)
    cut = data.draw(st.integers(1, len(packed)))
    with pytest.raises(BadRequest, match="input 'blob'"):
        tensor_from_bytes(packed[:-cut], "BYTES", list(array.shape), "blob")
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(BadRequest, match="input 'blob'.*left over"):
        tensor_from_bytes(packed + extra, "BYTES", list(array.shape), "blob")


def test_unknown_datatype_is_bad_request():
    with pytest.raises(BadRequest, match="unknown datatype 'FP8'"):
        tensor_from_bytes(b"\x00", "FP8", [1], "x")
    with pytest.raises(BadRequest, match="unknown datatype 'BF16'"):
        tensor_to_bytes(np.zeros(1), "BF16")
