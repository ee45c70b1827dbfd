"""INT8 dense layers on FBGEMM: a dynamic Linear and a statically calibrated MLP.

Both keep only plain tensors in their state (int8 weights, fp32 scales, activation qparams), so
artifacts save to safetensors; FBGEMM's packed form is a cache built on first use and dropped
whenever the state changes. Where the build lacks the ops, a plain-torch path computes the same
numbers (dequantized weights for the dynamic Linear, fake quantization for the static MLP);
`kernel_path()` says which one runs. `quantize_dense` (quant/dense.py) applies them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from recaccel.models.layers import MLP

# FBGEMM needs a positive scale; an all-zero weight row (a pruned neuron) or a constant
# activation would otherwise get 0. PyTorch's observers use the same floor.
SCALE_EPS = torch.finfo(torch.float32).eps

# quantized::linear dispatches to FBGEMM under both of these engines ("x86" is the default).
FBGEMM_ENGINES = ("fbgemm", "x86")
# FBGEMM's AVX2 kernel multiplies uint8 activations by int8 weights with vpmaddubsw, which sums
# pairs into int16 and saturates: 2 · 255 · 127 > 32767. PyTorch's fbgemm/x86 defaults avoid
# that with 7-bit activations (reduce_range=True); we keep activations at 8 bits and give the
# weights 7 (±63, ONNX Runtime's choice): 2 · 255 · 64 < 32767. Measured on the zoo, that halves
# the score drift (per-tensor activations are the coarser grid, per-channel weights have bits to
# spare) and never saturates, even on inputs far outside the calibrated range — where 7-bit
# activations do (a hidden code past 127 multiplies into overflow). VNNI CPUs need neither, but
# artifacts must run on any x86 machine.
WEIGHT_QMAX = 63


def _fbgemm_linear_available() -> bool:
    try:
        for op in ("linear_prepack", "linear_dynamic", "linear", "linear_relu"):
            getattr(torch.ops.quantized, op)
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.quantized.engine in FBGEMM_ENGINES


FBGEMM_AVAILABLE = _fbgemm_linear_available()


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel INT8: weight (out, in) → int8 (out, in), scale (out,).

    Values lie in ±WEIGHT_QMAX (see there); symmetric, so a weight is just q · scale.
    """
    scale = (weight.detach().abs().amax(dim=1) / WEIGHT_QMAX).clamp(min=SCALE_EPS)  # (out,)
    q = torch.round(weight.detach() / scale[:, None]).clamp(-WEIGHT_QMAX, WEIGHT_QMAX)
    return q.to(torch.int8), scale.float()


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """Asymmetric uint8 scale and zero point covering [low, high] and 0.

    >>> activation_qparams(0.0, 25.5)
    (0.1, 0)
    >>> activation_qparams(-2.0, 23.5)
    (0.1, 20)

    Zero must be exact: ReLU outputs and padded inputs are mostly zeros.
    """
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / 255, SCALE_EPS)
    return scale, int(min(max(round(-low / scale), 0), 255))


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """x rounded to the uint8 grid (scale, zero_point) and back: what FBGEMM sees, in float."""
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, 255)
    return (q - zero_point) * scale


class _Int8Weights(nn.Module):
    """INT8 weights of one Linear, with FBGEMM's packed form built on first use.

    The packed form is a cache: it is dropped whenever `load_state_dict` changes the tensors,
    and never saved (artifacts hold only the plain tensors).
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None
    _packed: Any

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.use_fbgemm = FBGEMM_AVAILABLE
        self.drop_packed()
        hook = self.register_load_state_dict_post_hook  # unannotated in torch
        hook(lambda module, _keys: module.drop_packed())  # type: ignore[no-untyped-call]

    def held_weight_count(self) -> int:
        bias = 0 if self.bias is None else self.bias.numel()
        return self.weight_int8.numel() + bias

    def set_weights(self, linear: nn.Linear) -> None:
        q, scale = quantize_weight(linear.weight)
        self.weight_int8.copy_(q)
        self.weight_scale.copy_(scale)
        if self.bias is not None and linear.bias is not None:
            self.bias.copy_(linear.bias.detach())
        self.drop_packed()

    def drop_packed(self) -> None:
        self._packed = None

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scale[:, None]  # (out, in)

    def packed(self) -> Any:
        """FBGEMM's prepacked weights (an opaque `LinearPackedParamsBase`)."""
        if self._packed is None:
            zero_points = torch.zeros(self.out_features, dtype=torch.long)
            with warnings.catch_warnings():
                # The once-per-process deprecation warning fires here (see the module docstring);
                # a serving user cannot act on it.
                warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
                # Exact: q·s/s rounds back to q, the rounding error is far below half a step.
                weight, scales = self.dequantized_weight(), self.weight_scale.double()
                qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
                self._packed = torch.ops.quantized.linear_prepack(qweight, self.bias)
        return self._packed

    def _fast(self, x: torch.Tensor) -> bool:
        return self.use_fbgemm and x.device.type == "cpu" and not torch.compiler.is_compiling()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_packed"] = None  # deepcopy and pickle rebuild it rather than copy the cache
        return state

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Int8DynamicLinear(_Int8Weights):
    """A Linear with INT8 weights; activations quantized per batch. (..., in) → (..., out)."""

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8DynamicLinear:
        out = cls(linear.in_features, linear.out_features, linear.bias is not None)
        out.set_weights(linear)
        return out

    def kernel_path(self) -> str:
        return "fbgemm" if self.use_fbgemm else "torch-dequantize"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            out: torch.Tensor = torch.ops.quantized.linear_dynamic(x, self.packed(), False)
            return out
        return F.linear(x, self.dequantized_weight(), self.bias)


class _Int8StaticLinear(_Int8Weights):
    """One layer of `Int8StaticMLP`: INT8 weights, optional fused ReLU, fixed output qparams."""

    output_scale: torch.Tensor
    output_zero_point: torch.Tensor
    _qparams: tuple[float, int] | None

    def __init__(self, in_features: int, out_features: int, relu: bool) -> None:
        super().__init__(in_features, out_features)
        self.relu = relu
        self.register_buffer("output_scale", torch.tensor(1.0))
        self.register_buffer("output_zero_point", torch.tensor(0))

    def forward_quantized(self, xq: torch.Tensor) -> torch.Tensor:
        """quint8 (N, in) → quint8 (N, out) on FBGEMM."""
        if self._qparams is None:
            # Read once per (re)load, not per call: `.item()` on every request adds up.
            self._qparams = (float(self.output_scale), int(self.output_zero_point))
        op = torch.ops.quantized.linear_relu if self.relu else torch.ops.quantized.linear
        out: torch.Tensor = op(xq, self.packed(), *self._qparams)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same in float: (N, in) on the input grid → (N, out) on the output grid."""
        y = F.linear(x, self.dequantized_weight(), self.bias)
        return fake_quantize(
            y.relu() if self.relu else y, self.output_scale, self.output_zero_point
        )

    def drop_packed(self) -> None:
        super().drop_packed()
        self._qparams = None


def _mlp_plan(mlp: MLP) -> list[tuple[nn.Linear, bool]]:
    """Each Linear of `mlp` and whether a ReLU follows it (Dropout is absent at inference)."""
    plan: list[tuple[nn.Linear, bool]] = []
    for module in mlp.layers:
        if isinstance(module, nn.Linear):
            plan.append((module, False))
        elif isinstance(module, nn.ReLU) and plan:
            plan[-1] = (plan[-1][0], True)
        elif not isinstance(module, nn.Dropout):
            raise ValueError(f"cannot quantize an MLP holding a {type(module).__name__}")
    return plan


class Int8StaticMLP(nn.Module):
    """An `MLP` run in INT8 end to end: quantize the input once, chain the layers, dequantize.

    Args mirror `MLP`'s; the module starts with placeholder qparams, which `from_float`
    calibrates and `load_state_dict` overwrites. (N, in_features) → (N, out_features).
    """

    input_scale: torch.Tensor
    input_zero_point: torch.Tensor

    def __init__(self, in_features: int, sizes: Sequence[int], activate_last: bool = True) -> None:
        super().__init__()
        widths = [in_features, *sizes]
        relus = [True] * (len(sizes) - 1) + [activate_last]
        self.layers = nn.ModuleList(
            _Int8StaticLinear(a, b, relu)
            for a, b, relu in zip(widths[:-1], sizes, relus, strict=True)
        )
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("input_zero_point", torch.tensor(0))
        self.out_features = widths[-1]
        self.use_fbgemm = FBGEMM_AVAILABLE
        self._input_qparams: tuple[float, int] | None = None
        hook = self.register_load_state_dict_post_hook  # unannotated in torch
        hook(lambda module, _keys: module.drop_cache())  # type: ignore[no-untyped-call]

    @classmethod
    def like(cls, mlp: MLP) -> Int8StaticMLP:
        """The uncalibrated structure for `mlp`, for `load_state_dict` to fill."""
        plan = _mlp_plan(mlp)
        sizes = [linear.out_features for linear, _ in plan]
        return cls(plan[0][0].in_features, sizes, activate_last=plan[-1][1])

    @classmethod
    @torch.no_grad()
    def from_float(cls, mlp: MLP, inputs: torch.Tensor) -> Int8StaticMLP:
        """Quantize `mlp`, with activation ranges measured on its real inputs (N, in_features).

        Ranges are min/max, not a percentile: in ranking, the extreme activations are the
        top-scored candidates, and clipping them would tie exactly the items that matter most.
        """
        out = cls.like(mlp)
        x = inputs.detach().float()
        scale, zero_point = activation_qparams(x.min().item(), x.max().item())
        out.input_scale.fill_(scale)
        out.input_zero_point.fill_(zero_point)
        plan = _mlp_plan(mlp)
        for (linear, relu), layer in zip(plan, out.int8_layers(), strict=True):
            x = linear(x).relu() if relu else linear(x)
            scale, zero_point = activation_qparams(x.min().item(), x.max().item())
            layer.set_weights(linear)
            layer.output_scale.fill_(scale)
            layer.output_zero_point.fill_(zero_point)
        return out

    def drop_cache(self) -> None:
        self._input_qparams = None

    def int8_layers(self) -> list[_Int8StaticLinear]:
        return [cast(_Int8StaticLinear, layer) for layer in self.layers]

    def kernel_path(self) -> str:
        return "fbgemm" if self.use_fbgemm else "torch-fake-quant"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.int8_layers()
        if self.use_fbgemm and x.device.type == "cpu" and not torch.compiler.is_compiling():
            if self._input_qparams is None:
                self._input_qparams = (float(self.input_scale), int(self.input_zero_point))
            for layer in layers:  # pack first: that silences the once-per-process deprecation
                layer.packed()
            xq = torch.quantize_per_tensor(x, *self._input_qparams, torch.quint8)
            for layer in layers:
                xq = layer.forward_quantized(xq)
            return xq.dequantize()
        x = fake_quantize(x, self.input_scale, self.input_zero_point)
        for layer in layers:
            x = layer(x)
        return x
