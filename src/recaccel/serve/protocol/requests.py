"""An inference request's body decoded: JSON header, then binary tensors or JSON `data`.

Every malformed body, from a bad byte count to a shape with a negative dimension, becomes a
`RequestError` (HTTP 400) raised here; nothing else may escape a parse. The wire format is in
the package's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from recaccel.data.schema import OUTPUT_NAME
from recaccel.serve.errors import RequestError
from recaccel.serve.protocol.wire import DATATYPES, HEADER_LENGTH, datatype_name

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
            f"{datatype_name(dtype)} needs {needed} bytes",
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
            f"{label} is {datatype_name(dtype)} but 'data' holds {_kind_words(array.dtype.kind)}"
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
            f"{datatype_name(dtype)}'s range [{info.min}, {info.max}]"
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
