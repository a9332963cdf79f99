"""The 13 V2 tensor datatypes and their NumPy equivalents."""

import numpy as np

from inferline.protocol.errors import BadRequest

# Little-endian, as the binary extension and gRPC raw contents require.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

DATATYPES = tuple(NUMPY_DTYPES)

_BY_KIND_AND_SIZE = {
    (dt.kind, dt.itemsize): name for name, dt in NUMPY_DTYPES.items() if name != "BYTES"
}


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return NUMPY_DTYPES[datatype]
    except KeyError:
        raise BadRequest(
            f"unknown datatype '{datatype}'; expected one of {', '.join(DATATYPES)}"
        ) from None


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype for a NumPy array; strings and bytes become BYTES."""
    kind = array.dtype.kind
    if kind in ("O", "S", "U", "T"):
        return "BYTES"
    try:
        return _BY_KIND_AND_SIZE[(kind, array.dtype.itemsize)]
    except KeyError:
        raise TypeError(f"no V2 datatype for NumPy dtype {array.dtype}") from None


def element_count(shape: list[int] | tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count
