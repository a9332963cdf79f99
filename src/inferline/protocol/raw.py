"""Tensors as raw little-endian bytes: the REST binary extension and gRPC raw contents share this.

BOOL is one byte per element (0/1); BYTES elements are each a 4-byte little-endian length followed
by the bytes, as Triton, tritonclient and MLServer pack them.
"""

import struct

import numpy as np

from inferline.protocol.datatypes import element_count, numpy_dtype
from inferline.protocol.errors import BadRequest

_LENGTH = struct.Struct("<I")


def tensor_to_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return pack_bytes(array)
    return np.ascontiguousarray(array, dtype=numpy_dtype(datatype)).tobytes()


def tensor_from_bytes(buffer: bytes | memoryview, datatype: str, shape: list[int], name: str):
    """Decode one tensor's raw bytes; the result may be a read-only view of `buffer`."""
    count = element_count(shape)
    if datatype == "BYTES":
        return unpack_bytes(buffer, count, name).reshape(shape)
    dtype = numpy_dtype(datatype)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise BadRequest(
            f"input '{name}' has shape {shape} and datatype {datatype}, which needs "
            f"{expected} bytes, but {len(buffer)} bytes were sent"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def pack_bytes(array: np.ndarray) -> bytes:
    parts = []
    for value in array.flat:
        if isinstance(value, str):
            value = value.encode()
        parts.append(_LENGTH.pack(len(value)))
        parts.append(value)
    return b"".join(parts)


def unpack_bytes(buffer: bytes | memoryview, count: int, name: str) -> np.ndarray:
    buffer = memoryview(buffer)
    out = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(buffer):
            raise BadRequest(f"input '{name}': BYTES data ends after {index} of {count} elements")
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > len(buffer):
            raise BadRequest(
                f"input '{name}': BYTES element {index} claims {length} bytes but only "
                f"{len(buffer) - offset} remain"
            )
        out[index] = bytes(buffer[offset : offset + length])
        offset += length
    if offset != len(buffer):
        raise BadRequest(
            f"input '{name}': {len(buffer) - offset} bytes left over after {count} BYTES elements"
        )
    return out
