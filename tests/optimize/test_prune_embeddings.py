"""Embedding pruning: whole fields and whole dims leave, the slicing is exact, children load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.models.layers import SparseArch
from recaccel.models.registry import (
    MODELS,
    ModelConfig,
    build_model,
    count_parameters,
    model_spec,
    preset_config,
)
from recaccel.optimize.embedding_slicing import drop_fields_state, prune_dims_state
from recaccel.optimize.prune_embeddings import (
    ablated_auc,
    choose_fields,
    dim_energy,
    field_ablation_costs,
    kept_dim_count,
    prune_embedding_dims,
    prune_fields,
)
from recaccel.train.pipeline import train_models
from recaccel.train.trainer import TrainConfig

FAST = TrainConfig(max_epochs=2, batch_size=128, learning_rate=3e-3)
# A dense, a categorical and the multi-hot field (schema order): every kind of slice.
DROPPED = ("age", "item_id", "genres")
# Uniform widths, and Ginart's mixed dims (DLRM/DeepFM then project narrow tables up).
VARIANTS = [(m, a) for m in MODELS for a in (0.0, 0.5)]


def _config(model_name: str, alpha: float) -> ModelConfig:
    return dataclasses.replace(preset_config(model_name, "base"), mixed_dim_alpha=alpha)


def _model(model_name: str, dataset: Dataset, config: ModelConfig) -> nn.Module:
    torch.manual_seed(0)
    return build_model(model_name, dataset.schema, config).eval()


def _rebuilt(
    model_name: str, dataset: Dataset, sliced: tuple[ModelConfig, dict[str, torch.Tensor]]
) -> nn.Module:
    config, state = sliced
    model = build_model(model_name, dataset.schema, config).eval()
    model.load_state_dict(state)
    return model


def _archs(model: nn.Module) -> list[SparseArch]:
    """Every table set: the embeddings and, in DeepFM and Wide & Deep, the first-order weights."""
    return [m for m in model.modules() if isinstance(m, SparseArch)]


def _embeddings(model: nn.Module) -> SparseArch:
    arch = model.get_submodule("sparse_arch")
    assert isinstance(arch, SparseArch)
    return arch


@pytest.mark.parametrize(
    ("width", "fraction", "kept"), [(64, 0.5, 32), (10, 0.5, 8), (3, 0.5, 3), (16, 0.01, 4)]
)
def test_kept_dim_count_rounds_up_to_a_multiple_of_4(
    width: int, fraction: float, kept: int
) -> None:
    assert kept_dim_count(width, fraction) == kept


@pytest.mark.parametrize(
    ("costs", "joint", "max_fields", "chosen"),
    [
        ({"a": 0.0, "b": 0.0001, "c": 0.01}, 0.0, None, ("a", "b")),  # c costs too much alone
        ({"a": 0.0003, "b": 0.0001}, 0.0003, None, ("b", "a")),  # cheapest first
        ({"a": 0.0001, "b": 0.0001}, 0.001, None, ("a",)),  # same signal: not both
        ({"a": 0.0, "b": 0.0, "c": 0.0}, 0.0, 2, ("a", "b")),
        ({"a": -0.001, "b": 0.0}, 0.0, None, ("a", "b")),  # a field that hurt: drop it
    ],
)
def test_choose_fields(
    costs: dict[str, float], joint: float, max_fields: int | None, chosen: tuple[str, ...]
) -> None:
    got = choose_fields(costs, 0.0005, joint_cost=lambda _: joint, max_fields=max_fields)
    assert got == chosen


def test_choose_fields_keeps_what_a_model_needs() -> None:
    got = choose_fields(
        {"a": 0.0, "b": 0.0}, 0.0005, lambda _: 0.0, viable=lambda fs: "b" not in fs
    )
    assert got == ("a",)


@pytest.mark.parametrize(("model_name", "alpha"), VARIANTS)
def test_dropping_fields_computes_what_zeroing_them_does(
    tiny_dataset: Dataset, model_name: str, alpha: float
) -> None:
    config = _config(model_name, alpha)
    model = _model(model_name, tiny_dataset, config)
    sliced = drop_fields_state(model, model_name, tiny_dataset.schema, config, DROPPED)
    pruned = _rebuilt(model_name, tiny_dataset, sliced)
    assert sliced[0].dropped_fields == DROPPED
    assert count_parameters(pruned) < count_parameters(model)
    with torch.no_grad():  # zero every table of the fields, and the dense field's input
        for arch in _archs(model):
            for field in set(DROPPED) & set(arch.fields):
                arch.tables()[arch.fields.index(field)].weight.zero_()
    dense, categorical, multi_hot = tiny_dataset.test.features().as_tuple()
    zeroed = dense.clone()
    zeroed[:, [f.name for f in tiny_dataset.schema.dense].index("age")] = 0.0
    got = pruned(dense, categorical, multi_hot)
    assert got.shape == (len(dense),) and torch.isfinite(got).all()
    # Narrower GEMMs sum in another order: float rounding, nothing more.
    torch.testing.assert_close(got, model(zeroed, categorical, multi_hot), rtol=1e-4, atol=1e-6)


def _zero_dims(model: nn.Module, model_name: str, kept: list[int] | dict[str, list[int]]) -> None:
    """Zero the dims not kept where they are made: tables (or projections), and DLRM's bottom
    MLP output / DeepFM's dense-field vectors for the shared width."""
    arch = _embeddings(model)
    with torch.no_grad():
        for i, (field, table) in enumerate(zip(arch.fields, arch.tables(), strict=True)):
            keep = kept[field] if isinstance(kept, dict) else kept
            weight = table.weight
            if arch.projections is not None and isinstance(arch.projections[i], nn.Linear):
                weight = arch.projections[i].weight.T  # (d_f, D): columns are the shared dims
            weight[:, [k for k in range(weight.shape[1]) if k not in keep]] = 0.0
        if isinstance(kept, list):
            gone = [k for k in range(arch.out_dims[0]) if k not in kept]
            if model_name == "dlrm":
                last = [m for m in model.dense_arch.layers if isinstance(m, nn.Linear)][-1]
                last.weight[gone] = 0.0
                last.bias[gone] = 0.0
            else:
                model.dense_fields.vectors[:, gone] = 0.0


@pytest.mark.parametrize(("model_name", "alpha"), VARIANTS)
def test_pruning_dims_computes_what_zeroing_them_does(
    tiny_dataset: Dataset, model_name: str, alpha: float
) -> None:
    config = _config(model_name, alpha)
    model = _model(model_name, tiny_dataset, config)
    arch = _embeddings(model)
    kept: list[int] | dict[str, list[int]]
    if model_spec(model_name).shared_embedding_dim:  # dot / FM: dim k leaves every vector
        kept = list(range(0, arch.out_dims[0], 3))
    else:  # concatenated: each table its own dims
        kept = {
            f: list(range(i % 2, d, 2))
            for i, (f, d) in enumerate(zip(arch.fields, arch.dims, strict=True))
        }
    sliced = prune_dims_state(model, model_name, tiny_dataset.schema, config, kept)
    pruned = _rebuilt(model_name, tiny_dataset, sliced)
    assert count_parameters(pruned) < count_parameters(model)
    _zero_dims(model, model_name, kept)
    batch = tiny_dataset.test.features().as_tuple()
    got = pruned(*batch)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, model(*batch), rtol=1e-4, atol=1e-6)


def test_dlrm_dim_pruning_narrows_the_bottom_mlp_and_folds_projections(
    tiny_dataset: Dataset,
) -> None:
    config = _config("dlrm", 0.5)  # 64 wide; the narrowest tables have 17 and 14 dims
    model = _model("dlrm", tiny_dataset, config)
    new, state = prune_dims_state(model, "dlrm", tiny_dataset.schema, config, list(range(12)))
    assert new.embedding_dim == 12 and new.bottom_mlp[-1] == 12  # type: ignore[union-attr]
    # Every table is now at least as wide as the shared 12: projections folded in, none left.
    assert new.embedding_dims == () and not any("projections" in k for k in state)


def test_keeping_every_dim_and_dropping_nothing_changes_nothing(tiny_dataset: Dataset) -> None:
    config = _config("deepfm", 0.0)
    model = _model("deepfm", tiny_dataset, config)
    new, state = prune_dims_state(model, "deepfm", tiny_dataset.schema, config, list(range(32)))
    assert new == config
    batch = tiny_dataset.test.features().as_tuple()
    torch.testing.assert_close(
        _rebuilt("deepfm", tiny_dataset, (new, state))(*batch), model(*batch), rtol=0, atol=0
    )


def test_bad_fields_and_dims_say_what_to_fix(tiny_dataset: Dataset) -> None:
    config = _config("dlrm", 0.0)
    model = _model("dlrm", tiny_dataset, config)
    schema = tiny_dataset.schema
    with pytest.raises(ConfigError, match="lacks: \\['zip'\\]") as err:
        drop_fields_state(model, "dlrm", schema, config, ["zip"])
    assert "zip_prefix" in err.value.hint  # the valid names
    with pytest.raises(ConfigError, match="shares one width"):
        prune_dims_state(model, "dlrm", schema, config, {"item_id": [0, 1]})
    with pytest.raises(ConfigError, match="non-empty subset"):
        prune_dims_state(model, "dlrm", schema, config, [0, 64])
    with pytest.raises(ConfigError, match="every categorical and multi-hot"):
        drop_fields_state(model, "dlrm", schema, config, [f.name for f in schema.sparse])


def test_a_field_with_one_vector_for_every_id_costs_nothing(tiny_dataset: Dataset) -> None:
    model = _model("wide_deep", tiny_dataset, _config("wide_deep", 0.0))
    with torch.no_grad():
        for arch in _archs(model):
            table = arch.tables()[arch.fields.index("occupation")]
            table.weight.copy_(table.weight[1].expand_as(table.weight))
    costs = field_ablation_costs(model, tiny_dataset.schema, tiny_dataset.train, ["occupation"])
    assert costs == {"occupation": 0.0}
    assert 0.0 <= ablated_auc(model, tiny_dataset.schema, tiny_dataset.train) <= 1.0


def test_a_zeroed_dim_has_no_energy(tiny_dataset: Dataset) -> None:
    for model_name in ("deepfm", "dcnv2"):
        config = _config(model_name, 0.0)
        model = _model(model_name, tiny_dataset, config)
        arch = _embeddings(model)
        kept = {
            f: [k for k in range(d) if k != 3] for f, d in zip(arch.fields, arch.dims, strict=True)
        }
        _zero_dims(model, model_name, kept if model_name == "dcnv2" else kept[arch.fields[0]])
        energy = dim_energy(model, tiny_dataset.train)
        per_field = energy if isinstance(energy, dict) else {"all": energy}
        for e in per_field.values():
            assert e[3] == 0 and (e[[0, 1, 2]] > 0).all()


@pytest.fixture(scope="module")
def dlrm_parent(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    out = tmp_path_factory.mktemp("parent")
    train_models(tiny_dataset, [("dlrm", "small")], out, FAST, with_baselines=False, progress=False)
    return load_artifact(out)


def test_prune_fields_writes_a_smaller_child(
    tmp_path: Path, tiny_dataset: Dataset, dlrm_parent: Artifact
) -> None:
    result = prune_fields(
        dlrm_parent,
        tiny_dataset,
        tmp_path / "c",
        FAST,
        tolerance=1.0,
        max_fields=2,
        progress=False,
        baselines=[],
    )
    child = load_artifact(tmp_path / "c")
    step = child.manifest.lineage[-1]
    assert [s.op for s in child.manifest.lineage] == ["train", "prune_fields"]
    assert len(step.params["fields"]) == 2 and "AUC" in step.params["criterion"]
    assert set(child.config.dropped_fields) == set(step.params["fields"])
    assert child.manifest.parameters < dlrm_parent.manifest.parameters
    assert "parent" in result.vs_baselines
    with pytest.raises(ConfigError, match="no field costs"):
        prune_fields(dlrm_parent, tiny_dataset, tmp_path / "n", FAST, tolerance=-1.0)


def test_prune_embedding_dims_writes_a_narrower_child(
    tmp_path: Path, tiny_dataset: Dataset, dlrm_parent: Artifact
) -> None:
    prune_embedding_dims(dlrm_parent, tiny_dataset, 0.5, tmp_path / "c", FAST, False, [])
    child = load_artifact(tmp_path / "c")
    step = child.manifest.lineage[-1]
    assert step.op == "prune_embedding_dims" and len(step.params["kept_dims"]) == 8
    assert child.config.embedding_dim == 8  # small DLRM: 16 → 8
    assert child.manifest.parameters < dlrm_parent.manifest.parameters
    batch = tiny_dataset.test.features().as_tuple()
    assert torch.isfinite(child.model(*batch)).all()
