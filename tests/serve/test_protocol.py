"""The Open Inference Protocol codec against tritonclient's own encoder and decoder.

tritonclient is the reference: a body it builds must parse to the arrays it was given, and a
body we build must decode, in its `InferResult`, to the arrays we sent, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import np_to_triton_dtype

from recaccel.data.dataset import Dataset
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema
from recaccel.serve.errors import PayloadTooLargeError, RequestError
from recaccel.serve.protocol import (
    BINARY_EXTENSION,
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    check_requested_outputs,
    encode_infer_response,
    error_body,
    features_from_inputs,
    model_metadata,
    parse_infer_request,
    server_metadata,
)

Client = triton.InferenceServerClient
RNG = np.random.default_rng(0)


def _random(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype = DATATYPES[datatype]
    if dtype.kind == "b":
        return RNG.random(shape) < 0.5
    if dtype.kind == "f":
        return RNG.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


ALL_TYPES = {name: _random(name, (3, 2)) for name in DATATYPES}


def triton_body(
    arrays: dict[str, np.ndarray],
    binary: bool | dict[str, bool] = True,
    outputs: list[triton.InferRequestedOutput] | None = None,
    request_id: str = "",
) -> tuple[bytes, int | None]:
    """The body and header length tritonclient's `infer` would send."""
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary if isinstance(binary, bool) else binary[name])
        inputs.append(tensor)
    body, json_size = Client.generate_request_body(inputs, outputs=outputs, request_id=request_id)
    return body, json_size


def triton_result(body: bytes, headers: dict[str, str]) -> Any:
    """What tritonclient's `infer` returns for this response."""
    length = headers.get(HEADER_LENGTH)
    return Client.parse_response_body(
        body, verbose=False, header_length=None if length is None else int(length)
    )


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_round_trips_from_tritonclient(binary: bool) -> None:
    body, length = triton_body(ALL_TYPES, binary)
    assert (length is None) is not binary
    request = parse_infer_request(body, length)
    assert list(request.inputs) == list(ALL_TYPES)
    for name, want in ALL_TYPES.items():
        assert_same(request.inputs[name], want)


def test_binary_inputs_are_views_of_the_body_not_copies() -> None:
    body, length = triton_body({"x": np.arange(1000, dtype=np.float32)})
    array = parse_infer_request(body, length).inputs["x"]
    assert not array.flags.owndata
    assert not array.flags.writeable


def test_the_header_length_may_come_as_the_http_header_string() -> None:
    body, length = triton_body({"x": np.arange(4, dtype=np.int64)})
    request = parse_infer_request(body, f"{length}")
    assert_same(request.inputs["x"], np.arange(4, dtype=np.int64))


def test_binary_and_json_inputs_mix_in_one_request() -> None:
    arrays = {"a": ALL_TYPES["FP32"], "b": ALL_TYPES["INT64"], "c": ALL_TYPES["UINT8"]}
    body, length = triton_body(arrays, {"a": True, "b": False, "c": True})
    request = parse_infer_request(body, length)
    for name, want in arrays.items():
        assert_same(request.inputs[name], want)


def test_empty_tensors_parse_binary_and_json() -> None:
    arrays = {"bags": np.zeros((3, 0, 2), np.int64), "x": np.ones((3, 1), np.float32)}
    for binary in (True, False):
        request = parse_infer_request(*triton_body(arrays, binary))
        assert_same(request.inputs["bags"], arrays["bags"])


def test_curl_json_with_nested_data() -> None:
    body = orjson.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "dense", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]},
                {"name": "ids", "shape": [2], "datatype": "INT32", "data": [7, 8]},
            ],
        }
    )
    request = parse_infer_request(body, None)
    assert request.id == "r1"
    assert_same(request.inputs["dense"], np.array([[1, 2.5], [3, 4]], np.float32))
    assert_same(request.inputs["ids"], np.array([7, 8], np.int32))
    assert request.outputs == []
    assert request.binary_output_default is False


def test_requested_outputs_follow_tritonclient_defaults() -> None:
    arrays = {"x": np.ones(2, np.float32)}
    # No outputs named: tritonclient asks for every output as binary.
    request = parse_infer_request(*triton_body(arrays))
    assert request.outputs == []
    assert request.binary_output_default is True
    # InferRequestedOutput defaults to binary_data=True.
    named = [triton.InferRequestedOutput("score"), triton.InferRequestedOutput("b", False)]
    request = parse_infer_request(*triton_body(arrays, outputs=named, request_id="42"))
    assert request.outputs == [RequestedOutput("score", True), RequestedOutput("b", False)]
    assert request.id == "42"


def test_a_per_output_binary_data_overrides_the_request_default() -> None:
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
            "parameters": {"binary_data_output": True, "timeout": 5000},
        }
    )
    request = parse_infer_request(body, None)
    assert request.outputs == [RequestedOutput("a", True), RequestedOutput("b", False)]
    assert request.parameters["timeout"] == 5000


# --- responses -------------------------------------------------------------------------------


def _request(outputs: list[RequestedOutput], binary_default: bool = False) -> InferRequest:
    return InferRequest(None, {}, outputs, {}, binary_default)


@pytest.mark.parametrize(
    ("outputs", "binary_default", "binary_names"),
    [
        ([], True, set(ALL_TYPES)),  # tritonclient with outputs=None
        ([], False, set()),  # curl: all JSON
        ([RequestedOutput("FP32", True), RequestedOutput("INT64", False)], False, {"FP32"}),
        ([RequestedOutput("BOOL", False), RequestedOutput("FP16", True)], True, {"FP16"}),
        ([RequestedOutput(n, False) for n in ALL_TYPES], True, set()),
    ],
)
def test_responses_decode_in_tritonclient(
    outputs: list[RequestedOutput], binary_default: bool, binary_names: set[str]
) -> None:
    body, headers = encode_infer_response(
        "m", "3", "id-9", ALL_TYPES, _request(outputs, binary_default)
    )
    result = triton_result(body, headers)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "3", "id-9")
    names = [o.name for o in outputs] or list(ALL_TYPES)
    assert [o["name"] for o in response["outputs"]] == names
    for name in names:
        assert_same(result.as_numpy(name), ALL_TYPES[name])
        is_binary = "binary_data_size" in result.get_output(name).get("parameters", {})
        assert is_binary == (name in binary_names)
    if binary_names:
        assert headers["Content-Type"] == "application/octet-stream"
        assert int(headers[HEADER_LENGTH]) < len(body)
    else:
        assert headers == {"Content-Type": "application/json"}


def test_a_tritonclient_round_trip_through_both_halves() -> None:
    scores = RNG.random(5).astype(np.float32)
    for outputs in (None, [triton.InferRequestedOutput("score", binary_data=False)]):
        request = parse_infer_request(
            *triton_body({"x": np.ones((5, 1), np.float32)}, outputs=outputs, request_id="7")
        )
        body, headers = encode_infer_response("m", "1", request.id, {"score": scores}, request)
        result = triton_result(body, headers)
        assert_same(result.as_numpy("score"), scores)
        assert result.get_response()["id"] == "7"


def test_non_contiguous_and_big_endian_outputs_encode_as_the_values() -> None:
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    swapped = np.arange(3, dtype=">i4")
    for binary in (True, False):
        request = _request([RequestedOutput("s", binary), RequestedOutput("e", binary)])
        result = triton_result(
            *encode_infer_response("m", "1", None, {"s": strided, "e": swapped}, request)
        )
        np.testing.assert_array_equal(result.as_numpy("s"), strided)
        np.testing.assert_array_equal(result.as_numpy("e"), swapped)
        assert "id" not in result.get_response()


def test_an_unknown_requested_output_is_refused_before_and_after_the_model() -> None:
    request = _request([RequestedOutput("scores", True)])
    with pytest.raises(RequestError, match=r"(?s)unknown output\(s\) \['scores'\].*score"):
        check_requested_outputs(request, ["score"])
    with pytest.raises(RequestError, match="unknown output"):
        encode_infer_response("m", "1", None, {"score": np.zeros(1, np.float32)}, request)


def test_metadata_and_error_bodies() -> None:
    meta = server_metadata("0.1.0", ["model_repository"])
    assert meta == {
        "name": "recaccel",
        "version": "0.1.0",
        "extensions": [BINARY_EXTENSION, "model_repository"],
    }
    assert orjson.loads(error_body('bad "x"')) == {"error": 'bad "x"'}
    assert orjson.loads(error_body("x", "deadline")) == {"error": "x", "reason": "deadline"}
    model = model_metadata("dlrm", ["1", "2"], SCHEMA)
    assert model == {
        "name": "dlrm",
        "versions": ["1", "2"],
        "platform": "recaccel",
        "inputs": [
            {"name": "dense", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "categorical", "datatype": "INT64", "shape": [-1, 2]},
            {"name": "multi_hot", "datatype": "INT64", "shape": [-1, 1, 3]},
        ],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }


# --- malformed requests ----------------------------------------------------------------------


def _json(inputs: Any, **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def _input(**fields: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2], **fields}


def _binary(size: int, payload: bytes, length_delta: int = 0, **fields: Any) -> tuple[bytes, int]:
    spec = {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    header = _json([{**spec, **fields}])
    return header + payload, len(header) + length_delta


BAD: list[tuple[str, bytes, int | str | None, str]] = [
    ("not json", b"{inputs:", None, "does not parse"),
    ("not utf-8", b'{"inputs": "\xff"}', None, "does not parse"),
    ("empty body", b"", None, "does not parse"),
    ("not an object", b"[1, 2]", None, "is a list, not an object"),
    ("no inputs", b'{"id": "1"}', None, "has no 'inputs'"),
    ("empty inputs", _json([]), None, "non-empty list"),
    ("inputs not a list", _json({"x": 1}), None, "'inputs' as an object"),
    ("input not an object", _json([3]), None, r"inputs\[0\] is a number"),
    ("no name", _json([_input(name="")]), None, "has no 'name'"),
    ("id not a string", _json([_input()], id=3), None, "'id' is a number"),
    ("negative dim", _json([_input(shape=[-1])]), None, "cannot be negative"),
    ("shape not ints", _json([_input(shape=[2.0])]), None, "list of integers"),
    ("bool dim", _json([_input(shape=[True])]), None, "list of integers"),
    ("huge shape", _json([_input(shape=[2**41, 0], data=[])]), None, "larger than any"),
    ("unknown datatype", _json([_input(datatype="FLOAT")]), None, "(?s)'FLOAT'.*use one of BOOL"),
    ("BYTES", _json([_input(datatype="BYTES")]), None, "BYTES, which recaccel does not take"),
    ("BF16", _json([_input(datatype="BF16")]), None, "BF16"),
    ("no data", _json([{"name": "x", "shape": [2], "datatype": "FP32"}]), None, "neither 'data'"),
    ("data not a list", _json([_input(data=3)]), None, "'data' is a number"),
    ("data too short", _json([_input(data=[1])]), None, r"\[2\] \(2 values\) but 'data' holds 1"),
    ("ragged data", _json([_input(shape=[2, 2], data=[[1, 2], [3]])]), None, "rectangular"),
    (
        "wrong nesting",
        _json([_input(shape=[2, 3], data=[[1, 2], [3, 4], [5, 6]])]),
        None,
        r"\[3, 2\] nesting",
    ),
    ("strings", _json([_input(data=["a", "b"])]), None, "not numbers"),
    ("nulls", _json([_input(data=[None, 1])]), None, "not numbers"),
    ("floats as ints", _json([_input(datatype="INT64", data=[1.5, 2])]), None, "not integers"),
    ("int overflow", _json([_input(datatype="INT8", data=[1, 300])]), None, r"300, outside INT8"),
    ("uint negative", _json([_input(datatype="UINT16", data=[-1, 2])]), None, "-1, outside"),
    ("duplicate input", _json([_input(), _input()]), None, "given twice"),
    ("shared memory", _json([_input(parameters={"shared_memory_region": "r"})]), None, "shared"),
    ("params not object", _json([_input()], parameters=[1]), None, "must be an object"),
    ("binary_data_output", _json([_input()], parameters={"binary_data_output": 1}), None, "true"),
    ("outputs not list", _json([_input()], outputs={}), None, "'outputs' is an object"),
    ("output no name", _json([_input()], outputs=[{}]), None, r"outputs\[0\]"),
    (
        "classification",
        _json([_input()], outputs=[{"name": "score", "parameters": {"classification": 3}}]),
        None,
        "classification",
    ),
    ("dup output", _json([_input()], outputs=[{"name": "a"}, {"name": "a"}]), None, "twice"),
    ("bad header value", _json([_input()]), "12a", "'12a', not a byte count"),
    ("negative header", _json([_input()]), -1, "cannot be negative"),
    ("header past body", *_binary(8, b"\0" * 8, length_delta=9), "only"),
    ("header too short", *_binary(8, b"\0" * 8, length_delta=-1), "does not parse"),
    (
        "size mismatch",
        *_binary(12, b"\0" * 12),
        r"binary_data_size is 12 but shape \[2\] of FP32 needs 8 bytes",
    ),
    ("size not int", *_binary(8, b"\0" * 8, parameters={"binary_data_size": "8"}), "byte count"),
    ("truncated tensor", *_binary(8, b"\0" * 5), "needs bytes"),
    ("trailing bytes", *_binary(8, b"\0" * 9), "1 bytes after the last binary input"),
    ("data and binary", *_binary(8, b"\0" * 8, data=[1, 2]), "both 'data' and binary"),
]


@pytest.mark.parametrize(
    ("body", "length", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_malformed_requests_are_400_with_a_reason(
    body: bytes, length: int | str | None, message: str
) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        parse_infer_request(body, length)
    assert caught.value.status == 400


def test_binary_data_without_the_header_length_is_refused() -> None:
    body, _ = triton_body({"x": np.ones(2, np.float32)})
    with pytest.raises(RequestError):
        parse_infer_request(body, None)


def _parse_or_refuse(body: bytes, length: int | None) -> bool:
    """Parse `body` and turn it into model features; False where refused, as a 400 must be."""
    try:
        features_from_inputs(parse_infer_request(body, length).inputs, SCHEMA, max_rows=16)
    except RequestError:
        return False
    return True


def test_truncated_and_corrupted_bodies_raise_request_error_only() -> None:
    """Any other exception would reach the client as a 500."""
    rng = np.random.default_rng(1)
    arrays = _inputs(3)
    arrays["categorical"] = arrays["categorical"].astype(np.int32)
    cases = [
        triton_body(arrays, True),
        triton_body(arrays, False),
        triton_body(arrays, {"dense": True, "categorical": False, "multi_hot": True}),
    ]
    served = 0
    for body, length in cases:
        assert _parse_or_refuse(body, length)
        for cut in rng.integers(0, len(body), 200):
            with pytest.raises(RequestError):
                parse_infer_request(body[:cut], length)
            _parse_or_refuse(body[:cut], None)
        end = length or len(body)
        for _ in range(300):
            corrupt = bytearray(body)
            for at in rng.integers(0, end, int(rng.integers(1, 4))):
                corrupt[at] = int(rng.integers(0, 256))
            served += _parse_or_refuse(bytes(corrupt), length)
        for token in (b"[", b"]", b"-", b"1e999", b"null", b'"', b"{}", b"0" * 30, b"9" * 25):
            for _ in range(30):
                at = int(rng.integers(0, end))
                served += _parse_or_refuse(body[:at] + token + body[at:], length)
    assert served > 0  # some corruptions land in values and still parse: the fuzz reaches deep


_WRONG_DATATYPES = [*DATATYPES, "FP8", "fp32", "", "BYTES", "INT128"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    claimed=st.one_of(
        st.none(),
        st.integers(-3, 400),
        st.text(max_size=8),
        st.sampled_from(["0x10", " 12", "1e2", "99999999999999999999"]),
    ),
    datatypes=st.lists(st.sampled_from(_WRONG_DATATYPES), min_size=3, max_size=3),
    keep=st.integers(0, 400),
)
def test_a_binary_body_whose_header_lies_is_parsed_or_refused_400_never_more(
    claimed: int | str | None, datatypes: list[str], keep: int
) -> None:
    """Triton's binary extension fuzzed where a schema cannot reach: the header length any
    value (a lie, too long, not a number), each tensor's datatype any name, the body cut
    anywhere. Whatever arrives is features or a RequestError (400), never another error."""
    arrays = _inputs(3)
    body, length = triton_body(arrays, True)
    assert length is not None
    header = orjson.loads(body[:length])
    for tensor, datatype in zip(header["inputs"], datatypes, strict=True):
        tensor["datatype"] = datatype
    rewritten = orjson.dumps(header)
    sent = (rewritten + body[length:])[: len(rewritten) + keep]
    _parse_or_refuse(sent, claimed)  # type: ignore[arg-type]


# --- model inputs ----------------------------------------------------------------------------

SCHEMA = FeatureSchema(
    (
        Feature("age", FeatureKind.DENSE),
        Feature("hour", FeatureKind.DENSE),
        Feature("user", FeatureKind.CATEGORICAL, 10),
        Feature("item", FeatureKind.CATEGORICAL, 20),
        Feature("genres", FeatureKind.MULTI_HOT, 6, max_len=3),
    )
)


def _inputs(rows: int = 4) -> dict[str, np.ndarray]:
    return {
        "dense": RNG.normal(size=(rows, 2)).astype(np.float32),
        "categorical": np.stack([RNG.integers(0, 10, rows), RNG.integers(0, 20, rows)], 1),
        "multi_hot": RNG.integers(0, 6, (rows, 1, 3)),
    }


def test_features_from_a_tritonclient_request_are_the_arrays_sent() -> None:
    arrays = _inputs()
    request = parse_infer_request(*triton_body(arrays))
    batch = features_from_inputs(request.inputs, SCHEMA, max_rows=16)
    assert len(batch) == 4
    for name, want in arrays.items():
        assert_same(getattr(batch, name), want)


def test_writable_arrays_reach_the_executor_without_a_copy_and_body_views_with_one() -> None:
    arrays = _inputs()
    batch = features_from_inputs(arrays, SCHEMA, max_rows=16)
    for name, array in arrays.items():
        assert np.shares_memory(getattr(batch, name), array)
    body, length = triton_body(arrays)
    views = parse_infer_request(body, length).inputs
    batch = features_from_inputs(views, SCHEMA, max_rows=16)
    batch.dense[:] += 1  # an executor may write: the body is untouched
    assert_same(parse_infer_request(body, length).inputs["dense"], arrays["dense"])


def test_int32_ids_are_cast_and_empty_kinds_may_be_left_out() -> None:
    schema = FeatureSchema((Feature("user", FeatureKind.CATEGORICAL, 10),))
    ids = np.array([[1], [9]], np.int32)
    batch = features_from_inputs({"categorical": ids}, schema, max_rows=2)
    assert_same(batch.categorical, ids.astype(np.int64))
    assert tuple(batch.dense.shape) == (2, 0)
    assert tuple(batch.multi_hot.shape) == (2, 0, 1)


def test_a_real_schema_takes_its_own_split(tiny_dataset: Dataset) -> None:
    split = tiny_dataset.test.head(50)
    want = split.features()
    arrays = {n: getattr(want, n).numpy() for n in ("dense", "categorical", "multi_hot")}
    for binary in (True, False):
        request = parse_infer_request(*triton_body(arrays, binary))
        batch = features_from_inputs(request.inputs, tiny_dataset.schema, max_rows=50)
        for name, array in arrays.items():
            assert_same(getattr(batch, name), array)


def _with(**changes: Any) -> dict[str, np.ndarray]:
    arrays = _inputs()
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    return arrays


def _bad_id() -> dict[str, np.ndarray]:
    arrays = _inputs()
    arrays["categorical"][2, 1] = 20
    return arrays


def _nan() -> dict[str, np.ndarray]:
    arrays = _inputs()
    arrays["dense"][1, 0] = np.nan
    return arrays


BAD_FEATURES: list[tuple[str, dict[str, np.ndarray], str]] = [
    ("unknown input", _with(extra=np.zeros(4)), r"unknown input\(s\) \['extra'\]"),
    ("missing input", _with(categorical=None), r"'categorical' is missing.*INT64 \[-1, 2\]"),
    ("dense FP64", _with(dense=np.zeros((4, 2))), "'dense' is FP64; the model wants FP32"),
    ("ids FP32", _with(categorical=np.zeros((4, 2), np.float32)), "'categorical' is FP32"),
    ("ids UINT8", _with(multi_hot=np.zeros((4, 1, 3), np.uint8)), "'multi_hot' is UINT8"),
    ("columns", _with(dense=np.zeros((4, 3), np.float32)), r"\[4, 3\].*FP32 \[-1, 2\]"),
    ("rank", _with(multi_hot=np.zeros((4, 3), np.int64)), r"\[4, 3\].*INT64 \[-1, 1, 3\]"),
    ("scalar", _with(dense=np.float32(1).reshape(())), r"shape \[\]"),
    ("rows differ", _with(dense=np.zeros((3, 2), np.float32)), "disagree on the number of rows"),
    ("no rows", {k: v[:0] for k, v in _inputs().items()}, "0 rows"),
    ("id too big", _bad_id(), r"'categorical' at \[2, 1\] \('item'\) is id 20, outside \[0, 20\)"),
    ("negative id", _with(multi_hot=-np.ones((4, 1, 3), np.int64)), "'genres'.*id -1"),
    ("nan", _nan(), r"'dense' at \[1, 0\] \('age'\) is nan"),
]


@pytest.mark.parametrize(
    ("arrays", "message"), [b[1:] for b in BAD_FEATURES], ids=[b[0] for b in BAD_FEATURES]
)
def test_inputs_the_model_cannot_take_are_400_naming_the_input(
    arrays: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        features_from_inputs(arrays, SCHEMA, max_rows=16)
    assert caught.value.status == 400


def test_too_many_rows_is_413() -> None:
    with pytest.raises(PayloadTooLargeError, match=r"4 rows.*at most 3") as caught:
        features_from_inputs(_inputs(4), SCHEMA, max_rows=3)
    assert caught.value.status == 413
