"""Half-precision dense layers (FP16/BF16): close to float, half the bytes, and refused where the
device would only emulate them."""

from __future__ import annotations

import pytest
import torch

from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.models.layers import MLP
from recaccel.models.quant.dense import quantize_dense
from recaccel.models.quant.half import (
    DeviceCaps,
    HalfPrecisionMLP,
    natively_supports,
    probe_device,
)
from recaccel.models.registry import build_model, preset_config

# Score (sigmoid) drift allowed against the float model on the tiny test split: bf16 rounds to
# 2^-8 relative; fp16 is 8× finer.
SCORE_TOLERANCE = {"fp16": 0.002, "bf16": 0.01}


def _mlp_and_inputs() -> tuple[MLP, torch.Tensor]:
    torch.manual_seed(0)
    return MLP(32, (64, 32, 1), activate_last=False).eval(), torch.randn(512, 32)


@pytest.mark.parametrize(
    ("caps", "dtype", "native"),
    [
        (DeviceCaps("cuda"), torch.float16, True),
        (DeviceCaps("cuda"), torch.bfloat16, False),  # pre-Ampere
        (DeviceCaps("cuda", cuda_bf16=True), torch.bfloat16, True),
        (DeviceCaps("cpu", "AVX2"), torch.bfloat16, False),
        (DeviceCaps("cpu", "AVX2"), torch.float16, False),
        (DeviceCaps("cpu", "AVX512", cpu_bf16=True), torch.bfloat16, True),
        (DeviceCaps("cpu", "AVX512", cpu_bf16=True), torch.float16, False),
        (DeviceCaps("cpu", "AVX512", cpu_fp16=True), torch.float16, True),
        (DeviceCaps("cpu", "AVX2"), torch.float32, True),
    ],
)
def test_native_dtype_support(caps: DeviceCaps, dtype: torch.dtype, native: bool) -> None:
    assert natively_supports(caps, dtype) is native


@pytest.mark.parametrize(("dtype", "relative"), [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_mlp_is_close_and_half_the_bytes(
    dtype: torch.dtype, relative: float
) -> None:
    # fp16 keeps 11 significant bits (rounding 2^-11 ≈ 5e-4 per value), bf16 8 (2^-8 ≈ 4e-3);
    # inputs, weights and outputs are each rounded, so allow about 8 roundings of the output.
    mlp, x = _mlp_and_inputs()
    float_bytes = sum(t.numel() * t.element_size() for t in mlp.state_dict().values())
    with torch.no_grad():
        reference = mlp(x)
        half = HalfPrecisionMLP(mlp, dtype)
        got = half(x)
    assert got.dtype == torch.float32
    assert (got - reference).abs().max() <= relative * reference.abs().max()
    assert sum(t.numel() * t.element_size() for t in half.state_dict().values()) == float_bytes / 2


def test_bf16_is_refused_on_a_cpu_without_it_unless_forced(tiny_dataset: Dataset) -> None:
    if natively_supports(probe_device("cpu"), torch.bfloat16):
        pytest.skip("this CPU computes bf16 natively")
    model = build_model("dlrm", tiny_dataset.schema, preset_config("dlrm", "small")).eval()
    with pytest.raises(ConfigError, match="bf16 is not native") as err:
        quantize_dense(model, "bf16")
    assert "force" in err.value.hint
    forced, report = quantize_dense(model, "bf16", force=True)
    assert not report.native and report.kernel_path == "cpu-bf16"
    assert isinstance(forced.get_submodule("over_arch"), HalfPrecisionMLP)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_half_precision_on_cuda(tiny_dataset: Dataset, mode: str) -> None:
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    model = build_model("dlrm", tiny_dataset.schema, preset_config("dlrm", "small")).eval().cuda()
    quantized, report = quantize_dense(model, mode)
    assert report.native and report.kernel_path == f"cuda-{mode}"
    batch = [t.cuda() for t in tiny_dataset.test.features().as_tuple()]
    with torch.inference_mode():
        reference, got = torch.sigmoid(model(*batch)), torch.sigmoid(quantized(*batch))
    assert got.dtype == torch.float32
    assert (got - reference).abs().max().item() < SCORE_TOLERANCE[mode]
