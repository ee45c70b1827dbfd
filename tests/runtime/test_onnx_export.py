"""The ONNX form: same logits as PyTorch at any batch size, plain gathers, named inputs, and a
clear refusal for models ORT cannot run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
import onnx

from recaccel.artifact import Artifact, LineageStep, load_artifact, save_artifact
from recaccel.data.dataset import Dataset, FeatureBatch, example_batch
from recaccel.data.schema import INPUT_NAMES, OUTPUT_NAME, Feature, FeatureKind, FeatureSchema
from recaccel.models.quant.dense import prepare_quantized_dense
from recaccel.models.quant.embedding import (
    FBGEMM_AVAILABLE,
    QuantizedEmbeddingBag,
    quantize_embeddings,
)
from recaccel.models.registry import MODELS, build_model, preset_config
from recaccel.runtime.export import (
    UnsupportedOnBackendError,
    export_onnx,
    onnx_feeds,
    onnx_session,
    onnx_size_bytes,
    run_onnx,
)
from recaccel.runtime.onnx_lookups import PER_SLOT_MAX_BAG

# Logits, ORT vs PyTorch: the two sum in different orders, measured <= 3e-7 on these models;
# 1e-5 is float32 noise for logits of size ~1, far below any wrong op.
LOGIT_ATOL = 1e-5


@pytest.mark.parametrize("rows", [1, 37])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_float_onnx_matches_pytorch_at_any_batch_size(
    trained: dict[str, Artifact],
    float_onnx: dict[str, Path],
    tiny_dataset: Dataset,
    model_name: str,
    rows: int,
) -> None:
    batch = tiny_dataset.test.features(slice(0, rows))
    with torch.no_grad():
        expected = trained[model_name].model(*batch.as_tuple()).numpy()
    got = run_onnx(float_onnx[model_name], batch)
    assert got.shape == (rows,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_graph_has_named_inputs_a_dynamic_batch_and_plain_gathers(
    float_onnx: dict[str, Path], tiny_dataset: Dataset, model_name: str
) -> None:
    model = onnx.load(str(float_onnx[model_name]))
    onnx.checker.check_model(model)

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    batch_axes = {dims(v)[0] for v in [*model.graph.input, *model.graph.output]}
    assert len(batch_axes) == 1 and isinstance(batch_axes.pop(), str)  # one symbolic axis
    ops = [node.op_type for node in model.graph.node]
    assert not {"Loop", "Scan", "If", "SequenceEmpty"} & set(ops)  # no per-row subgraphs
    assert ops.count("Gather") >= len(tiny_dataset.schema.sparse)  # one lookup per table
    # No stack traces with this machine's paths, no FX names.
    assert not any(node.metadata_props for node in model.graph.node)


def test_the_callers_model_is_left_as_it_was(
    tiny_dataset: Dataset, trained: dict[str, Artifact], tmp_path: Path
) -> None:
    model = trained["deepfm"].model.train()  # export must not need eval mode, nor set it
    try:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        export_onnx(model, tiny_dataset.schema, tmp_path / "m.onnx")
        assert model.training
        assert any(isinstance(m, nn.EmbeddingBag) for m in model.modules())
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    finally:
        model.eval()


def test_session_helpers(float_onnx: dict[str, Path], tiny_dataset: Dataset) -> None:
    path = float_onnx["dlrm"]
    batch = example_batch(tiny_dataset.schema, 5)
    session = onnx_session(path, intra_op_num_threads=1)
    by_session = run_onnx(session, batch)
    np.testing.assert_array_equal(by_session, run_onnx(path, onnx_feeds(batch)))
    assert onnx_size_bytes(path) == path.stat().st_size


def _quantized_artifact(parent: Artifact, bits: int, layout: str, out: Path) -> Artifact:
    model, _ = quantize_embeddings(parent.model, bits=bits, layout=layout)
    transform = {"op": "quantize_embeddings", "bits": bits, "layout": layout}
    manifest = replace(
        parent.manifest,
        parent=parent.manifest.artifact_id,
        transforms=(transform,),
        lineage=(*parent.manifest.lineage, LineageStep("quantize", {"bits": bits})),
    )
    save_artifact(out, model, manifest)
    return load_artifact(out)


# A quantized table's rows are the same bytes in PyTorch and in the graph, dequantized by the
# same arithmetic (q * scale + bias) in float32: only summation order differs, as for floats.
# Each model, width and layout at least once (all eight pairs cost the suite 15 s more).
@pytest.mark.parametrize(
    ("model_name", "bits", "layout"),
    [
        ("dlrm", 8, "fused"),
        ("dlrm", 4, "per-table"),
        ("deepfm", 4, "fused"),
        ("deepfm", 8, "per-table"),
    ],
)
def test_quantized_tables_export_quantized_and_score_as_the_pytorch_modules(
    trained: dict[str, Artifact],
    tiny_dataset: Dataset,
    tmp_path: Path,
    model_name: str,
    bits: int,
    layout: str,
) -> None:
    quantized = _quantized_artifact(trained[model_name], bits, layout, tmp_path / "q")
    batch = tiny_dataset.test.features(slice(0, 64))
    path = export_onnx(quantized, None, tmp_path / "q.onnx", example=batch)
    with torch.no_grad():
        expected = quantized.model(*batch.as_tuple()).numpy()
    np.testing.assert_allclose(run_onnx(path, batch), expected, rtol=0, atol=LOGIT_ATOL)

    # The tables stay quantized in the graph: uint8 values, no float copy of them.
    tables = [m for m in quantized.model.modules() if isinstance(m, QuantizedEmbeddingBag)]
    assert tables and all(t.bits == bits for t in tables)
    initializers = onnx.load(str(path)).graph.initializer
    uint8 = sorted(tuple(t.dims) for t in initializers if t.data_type == onnx.TensorProto.UINT8)
    width = {8: 1, 4: 2}[bits]
    assert uint8 == sorted((t.num_embeddings, t.embedding_dim // width) for t in tables)
    float_shapes = {tuple(t.dims) for t in initializers if t.data_type == onnx.TensorProto.FLOAT}
    assert not float_shapes & {(t.num_embeddings, t.embedding_dim) for t in tables}


def test_quantized_dense_layers_get_the_same_error(tiny_dataset: Dataset, tmp_path: Path) -> None:
    for mode, op in [("int8-dynamic", "linear_dynamic"), ("int8-static", "linear_relu")]:
        model = prepare_quantized_dense(
            build_model("dlrm", tiny_dataset.schema, preset_config("dlrm", "small")), mode
        )
        with pytest.raises(UnsupportedOnBackendError, match=f"quantized::{op}"):
            export_onnx(model, tiny_dataset.schema, tmp_path / "dense.onnx")


@pytest.mark.skipif(not FBGEMM_AVAILABLE, reason="needs FBGEMM's quantized ops")
def test_an_op_without_onnx_translation_is_named(tmp_path: Path, tiny_dataset: Dataset) -> None:
    """Ops the up-front check does not know still end in the same error, naming the op."""

    class RawFbgemmBag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            weight = torch.randn(tiny_dataset.schema.multi_hot[0].cardinality, 8)
            self.register_buffer("packed", torch.ops.quantized.embedding_bag_byte_prepack(weight))

        def forward(
            self, dense: torch.Tensor, cat: torch.Tensor, bags: torch.Tensor
        ) -> torch.Tensor:
            ids = bags[:, 0, :].reshape(-1)
            offsets = torch.arange(0, ids.numel(), bags.shape[2])
            op = torch.ops.quantized.embedding_bag_byte_rowwise_offsets
            pooled: torch.Tensor = op(self.packed, ids, offsets)
            return pooled.sum(dim=1) + dense.sum(dim=1)

    with pytest.raises(UnsupportedOnBackendError, match="embedding_bag_byte_rowwise_offsets"):
        export_onnx(RawFbgemmBag(), tiny_dataset.schema, tmp_path / "raw.onnx")


@pytest.mark.parametrize("zero_padding_row", [True, False])
@pytest.mark.parametrize("length", [3, PER_SLOT_MAX_BAG + 4])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_every_bag_mode_exports_as_gathers_and_scores_as_pytorch_does(
    mode: str, length: int, zero_padding_row: bool, tmp_path: Path
) -> None:
    """Bags with padding, a bag of padding alone, and one full bag: each mode's reduction, for
    bags summed slot by slot and gathered whole, with the padding row zero (as PyTorch keeps
    it) and not (a weight set by hand: the padding ids must still be left out)."""

    class Bagged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(7, 3, mode=mode, padding_idx=0)
            if not zero_padding_row:
                with torch.no_grad():
                    self.bag.weight[0] = 5.0

        def forward(
            self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
        ) -> torch.Tensor:
            pooled = self.bag(multi_hot[:, 0, :])  # each column weighed differently, no sum
            return pooled[:, 0] + 2 * pooled[:, 1] - pooled[:, 2] + dense[:, 0]

    schema = FeatureSchema(
        (
            Feature("x", FeatureKind.DENSE),
            Feature("c", FeatureKind.CATEGORICAL, 3),
            Feature("tags", FeatureKind.MULTI_HOT, 7, max_len=length),
        )
    )
    torch.manual_seed(0)
    ids = torch.zeros(4, 1, length, dtype=torch.int64)
    ids[0, 0, :2] = torch.tensor([1, 2])  # padded
    ids[2, 0, :] = torch.arange(length) % 6 + 1  # full
    ids[3, 0, 0] = 6  # row 1: padding alone
    batch = FeatureBatch(torch.randn(4, 1), torch.zeros(4, 1, dtype=torch.int64), ids)
    model = Bagged().eval()
    path = export_onnx(model, schema, tmp_path / "m.onnx", example=batch)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Loop" not in ops
    if mode == "sum":  # a short bag is added slot by slot: no reduction over the bag axis
        assert ("ReduceSum" in ops) == (length > PER_SLOT_MAX_BAG)
    with torch.no_grad():
        expected = model(*batch.as_tuple()).numpy()
    np.testing.assert_allclose(run_onnx(path, batch), expected, atol=1e-6)


def test_a_bag_called_with_offsets_gets_a_clear_error(tmp_path: Path) -> None:
    """Not torch.export's wrapped traceback: the op, the backend and what to pass instead."""

    class WithOffsets(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(7, 3, padding_idx=0)

        def forward(
            self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
        ) -> torch.Tensor:
            ids = multi_hot[:, 0, :].reshape(-1)
            offsets = torch.arange(0, ids.numel(), multi_hot.shape[2])
            pooled: torch.Tensor = self.bag(ids, offsets)
            return pooled[:, 0] + dense[:, 0]

    schema = FeatureSchema(
        (
            Feature("x", FeatureKind.DENSE),
            Feature("c", FeatureKind.CATEGORICAL, 3),
            Feature("tags", FeatureKind.MULTI_HOT, 7, max_len=3),
        )
    )
    with pytest.raises(UnsupportedOnBackendError, match="offsets") as caught:
        export_onnx(WithOffsets().eval(), schema, tmp_path / "m.onnx")
    assert "(batch, bag) ids" in caught.value.hint


def test_large_weights_are_kept_beside_the_graph_and_mapped_by_onnx_runtime(
    trained: dict[str, Artifact],
    tiny_dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past EXTERNAL_DATA_BYTES the weights go to `model.onnx.data`, which ONNX Runtime maps
    rather than copies: every process serving the graph shares one copy of them
    (docs/weights-in-memory.md). Scaled down: the threshold lowered to the tiny model."""
    from recaccel.runtime import export

    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 1024)
    path = export_onnx(trained["dlrm"], None, tmp_path / "m.onnx")
    data = tmp_path / "m.onnx.data"
    assert data.is_file() and onnx_size_bytes(path) == path.stat().st_size + data.stat().st_size
    session = onnx_session(path)
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(data.resolve()) in maps.read_text()
    batch = tiny_dataset.test.features(slice(0, 16))
    with torch.no_grad():
        expected = trained["dlrm"].model(*batch.as_tuple()).numpy()
    np.testing.assert_allclose(run_onnx(session, batch), expected, rtol=0, atol=LOGIT_ATOL)
