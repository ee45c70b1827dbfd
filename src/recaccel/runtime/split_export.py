"""The split twin of a model (models/split) as one ONNX graph, so ONNX Runtime and OpenVINO run
request-level reuse too.

Inputs: the request rows' three tensors (R rows), the candidate rows' three (N rows) and
`owner` (N,) int64, each candidate's request; output: (N,) logits. Both row axes are dynamic.
The same exporter as the unsplit graph (export.py): torch.export, then onnxscript, bags as
gathers, checked in ONNX Runtime against PyTorch before the file is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.export import Dim

from recaccel.data.schema import INPUT_NAMES, OUTPUT_NAME, FeatureSchema
from recaccel.models.split import SplitModel, split_example
from recaccel.runtime.export import (
    BACKEND,
    DEFAULT_OPSET,
    EXPORT_ATOL,
    EXPORT_RTOL,
    ExportMismatchError,
    UnsupportedOnBackendError,
    onnx_session,
    quiet_exporter,
    save_onnx,
    shared_copy,
    strip_metadata,
    unsupported_ops,
    with_gather_bags,
)

REQUEST_INPUT_NAMES = tuple(f"request_{name}" for name in INPUT_NAMES)
OWNER_NAME = "owner"
SPLIT_INPUT_NAMES = (*REQUEST_INPUT_NAMES, *INPUT_NAMES, OWNER_NAME)


def split_feeds(inputs: tuple[torch.Tensor | np.ndarray, ...]) -> dict[str, np.ndarray]:
    """The graph's input dict for the twin's seven inputs (tensors or arrays, no copy)."""
    return {
        name: t.numpy() if isinstance(t, torch.Tensor) else t
        for name, t in zip(SPLIT_INPUT_NAMES, inputs, strict=True)
    }


def export_split_onnx(
    twin: SplitModel, schema: FeatureSchema, path: Path, opset: int = DEFAULT_OPSET
) -> Path:
    """Write the twin's graph to `path`, checked against PyTorch on 3 requests × 37 rows.

    Raises UnsupportedOnBackendError for a model with PyTorch-only quantized ops, and
    ExportMismatchError (removing the file) when ORT's logits are not PyTorch's."""
    if unsupported := unsupported_ops(twin):
        (name, op), *_ = unsupported
        raise UnsupportedOnBackendError(
            op,
            BACKEND,
            f"the split twin ({name})",
            "serve its float parent with reuse on onnxruntime, or this artifact with reuse on "
            "torch-eager",
        )
    form = with_gather_bags(shared_copy(twin))
    requests, rows = Dim("requests", min=1), Dim("rows", min=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_exporter():
        program = torch.onnx.export(
            form,
            split_example(schema, 2, 4),  # torch.export specializes sizes 0 and 1
            dynamo=True,
            opset_version=opset,
            input_names=list(SPLIT_INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(
                *({0: requests},) * 3,
                *({0: rows},) * 3,
                {0: rows},
            ),
            optimize=True,
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns the program
    proto = program.model_proto
    strip_metadata(proto)
    save_onnx(proto, path)
    check = split_example(schema, 3, 37, seed=5)
    with torch.no_grad():
        expected = twin(*check).numpy()
    got = onnx_session(path).run([OUTPUT_NAME], split_feeds(check))[0]
    if got.shape != expected.shape or not np.allclose(
        got, expected, atol=EXPORT_ATOL, rtol=EXPORT_RTOL
    ):
        path.unlink()
        raise ExportMismatchError(
            f"the split graph's scores differ from PyTorch's; {path} was removed",
            "the exporter mistranslated an op: report it with the model",
        )
    return path


__all__ = ["SPLIT_INPUT_NAMES", "export_split_onnx", "split_example", "split_feeds"]
