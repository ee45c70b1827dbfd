"""The split twin (models/split) scores every row exactly as its model does, reading each side
from its own rows, for every zoo family and preset, and through ONNX Runtime."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from recaccel.artifact import load_artifact
from recaccel.data.dataset import Dataset
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side
from recaccel.errors import ConfigError
from recaccel.models.deepfm import DeepFM, DeepFMConfig
from recaccel.models.quant.dense import quantize_dense
from recaccel.models.quant.embedding import quantize_embeddings
from recaccel.models.registry import MODELS, build_model, preset_config
from recaccel.models.split import (
    OneRankRequest,
    SplitModel,
    from_model,
    joined_rows,
    split_example,
)
from recaccel.models.split.families import SplitDCNv2, SplitDeepFM, SplitDLRM
from recaccel.models.split.parts import SplitLinear, worth_cutting
from recaccel.runtime.export import onnx_session
from recaccel.runtime.split_export import export_split_onnx, split_feeds

ALL = [(m, p) for m, spec in MODELS.items() for p in spec.presets]
TOLERANCE = 1e-5
Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """The model with every weight moved off its initialisation (zero biases, padding rows and
    tiny embeddings would let a wrong split agree by accident)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


def _requests(
    schema: FeatureSchema, requests: int, rows: int, seed: int
) -> tuple[Tensors, Tensors, torch.Tensor]:
    """`requests` request rows and `rows` candidate rows dealt among them, every column random:
    the twin must read only its side's."""
    inputs = split_example(schema, requests, rows, seed=seed)
    owner = torch.randint(0, requests, (rows,), generator=torch.Generator().manual_seed(seed))
    return inputs[:3], inputs[3:6], owner  # type: ignore[return-value]


def _assert_twin_matches(
    model: nn.Module,
    twin: SplitModel,
    schema: FeatureSchema,
    requests: int,
    rows: int,
    seed: int = 0,
) -> None:
    request, candidates, owner = _requests(schema, requests, rows, seed)
    with torch.no_grad():
        expected = model(*joined_rows(schema, request, candidates, owner))
        got = twin(*request, *candidates, owner)
    assert got.shape == (rows,)
    torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize(("family", "preset"), ALL)
@pytest.mark.parametrize(("requests", "rows"), [(1, 1), (1, 1000), (7, 300)])
def test_the_twin_scores_as_the_model_on_random_weights(
    tiny_dataset: Dataset, family: str, preset: str, requests: int, rows: int
) -> None:
    schema = tiny_dataset.schema
    torch.manual_seed(0)
    model = _perturbed(build_model(family, schema, preset_config(family, preset)))
    _assert_twin_matches(model, from_model(model, schema), schema, requests, rows)


@pytest.mark.parametrize("family", list(MODELS))
def test_the_twin_scores_as_a_trained_model(
    tiny_dataset: Dataset, trained: Callable[[str, str, int], Path], family: str
) -> None:
    model = load_artifact(trained(family, "small", 1)).model.eval()
    schema = tiny_dataset.schema
    _assert_twin_matches(model, from_model(model, schema), schema, 3, 200, seed=1)


def test_the_split_saves_compute_where_it_says(tiny_dataset: Dataset) -> None:
    """A plain first layer is cut: the candidate half has only the candidate columns' weights,
    and the request half holds the rest (so the request's share is not recomputed per row)."""
    schema = tiny_dataset.schema
    model = build_model("deepfm", schema, preset_config("deepfm", "small"))
    twin = from_model(model, schema)
    assert isinstance(model, DeepFM) and isinstance(twin, SplitDeepFM)
    first = model.deep_arch.layers[0]
    assert isinstance(first, nn.Linear)
    assert twin.deep_first.request_weight is not None
    assert twin.deep_first.candidate_weight is not None
    assert twin.deep_first.cut
    request_fields = sum(1 for f in schema.features if f.side is Side.REQUEST)
    assert twin.deep_first.request_weight.shape[1] == request_fields * 16
    assert twin.deep_first.candidate_weight.shape[1] == first.in_features - request_fields * 16
    # DCNv2's float layers are permuted to [request, candidate] columns: no per-row reorder.
    dcn = from_model(build_model("dcnv2", schema, preset_config("dcnv2", "small")), schema)
    assert isinstance(dcn, SplitDCNv2) and dcn.permuted
    # DLRM's bottom MLP reads 2 request columns of 4 into 64: not worth cutting; its top MLP's
    # request columns (the user x user dots) are.
    dlrm = from_model(build_model("dlrm", schema, preset_config("dlrm", "small")), schema)
    assert isinstance(dlrm, SplitDLRM) and not dlrm.bottom_first.cut and dlrm.top_first.cut


@pytest.mark.parametrize("layout", ["fused", "per-table"])
@pytest.mark.parametrize("family", list(MODELS))
def test_the_twin_composes_with_quantized_tables(
    tiny_dataset: Dataset, family: str, layout: str
) -> None:
    schema = tiny_dataset.schema
    torch.manual_seed(1)
    model = _perturbed(build_model(family, schema, preset_config(family, "base")))
    quantized, _ = quantize_embeddings(model, 8, layout=layout)
    _assert_twin_matches(quantized.eval(), from_model(quantized, schema), schema, 2, 100)


@pytest.mark.parametrize("family", list(MODELS))
def test_a_layer_that_cannot_be_cut_is_run_whole(tiny_dataset: Dataset, family: str) -> None:
    """int8 dense layers keep their own numbers: the twin reassembles their input instead."""
    schema = tiny_dataset.schema
    torch.manual_seed(2)
    model = _perturbed(build_model(family, schema, preset_config(family, "base")))
    quantized, _ = quantize_dense(model, "int8-dynamic")
    twin = from_model(quantized, schema)
    assert any(isinstance(m, SplitLinear) and not m.cut for m in twin.modules())
    assert not isinstance(twin, SplitDCNv2) or not twin.permuted
    _assert_twin_matches(quantized.eval(), twin, schema, 2, 100)


def test_a_pruned_model_with_dropped_and_narrowed_fields(tiny_dataset: Dataset) -> None:
    schema = tiny_dataset.schema
    config = dataclasses.replace(
        DeepFMConfig(8, (16, 8)), dropped_fields=("zip_prefix", "movie_age", "age")
    )
    model = _perturbed(build_model("deepfm", schema, config))
    _assert_twin_matches(model, from_model(model, schema), schema, 3, 50)
    for family in ("wide_deep", "tower"):  # each field's vector at its own width
        config = preset_config(family, "small")
        narrowed = build_model(family, schema, dataclasses.replace(config, mixed_dim_alpha=0.5))
        _assert_twin_matches(_perturbed(narrowed), from_model(narrowed, schema), schema, 3, 50)


def test_a_model_reading_no_request_side_dense_column(tiny_dataset: Dataset) -> None:
    """With the user's dense features dropped, each first layer has no request column."""
    schema = tiny_dataset.schema
    for family in MODELS:
        config = preset_config(family, "small")
        config = dataclasses.replace(config, dropped_fields=("age", "user_tenure"))
        model = _perturbed(build_model(family, schema, config))
        _assert_twin_matches(model, from_model(model, schema), schema, 2, 40)


@pytest.mark.parametrize(
    ("request_columns", "out_features", "cut"),
    [
        (128, 64, True),
        (8, 1024, True),
        (7, 1024, False),
        (2, 256, False),
        (2, 1, True),
        (0, 1, True),
        (0, 64, False),
    ],
)
def test_a_layer_is_cut_only_where_it_pays(
    request_columns: int, out_features: int, cut: bool
) -> None:
    assert worth_cutting(request_columns, out_features) is cut
    flags = [True] * request_columns + [False] * 3
    assert SplitLinear(nn.Linear(len(flags), out_features), flags).cut is cut


def test_a_schema_without_a_request_side_is_refused(tiny_dataset: Dataset) -> None:
    schema = tiny_dataset.schema
    flat = FeatureSchema(
        tuple(dataclasses.replace(f, side=Side.CANDIDATE) for f in schema.features),
        schema.label,
        schema.name,
    )
    model = build_model("deepfm", flat, preset_config("deepfm", "small"))
    with pytest.raises(ConfigError, match="no feature request-side"):
        from_model(model, flat)


def test_a_model_outside_the_zoo_is_refused(tiny_dataset: Dataset) -> None:
    with pytest.raises(ConfigError, match="no request/candidate split for a Linear"):
        from_model(nn.Linear(3, 1), tiny_dataset.schema)


def test_columns_on_side_name_each_tensors_columns() -> None:
    schema = FeatureSchema(
        (
            Feature("a", FeatureKind.DENSE, side=Side.REQUEST),
            Feature("b", FeatureKind.DENSE),
            Feature("u", FeatureKind.CATEGORICAL, 5, side=Side.REQUEST),
            Feature("i", FeatureKind.CATEGORICAL, 5),
            Feature("v", FeatureKind.CATEGORICAL, 5, side=Side.REQUEST),
            Feature("g", FeatureKind.MULTI_HOT, 5, max_len=3),
        )
    )
    assert schema.columns_on_side(Side.REQUEST) == ((0,), (0, 2), ())
    assert schema.columns_on_side(Side.CANDIDATE) == ((1,), (1,), (0,))


@pytest.mark.parametrize("family", list(MODELS))
def test_the_split_graph_runs_in_onnx_runtime(
    tiny_dataset: Dataset, tmp_path: Path, family: str
) -> None:
    schema = tiny_dataset.schema
    torch.manual_seed(3)
    model = _perturbed(build_model(family, schema, preset_config(family, "small")))
    twin = from_model(model, schema)
    path = export_split_onnx(twin, schema, tmp_path / "split.onnx")
    session = onnx_session(path)
    for requests, rows in [(1, 1), (1, 500), (5, 64)]:
        inputs = split_example(schema, requests, rows, seed=rows)
        got = session.run(None, split_feeds(inputs))[0]
        with torch.no_grad():
            expected = model(*joined_rows(schema, inputs[:3], inputs[3:6], inputs[6]))  # type: ignore[arg-type]
        assert got.shape == (rows,)
        torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)


def test_one_rank_request_scores_rows_as_the_first_rows_user(tiny_dataset: Dataset) -> None:
    """What the search times: the twin on B rows as one request, the first row's user."""
    schema = tiny_dataset.schema
    model = _perturbed(build_model("deepfm", schema, preset_config("deepfm", "small")))
    _, candidates, _ = _requests(schema, 1, 40, seed=4)
    owner = torch.zeros(40, dtype=torch.long)
    first = tuple(t[:1] for t in candidates)
    with torch.no_grad():
        expected = model(*joined_rows(schema, first, candidates, owner))  # type: ignore[arg-type]
        got = OneRankRequest(from_model(model, schema))(*candidates)
    torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=TOLERANCE)
