"""The Open Inference Protocol's REST bodies (KServe v2, as Triton speaks it), encoded and decoded.

Why this protocol: it is what `tritonclient`, KServe and `perf_analyzer` already speak, so a
client written for Triton scores against recaccel unchanged, and recaccel's numbers can be
compared with Triton's on the same load generator.

Why Triton's binary tensor data extension: `tritonclient.http` uses it by default, and it is the
fast path. A JSON list of numbers costs a Python server per element twice (decode, then
`np.array`); raw little-endian bytes after the JSON header cost one `np.frombuffer` view of the
body, no copy and no per-element work: a 100-row MovieLens request parses in ~25-40 µs binary
against ~150-250 µs as JSON. JSON goes through orjson, not the stdlib, which decodes the same
body ~6x slower (~320 µs vs ~55 µs). The wire format (body = JSON header, then raw tensors):

    POST /v2/models/{name}/infer
    Inference-Header-Content-Length: N            (only when some tensor is binary)

    <N bytes of JSON>  {"id": "7",
                        "inputs": [{"name": "dense", "shape": [B, 4], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 16 * B}}, ...],
                        "outputs": [{"name": "score", "parameters": {"binary_data": true}}],
                        "parameters": {"binary_data_output": true}}
    <16 * B bytes of dense><... the next binary input's bytes>, in the order inputs are listed

Without the header the whole body is JSON and each input carries `data`, a row-major list, flat
or nested to its shape: what a curl user writes. A response mirrors the request: an output is
binary when its `binary_data` parameter says so, else when the request's `binary_data_output`
does, else JSON (tritonclient asks for binary unless told otherwise).

Why pure: the FastAPI routes stay a few lines, and every malformed body, from a bad byte count to
a shape with a negative dimension, becomes a `RequestError` (HTTP 400) raised and tested here,
without a server. Nothing else may escape a parse: a route answers any other exception as 500.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from recaccel.data.rows import Rows
from recaccel.data.schema import INPUT_NAMES, OUTPUT_NAME, Feature, FeatureSchema
from recaccel.serve.errors import PayloadTooLargeError, RequestError

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
BINARY_EXTENSION = "binary_tensor_data"
SERVER_NAME = "recaccel"

# OIP datatype -> numpy dtype, little-endian as the binary extension specifies.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_DATATYPE_OF = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}
_REFUSED_DATATYPES = {
    "BYTES": "recaccel's inputs are numeric: send ids as INT64 and features as FP32",
    "BF16": "send FP32; recaccel casts on the server where a backend runs lower precision",
}
_MAX_ELEMENTS = 1 << 40
_JSON_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}  # target kind -> accepted JSON kinds


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as raw bytes."""

    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded inference request.

    `inputs` are in request order; binary ones are read-only views of the body. An empty
    `outputs` means every output, each binary iff `binary_output_default`. `parameters` are the
    request-level ones (timeout, priority, ...), passed through for the server to read.
    """

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output_default: bool = False


# --- requests -------------------------------------------------------------------------------


def parse_header_length(value: int | str | None) -> int | None:
    """The JSON header's byte count from `Inference-Header-Content-Length` (None: all JSON)."""
    if value is None or isinstance(value, int):
        length = value
    elif value.strip().isascii() and value.strip().isdigit():
        length = int(value)
    else:
        raise RequestError(
            f"{HEADER_LENGTH} is {value!r}, not a byte count",
            "send the JSON header's length in bytes, or no such header for an all-JSON body",
        )
    if length is not None and length < 0:
        raise RequestError(f"{HEADER_LENGTH} is {length}; a byte count cannot be negative")
    return length


def parse_infer_request(
    body: bytes | bytearray | memoryview, header_length: int | str | None
) -> InferRequest:
    """Decode an inference request body; every problem with it is a `RequestError` (400).

    `header_length` is the `Inference-Header-Content-Length` header as received, None where it
    is absent. Binary inputs are read-only views of `body` (they keep it alive), not copies.
    """
    length = parse_header_length(header_length)
    view = memoryview(body).cast("B")
    if length is not None and length > len(view):
        raise RequestError(
            f"{HEADER_LENGTH} is {length} but the body has only {len(view)} bytes",
            "the header gives the JSON part's length; the body is that JSON, then the tensors",
        )
    header = _load_json(view if length is None else view[:length])
    if not isinstance(header, dict):
        raise RequestError(
            f"the request JSON is {_json_type(header)}, not an object",
            'send {"inputs": [{"name", "shape", "datatype", "data"}, ...]}',
        )
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"request 'id' is {_json_type(request_id)}; it must be a string")
    parameters = _object(header.get("parameters"), "request 'parameters'")
    binary_default = _bool(parameters.get("binary_data_output", False), "binary_data_output")
    binary_start = len(view) if length is None else length
    inputs = _parse_inputs(header.get("inputs"), view, binary_start)
    outputs = _parse_outputs(header.get("outputs"), binary_default)
    return InferRequest(request_id, inputs, outputs, parameters, binary_default)


def _load_json(data: memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            f"the request's JSON does not parse: {exc}",
            f"with binary tensors, {HEADER_LENGTH} must count exactly the JSON bytes",
        ) from None


def _parse_inputs(raw: Any, body: memoryview, binary_start: int) -> dict[str, np.ndarray]:
    if not isinstance(raw, list) or not raw:
        got = "no 'inputs'" if raw is None else f"'inputs' as {_json_type(raw)}"
        raise RequestError(
            f"the request has {got}; it needs a non-empty list of input tensors",
            'each input is {"name", "shape", "datatype", "data"} (or binary_data_size)',
        )
    inputs: dict[str, np.ndarray] = {}
    offset = binary_start
    for position, spec in enumerate(raw):
        name, array, offset = _parse_input(spec, position, body, offset)
        if name in inputs:
            raise RequestError(f"input {name!r} is given twice")
        inputs[name] = array
    if offset != len(body):
        raise RequestError(
            f"the body has {len(body) - offset} bytes after the last binary input",
            f"binary_data_size values must add up to the body length minus {HEADER_LENGTH}",
        )
    return inputs


def _parse_input(
    spec: Any, position: int, body: memoryview, offset: int
) -> tuple[str, np.ndarray, int]:
    """(name, array, offset of the next binary tensor) for the input at `position`."""
    if not isinstance(spec, dict):
        raise RequestError(f"inputs[{position}] is {_json_type(spec)}, not an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(f"inputs[{position}] has no 'name' string")
    label = f"input {name!r}"
    shape = _shape(spec.get("shape"), label)
    dtype = _dtype(spec.get("datatype"), label)
    parameters = _object(spec.get("parameters"), f"{label} 'parameters'")
    if "shared_memory_region" in parameters:
        raise RequestError(
            f"{label} names a shared memory region; recaccel has no shared memory extension",
            "send the tensor in the body, as binary data or as JSON 'data'",
        )
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in spec:
            raise RequestError(
                f"{label} has neither 'data' nor a binary_data_size parameter",
                "put the values in 'data', or the raw bytes after the JSON header",
            )
        return name, _from_json(spec["data"], shape, dtype, label), offset
    if "data" in spec:
        raise RequestError(f"{label} has both 'data' and binary_data_size; send one")
    array = _from_binary(body, offset, size, shape, dtype, label)
    return name, array, offset + array.nbytes


def _shape(raw: Any, label: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in raw
    ):
        raise RequestError(f"{label} 'shape' is {raw!r}; it must be a list of integers")
    if any(d < 0 for d in raw):
        raise RequestError(
            f"{label} has shape {raw}; a request's dimensions cannot be negative",
            "-1 is for model metadata; a request gives the actual size of every dimension",
        )
    if math.prod(d for d in raw if d) > _MAX_ELEMENTS:  # numpy refuses such shapes even empty
        raise RequestError(f"{label} has shape {raw}, larger than any request can carry")
    return tuple(raw)


def _dtype(raw: Any, label: str) -> np.dtype[Any]:
    if isinstance(raw, str) and raw in DATATYPES:
        return DATATYPES[raw]
    if isinstance(raw, str) and raw in _REFUSED_DATATYPES:
        raise RequestError(
            f"{label} is {raw}, which recaccel does not take", _REFUSED_DATATYPES[raw]
        )
    raise RequestError(f"{label} has datatype {raw!r}", f"use one of {', '.join(DATATYPES)}")


def _from_binary(
    body: memoryview,
    offset: int,
    size: Any,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    label: str,
) -> np.ndarray:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RequestError(f"{label} binary_data_size is {size!r}, not a byte count")
    needed = math.prod(shape) * dtype.itemsize
    if size != needed:
        raise RequestError(
            f"{label} binary_data_size is {size} but shape {list(shape)} of "
            f"{_datatype_name(dtype)} needs {needed} bytes",
        )
    if offset + size > len(body):
        raise RequestError(
            f"{label} needs bytes {offset}..{offset + size} of the body, which has {len(body)}",
            f"binary tensors follow the JSON header ({HEADER_LENGTH}) in input order",
        )
    if size == 0:
        return np.empty(shape, dtype)
    return np.frombuffer(body, dtype, math.prod(shape), offset).reshape(shape)


def _from_json(data: Any, shape: tuple[int, ...], dtype: np.dtype[Any], label: str) -> np.ndarray:
    if not isinstance(data, list):
        raise RequestError(f"{label} 'data' is {_json_type(data)}; it must be a list")
    try:
        array = _numbers(data, dtype, label)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(
            f"{label} 'data' is not a rectangular list of numbers",
            f"give {math.prod(shape)} numbers, flat or nested as {list(shape)}",
        ) from None
    if array.size != math.prod(shape) or (array.ndim > 1 and array.shape != shape):
        got = f"{array.size} values" if array.ndim <= 1 else f"a {list(array.shape)} nesting"
        raise RequestError(
            f"{label} has shape {list(shape)} ({math.prod(shape)} values) but 'data' holds {got}",
            "give the values flat in row-major order, or nested exactly as the shape",
        )
    if array.size == 0:
        return np.empty(shape, dtype)
    if array.dtype.kind not in _JSON_KINDS[dtype.kind]:
        raise RequestError(
            f"{label} is {_datatype_name(dtype)} but 'data' holds {_kind_words(array.dtype.kind)}"
        )
    if dtype.kind in "iu":
        _check_range(int(array.min()), int(array.max()), dtype, label)
    return array.astype(dtype).reshape(shape)


def _numbers(data: list[Any], dtype: np.dtype[Any], label: str) -> np.ndarray:
    """`data` as numpy infers it, except that integers stay exact for an integer `dtype`.

    numpy infers float64 for Python ints that straddle int64 and uint64 (a UINT64 tensor's
    values above 2**63 beside small ones); those are converted exactly instead.
    """
    array = np.array(data)
    if dtype.kind in "iu" and array.dtype.kind == "f" and array.size:
        leaves = np.array(data, dtype=object).ravel().tolist()
        if all(type(v) is int for v in leaves):
            _check_range(min(leaves), max(leaves), dtype, label)
            return np.array(leaves, dtype=dtype).reshape(array.shape)
    return array


def _check_range(low: int, high: int, dtype: np.dtype[Any], label: str) -> None:
    info = np.iinfo(dtype)
    if low < info.min or high > info.max:
        raise RequestError(
            f"{label} 'data' holds {low if low < info.min else high}, outside "
            f"{_datatype_name(dtype)}'s range [{info.min}, {info.max}]"
        )


def _parse_outputs(raw: Any, binary_default: bool) -> list[RequestedOutput]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RequestError(f"request 'outputs' is {_json_type(raw)}; it must be a list")
    outputs: list[RequestedOutput] = []
    for position, spec in enumerate(raw):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise RequestError(f"outputs[{position}] is not an object with a 'name' string")
        name: str = spec["name"]
        parameters = _object(spec.get("parameters"), f"output {name!r} 'parameters'")
        if parameters.get("classification", 0):
            raise RequestError(
                f"output {name!r} asks for classification; recaccel has no classification "
                "extension",
                f"{OUTPUT_NAME!r} is one click probability per row: read it as is",
            )
        if "shared_memory_region" in parameters:
            raise RequestError(
                f"output {name!r} names a shared memory region; recaccel has no shared memory "
                "extension",
                "ask for it in the body, binary or JSON",
            )
        binary = _bool(parameters.get("binary_data", binary_default), "binary_data")
        if any(o.name == name for o in outputs):
            raise RequestError(f"output {name!r} is requested twice")
        outputs.append(RequestedOutput(name, binary))
    return outputs


def _object(raw: Any, label: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RequestError(f"{label} is {_json_type(raw)}; it must be an object")
    return raw


def _bool(raw: Any, label: str) -> bool:
    if not isinstance(raw, bool):
        raise RequestError(f"parameter {label} is {raw!r}; it must be true or false")
    return raw


def _json_type(value: Any) -> str:
    """`value`'s JSON type with its article, for messages: "an object", "a list", ..."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


def _kind_words(kind: str) -> str:
    return {
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "numbers that are not integers",
    }.get(kind, "values that are not numbers")


def _datatype_name(dtype: np.dtype[Any]) -> str:
    name = _DATATYPE_OF.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise TypeError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")
    return name


# --- responses ------------------------------------------------------------------------------


def check_requested_outputs(request: InferRequest, available: Sequence[str]) -> None:
    """Refuse, before running the model, a request for an output the model does not have."""
    unknown = [o.name for o in request.outputs if o.name not in available]
    if unknown:
        raise RequestError(
            f"unknown output(s) {unknown}", f"the model's outputs are: {', '.join(available)}"
        )


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) answering `request` with `outputs`, each binary iff the request asked.

    Headers carry the Content-Type, and `Inference-Header-Content-Length` when any output is
    binary: tritonclient reads the body as all JSON without it.
    """
    check_requested_outputs(request, list(outputs))
    wanted = request.outputs or [
        RequestedOutput(name, request.binary_output_default) for name in outputs
    ]
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for want in wanted:
        array = outputs[want.name]
        tensor: dict[str, Any] = {
            "name": want.name,
            "datatype": _datatype_name(array.dtype),
            "shape": list(array.shape),
        }
        if want.binary:
            blob = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = np.ascontiguousarray(array, array.dtype.newbyteorder("=")).ravel()
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = tensors
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    headers = {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header))}
    return b"".join([header, *blobs]), headers


def error_body(message: str, reason: str | None = None) -> bytes:
    """The protocol's error body, `{"error": message}`; a refusal adds `"reason": code`, which
    clients that read only `error` (tritonclient) ignore."""
    return orjson.dumps(
        {"error": message} if reason is None else {"error": message, "reason": reason}
    )


def server_metadata(version: str, extensions: Sequence[str] = ()) -> dict[str, Any]:
    """GET /v2: the server's name, version and protocol extensions (binary tensors always)."""
    names = [BINARY_EXTENSION, *(e for e in extensions if e != BINARY_EXTENSION)]
    return {"name": SERVER_NAME, "version": version, "extensions": names}


def model_metadata(
    name: str, versions: Sequence[str], schema: FeatureSchema, platform: str = "recaccel"
) -> dict[str, Any]:
    """GET /v2/models/{name}: the three schema tensors in, one click probability per row out.

    -1 marks the batch dimension, the only one a client chooses.
    """
    specs = _model_inputs(schema).values()
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": [{"name": s.name, "datatype": s.datatype, "shape": [-1, *s.tail]} for s in specs],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}],
    }


# --- model inputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelInput:
    """What one of the model's three inputs must be, derived once per schema."""

    name: str
    datatype: str
    accepted: tuple[str, ...]  # datatypes taken, cast to `datatype`
    tail: tuple[int, ...]  # the shape after the batch dimension
    fields: tuple[Feature, ...]  # one per column (axis 1)
    limits: np.ndarray | None  # uint64 cardinalities, broadcast against one row; None: dense

    @property
    def wanted(self) -> str:
        return f"{self.datatype} {[-1, *self.tail]}"

    @property
    def columns(self) -> str:
        names = ", ".join(f.name for f in self.fields) or "none"
        return f"{self.name} columns in order: {names}"


# The graph's input names, in order (export.py), and the schema kind each carries.
_DENSE, _CATEGORICAL, _MULTI_HOT = INPUT_NAMES

# Schema properties rebuild their tuples on every access (~2 µs each), which a request would
# pay a dozen times; schemas are few and long-lived, so each one's inputs are derived once.
_MODEL_INPUTS: dict[int, tuple[FeatureSchema, dict[str, _ModelInput]]] = {}


def _model_inputs(schema: FeatureSchema) -> dict[str, _ModelInput]:
    cached = _MODEL_INPUTS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    if len(_MODEL_INPUTS) >= 64:
        _MODEL_INPUTS.clear()
    ids = ("INT64", "INT32")
    multi_hot = schema.multi_hot
    inputs = {
        _DENSE: _ModelInput(_DENSE, "FP32", ("FP32",), (len(schema.dense),), schema.dense, None),
        _CATEGORICAL: _ModelInput(
            _CATEGORICAL,
            "INT64",
            ids,
            (len(schema.categorical),),
            schema.categorical,
            _limits(schema.categorical),
        ),
        _MULTI_HOT: _ModelInput(
            _MULTI_HOT,
            "INT64",
            ids,
            (len(multi_hot), schema.multi_hot_len),
            multi_hot,
            _limits(multi_hot)[:, None],
        ),
    }
    _MODEL_INPUTS[id(schema)] = (schema, inputs)
    return inputs


def _limits(fields: tuple[Feature, ...]) -> np.ndarray:
    return np.array([f.cardinality for f in fields], dtype=np.uint64)


def features_from_inputs(
    inputs: Mapping[str, np.ndarray], schema: FeatureSchema, max_rows: int
) -> Rows:
    """The model batch in `inputs`, checked against `schema`: names, datatypes, shapes, ids.

    An input whose per-row size is zero (a schema with no dense field, say) may be left out.
    More than `max_rows` rows is a `PayloadTooLargeError` (413); every other problem is a
    `RequestError` (400) naming the input and what it should have been. Arrays are kept
    without a copy where an executor can take them (writable, aligned, right dtype); views of a
    request body are read-only, so those are copied once, here.
    """
    specs = _model_inputs(schema)
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise RequestError(
            f"unknown input(s) {unknown}", f"the model's inputs are: {', '.join(specs)}"
        )
    for spec in specs.values():
        if spec.name not in inputs and math.prod(spec.tail) > 0:
            raise RequestError(
                f"input {spec.name!r} is missing; the model wants {spec.wanted}",
                f"see GET /v2/models/<name> for the inputs; {spec.columns}",
            )
    arrays = {name: _model_input(array, specs[name]) for name, array in inputs.items()}
    rows = _rows({name: a.shape[0] for name, a in arrays.items()})
    if rows > max_rows:
        raise PayloadTooLargeError(
            f"the request has {rows} rows; this server takes at most {max_rows} per request",
            "split the request",
        )
    for spec in specs.values():
        if spec.name not in arrays:  # zero values per row: nothing to send
            arrays[spec.name] = np.zeros((rows, *spec.tail), DATATYPES[spec.datatype])
    _check_ids(arrays[_CATEGORICAL], specs[_CATEGORICAL])
    _check_ids(arrays[_MULTI_HOT], specs[_MULTI_HOT])
    _check_finite(arrays[_DENSE], specs[_DENSE])
    return Rows(arrays[_DENSE], arrays[_CATEGORICAL], arrays[_MULTI_HOT])


def _model_input(array: np.ndarray, spec: _ModelInput) -> np.ndarray:
    """`array` as an executor can take it without a copy, or why it is not the model's input."""
    got = _DATATYPE_OF.get((array.dtype.kind, array.dtype.itemsize))
    if got not in spec.accepted:
        raise RequestError(
            f"input {spec.name!r} is {got or array.dtype}; the model wants {spec.datatype}",
            f"send {' or '.join(spec.accepted)}",
        )
    if array.shape[1:] != spec.tail or array.ndim != 1 + len(spec.tail):
        raise RequestError(
            f"input {spec.name!r} has shape {list(array.shape)}; the model wants {spec.wanted}",
            f"-1 is the number of rows; {spec.columns}",
        )
    return np.require(array, DATATYPES[spec.datatype], ("C", "A", "W"))


def _rows(rows: Mapping[str, int]) -> int:
    """B, the rows every input has, or why there is no one B."""
    if len(set(rows.values())) > 1:
        raise RequestError(
            f"inputs disagree on the number of rows: {dict(rows)}",
            "row i of every input describes the same candidate",
        )
    count = int(next(iter(rows.values())))
    if count < 1:
        raise RequestError("the request has 0 rows; send at least one")
    return count


def _check_finite(dense: np.ndarray, spec: _ModelInput) -> None:
    """Refuse NaN and infinity, which would come back as a NaN score (JSON null)."""
    finite = np.isfinite(dense)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise RequestError(
            f"input {spec.name!r} at [{row}, {column}] ({spec.fields[column].name!r}) is "
            f"{dense[row, column]}",
            "dense features must be finite numbers",
        )


def _check_ids(ids: np.ndarray, spec: _ModelInput) -> None:
    """Refuse an id outside its field's embedding table, which a backend would fail on.

    Viewed as unsigned, a negative id is huge, so one comparison catches both ends.
    """
    if ids.size == 0 or spec.limits is None:
        return
    bad = ids.view(np.uint64) >= spec.limits
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        field_ = spec.fields[where[1]]
        raise RequestError(
            f"input {spec.name!r} at {list(where)} ({field_.name!r}) is id {ids[where]}, "
            f"outside [0, {field_.cardinality})",
            "encode values with the model's schema; 0 is the id of an unknown value",
        )
