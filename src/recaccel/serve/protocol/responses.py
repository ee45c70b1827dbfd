"""What the server answers: an inference response, an error body, server and model metadata.

An output goes back binary when the request asked for it (see the package's docstring for the
wire format); tritonclient reads the body as all JSON unless the response says where the JSON
ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from recaccel.data.schema import OUTPUT_NAME, FeatureSchema
from recaccel.serve.errors import RequestError
from recaccel.serve.protocol.inputs import model_inputs
from recaccel.serve.protocol.requests import InferRequest, RequestedOutput
from recaccel.serve.protocol.wire import (
    BINARY_CONTENT_TYPE,
    BINARY_EXTENSION,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    SERVER_NAME,
    datatype_name,
)


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
            "datatype": datatype_name(array.dtype),
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
    specs = model_inputs(schema).values()
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": [{"name": s.name, "datatype": s.datatype, "shape": [-1, *s.tail]} for s in specs],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}],
    }
