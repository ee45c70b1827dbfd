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

The package in the order a request meets it: `wire` (header names, datatypes), `requests`
(decode a body), `inputs` (check the tensors against the model's schema), `responses` (encode
the answer, metadata, error bodies).
"""

from __future__ import annotations

from recaccel.serve.protocol.inputs import features_from_inputs
from recaccel.serve.protocol.requests import (
    InferRequest,
    RequestedOutput,
    parse_header_length,
    parse_infer_request,
)
from recaccel.serve.protocol.responses import (
    check_requested_outputs,
    encode_infer_response,
    error_body,
    model_metadata,
    server_metadata,
)
from recaccel.serve.protocol.wire import (
    BINARY_CONTENT_TYPE,
    BINARY_EXTENSION,
    DATATYPES,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    SERVER_NAME,
)

__all__ = [
    "BINARY_CONTENT_TYPE",
    "BINARY_EXTENSION",
    "DATATYPES",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "SERVER_NAME",
    "InferRequest",
    "RequestedOutput",
    "check_requested_outputs",
    "encode_infer_response",
    "error_body",
    "features_from_inputs",
    "model_metadata",
    "parse_header_length",
    "parse_infer_request",
    "server_metadata",
]
