"""Row-wise INT8/INT4 embedding tables: close to the float tables, on both lookup paths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from torch import nn

from recaccel.data.dataset import Dataset
from recaccel.models.layers import SparseArch
from recaccel.models.quant.embedding import (
    EMBEDDING_LAYOUTS,
    FBGEMM_AVAILABLE,
    SUPPORTED_BITS,
    QuantizedEmbeddingBag,
    packed_row_bytes,
    quantize_embeddings,
    worth_quantizing,
)
from recaccel.models.quant.fused import QuantizedSparseArch
from recaccel.models.registry import MODELS, build_model, count_parameters, preset_config
from recaccel.models.transforms import apply_transforms, quantize_embeddings_transform


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


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("use_fbgemm", [True, False] if FBGEMM_AVAILABLE else [False])
def test_a_mean_bag_stays_a_mean_of_its_real_ids(bits: int, use_fbgemm: bool) -> None:
    """A user's mean-pooled bag (an imported model's) must not become a sum when quantized."""
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(30, 8, mode="mean", padding_idx=0)
    nn.init.normal_(bag.weight, std=0.05)
    quantized = QuantizedEmbeddingBag.from_float(bag, bits)
    quantized.use_fbgemm = use_fbgemm
    ids = torch.tensor([[3, 5, 0, 0], [7, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]])
    tolerance = _max_step(bag.weight, bits) * (1.05 if bits == 8 else 1.5) + 1e-6
    assert (quantized(ids) - bag(ids)).abs().max().item() <= tolerance


def test_a_max_bag_is_left_in_float() -> None:
    model = nn.Sequential(nn.EmbeddingBag(30, 8, mode="max", padding_idx=0))
    quantized, report = quantize_embeddings(model, 8)
    assert isinstance(quantized[0], nn.EmbeddingBag)
    assert report[0].bits is None


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


@pytest.mark.parametrize("layout", EMBEDDING_LAYOUTS)
@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_quantizing_keeps_the_parameter_count(
    tiny_dataset: Dataset, bits: int, layout: str
) -> None:
    """Quantized weights are buffers, but still weights: quantizing is not pruning."""
    from recaccel.models.quant.dense import quantize_dense

    model = build_model("dlrm", tiny_dataset.schema, preset_config("dlrm", "small"))
    before = count_parameters(model)
    quantized, _ = quantize_embeddings(model, bits, layout=layout)
    assert count_parameters(quantized) == before
    both, _ = quantize_dense(quantized, "int8-dynamic")
    assert count_parameters(both) == before


# Table widths per schema sparse field (user, item, age, gender, occupation, zip, decade,
# genres): four widths that quantize at 8 bits (8, 4, 16, 3) and one that does not (2); at
# 4 bits the odd width 3 stays float. Item and decade share a width but not adjacent columns.
MIXED_WIDTHS = (8, 4, 16, 3, 8, 2, 4, 8)


def _mixed_arch(dataset: Dataset, project_to: int | None = None) -> SparseArch:
    torch.manual_seed(0)
    arch = SparseArch(
        dataset.schema, MIXED_WIDTHS, init_std=0.05, dropped=("occupation",), project_to=project_to
    )
    return arch.eval()


def _embed(arch: nn.Module, dataset: Dataset) -> list[torch.Tensor]:
    batch = dataset.test.features()
    with torch.inference_mode():
        out: list[torch.Tensor] = arch(batch.categorical, batch.multi_hot)
    return out


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
@pytest.mark.parametrize("project_to", [None, 16])
def test_fused_lookups_equal_per_table_lookups_exactly(
    tiny_dataset: Dataset, bits: int, project_to: int | None
) -> None:
    arch = _mixed_arch(tiny_dataset, project_to)
    fused, report = quantize_embeddings(arch, bits)
    per_table, per_table_report = quantize_embeddings(arch, bits, layout="per-table")
    assert isinstance(fused, QuantizedSparseArch) and isinstance(per_table, SparseArch)
    assert report == per_table_report  # the same tables quantized, the same bytes
    # One batched lookup per width that quantizes; the rest stay float, as per table.
    widths = {d for d in arch.dims[:-1] if worth_quantizing(d, bits)}
    assert sorted(g.table.embedding_dim for g in fused.groups) == sorted(widths)
    assert len(fused.float_categorical) == sum(
        not worth_quantizing(d, bits) for d in arch.dims[:-1]
    )
    got, want = _embed(fused, tiny_dataset), _embed(per_table, tiny_dataset)
    assert [v.shape for v in got] == [v.shape for v in want]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_fused_lookups_stay_close_to_float(tiny_dataset: Dataset, bits: int) -> None:
    arch = _mixed_arch(tiny_dataset)
    fused, _ = quantize_embeddings(arch, bits)
    # A bag sums up to 3 rows (max_len), each off by at most half a step.
    bound = 3 * max(_max_step(t.weight, bits) for t in arch.tables()) * 1.5
    for got, want in zip(_embed(fused, tiny_dataset), _embed(arch, tiny_dataset), strict=True):
        assert (got - want).abs().max().item() <= bound


@pytest.mark.skipif(not FBGEMM_AVAILABLE, reason="this torch build has no FBGEMM embedding ops")
@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_fused_fbgemm_and_plain_torch_paths_agree(tiny_dataset: Dataset, bits: int) -> None:
    fused, _ = quantize_embeddings(_mixed_arch(tiny_dataset), bits)
    assert isinstance(fused, QuantizedSparseArch)
    assert {g.lookup_path() for g in fused.groups} == {"fbgemm"}
    fast = _embed(fused, tiny_dataset)
    for module in fused.modules():
        if isinstance(module, QuantizedEmbeddingBag):
            module.use_fbgemm = False
    assert {g.lookup_path() for g in fused.groups} == {"torch-dequantize"}
    for slow, quick in zip(_embed(fused, tiny_dataset), fast, strict=True):
        torch.testing.assert_close(slow, quick, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
@pytest.mark.parametrize(
    ("made", "recorded"),
    [
        ("fused", quantize_embeddings_transform),
        ("per-table", lambda bits: quantize_embeddings_transform(bits, "per-table")),
        # Artifacts made before fused lookups: per-table state, no layout in the manifest.
        ("per-table", lambda bits: {"op": "quantize_embeddings", "bits": bits}),
        ("fused", lambda bits: {"op": "quantize_embeddings", "bits": bits}),
    ],
)
def test_saved_state_loads_into_the_replayed_layout(
    tiny_dataset: Dataset, bits: int, made: str, recorded: Callable[[int], dict[str, object]]
) -> None:
    config = replace(
        preset_config("dcnv2", "small"), embedding_dims=MIXED_WIDTHS, dropped_fields=("occupation",)
    )
    torch.manual_seed(0)
    model = build_model("dcnv2", tiny_dataset.schema, config).eval()
    quantized, _ = quantize_embeddings(model, bits, layout=made)
    torch.manual_seed(1)  # other float weights: the state must overwrite every one
    rebuilt = apply_transforms(build_model("dcnv2", tiny_dataset.schema, config), [recorded(bits)])
    rebuilt.load_state_dict(quantized.state_dict(), strict=True)
    layout = recorded(bits).get("layout", "fused")
    assert isinstance(rebuilt.get_submodule("sparse_arch"), QuantizedSparseArch) is (
        layout == "fused"
    )
    batch = tiny_dataset.test.features().as_tuple()
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt.eval()(*batch), quantized(*batch), rtol=0, atol=0)
