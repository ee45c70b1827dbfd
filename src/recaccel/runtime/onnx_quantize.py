"""Quantize an exported float ONNX model with ONNX Runtime's own tools.

Modes:
    int8-dynamic  int8 weights; activations quantized per batch at run time
                  (DynamicQuantizeLinear + MatMulInteger). Needs no calibration data.
    int8-static   int8 weights and activations, activation scales fixed from calibration
                  rows, in QDQ form (QuantizeLinear/DequantizeLinear pairs that ORT fuses into
                  integer kernels such as QGemm when it loads the model).
    fp16          float16 weights and arithmetic through `onnxruntime.transformers.float16`,
                  which ships inside the ORT wheel (no onnxconverter-common). Inputs and the
                  score stay float32/int64. A GPU form: CPUs without fp16 arithmetic convert
                  back and forth around every op.

What gets quantized: MatMul and Gemm, i.e. every Linear (and DCNv2's cross layers), where the
FLOPs and the MLP bytes are; static mode also quantizes DLRM's pairwise-dot MatMul (two
activations), which dynamic mode leaves float. Embedding tables (Gather) stay float unless
`quantize_embeddings=True`: ORT then stores each table as uint8 with one scale for the whole
table (per tensor, from its largest value) and dequantizes gathered rows, so the many small rows
of rarely seen ids lose most of their precision; recaccel's row-wise tables
(models/quant/embedding.py) are the accurate way to shrink them.

Weights are signed 7-bit (`weight_type=QInt8, reduce_range=True`); static activations are u8.
On x86 without VNNI (AVX2, as on the machines here) ORT's u8 x s8 kernels use VPMADDUBSW,
which adds each pair of products into int16 and saturates when both are large
(2 x 255 x 127 > 32767); with 7-bit weights it cannot (2 x 255 x 64 < 32767). Measured on the
four tiny trained models: full-range int8 weights moved click probabilities by up to 0.19
(DeepFM, dynamic); 7-bit ones by at most 0.0034. Unsigned weights avoid saturation too, but
run on the slower u8 x u8 kernel: on the heavy DLRM with one thread, int8 with s8 weights ran
1.8x float at batch 64-512 (2.0x at batch 1), u8 weights 1.2-1.4x, and 7-bit cost no speed.
On VNNI machines (VPDPBUSD adds in int32) `reduce_range=False` gives the eighth bit back.
fp16 on that CPU ran at 0.9-1.0x float.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from recaccel.data.dataset import FeatureBatch
from recaccel.data.schema import INPUT_NAMES
from recaccel.errors import ConfigError
from recaccel.runtime.export import (
    EXTERNAL_DATA_BYTES,
    onnx_feeds,
    onnx_size_bytes,
    save_onnx,
)

QuantMode = Literal["int8-dynamic", "int8-static", "fp16"]
MODES: tuple[str, ...] = get_args(QuantMode)
CalibrationName = Literal["minmax", "percentile", "entropy"]
_CALIBRATION_METHODS = {
    # MinMax, the default: a CTR model's largest activations are its confident scores (and
    # heavy-tailed dense counts), the very rows ranking depends on; clipping them, as
    # percentile and entropy (KL, made for CNN activations) do, trades those for a finer step
    # on the bulk. Measured on the tiny MovieLens models the three land within noise of each
    # other, so the method that cannot clip wins.
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
QUANTIZED_OPS = ("MatMul", "Gemm")
CALIBRATION_ROWS = 2048  # min/max of every activation settle well before this
CALIBRATION_BATCH = 256


class _Rows(Protocol):
    """A `Split`, or anything else with the three input arrays."""

    @property
    def dense(self) -> np.ndarray: ...
    @property
    def categorical(self) -> np.ndarray: ...
    @property
    def multi_hot(self) -> np.ndarray: ...


Calibration = FeatureBatch | Mapping[str, np.ndarray] | _Rows


def _calibration_feeds(data: Calibration, max_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The three input arrays of at most `max_rows` rows of `data`, a seeded random subset
    (training rows are in time order: the first rows alone would be the oldest)."""
    if isinstance(data, FeatureBatch):
        feeds = onnx_feeds(data)
    elif isinstance(data, Mapping):
        feeds = {name: np.asarray(data[name]) for name in INPUT_NAMES if name in data}
    else:
        feeds = {name: np.asarray(getattr(data, name)) for name in INPUT_NAMES}
    if set(feeds) != set(INPUT_NAMES):
        raise ConfigError(
            f"calibration data has {sorted(feeds)}", f"give all of {', '.join(INPUT_NAMES)}"
        )
    rows = {len(a) for a in feeds.values()}
    if len(rows) != 1 or 0 in rows:
        raise ConfigError(f"calibration arrays have row counts {sorted(rows)}", "give N>0 rows")
    n = rows.pop()
    keep = np.sort(np.random.default_rng(seed).choice(n, min(n, max_rows), replace=False))
    return {
        "dense": np.ascontiguousarray(feeds["dense"][keep], dtype=np.float32),
        "categorical": np.ascontiguousarray(feeds["categorical"][keep], dtype=np.int64),
        "multi_hot": np.ascontiguousarray(feeds["multi_hot"][keep], dtype=np.int64),
    }


class RowsReader(CalibrationDataReader):  # type: ignore[misc]  # ORT ships no type stubs
    """Hands calibration rows to ORT's calibrator one batch at a time."""

    def __init__(self, feeds: Mapping[str, np.ndarray], batch_size: int = CALIBRATION_BATCH):
        n = len(feeds["dense"])
        # Equal batches: the percentile and entropy calibrators stack every batch's outputs
        # into one array and fail on a short last batch. Split n rows into k equal batches
        # of at most `batch_size`, dropping the remainder (fewer than k rows).
        k = -(-n // batch_size)
        size = n // k
        self._batches = [
            {name: array[i * size : (i + 1) * size] for name, array in feeds.items()}
            for i in range(k)
        ]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return self._batches[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


def quantize_onnx(
    float_onnx: Path,
    out: Path,
    mode: QuantMode,
    calibration: Calibration | None = None,
    per_channel: bool = True,
    *,
    calibration_method: CalibrationName = "minmax",
    calibration_rows: int = CALIBRATION_ROWS,
    quantize_embeddings: bool = False,
    reduce_range: bool = True,
) -> Path:
    """Write a quantized copy of `float_onnx` (from `export_onnx`) to `out`.

    Args:
        float_onnx: the float model.
        out: the .onnx file to write.
        mode: "int8-dynamic", "int8-static" or "fp16" (see the module docstring).
        calibration: int8-static only: training rows (a FeatureBatch, a Split, or a mapping
            of the three input arrays); at most `calibration_rows` of them are used.
        per_channel: one scale per output channel of each weight instead of one per tensor.
        calibration_method: "minmax" (default, see `_CALIBRATION_METHODS`), "percentile" or
            "entropy".
        quantize_embeddings: also quantize Gather tables (per tensor; see above).
        reduce_range: 7-bit weights, which cannot saturate AVX2's int16 pair sums.

    Returns:
        `out`.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown ONNX quantization mode {mode!r}", f"choose one of {MODES}")
    if mode == "int8-static" and calibration is None:
        raise ConfigError("int8-static needs calibration rows", "pass calibration=train split")
    if calibration_method not in _CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {calibration_method!r}",
            f"choose one of {', '.join(_CALIBRATION_METHODS)}",
        )
    float_onnx, out = Path(float_onnx), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    large = onnx_size_bytes(float_onnx) > EXTERNAL_DATA_BYTES
    if mode == "fp16":
        # keep_io_types: callers keep feeding float32 and reading a float32 score.
        half = convert_float_to_float16(onnx.load(str(float_onnx)), keep_io_types=True)
        save_onnx(half, out)
        return out

    ops = [*QUANTIZED_OPS, "Gather"] if quantize_embeddings else list(QUANTIZED_OPS)
    with tempfile.TemporaryDirectory(prefix="recaccel-quant-") as tmp:
        # ORT's recommended pre-processing (its quantizer warns without it): symbolic shape
        # inference and ORT's basic graph optimizations, so the quantizer knows every
        # tensor's shape and places Q/DQ on the graph ORT will actually run.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(
            str(float_onnx),
            str(prepared),
            save_as_external_data=large,
            all_tensors_to_one_file=True,
        )
        common: dict[str, Any] = {
            "op_types_to_quantize": ops,
            "per_channel": per_channel,
            "reduce_range": reduce_range,
            "weight_type": QuantType.QInt8,
            "use_external_data_format": large,
        }
        if mode == "int8-dynamic":
            quantize_dynamic(prepared, out, **common)
        else:
            assert calibration is not None
            reader = RowsReader(_calibration_feeds(calibration, calibration_rows))
            quantize_static(
                prepared,
                out,
                reader,
                quant_format=QuantFormat.QDQ,
                # u8 activations x s8 weights: the x86 integer kernels' native pairing.
                activation_type=QuantType.QUInt8,
                calibrate_method=_CALIBRATION_METHODS[calibration_method],
                **common,
            )
    return out
