"""Half-precision dense layers (FP16/BF16) and the device check that decides whether they pay.

`HalfPrecisionMLP` stores and runs an `MLP` in a 16-bit float type: its bytes halve on every
device, but it is only faster where the device computes that type natively. `probe_device`
reads what a device can do and `natively_supports` answers the question, so `quantize_dense`
(quant/dense.py) can refuse an emulated dtype, which would be smaller but slower than fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recaccel.models.layers import MLP

HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class HalfPrecisionMLP(nn.Module):
    """An `MLP` stored and run in fp16 or bf16, taking and returning fp32.

    Its state keys are the MLP's (`layers.0.weight`, ...), in `dtype`, so bytes on disk halve.
    """

    def __init__(self, mlp: MLP, dtype: torch.dtype) -> None:
        super().__init__()
        self.layers = mlp.layers.to(dtype)
        self.dtype, self.out_features = dtype, mlp.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.to(self.dtype)).float()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class DeviceCaps:
    """What a device can run natively, as probed by `probe_device`."""

    device_type: str  # "cpu" or "cuda"
    cpu_capability: str = ""  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", ...
    cpu_bf16: bool = False  # oneDNN has bf16 kernels for this CPU (AVX512-BF16, AMX, ...)
    cpu_fp16: bool = False  # oneDNN has fp16 kernels for this CPU (AVX512-FP16, AMX-FP16)
    cuda_bf16: bool = False  # Ampere or newer


def probe_device(device: torch.device | str = "cpu") -> DeviceCaps:
    """The native capabilities of `device` (a CUDA device, or else this process's CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return DeviceCaps("cuda", cuda_bf16=torch.cuda.is_bf16_supported())
    return DeviceCaps(
        "cpu",
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cpu_bf16=torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        cpu_fp16=torch.ops.mkldnn._is_mkldnn_fp16_supported(),
    )


def natively_supports(caps: DeviceCaps, dtype: torch.dtype) -> bool:
    """Whether `caps`' device computes in `dtype` natively rather than by emulation.

    >>> natively_supports(DeviceCaps("cuda"), torch.float16)
    True
    >>> natively_supports(DeviceCaps("cpu", "AVX2"), torch.bfloat16)
    False

    Without native support a CPU still runs fp16/bf16 matmuls, converting to fp32 and back,
    which is slower than plain fp32: only bytes shrink.
    """
    if dtype == torch.float32:
        return True
    if caps.device_type == "cuda":
        return dtype == torch.float16 or (dtype == torch.bfloat16 and caps.cuda_bf16)
    if caps.device_type == "cpu":
        return (dtype == torch.bfloat16 and caps.cpu_bf16) or (
            dtype == torch.float16 and caps.cpu_fp16
        )
    return False
