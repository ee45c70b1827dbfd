"""Row-wise INT8/INT4 embedding tables: close to the float tables, on both lookup paths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recaccel.data.dataset import Dataset
from recaccel.models.quantized import (
    FBGEMM_AVAILABLE,
    SUPPORTED_BITS,
    QuantizedEmbeddingBag,
    packed_row_bytes,
    quantize_embeddings,
    worth_quantizing,
)
from recaccel.models.registry import MODELS, build_model, count_parameters, preset_config


@pytest.mark.parametrize(
    ("dim", "bits", "row_bytes", "worth"),
    [
        (16, 8, 24, True),
        (16, 4, 12, True),
        (128, 8, 136, True),
        (1, 8, 9, False),
        (2, 8, 10, False),
        (3, 4, 5, False),
        (2, 4, 5, True),
        (4, 4, 6, True),
    ],
)
def test_packed_size_and_whether_it_pays(dim: int, bits: int, row_bytes: int, worth: bool) -> None:
    assert packed_row_bytes(dim, bits) == row_bytes
    assert worth_quantizing(dim, bits) is worth


def _table(rows: int = 50, dim: int = 16) -> nn.Embedding:
    torch.manual_seed(0)
    table = nn.Embedding(rows, dim)
    nn.init.normal_(table.weight, std=0.05)
    return table


def _max_step(weight: torch.Tensor, bits: int) -> float:
    """Half the largest quantization step over the rows: the rounding error bound."""
    span = (weight.max(dim=1).values - weight.min(dim=1).values).max().item()
    return span / (2**bits - 1) / 2


@pytest.mark.parametrize("bits", [8, 4])
def test_single_id_lookups_stay_within_half_a_step(bits: int) -> None:
    table = _table()
    quantized = QuantizedEmbeddingBag.from_float(table, bits)
    ids = torch.randint(0, 50, (64,))
    error = (quantized(ids) - table(ids)).abs().max().item()
    # INT4 also rounds the scale and bias to fp16; allow for that.
    assert error <= _max_step(table.weight, bits) * (1.05 if bits == 8 else 1.5) + 1e-6


@pytest.mark.parametrize("bits", [8, 4])
def test_bags_sum_and_skip_padding(bits: int) -> None:
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(30, 8, mode="sum", padding_idx=0)
    nn.init.normal_(bag.weight, std=0.05)
    with torch.no_grad():
        bag.weight[0].zero_()
    quantized = QuantizedEmbeddingBag.from_float(bag, bits)
    ids = torch.tensor([[3, 5, 0, 0], [7, 0, 0, 0], [1, 2, 3, 4]])
    expected = bag(ids)
    tolerance = 4 * _max_step(bag.weight, bits) * (1.05 if bits == 8 else 1.5) + 1e-6
    assert (quantized(ids) - expected).abs().max().item() <= tolerance
    # A row of pure padding is exactly zero: padding never reaches the sum.
    assert torch.equal(quantized(torch.zeros(1, 4, dtype=torch.long)), torch.zeros(1, 8))


@pytest.mark.skipif(not FBGEMM_AVAILABLE, reason="this torch build has no FBGEMM embedding ops")
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("shape", [(40,), (10, 5)])
def test_fbgemm_and_plain_torch_paths_agree(bits: int, shape: tuple[int, ...]) -> None:
    bag = nn.EmbeddingBag(30, 8, mode="sum", padding_idx=0)
    quantized = QuantizedEmbeddingBag.from_float(bag, bits)
    ids = torch.randint(0, 30, shape)
    assert quantized.lookup_path() == "fbgemm"
    fast = quantized(ids)
    quantized.use_fbgemm = False
    assert quantized.lookup_path() == "torch-dequantize"
    torch.testing.assert_close(quantized(ids), fast, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_models_score_like_the_float_model(
    tiny_dataset: Dataset, model_name: str, bits: int
) -> None:
    torch.manual_seed(0)
    model = build_model(model_name, tiny_dataset.schema, preset_config(model_name, "small")).eval()
    quantized, report = quantize_embeddings(model, bits)
    batch = tiny_dataset.test.features().as_tuple()
    with torch.inference_mode():
        reference, got = torch.sigmoid(model(*batch)), torch.sigmoid(quantized(*batch))
    assert (got - reference).abs().max().item() < (0.01 if bits == 8 else 0.05)
    # Every wide table is quantized, width-1 (first-order) tables stay float, nothing grows.
    assert all((t.bits is None) == (t.dim == 1) for t in report)
    assert sum(t.bytes for t in report) < sum(t.float_bytes for t in report)
    assert any(isinstance(m, nn.Embedding) for m in model.modules())  # the original is untouched
    assert not any(
        isinstance(m, nn.Embedding) and m.weight.shape[1] > 1 for m in quantized.modules()
    )


def test_unsupported_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="supports"):
        quantize_embeddings(nn.Sequential(_table()), 2)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_quantizing_keeps_the_parameter_count(tiny_dataset: Dataset, bits: int) -> None:
    """Quantized weights are buffers, but still weights: quantizing is not pruning."""
    from recaccel.models.quantized_dense import quantize_dense

    model = build_model("dlrm", tiny_dataset.schema, preset_config("dlrm", "small"))
    before = count_parameters(model)
    quantized, _ = quantize_embeddings(model, bits)
    assert count_parameters(quantized) == before
    both, _ = quantize_dense(quantized, "int8-dynamic")
    assert count_parameters(both) == before
