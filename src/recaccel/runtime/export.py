"""The ONNX form of a model: export it, check it against PyTorch, run it in ONNX Runtime.

The graph's inputs are the schema's three tensors and its output is the model's logit:

    dense        (batch, n_dense)             float32
    categorical  (batch, n_categorical)       int64
    multi_hot    (batch, n_multi_hot, L)      int64, 0 = padding
    score        (batch,)                     float32 logits, exactly what the PyTorch model
                                              returns; sigmoid(score) is the click probability

Exporter: `torch.onnx.export(dynamo=True)` (torch.export, then onnxscript). It is torch 2.13's
default and supported path; the legacy TorchScript exporter is deprecated and refuses
`nn.EmbeddingBag` with `padding_idx` outright ("embedding_bag with padding_idx"). The dynamo
exporter does translate the bag, but as an ONNX `Loop` over rows (onnxscript's
`aten_embedding_bag`), which ORT runs as a subgraph once per row. So each bag, and each
row-wise quantized table, is first swapped for what it computes (runtime/onnx_lookups.py):
plain gathers and a sum, quantized rows dequantized after the gather. Its graph also comes out
with constants folded into initializers, where the legacy exporter leaves dozens of Constant
nodes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.export import Dim

from recaccel.artifact import Artifact
from recaccel.data.dataset import FeatureBatch, example_batch
from recaccel.data.rows import Rows
from recaccel.data.schema import INPUT_NAMES, OUTPUT_NAME, FeatureSchema
from recaccel.errors import RecaccelError
from recaccel.imported.adapter import BoundModel
from recaccel.imported.onnx_graph import OnnxGraph, bind_onnx
from recaccel.models.quant.half import HalfPrecisionMLP
from recaccel.models.quant.int8 import Int8DynamicLinear, Int8StaticMLP
from recaccel.runtime.executor import outermost_ops
from recaccel.runtime.onnx_lookups import UnsupportedLookupError, onnx_lookups

log = logging.getLogger(__name__)

BACKEND = "ONNX Runtime"
# torch 2.13's exporter writes opset 20 natively (no lossy version-conversion pass), and ORT has
# run opset 20 since 1.17, below the >= 1.18 this project requires.
DEFAULT_OPSET = 20
# ORT and PyTorch sum in different orders (ORT's MLAS vs PyTorch's BLAS): measured logit
# differences are <= 3e-7 on the small presets. 1e-4 (+ 1e-4 relative) leaves room for the
# 1024-wide heavy MLPs and still catches a wrong op, which is off by orders of magnitude more.
EXPORT_ATOL = 1e-4
EXPORT_RTOL = 1e-4
TRACE_ROWS = 4  # torch.export specializes sizes 0 and 1, so trace with neither
VERIFY_ROWS = 37  # another size, so the check also exercises the dynamic batch axis
# Past this many bytes of weights, they go to `<name>.onnx.data` beside the graph. ONNX Runtime
# memory-maps external weights on CPU, so every process serving the graph shares one copy in
# the page cache; weights inside the protobuf are copied into each session (measured:
# docs/weights-in-memory.md). Below it the copies are small next to a process's own memory.
# (Past 2 GiB a protobuf cannot be serialized at all.)
EXTERNAL_DATA_BYTES = 64 << 20

# Packages of PyTorch's quantized modules: their packed weights are opaque objects and their
# ops (`quantized::linear_dynamic`, ...) have no ONNX translation. `reference` modules are
# plain quantize/dequantize arithmetic and export fine, so they are not listed.
_TORCH_QUANTIZED = (
    "torch.ao.nn.quantized.modules",
    "torch.ao.nn.quantized.dynamic",
    "torch.ao.nn.intrinsic.quantized",
    "torch.nn.quantized",
)
# recaccel's own quantized dense layers (the `quantize_dense` transform) and the op each stands
# for: FBGEMM's packed weights are opaque objects, and ONNX has no half-precision MLP wrapper.
_RECACCEL_DENSE_OPS: dict[type[nn.Module], str] = {
    Int8DynamicLinear: "quantized::linear_dynamic",
    Int8StaticMLP: "quantized::linear_relu",
    HalfPrecisionMLP: "a half-precision (fp16/bf16) MLP",
}
_MISSING_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)'")


class UnsupportedOnBackendError(RecaccelError):
    """A model uses an op that a serving backend cannot run."""

    def __init__(self, op: str, backend: str, where: str, hint: str) -> None:
        super().__init__(f"{where} uses {op}, which cannot be exported to {backend}", hint)
        self.op, self.backend = op, backend


class ExportMismatchError(RecaccelError):
    """The exported graph does not compute what the PyTorch model computes."""


def import_onnxruntime() -> Any:
    """ONNX Runtime, imported on first use so the PyTorch path never needs it."""
    try:
        import onnxruntime
    except ImportError:
        raise RecaccelError(
            "ONNX Runtime is not installed", "pip install onnxruntime (a recaccel dependency)"
        ) from None
    return onnxruntime


def _quantized_op(module: nn.Module) -> str | None:
    """The op that makes `module` unexportable, or None when it exports."""
    cls = type(module)
    for layer_type, op in _RECACCEL_DENSE_OPS.items():
        if isinstance(module, layer_type):
            return op
    if cls.__module__.startswith(_TORCH_QUANTIZED):
        suffix = "_dynamic" if ".dynamic" in cls.__module__ else ""
        return f"quantized::{cls.__name__.lower()}{suffix}"
    return None


def unsupported_ops(model: nn.Module) -> list[tuple[str, str]]:
    """(submodule name, op) for each quantized part of `model` that has no ONNX form."""
    return outermost_ops(model, _quantized_op)


def _describe(artifact: Artifact | None) -> str:
    if artifact is None:
        return "the model"
    made_by = [str(t.get("op")) for t in artifact.manifest.transforms]
    return f"artifact {artifact.path}" + (f" (made by {', '.join(made_by)})" if made_by else "")


def _float_hint(artifact: Artifact | None) -> str:
    parent = ""
    if artifact is not None and artifact.manifest.parent:
        parent = f" (this artifact's parent is {artifact.manifest.parent})"
    return (
        f"export the float model before quantization{parent} with export_onnx, then quantize "
        "the ONNX file with ONNX Runtime's own tools: recaccel.runtime.onnx_quantize."
        "quantize_onnx(float_onnx, out, mode='int8-dynamic', 'int8-static' or 'fp16')"
    )


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of the module tree that shares every parameter and buffer (no weights copied),
    so export can switch modes and swap submodules without touching the caller's model."""
    shared: dict[int, Any] = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, shared).eval()


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Mute exporter chatter that says nothing about the model: a warning per missing
    torchvision op, the graph optimizer's per-node INFO lines, a FutureWarning torch.export
    raises inside itself, and a note that the three inputs share the "batch" axis (intended)."""
    loggers = [
        logging.getLogger(name)
        for name in ("torch.onnx._internal.exporter._registration", "onnxscript", "onnx_ir")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
            warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def strip_metadata(model: onnx.ModelProto) -> None:
    """Drop the per-node metadata the exporter records: each node's Python stack trace (with
    the build machine's absolute paths) and FX names. They leak paths and make up about half
    of a small model's file, which would hide what quantization saves."""
    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        del value.metadata_props[:]
    for tensor in graph.initializer:
        del tensor.metadata_props[:]


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Save `model`, its weights in `<name>.data` beside it past `EXTERNAL_DATA_BYTES`."""
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights > EXTERNAL_DATA_BYTES:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{path.name}.data",
        )
    else:
        onnx.save_model(model, str(path))


def export_onnx(
    source: Artifact | nn.Module,
    schema: FeatureSchema | None,
    path: Path,
    opset: int = DEFAULT_OPSET,
    example: FeatureBatch | None = None,
) -> Path:
    """Export a model to ONNX with a dynamic batch axis, and check it in ONNX Runtime.

    Args:
        source: an artifact or a zoo model (float; see `unsupported_ops`).
        schema: the model's feature schema; None takes the artifact's.
        path: the .onnx file to write (parents are created).
        opset: ai.onnx opset version.
        example: rows to check ORT's logits against PyTorch's on; None: `VERIFY_ROWS` random
            valid rows.

    Returns:
        `path`.

    Raises:
        UnsupportedOnBackendError: the model holds quantized modules ORT cannot run.
        ExportMismatchError: ORT's logits differ from PyTorch's by more than `EXPORT_ATOL`.
    """
    artifact = source if isinstance(source, Artifact) else None
    model = source.model if isinstance(source, Artifact) else source
    if schema is None:
        if artifact is None:
            raise RecaccelError("export_onnx needs a schema for a bare model", "pass schema=")
        schema = artifact.schema
    path = Path(path)
    if isinstance(model, BoundModel) and isinstance(model.inner, OnnxGraph):
        # An imported ONNX model is already a graph: bind it, do not trace its Python shell.
        path.parent.mkdir(parents=True, exist_ok=True)
        user_graph = onnx.load_from_string(model.inner.model_bytes)
        save_onnx(bind_onnx(user_graph, schema, model.binding, model.order), path)
        _check_against_torch(model, path, example or example_batch(schema, VERIFY_ROWS, seed=1))
        return path
    where = _describe(artifact)
    unsupported = unsupported_ops(model)
    if unsupported:
        name, op = unsupported[0]
        more = f" and {len(unsupported) - 1} more" if len(unsupported) > 1 else ""
        raise UnsupportedOnBackendError(
            op, BACKEND, f"{where} ({name or 'root'}{more})", _float_hint(artifact)
        )

    reference = shared_copy(model)
    try:
        form = onnx_lookups(shared_copy(reference))
    except UnsupportedLookupError as exc:
        raise UnsupportedOnBackendError(exc.op, BACKEND, where, exc.hint) from None
    batch = Dim("batch", min=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_exporter():
            program = torch.onnx.export(
                form,
                example_batch(schema, TRACE_ROWS).as_tuple(),
                dynamo=True,
                opset_version=opset,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
                optimize=True,
                verbose=False,
            )
    except torch.onnx.OnnxExporterError as exc:
        lookup = _lookup_error_in(exc)  # a bag called with offsets
        if lookup is not None:
            raise UnsupportedOnBackendError(lookup.op, BACKEND, where, lookup.hint) from None
        match = _MISSING_OP.search(str(exc))
        if match is None:
            raise
        raise UnsupportedOnBackendError(
            match.group(1), BACKEND, where, _float_hint(artifact)
        ) from exc
    assert program is not None  # dynamo=True always returns the program
    proto = program.model_proto
    strip_metadata(proto)
    save_onnx(proto, path)

    check = example if example is not None else example_batch(schema, VERIFY_ROWS, seed=1)
    _check_against_torch(reference, path, check)
    return path


def _lookup_error_in(error: BaseException) -> UnsupportedLookupError | None:
    """The UnsupportedLookupError `error` wraps (torch.export wraps what the model raised)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, UnsupportedLookupError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _check_against_torch(model: nn.Module, path: Path, batch: FeatureBatch) -> None:
    """Run `path` in ORT on `batch`; delete it and raise if its logits are not PyTorch's."""
    with torch.no_grad():
        expected = model(*batch.as_tuple()).float().numpy()
    got = run_onnx(path, batch)
    diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else np.inf
    if got.shape != expected.shape or not np.allclose(
        got, expected, atol=EXPORT_ATOL, rtol=EXPORT_RTOL
    ):
        path.unlink()  # a wrong model must not be picked up later by mistake
        raise ExportMismatchError(
            f"the ONNX export's scores differ from PyTorch's (max abs diff {diff:.3g}, "
            f"shapes {got.shape} vs {expected.shape}); {path} was removed",
            "the exporter mistranslated an op: report it with the model",
        )
    log.info("exported %s: max |ORT - PyTorch| = %.3g on %d rows", path, diff, len(batch))


def onnx_session(
    path: Path,
    intra_op_num_threads: int = 1,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Any:
    """An ORT session for `path`, quiet below errors, with its thread count chosen.

    One intra-op thread by default: serving scales by workers, one session each, and ORT's
    default (a thread per physical core in every session) oversubscribes the machine as soon
    as two workers share it; that is the usual cause of "ORT slower under Triton" reports.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; ORT warns about benign graph rewrites
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1  # nodes run in sequence (ORT's default mode): no 2nd pool
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def onnx_feeds(batch: FeatureBatch | Rows) -> dict[str, np.ndarray]:
    """The graph's input dict for a batch (numpy views, no copy for CPU tensors or Rows)."""
    if isinstance(batch, Rows):
        return {
            "dense": batch.dense.astype(np.float32, copy=False),
            "categorical": batch.categorical.astype(np.int64, copy=False),
            "multi_hot": batch.multi_hot.astype(np.int64, copy=False),
        }
    return {
        "dense": batch.dense.detach().cpu().numpy().astype(np.float32, copy=False),
        "categorical": batch.categorical.detach().cpu().numpy().astype(np.int64, copy=False),
        "multi_hot": batch.multi_hot.detach().cpu().numpy().astype(np.int64, copy=False),
    }


def run_onnx(
    model: Path | str | Any,
    batch: FeatureBatch | Mapping[str, np.ndarray],
    intra_op_num_threads: int = 1,
) -> np.ndarray:
    """Scores (B,) float32 logits of an ONNX file (or an open session) on one batch."""
    session = (
        onnx_session(Path(model), intra_op_num_threads) if isinstance(model, str | Path) else model
    )
    feeds = onnx_feeds(batch) if isinstance(batch, FeatureBatch) else dict(batch)
    scores: np.ndarray = session.run([OUTPUT_NAME], feeds)[0]
    return scores


def onnx_size_bytes(path: Path) -> int:
    """Bytes on disk: the .onnx file plus any external weight files it points to."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    locations: set[str] = {
        str(entry.value)
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in locations)
