"""The wire's names and datatypes, shared by requests, responses and the model's inputs.

Split out of the protocol so each of those three reads only what it uses; see the package's
docstring for the wire format itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
# (kind, itemsize) -> OIP datatype: the name of an array's dtype on the wire.
DATATYPE_OF = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}


def datatype_name(dtype: np.dtype[Any]) -> str:
    """`dtype`'s Open Inference Protocol datatype ("FP32", "INT64", ...)."""
    name = DATATYPE_OF.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise TypeError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")
    return name
