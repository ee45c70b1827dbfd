"""The split twin of a model (models/split) as one ONNX graph, so ONNX Runtime and OpenVINO run
request-level reuse too; or as its two halves, so the request parts can be kept between
requests (`export_split_halves`, runtime/part_cache.py).

Inputs: the request rows' three tensors (R rows), the candidate rows' three (N rows) and
`owner` (N,) int64, each candidate's request; output: (N,) logits. Both row axes are dynamic.
The same exporter as the unsplit graph (export.py): torch.export, then onnxscript, bags and
quantized tables as gathers (onnx_lookups.py), checked in ONNX Runtime against PyTorch before
the file is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
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
)
from recaccel.runtime.onnx_lookups import onnx_lookups

REQUEST_INPUT_NAMES = tuple(f"request_{name}" for name in INPUT_NAMES)
OWNER_NAME = "owner"
SPLIT_INPUT_NAMES = (*REQUEST_INPUT_NAMES, *INPUT_NAMES, OWNER_NAME)
# The two halves' graphs (export_split_halves): the request part between them.
PART_NAME = "request_part"
PART_INPUT_NAMES = (PART_NAME, OWNER_NAME, *INPUT_NAMES)
REQUEST_HALF_FILE = "request.onnx"


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
    _refuse_pytorch_only(twin)
    requests, rows = Dim("requests", min=1), Dim("rows", min=1)
    _export_checked(
        twin,
        split_example(schema, 2, 4),  # torch.export specializes sizes 0 and 1
        split_example(schema, 3, 37, seed=5),
        SPLIT_INPUT_NAMES,
        (*({0: requests},) * 3, *({0: rows},) * 3, {0: rows}),
        path,
        opset,
    )
    return path


class RequestHalf(nn.Module):
    """A twin's `request`: the request rows' three tensors in, (R, K) parts out."""

    def __init__(self, twin: SplitModel) -> None:
        super().__init__()
        self.twin = twin

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        return self.twin.request(dense, categorical, multi_hot)


class CandidateHalf(nn.Module):
    """A twin's `candidates`: parts, owners and candidate rows in, (N,) logits out."""

    def __init__(self, twin: SplitModel) -> None:
        super().__init__()
        self.twin = twin

    def forward(
        self,
        part: torch.Tensor,
        owner: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
    ) -> torch.Tensor:
        return self.twin.candidates(part, owner, dense, categorical, multi_hot)


def request_half_file(path: Path) -> Path:
    """Where `export_split_halves` writes the request half, beside the candidate half."""
    return path.with_name(REQUEST_HALF_FILE)


def export_split_halves(
    twin: SplitModel, schema: FeatureSchema, path: Path, opset: int = DEFAULT_OPSET
) -> Path:
    """The twin as two graphs, so the request parts can be kept between requests
    (runtime/part_cache.py): the candidate half at `path` (inputs PART_INPUT_NAMES, output
    logits) and the request half beside it (`request_half_file`: the request rows' three
    tensors in, (R, K) `PART_NAME` out). Each checked against PyTorch, as `export_split_onnx`.
    """
    _refuse_pytorch_only(twin)
    requests, rows = Dim("requests", min=1), Dim("rows", min=1)
    example, check = split_example(schema, 2, 4), split_example(schema, 3, 37, seed=5)
    with torch.no_grad():
        parts = [twin.request(*inputs[:3]) for inputs in (example, check)]
    _export_checked(
        RequestHalf(twin),
        example[:3],
        check[:3],
        REQUEST_INPUT_NAMES,
        ({0: requests},) * 3,
        request_half_file(path),
        opset,
        output=PART_NAME,
    )
    _export_checked(
        CandidateHalf(twin),
        (parts[0], *example[6:], *example[3:6]),
        (parts[1], *check[6:], *check[3:6]),
        PART_INPUT_NAMES,
        ({0: requests}, *({0: rows},) * 4),
        path,
        opset,
    )
    return path


def _refuse_pytorch_only(twin: SplitModel) -> None:
    if unsupported := unsupported_ops(twin):
        (name, op), *_ = unsupported
        raise UnsupportedOnBackendError(
            op,
            BACKEND,
            f"the split twin ({name})",
            "serve its float parent with reuse on onnxruntime, or this artifact with reuse on "
            "torch-eager",
        )


def _export_checked(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    check: tuple[torch.Tensor, ...],
    input_names: tuple[str, ...],
    dynamic_shapes: tuple[dict[int, Any], ...],
    path: Path,
    opset: int,
    output: str = OUTPUT_NAME,
) -> None:
    """Export `module` to `path` and check ORT's output on `check` against PyTorch's, removing
    the file (ExportMismatchError) when they differ."""
    form = onnx_lookups(shared_copy(module))
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_exporter():
        program = torch.onnx.export(
            form,
            example,
            dynamo=True,
            opset_version=opset,
            input_names=list(input_names),
            output_names=[output],
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns the program
    proto = program.model_proto
    strip_metadata(proto)
    save_onnx(proto, path)
    with torch.no_grad():
        expected = module(*check).numpy()
    feeds = {name: t.numpy() for name, t in zip(input_names, check, strict=True)}
    got = onnx_session(path).run([output], feeds)[0]
    if got.shape != expected.shape or not np.allclose(
        got, expected, atol=EXPORT_ATOL, rtol=EXPORT_RTOL
    ):
        path.unlink()
        raise ExportMismatchError(
            f"the split graph's outputs differ from PyTorch's; {path} was removed",
            "the exporter mistranslated an op: report it with the model",
        )


__all__ = [
    "PART_INPUT_NAMES",
    "SPLIT_INPUT_NAMES",
    "export_split_halves",
    "export_split_onnx",
    "request_half_file",
    "split_example",
    "split_feeds",
]
