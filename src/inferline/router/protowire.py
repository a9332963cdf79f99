"""Reading and replacing one top-level string field of a serialized protobuf message.

The gRPC proxy only needs the model name of a request (field 1 of ModelInferRequest,
ModelReadyRequest and ModelMetadataRequest) and to rewrite it. Doing that on the wire leaves a
request with megabytes of tensors unparsed and unre-encoded: the name is found by skipping over
the other top-level fields, and replaced by appending a new value, since a parser keeps the last
value of a repeated singular field (protobuf encoding spec, "Last One Wins").
"""

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    pass


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(raw):
            raise WireError("message ends inside a varint")
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_string_field(raw: bytes, number: int) -> str:
    """The value of top-level string field `number` ("" when absent, the last when repeated)."""
    pos, end, found = 0, len(raw), None
    while pos < end:
        key, pos = _read_varint(raw, pos)
        field, wire = key >> 3, key & 7
        if wire == _LEN:
            length, pos = _read_varint(raw, pos)
            if field == number:
                found = (pos, pos + length)
            pos += length
        elif wire == _VARINT:
            _, pos = _read_varint(raw, pos)
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire} for field {field}")
    if pos > end:
        raise WireError("message ends inside a field")
    if found is None:
        return ""
    try:
        return raw[found[0] : found[1]].decode()
    except UnicodeDecodeError:
        raise WireError(f"field {number} is not valid UTF-8") from None


def with_string_field(raw: bytes, number: int, value: str) -> bytes:
    """`raw` with top-level string field `number` set to `value`."""
    data = value.encode()
    return raw + _varint(number << 3 | _LEN) + _varint(len(data)) + data
