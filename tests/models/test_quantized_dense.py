"""Quantized dense layers (INT8 dynamic/static; FP16/BF16 whole models, the layer itself in
test_half_precision.py): close to float, on every path, through an artifact and torch.export.

Tolerances are derived from the quantization grids rather than picked: a product of a value
rounded by at most δx and a weight rounded by at most δw errs by at most |x|·δw + |ŵ|·δx, summed
over the inputs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export import Dim, export

from recaccel.artifact import LineageStep, load_artifact, new_manifest, save_artifact
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.models.layers import MLP
from recaccel.models.quant.dense import capture_mlp_inputs, quantize_dense
from recaccel.models.quant.embedding import quantize_embeddings
from recaccel.models.quant.int8 import (
    FBGEMM_AVAILABLE,
    WEIGHT_QMAX,
    Int8DynamicLinear,
    Int8StaticMLP,
    activation_qparams,
    quantize_weight,
)
from recaccel.models.registry import MODELS, build_model, preset_config

needs_fbgemm = pytest.mark.skipif(not FBGEMM_AVAILABLE, reason="no FBGEMM quantized linear ops")


def _use_fbgemm(model: nn.Module, on: bool) -> None:
    for module in model.modules():
        if hasattr(module, "use_fbgemm"):
            module.use_fbgemm = on


def _linear_and_batch() -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(48, 24), torch.randn(16, 48)


def _weight_error_bound(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """(B, out): Σ_k |x_k| · δw, δw = half the row's weight step."""
    half_step = linear.weight.abs().amax(dim=1) / WEIGHT_QMAX / 2  # (out,)
    return x.abs().sum(dim=1, keepdim=True) * half_step


def _activation_error_bound(q: Int8DynamicLinear, x: torch.Tensor) -> torch.Tensor:
    """(1, out): Σ_k |ŵ_k| · δx, δx = half the batch's uint8 step (dynamic: min/max of x)."""
    scale, _ = activation_qparams(x.min().item(), x.max().item())
    return q.dequantized_weight().abs().sum(dim=1)[None] * scale / 2


# --- pure functions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "scale", "zero_point"),
    [
        (0.0, 25.5, 0.1, 0),  # ReLU output: zero point 0
        (-2.0, 23.5, 0.1, 20),
        (1.0, 25.5, 0.1, 0),  # the range is widened to hold 0 exactly
        (-25.5, -1.0, 0.1, 255),
        (0.0, 0.0, torch.finfo(torch.float32).eps, 0),  # a dead layer still gets a valid scale
    ],
)
def test_activation_qparams(low: float, high: float, scale: float, zero_point: int) -> None:
    got_scale, got_zero_point = activation_qparams(low, high)
    assert got_scale == pytest.approx(scale) and got_zero_point == zero_point


def test_weights_are_symmetric_per_channel_and_within_half_a_step() -> None:
    linear, _ = _linear_and_batch()
    q, scale = quantize_weight(linear.weight)
    assert q.dtype == torch.int8 and scale.shape == (24,)
    assert q.abs().max().item() == WEIGHT_QMAX  # each row's largest weight uses the full range
    error = (q.float() * scale[:, None] - linear.weight).abs()
    assert (error <= scale[:, None] / 2 + 1e-7).all()


# --- INT8 dynamic ---------------------------------------------------------------------------


@needs_fbgemm
def test_dynamic_linear_on_fbgemm_is_within_both_rounding_bounds() -> None:
    linear, x = _linear_and_batch()
    q = Int8DynamicLinear.from_float(linear)
    assert q.kernel_path() == "fbgemm"
    with torch.no_grad():
        error = (q(x) - linear(x)).abs()
        bound = _weight_error_bound(linear, x) + _activation_error_bound(q, x)
    assert (error <= bound * 1.01 + 1e-5).all()


def test_dynamic_linear_fallback_is_within_the_weight_rounding_bound() -> None:
    linear, x = _linear_and_batch()
    q = Int8DynamicLinear.from_float(linear)
    q.use_fbgemm = False
    assert q.kernel_path() == "torch-dequantize"
    with torch.no_grad():
        error = (q(x) - linear(x)).abs()
        assert (error <= _weight_error_bound(linear, x) * 1.01 + 1e-6).all()


@needs_fbgemm
def test_dynamic_fbgemm_and_fallback_differ_by_activation_rounding_only() -> None:
    linear, x = _linear_and_batch()
    q = Int8DynamicLinear.from_float(linear)
    with torch.no_grad():
        fast = q(x)
        q.use_fbgemm = False
        error = (q(x) - fast).abs()
    # Same INT8 weights on both paths: only FBGEMM's rounding of the activations differs.
    assert (error <= _activation_error_bound(q, x) * 1.01 + 1e-5).all()


def test_dynamic_linear_without_bias_and_state_is_plain_tensors() -> None:
    linear = nn.Linear(32, 16, bias=False)
    q = Int8DynamicLinear.from_float(linear)
    state = q.state_dict()
    assert set(state) == {"weight_int8", "weight_scale"}
    assert all(isinstance(t, torch.Tensor) and not t.is_quantized for t in state.values())
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert (q(x) - linear(x)).abs().max().item() < 0.05


@needs_fbgemm
def test_packed_weights_are_rebuilt_after_load_state_dict() -> None:
    linear, x = _linear_and_batch()
    source = Int8DynamicLinear.from_float(linear)
    target = nn.Sequential(Int8DynamicLinear(48, 24))
    with torch.no_grad():
        target(x)  # packs the placeholder weights
        target.load_state_dict({f"0.{k}": v for k, v in source.state_dict().items()})
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


# --- INT8 static ----------------------------------------------------------------------------


def _mlp_and_inputs() -> tuple[MLP, torch.Tensor]:
    torch.manual_seed(0)
    return MLP(32, (64, 32, 1), activate_last=False).eval(), torch.randn(512, 32)


def test_static_mlp_stays_close_to_the_float_mlp() -> None:
    mlp, x = _mlp_and_inputs()
    q = Int8StaticMLP.from_float(mlp, x)
    with torch.no_grad():
        reference, got = mlp(x), q(x)
    # Each of the 4 roundings (input, 3 outputs) errs by half a step, 1/510 of that tensor's
    # range, passed on through the next weights: measured about 1.3% of the output range.
    assert (got - reference).abs().max() <= 0.03 * (reference.max() - reference.min())


@needs_fbgemm
def test_static_mlp_fbgemm_matches_its_fake_quant_fallback() -> None:
    mlp, x = _mlp_and_inputs()
    q = Int8StaticMLP.from_float(mlp, x)
    assert q.kernel_path() == "fbgemm"
    step = q.int8_layers()[-1].output_scale.item()
    # Inputs three times wider than calibration: FBGEMM must not saturate where float does not.
    for batch in (x, 3 * torch.randn(64, 32)):
        with torch.no_grad():
            _use_fbgemm(q, True)
            fast = q(batch)
            _use_fbgemm(q, False)
            slow = q(batch)
        # Same integer arithmetic; a value within float error of a rounding boundary may land
        # one code apart, so allow one output step, and require nearly every output identical.
        assert (fast - slow).abs().max().item() <= step * 1.001
        assert (fast == slow).float().mean().item() >= 0.99


def test_static_mlp_rebuilds_from_structure_and_state() -> None:
    mlp, x = _mlp_and_inputs()
    q = Int8StaticMLP.from_float(mlp, x)
    placeholder = Int8StaticMLP.like(mlp)
    placeholder.load_state_dict(q.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(placeholder(x), q(x), rtol=0, atol=0)


# --- whole models ---------------------------------------------------------------------------

# Score (sigmoid) drift allowed against the float model on the tiny test split: INT8 rounds
# activations to 1/255 of their range, bf16 to 2^-8 relative; fp16 is 8× finer than bf16.
SCORE_TOLERANCE = {"int8-dynamic": 0.01, "int8-static": 0.01, "fp16": 0.002, "bf16": 0.01}


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("mode", list(SCORE_TOLERANCE))
def test_quantized_models_score_like_the_float_model(
    tiny_dataset: Dataset, model_name: str, mode: str
) -> None:
    torch.manual_seed(0)
    model = build_model(model_name, tiny_dataset.schema, preset_config(model_name, "small")).eval()
    calibration = tiny_dataset.train.features() if mode == "int8-static" else None
    quantized, report = quantize_dense(model, mode, calibration, force=True)
    batch = tiny_dataset.test.features().as_tuple()
    with torch.inference_mode():
        reference, got = torch.sigmoid(model(*batch)), torch.sigmoid(quantized(*batch))
    assert (got - reference).abs().max().item() < SCORE_TOLERANCE[mode]
    assert report.converted and report.dense_bytes_after < report.dense_bytes_before
    expected_path = "fbgemm" if mode.startswith("int8") and FBGEMM_AVAILABLE else None
    assert expected_path is None or report.kernel_path == expected_path
    assert any(type(m) is nn.Linear for m in model.modules())  # the original is untouched


def test_int8_dynamic_converts_cross_layers_and_keeps_one_wide_heads(tiny_dataset: Dataset) -> None:
    model = build_model("dcnv2", tiny_dataset.schema, preset_config("dcnv2", "small"))
    _, report = quantize_dense(model, "int8-dynamic")
    assert any(name.startswith("cross_arch.") for name in report.converted)
    assert report.kept_float == ("over_arch",)  # 32 → 1: a GEMV, not worth quantizing
    assert json.loads(json.dumps(report.to_dict()))["converted"] == list(report.converted)


def test_calibration_from_rows_equals_calibration_from_captured_inputs(
    tiny_dataset: Dataset,
) -> None:
    model = build_model("dlrm", tiny_dataset.schema, preset_config("dlrm", "small")).eval()
    rows = tiny_dataset.train.features(slice(0, 256))
    captured = capture_mlp_inputs(model, rows)
    assert set(captured) == {"dense_arch", "over_arch"}
    from_rows, _ = quantize_dense(model, "int8-static", rows)
    from_inputs, _ = quantize_dense(model, "int8-static", captured)
    torch.testing.assert_close(from_rows.state_dict(), from_inputs.state_dict(), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="calibration"):
        quantize_dense(model, "int8-static")
    with pytest.raises(ConfigError, match="dense_arch"):
        quantize_dense(model, "int8-static", {"over_arch": captured["over_arch"]})
    with pytest.raises(ConfigError, match="unknown dense quantization mode"):
        quantize_dense(model, "int4")


@pytest.mark.parametrize("mode", list(SCORE_TOLERANCE))
def test_quantized_artifact_round_trips_with_quantized_embeddings(
    tmp_path: Path, tiny_dataset: Dataset, mode: str
) -> None:
    torch.manual_seed(0)
    config = preset_config("dlrm", "small")
    model = build_model("dlrm", tiny_dataset.schema, config).eval()
    manifest = new_manifest(
        "dlrm", "small", config, tiny_dataset.schema, dataset={}, metrics={},
        lineage=(LineageStep("train"),),
    )  # fmt: skip
    float_saved = save_artifact(tmp_path / "float", model, manifest)
    calibration = tiny_dataset.train.features() if mode == "int8-static" else None
    quantized, _ = quantize_embeddings(model, 8)
    quantized, _ = quantize_dense(quantized, mode, calibration, inplace=True, force=True)
    transforms = ({"op": "quantize_embeddings", "bits": 8}, {"op": "quantize_dense", "mode": mode})
    saved = save_artifact(tmp_path / "q", quantized, replace(float_saved, transforms=transforms))
    loaded = load_artifact(tmp_path / "q")
    batch = tiny_dataset.test.features().as_tuple()
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(*batch), quantized(*batch), rtol=0, atol=0)
    assert saved.weights_bytes < float_saved.weights_bytes
    assert type(loaded.model.get_submodule("over_arch")) is type(
        quantized.get_submodule("over_arch")
    )


def test_int8_dynamic_model_exports_with_int8_weights(tiny_dataset: Dataset) -> None:
    torch.manual_seed(0)
    model = build_model("dcnv2", tiny_dataset.schema, preset_config("dcnv2", "small")).eval()
    quantized, _ = quantize_dense(model, "int8-dynamic")
    batch = Dim("batch", min=1, max=4096)
    program = export(
        quantized,
        tiny_dataset.train.features(slice(0, 8)).as_tuple(),
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
    )
    # FBGEMM's packed weights cannot be traced, so the exported graph is the plain-torch path
    # (int8 weights, dequantized in the graph): equal to that path, close to FBGEMM's.
    assert any(t.dtype == torch.int8 for t in program.state_dict.values())
    other_size = tiny_dataset.test.features(slice(0, 33)).as_tuple()
    with torch.no_grad():
        exported = program.module()(*other_size)
        fast = quantized(*other_size)
        _use_fbgemm(quantized, False)
        torch.testing.assert_close(exported, quantized(*other_size), rtol=1e-5, atol=1e-5)
    assert (torch.sigmoid(exported) - torch.sigmoid(fast)).abs().max().item() < 0.01
