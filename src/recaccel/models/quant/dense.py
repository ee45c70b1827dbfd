"""Quantized dense layers: INT8 dynamic Linear, INT8 static MLP; `quantize_dense` for all modes.

The embedding tables hold most of a CTR model's bytes; the MLPs hold most of its FLOPs. This
module is the dense counterpart of `embedding.py`, with the same pattern: modules whose state is
plain tensors (so artifacts save to safetensors), built by `from_float`, running on PyTorch's
FBGEMM kernels where the build has them and on plain torch otherwise, and saying which ran.

- INT8 dynamic (`Int8DynamicLinear`): weights int8 per output channel; each batch's activations
  are quantized on the fly (`quantized::linear_dynamic`). No calibration; output stays float.
- INT8 static (`Int8StaticMLP`): a whole MLP chained in the quantized domain (`quantized::
  linear_relu`), activation scales fixed by calibration on real inputs, dequantized once at the
  end. Cheaper than dynamic (no per-batch min/max), but needs calibration rows.
- FP16/BF16 (`HalfPrecisionMLP`, in half.py): weights stored and run in a 16-bit
  float type, refused on a device that would only emulate it.

The FBGEMM ops build quint8/qint8 tensors, which torch 2.13 deprecates (pytorch#184982); the
plain-torch paths are the way off them and compute the same thing. Under `torch.compile` and
`torch.export` the plain-torch path runs too: FBGEMM's packed weights are an opaque object that
tracing cannot capture.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from recaccel.data.dataset import FeatureBatch
from recaccel.errors import ConfigError
from recaccel.models.layers import MLP
from recaccel.models.quant.embedding import QuantizedEmbeddingBag
from recaccel.models.quant.half import (
    HALF_DTYPES,
    HalfPrecisionMLP,
    natively_supports,
    probe_device,
)
from recaccel.models.quant.int8 import FBGEMM_AVAILABLE, Int8DynamicLinear, Int8StaticMLP

logger = logging.getLogger(__name__)

MODES = ("int8-dynamic", "int8-static", "fp16", "bf16")
# Rows to calibrate static INT8 on: enough that min/max settle, few enough to run in a second.
CALIBRATION_ROWS = 4096
# Linears with fewer inputs or outputs than this stay float under int8-dynamic: quantizing each
# batch's activations costs a pass over them, which a GEMV into one logit, or a layer over four
# dense features, never earns back, for a few hundred bytes saved.
MIN_INT8_WIDTH = 8


@dataclass(frozen=True)
class DenseQuantReport:
    """What `quantize_dense` did."""

    mode: str
    kernel_path: str  # "fbgemm", "torch-dequantize", "torch-fake-quant", "cpu-bf16", ...
    native: bool  # False: the kernels are emulated (plain-torch INT8, or a forced dtype)
    converted: tuple[str, ...]  # module paths replaced
    kept_float: tuple[str, ...]  # Linear layers left in fp32
    dense_bytes_before: int  # state bytes outside the embedding tables
    dense_bytes_after: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for a lineage step."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def dense_state_bytes(model: nn.Module) -> int:
    """Bytes of `model`'s state (what goes on disk) outside its embedding tables."""
    tables = tuple(
        f"{name}."
        for name, m in model.named_modules()
        if isinstance(m, nn.Embedding | nn.EmbeddingBag | QuantizedEmbeddingBag)
    )
    return sum(
        t.numel() * t.element_size()
        for key, t in model.state_dict().items()
        if not key.startswith(tables)
    )


@torch.no_grad()
def capture_mlp_inputs(model: nn.Module, batch: FeatureBatch) -> dict[str, torch.Tensor]:
    """Each `MLP`'s input (N, in) when `model` scores `batch` (e.g. CALIBRATION_ROWS training
    rows), keyed by module path: the calibration `quantize_dense("int8-static")` takes."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda _m, args, n=name: captured.__setitem__(n, args[0].detach().clone())
        )
        for name, module in model.named_modules()
        if isinstance(module, MLP)
    ]
    was_training = model.training
    try:
        model.eval()
        model(*batch.as_tuple())
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return captured


def _worth_int8(linear: nn.Linear) -> bool:
    return min(linear.in_features, linear.out_features) >= MIN_INT8_WIDTH


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    if not path:
        raise ConfigError(f"cannot replace the model itself ({type(model).__name__})", "wrap it")
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def _convert(
    model: nn.Module, mode: str, calibration: Mapping[str, torch.Tensor] | None
) -> tuple[list[str], list[str]]:
    """Swap `model`'s dense modules for `mode`'s, in place; calibration None = placeholders."""
    converted, kept = [], []
    if mode == "int8-dynamic":
        # Every Linear wide enough, DCNv2's cross layers included: full-rank ones are W × W, the
        # largest dense weights in the zoo. Their error is scaled by x0 (small embeddings), and
        # the tests bound the score drift of every model.
        for name, module in list(model.named_modules()):
            if type(module) is nn.Linear:
                if _worth_int8(module):
                    _replace(model, name, Int8DynamicLinear.from_float(module))
                    converted.append(name)
                else:
                    kept.append(name)
        return converted, kept
    for name, module in list(model.named_modules()):
        if not isinstance(module, MLP):
            continue
        new: nn.Module
        if mode == "int8-static":
            new = (
                Int8StaticMLP.like(module)
                if calibration is None
                else Int8StaticMLP.from_float(module, calibration[name])
            )
        else:
            new = HalfPrecisionMLP(module, HALF_DTYPES[mode])
        _replace(model, name, new)
        converted.append(name)
    inside = tuple(f"{name}." for name in converted)
    kept = [
        n for n, m in model.named_modules() if type(m) is nn.Linear and not n.startswith(inside)
    ]
    return converted, kept


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown dense quantization mode {mode!r}", f"use one of {MODES}")


def _model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def quantize_dense(
    model: nn.Module,
    mode: str,
    calibration: Mapping[str, torch.Tensor] | FeatureBatch | None = None,
    inplace: bool = False,
    force: bool = False,
    *,
    device: torch.device | str | None = None,
) -> tuple[nn.Module, DenseQuantReport]:
    """Quantize `model`'s dense part.

    Args:
        model: a float zoo model (or one with quantized embeddings).
        mode: "int8-dynamic" (every nn.Linear wide enough), "int8-static", "fp16" or "bf16"
            (every `MLP`; other Linears are single-logit heads and stay fp32).
        calibration: int8-static only: each MLP's input (N, in) by module path, as
            `capture_mlp_inputs` returns, or the training rows to capture them from.
        inplace: modify `model` rather than a copy.
        force: allow fp16/bf16 on a device without native support (emulated: smaller, slower).
        device: where the model will run, for the fp16/bf16 check; default: its parameters'.

    Returns:
        the model and a report of what was converted, the kernel path, and the bytes.
    """
    _check_mode(mode)
    caps = probe_device(device if device is not None else _model_device(model))
    if mode in HALF_DTYPES:
        native, path = natively_supports(caps, HALF_DTYPES[mode]), f"{caps.device_type}-{mode}"
        if not native and not force:
            raise ConfigError(
                f"{mode} is not native on this {caps.device_type} {caps.cpu_capability}".strip(),
                "it would run emulated, slower than fp32 and only smaller: use int8-dynamic, "
                "or force it (force=True) if the bytes matter more than the speed",
            )
    else:  # FBGEMM is CPU-only; elsewhere the plain-torch path runs
        native = FBGEMM_AVAILABLE and caps.device_type == "cpu"
        fallback = "torch-dequantize" if mode == "int8-dynamic" else "torch-fake-quant"
        path = "fbgemm" if native else fallback
    inputs = None if mode != "int8-static" else _calibration_inputs(model, calibration)
    before = dense_state_bytes(model)
    target = model if inplace else copy.deepcopy(model)
    converted, kept = _convert(target, mode, inputs)
    return target, DenseQuantReport(
        mode, path, native, tuple(converted), tuple(kept), before, dense_state_bytes(target)
    )


def _calibration_inputs(
    model: nn.Module, calibration: Mapping[str, torch.Tensor] | FeatureBatch | None
) -> Mapping[str, torch.Tensor]:
    if calibration is None:
        raise ConfigError(
            "int8-static needs calibration inputs",
            "pass the training rows, e.g. dataset.train.features(slice(0, CALIBRATION_ROWS))",
        )
    if isinstance(calibration, FeatureBatch):
        return capture_mlp_inputs(model, calibration)
    missing = [n for n, m in model.named_modules() if isinstance(m, MLP) and n not in calibration]
    if missing:
        raise ConfigError(
            f"no calibration inputs for MLPs {missing}", "capture them with capture_mlp_inputs"
        )
    return calibration


def prepare_quantized_dense(model: nn.Module, mode: str) -> nn.Module:
    """The structure `quantize_dense(model, mode)` makes, in place, with placeholder values for
    `load_state_dict` to fill: how an artifact rebuilds a quantized model (no calibration)."""
    _check_mode(mode)
    if mode in HALF_DTYPES:
        caps = probe_device(_model_device(model))
        if not natively_supports(caps, HALF_DTYPES[mode]):
            logger.warning("%s is emulated on this %s: slower than fp32", mode, caps.device_type)
    _convert(model, mode, None)
    return model
