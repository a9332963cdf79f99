"""REST bodies: JSON and the binary tensor extension, checked against tritonclient.http."""

import hypothesis.extra.numpy as hnp
import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.protocol import raw
from inferline.protocol.datatypes import DATATYPES, NUMPY_DTYPES
from inferline.protocol.errors import BadRequest
from inferline.protocol.json_encoding import (
    binary_output_names,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from inferline.protocol.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

SETTINGS = settings(max_examples=50, deadline=None)

FIXED = [name for name in DATATYPES if name != "BYTES"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
TEXT = st.text(st.characters(codec="utf-8"), max_size=8)


def _objects(values: list, shape=None) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape if shape is not None else (len(values),))


@st.composite
def arrays(draw, datatype: str, json_safe: bool, shapes=SHAPES) -> np.ndarray:
    """An array for `datatype`; `json_safe` keeps to values JSON carries (no infinities, UTF-8)."""
    shape = draw(shapes)
    if datatype == "BYTES":
        count = int(np.prod(shape))
        elements = TEXT.map(str.encode) if json_safe else st.binary(max_size=8)
        return _objects(draw(st.lists(elements, min_size=count, max_size=count)), shape)
    dtype = NUMPY_DTYPES[datatype]
    elements = None
    if json_safe and dtype.kind == "f":
        elements = hnp.from_dtype(dtype, allow_infinity=False)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def tensors_of_every_datatype(draw, json_safe: bool, binary_names=frozenset()) -> list[Tensor]:
    tensors = []
    for datatype in DATATYPES:
        name = datatype.lower()
        array = draw(arrays(datatype, json_safe and name not in binary_names))
        parameters = draw(st.sampled_from([{}, {"content_type": "np"}, {"flag": True, "n": 3}]))
        tensors.append(Tensor(name, datatype, list(array.shape), array, parameters))
    return tensors


def assert_same_tensor(actual: Tensor, expected: Tensor, bit_exact: bool) -> None:
    assert actual.name == expected.name
    assert actual.datatype == expected.datatype
    assert actual.shape == list(expected.shape)
    assert actual.data.shape == tuple(expected.shape)
    assert actual.data.dtype == NUMPY_DTYPES[expected.datatype]
    if expected.datatype == "BYTES":
        assert all(type(v) is bytes for v in actual.data.flat)
        assert actual.data.tolist() == expected.data.tolist()
    elif bit_exact:
        assert actual.data.tobytes() == expected.data.tobytes()
    else:
        # JSON loses NaN payloads and the sign of NaN; everything else must be exact.
        assert np.array_equal(actual.data, expected.data, equal_nan=expected.data.dtype.kind == "f")
        if expected.data.dtype.kind == "f":
            finite = ~np.isnan(expected.data)
            assert np.array_equal(
                np.signbit(actual.data[finite]), np.signbit(expected.data[finite])
            )


def _tensor(name: str, datatype: str, data, **parameters) -> Tensor:
    array = np.asarray(data) if datatype != "BYTES" else _objects(data)
    array = array.astype(NUMPY_DTYPES[datatype]) if datatype != "BYTES" else array
    return Tensor(name, datatype, list(array.shape), array, parameters)


def _body(inputs: list[dict], **extra) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


# --- requests round trip ----------------------------------------------------------------------


REQUEST_EXTRAS = {
    "id": st.none() | TEXT,
    "parameters": st.dictionaries(
        TEXT,
        st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | TEXT,
        max_size=3,
    ),
    "outputs": st.none()
    | st.lists(
        st.builds(
            RequestedOutput,
            TEXT,
            st.sampled_from([{}, {"binary_data": True}, {"binary_data": False}]),
        ),
        max_size=2,
    ),
}


@SETTINGS
@given(tensors_of_every_datatype(json_safe=True), st.fixed_dictionaries(REQUEST_EXTRAS))
def test_request_round_trips_through_json(inputs, extras):
    request = InferenceRequest(inputs=inputs, **extras)
    body, json_length = encode_request(request)
    assert json_length is None
    doc = orjson.loads(body)  # the whole body is one JSON document
    for tensor, tensor_doc in zip(inputs, doc["inputs"], strict=True):
        assert "binary_data_size" not in tensor_doc.get("parameters", {})
        if tensor.datatype == "BYTES":
            # BYTES travel as text: each element its UTF-8 decoding.
            assert tensor_doc["data"] == [v.decode() for v in tensor.data.flat]
    decoded = decode_request(body)
    assert decoded.id == request.id
    assert decoded.parameters == request.parameters
    assert decoded.outputs == request.outputs
    assert len(decoded.inputs) == len(DATATYPES)
    for actual, expected in zip(decoded.inputs, inputs, strict=True):
        assert_same_tensor(actual, expected, bit_exact=False)
        assert actual.parameters == expected.parameters


@SETTINGS
@given(tensors_of_every_datatype(json_safe=False), st.fixed_dictionaries(REQUEST_EXTRAS))
def test_request_round_trips_through_binary_extension(inputs, extras):
    request = InferenceRequest(inputs=inputs, **extras)
    body, json_length = encode_request(request, binary=True)
    assert json_length is not None
    header = orjson.loads(body[:json_length])
    sizes = []
    for tensor, tensor_doc in zip(inputs, header["inputs"], strict=True):
        assert "data" not in tensor_doc
        sizes.append(tensor_doc["parameters"]["binary_data_size"])
        assert sizes[-1] == len(raw.tensor_to_bytes(tensor.data, tensor.datatype))
    # The raw tensors follow the header, in input order, with nothing else.
    assert body[json_length:] == b"".join(raw.tensor_to_bytes(t.data, t.datatype) for t in inputs)
    assert sum(sizes) == len(body) - json_length
    decoded = decode_request(body, json_length)
    assert decoded.id == request.id
    assert decoded.parameters == request.parameters
    assert decoded.outputs == request.outputs
    for actual, expected in zip(decoded.inputs, inputs, strict=True):
        assert_same_tensor(actual, expected, bit_exact=True)
        # binary_data_size is transport detail, not a tensor parameter.
        assert actual.parameters == expected.parameters


@SETTINGS
@given(arrays("FP16", json_safe=True))
def test_fp16_values_survive_json_exactly(array):
    body, _ = encode_request(InferenceRequest([Tensor("h", "FP16", list(array.shape), array)]))
    decoded = decode_request(body).inputs[0].data
    assert decoded.dtype == np.float16
    finite = ~np.isnan(array)
    assert np.array_equal(np.isnan(decoded), ~finite)
    assert decoded[finite].tobytes() == array[finite].tobytes()


# --- responses round trip ---------------------------------------------------------------------


def _response(outputs: list[Tensor]) -> InferenceResponse:
    return InferenceResponse(
        model_name="iris",
        model_version="3",
        id="req-7",
        parameters={"sequence": 1, "tag": "x"},
        outputs=outputs,
    )


def _check_response(decoded: InferenceResponse, response: InferenceResponse, binary) -> None:
    assert decoded.model_name == response.model_name
    assert decoded.model_version == response.model_version
    assert decoded.id == response.id
    assert decoded.parameters == response.parameters
    for actual, expected in zip(decoded.outputs, response.outputs, strict=True):
        went_binary = binary is True or (binary and expected.name in binary)
        assert_same_tensor(actual, expected, bit_exact=bool(went_binary))
        assert actual.parameters == expected.parameters


@SETTINGS
@given(tensors_of_every_datatype(json_safe=False))
def test_response_round_trips_with_every_output_binary(outputs):
    response = _response(outputs)
    body, json_length = encode_response(response, binary=True)
    assert json_length is not None
    header = orjson.loads(body[:json_length])
    assert all("data" not in o for o in header["outputs"])
    _check_response(decode_response(body, json_length), response, True)


@SETTINGS
@given(tensors_of_every_datatype(json_safe=True))
def test_response_round_trips_as_plain_json(outputs):
    response = _response(outputs)
    body, json_length = encode_response(response, binary=False)
    assert json_length is None
    doc = orjson.loads(body)
    assert all("binary_data_size" not in o.get("parameters", {}) for o in doc["outputs"])
    _check_response(decode_response(body), response, False)


@st.composite
def subset_and_outputs(draw):
    names = draw(st.sets(st.sampled_from([dt.lower() for dt in DATATYPES])))
    return names, draw(tensors_of_every_datatype(json_safe=True, binary_names=names))


@SETTINGS
@given(subset_and_outputs())
def test_response_round_trips_with_some_outputs_binary(subset):
    names, outputs = subset
    response = _response(outputs)
    body, json_length = encode_response(response, binary=names)
    header = orjson.loads(body if json_length is None else body[:json_length])
    for output in header["outputs"]:
        if output["name"] in names:
            assert "data" not in output
            assert "binary_data_size" in output["parameters"]
        else:
            assert "data" in output
            assert "binary_data_size" not in output.get("parameters", {})
    # Only the binary outputs' bytes follow the header, in output order.
    expected_tail = b"".join(
        raw.tensor_to_bytes(t.data, t.datatype) for t in outputs if t.name in names
    )
    assert (b"" if json_length is None else body[json_length:]) == expected_tail
    if not names:
        assert json_length is None
    _check_response(decode_response(body, json_length), response, names)


def test_bytes_output_is_utf8_text_in_json():
    response = _response([_tensor("greeting", "BYTES", ["héllo".encode(), b""])])
    body, _ = encode_response(response)
    assert orjson.loads(body)["outputs"][0]["data"] == ["héllo", ""]


def test_non_utf8_bytes_output_needs_binary():
    response = _response([_tensor("blob", "BYTES", [b"\xff\xfe"])])
    with pytest.raises(BadRequest) as info:
        encode_response(response)
    assert "'blob'" in info.value.message
    assert "not UTF-8" in info.value.message
    assert "binary" in info.value.message
    body, json_length = encode_response(response, binary={"blob"})
    assert decode_response(body, json_length).outputs[0].data.tolist() == [b"\xff\xfe"]


def test_model_version_and_id_are_left_out_when_absent():
    body, _ = encode_response(InferenceResponse("m", [_tensor("y", "INT32", [1])]))
    doc = orjson.loads(body)
    assert doc == {
        "model_name": "m",
        "outputs": [{"name": "y", "datatype": "INT32", "shape": [1], "data": [1]}],
    }


# --- data layout ------------------------------------------------------------------------------


@SETTINGS
@given(st.sampled_from(DATATYPES).flatmap(lambda dt: st.tuples(st.just(dt), arrays(dt, True))))
def test_nested_and_flat_data_decode_to_the_same_array(datatype_and_array):
    datatype, array = datatype_and_array
    if datatype == "BYTES":
        array = _objects([v.decode() for v in array.flat], array.shape)
    nested, flat = array.tolist(), array.ravel().tolist()
    decoded = []
    for data in (nested, flat):
        doc = {"name": "x", "datatype": datatype, "shape": list(array.shape), "data": data}
        decoded.append(decode_request(_body([doc])).inputs[0].data)
    assert decoded[0].shape == decoded[1].shape == array.shape
    assert decoded[0].dtype == decoded[1].dtype == NUMPY_DTYPES[datatype]
    assert np.array_equal(decoded[0], decoded[1], equal_nan=datatype.startswith("FP"))


def test_nested_data_is_read_row_major():
    doc = {"name": "x", "datatype": "INT32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}
    assert decode_request(_body([doc])).inputs[0].data.tolist() == [[1, 2, 3], [4, 5, 6]]
    doc["data"] = [1, 2, 3, 4, 5, 6]
    assert decode_request(_body([doc])).inputs[0].data.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_json_null_is_nan_for_floats(datatype):
    doc = {"name": "x", "datatype": datatype, "shape": [3], "data": [None, 1.5, None]}
    data = decode_request(_body([doc])).inputs[0].data
    assert data.dtype == NUMPY_DTYPES[datatype]
    assert np.isnan(data).tolist() == [True, False, True]
    assert data[1] == 1.5
    # ...and NaN goes back out as null.
    body, _ = encode_response(_response([Tensor("x", datatype, [3], data)]))
    assert orjson.loads(body)["outputs"][0]["data"] == [None, 1.5, None]


def test_json_null_is_not_accepted_for_integers():
    doc = {"name": "x", "datatype": "INT32", "shape": [2], "data": [None, 1]}
    with pytest.raises(BadRequest, match="input 'x' has datatype INT32 but its data are not all"):
        decode_request(_body([doc]))


def test_large_uint64_values_mixed_with_small_ones_stay_exact():
    values = [0, 2**63, 2**64 - 1, 1]
    doc = {"name": "x", "datatype": "UINT64", "shape": [2, 2], "data": [values[:2], values[2:]]}
    data = decode_request(_body([doc])).inputs[0].data
    assert data.dtype == np.uint64
    assert data.ravel().tolist() == values


@pytest.mark.parametrize(
    ("datatype", "values"),
    [("INT64", [-1, 2**63]), ("UINT64", [-1, 2**63]), ("INT32", [0, 2**63])],
)
def test_wide_integers_outside_the_datatype_are_out_of_range(datatype, values):
    doc = {"name": "x", "datatype": datatype, "shape": [2], "data": values}
    with pytest.raises(BadRequest, match=f"input 'x' has values outside the range of {datatype}"):
        decode_request(_body([doc]))


def test_zero_size_tensors_round_trip_in_both_modes():
    tensors = [
        _tensor("a", "FP32", np.zeros((0, 4))),
        _tensor("b", "BYTES", []),
        Tensor("c", "INT8", [3, 0], np.zeros((3, 0), dtype=np.int8)),
    ]
    for binary in (False, True):
        body, json_length = encode_request(InferenceRequest(tensors), binary=binary)
        decoded = decode_request(body, json_length)
        assert [t.data.shape for t in decoded.inputs] == [(0, 4), (0,), (3, 0)]
        assert [t.data.dtype for t in decoded.inputs] == [np.float32, object, np.int8]


# --- which outputs go binary ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "outputs", "expected"),
    [
        ({}, None, False),
        ({"binary_data_output": False}, None, False),
        ({"binary_data_output": True}, None, True),
        ({"binary_data_output": True}, [("a", {}), ("b", {})], True),
        ({"binary_data_output": True}, [("a", {"binary_data": True}), ("b", {})], True),
        ({"binary_data_output": True}, [("a", {"binary_data": False}), ("b", {})], {"b"}),
        ({}, [("a", {"binary_data": True}), ("b", {})], {"a"}),
        ({"binary_data_output": False}, [("a", {}), ("b", {"binary_data": True})], {"b"}),
        ({}, [("a", {"binary_data": False}), ("b", {})], set()),
        ({}, [("a", {}), ("b", {})], set()),
    ],
)
def test_binary_output_names_rules(parameters, outputs, expected):
    requested = None if outputs is None else [RequestedOutput(n, p) for n, p in outputs]
    request = InferenceRequest([], parameters=parameters, outputs=requested)
    assert binary_output_names(request) == expected


def test_binary_output_names_drive_the_encoded_response():
    body = _body(
        [],
        parameters={"binary_data_output": True},
        outputs=[{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
    )
    request = decode_request(body)
    response = _response([_tensor("a", "FP32", [1.0, 2.0]), _tensor("b", "INT64", [7])])
    out, json_length = encode_response(response, binary_output_names(request))
    header = orjson.loads(out[:json_length])
    assert header["outputs"][0]["data"] == [1.0, 2.0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert out[json_length:] == np.array([7], dtype="<i8").tobytes()


# --- tritonclient.http interop ----------------------------------------------------------------


@st.composite
def client_arrays(draw, binary: bool):
    datatype = draw(st.sampled_from(DATATYPES))
    shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3)
    array = draw(arrays(datatype, json_safe=not binary, shapes=shapes))
    if not binary and array.dtype.kind == "f":
        # tritonclient writes NaN as a bare `NaN`, which is not JSON.
        array = np.where(np.isnan(array), 0, array).astype(array.dtype)
    return datatype, array


@settings(max_examples=60, deadline=None)
@given(
    st.booleans().flatmap(lambda b: st.tuples(st.just(b), st.lists(client_arrays(b), max_size=4)))
)
def test_tritonclient_request_bodies_decode_to_the_same_arrays(case):
    binary, pairs = case
    inputs = []
    for index, (datatype, array) in enumerate(pairs):
        infer_input = httpclient.InferInput(f"in{index}", list(array.shape), datatype)
        infer_input.set_data_from_numpy(array, binary_data=binary)
        inputs.append(infer_input)
    outputs = [httpclient.InferRequestedOutput("out", binary_data=binary)]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="r-1", parameters={"mode": "fast", "k": 2}
    )
    request = decode_request(body, json_size)
    assert request.id == "r-1"
    assert request.parameters["mode"] == "fast"
    assert request.parameters["k"] == 2
    assert [o.name for o in request.outputs] == ["out"]
    assert binary_output_names(request) == ({"out"} if binary else set())
    assert len(request.inputs) == len(pairs)
    for index, (tensor, (datatype, array)) in enumerate(zip(request.inputs, pairs, strict=True)):
        expected = Tensor(f"in{index}", datatype, list(array.shape), array)
        assert_same_tensor(tensor, expected, bit_exact=binary)


@pytest.mark.parametrize("binary_data", [True, False])
def test_tritonclient_bytes_bool_fp16_request(binary_data):
    arrays_ = {
        "text": ("BYTES", _objects(["ünï".encode(), b"", b"plain"], (3, 1))),
        "mask": ("BOOL", np.array([[True, False], [False, True]])),
        "half": ("FP16", np.array([0.1, -65504, 6e-8, 1 / 3], dtype=np.float16)),
    }
    inputs = []
    for name, (datatype, array) in arrays_.items():
        infer_input = httpclient.InferInput(name, list(array.shape), datatype)
        inputs.append(infer_input.set_data_from_numpy(array, binary_data=binary_data))
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
    assert (json_size is not None) == binary_data
    request = decode_request(body, json_size)
    # tritonclient asks for binary outputs by default when no outputs are listed.
    assert binary_output_names(request) is True
    for name, (datatype, array) in arrays_.items():
        tensor = request.input(name)
        assert tensor.datatype == datatype
        assert tensor.data.dtype == NUMPY_DTYPES[datatype]
        assert tensor.data.tolist() == array.tolist()


def _client_result(body: bytes, json_length: int | None):
    return httpclient.InferenceServerClient.parse_response_body(body, header_length=json_length)


@SETTINGS
@given(tensors_of_every_datatype(json_safe=False))
def test_tritonclient_reads_our_binary_responses(outputs):
    body, json_length = encode_response(_response(outputs), binary=True)
    result = _client_result(body, json_length)
    assert result.get_response()["model_name"] == "iris"
    assert result.get_response()["id"] == "req-7"
    for tensor in outputs:
        array = result.as_numpy(tensor.name)
        assert array.shape == tensor.data.shape
        if tensor.datatype == "BYTES":
            assert array.tolist() == tensor.data.tolist()
        else:
            assert array.dtype == tensor.data.dtype
            assert array.tobytes() == tensor.data.tobytes()


@SETTINGS
@given(subset_and_outputs())
def test_tritonclient_reads_our_mixed_responses(subset):
    names, outputs = subset
    body, json_length = encode_response(_response(outputs), binary=names)
    result = _client_result(body, json_length)
    for tensor in outputs:
        array = result.as_numpy(tensor.name)
        assert array.shape == tensor.data.shape
        if tensor.datatype == "BYTES":
            # tritonclient gives bytes for binary outputs and str for JSON ones.
            expected = tensor.data
            if tensor.name not in names:
                expected = _objects([v.decode() for v in tensor.data.flat], tensor.data.shape)
            assert array.tolist() == expected.tolist()
        else:
            expected = Tensor(tensor.name, tensor.datatype, tensor.shape, array)
            assert_same_tensor(expected, tensor, bit_exact=tensor.name in names)


# --- errors -----------------------------------------------------------------------------------


def _input(**fields) -> dict:
    return {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0], **fields}


def _without(key: str) -> dict:
    doc = _input()
    del doc[key]
    return doc


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [', "request body is not valid JSON"),
        (b"", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'"inputs"', "request body must be a JSON object"),
        (b"{}", "request has no 'inputs'"),
        (b'{"inputs": {"name": "x"}}', "'inputs' must be a list"),
        (b'{"inputs": [3]}', "each of inputs must be an object"),
        (_body([_without("name")]), "each of inputs needs a 'name' string"),
        (_body([_without("datatype")]), "input 'x' needs a 'datatype' string"),
        (_body([_without("shape")]), "input 'x' needs 'shape', a list of non-negative integers"),
        (_body([_without("data")]), "input 'x' has neither 'data' nor a 'binary_data_size'"),
        (_body([_input(shape=[-1, 2])]), r"input 'x' needs 'shape'.*non-negative.*\[-1, 2\]"),
        (_body([_input(shape=[2.0])]), "input 'x' needs 'shape'"),
        (_body([_input(datatype="FP8")]), "unknown datatype 'FP8'"),
        (_body([_input(datatype="fp32")]), "unknown datatype 'fp32'"),
        (
            _body([_input(shape=[2, 2], data=[1.0, 2.0, 3.0])]),
            r"input 'x' has shape \[2, 2\] \(4 elements\) but its data has 3 elements",
        ),
        (_body([_input(shape=[2, 2], data=[[1.0, 2.0], [3.0]])]), "input 'x' has ragged"),
        (_body([_input(data=["1.0", "2.0"])]), "input 'x' has datatype FP32 but its data are not"),
        (_body([_input(data=[None, "2.0"])]), "input 'x' has datatype FP32 but non-numeric"),
        (
            _body([_input(datatype="INT32", data=[1.5, 2])]),
            "input 'x' has datatype INT32 but its data are not all integers",
        ),
        (
            _body([_input(datatype="INT8", data=[127, 128])]),
            "input 'x' has values outside the range of INT8",
        ),
        (
            _body([_input(datatype="INT8", data=[-129, 0])]),
            "input 'x' has values outside the range of INT8",
        ),
        (
            _body([_input(datatype="UINT8", data=[256, 0])]),
            "input 'x' has values outside the range of UINT8",
        ),
        (
            _body([_input(datatype="UINT8", data=[-1, 0])]),
            "input 'x' has values outside the range of UINT8",
        ),
        (
            _body([_input(datatype="BOOL", data=[1, 0])]),
            "input 'x' has datatype BOOL but its data are not all booleans",
        ),
        (
            _body([_input(datatype="BYTES", data=["a", 1])]),
            "input 'x' has datatype BYTES but holds int data",
        ),
        (b'{"inputs": [], "outputs": {}}', "'outputs' must be a list"),
        (b'{"inputs": [], "outputs": [{}]}', "each of outputs needs a 'name' string"),
        (b'{"inputs": [], "id": 5}', "'id' must be a string"),
        (b'{"inputs": [], "parameters": []}', "'parameters' of the request must be an object"),
    ],
)
def test_bad_request_bodies_name_the_problem(body, message):
    with pytest.raises(BadRequest, match=message) as info:
        decode_request(body)
    assert info.value.status == 400


def _binary_body(size: int, payload: bytes) -> tuple[bytes, int]:
    header = _body([{"name": "x", "datatype": "INT32", "shape": [1], **_size(size)}])
    return header + payload, len(header)


def _size(size) -> dict:
    return {"parameters": {"binary_data_size": size}}


def test_binary_data_size_past_the_end():
    body, json_length = _binary_body(8, b"\x01\x00\x00\x00")
    with pytest.raises(
        BadRequest, match="input 'x' has binary_data_size 8 but only 4 bytes of binary data"
    ):
        decode_request(body, json_length)


def test_negative_binary_data_size():
    body, json_length = _binary_body(-4, b"\x01\x00\x00\x00")
    with pytest.raises(BadRequest, match="input 'x' has binary_data_size -4"):
        decode_request(body, json_length)


def test_binary_data_size_that_does_not_fit_the_shape():
    body, json_length = _binary_body(2, b"\x01\x00")
    with pytest.raises(BadRequest, match="input 'x'.*needs 4 bytes, but 2 bytes were sent"):
        decode_request(body, json_length)


def test_leftover_binary_bytes():
    body, json_length = _binary_body(4, b"\x01\x00\x00\x00\xff\xff")
    with pytest.raises(
        BadRequest, match="2 bytes of binary data follow the JSON header but no tensor"
    ):
        decode_request(body, json_length)


def test_binary_bytes_after_a_pure_json_request():
    header = _body([_input()])
    with pytest.raises(BadRequest, match="3 bytes of binary data follow the JSON header"):
        decode_request(header + b"abc", len(header))


@pytest.mark.parametrize("json_length", [10_000, -1])
def test_header_length_outside_the_body(json_length):
    body, _ = _binary_body(4, b"\x01\x00\x00\x00")
    with pytest.raises(
        BadRequest,
        match=f"Inference-Header-Content-Length is {json_length} but the body has {len(body)}",
    ):
        decode_request(body, json_length)


def test_header_length_cutting_the_json_short():
    body, json_length = _binary_body(4, b"\x01\x00\x00\x00")
    with pytest.raises(BadRequest, match="not valid JSON"):
        decode_request(body, json_length - 1)


def test_unknown_datatype_in_binary_mode():
    header = _body([{"name": "x", "datatype": "BF16", "shape": [1], **_size(2)}])
    with pytest.raises(BadRequest, match="unknown datatype 'BF16'"):
        decode_request(header + b"\x00\x00", len(header))


def test_error_response_body_is_raised():
    with pytest.raises(BadRequest, match="model 'm' not found"):
        decode_response(b'{"error": "model \'m\' not found"}')
