"""Every zoo model × preset builds from a schema and runs forward and backward on a batch."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch.export import Dim, export

from recaccel.data.dataset import Dataset
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema
from recaccel.errors import ConfigError, UnknownNameError
from recaccel.models.dlrm import DLRMConfig
from recaccel.models.layers import (
    CrossNetV2,
    DotInteraction,
    FactorizationMachine,
    mixed_dimensions,
)
from recaccel.models.registry import (
    MODELS,
    ModelConfig,
    build_model,
    config_from_dict,
    config_to_dict,
    count_parameters,
    model_spec,
    preset_config,
)

ALL = [(m, p) for m, spec in MODELS.items() for p in spec.presets]


@pytest.mark.parametrize(("model_name", "preset"), ALL)
def test_forward_and_backward_on_a_schema_batch(
    tiny_dataset: Dataset, model_name: str, preset: str
) -> None:
    torch.manual_seed(0)
    model = build_model(model_name, tiny_dataset.schema, preset_config(model_name, preset))
    batch = tiny_dataset.train.features(slice(0, 32))
    logits = model(*batch.as_tuple())
    assert logits.shape == (32,) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(
        p.grad is not None for p in model.parameters() if p.requires_grad and p.grad is not None
    )
    assert count_parameters(model) > 0


@pytest.mark.parametrize(("model_name", "preset"), ALL)
def test_config_round_trips_through_json_types(model_name: str, preset: str) -> None:
    config = preset_config(model_name, preset)
    as_json_types = {
        k: list(v) if isinstance(v, tuple) else v for k, v in config_to_dict(config).items()
    }
    assert config_from_dict(model_name, as_json_types) == config


def test_presets_shrink_from_heavy_to_small(tiny_dataset: Dataset) -> None:
    for model_name, spec in MODELS.items():
        sizes = [
            count_parameters(build_model(model_name, tiny_dataset.schema, spec.presets[p]))
            for p in ("heavy", "base", "small")
        ]
        assert sizes[0] > sizes[1] > sizes[2], model_name


def test_dlrm_heavy_is_the_mlperf_configuration() -> None:
    config = preset_config("dlrm", "heavy")
    assert config == DLRMConfig(128, (512, 256, 128), (1024, 1024, 512, 256, 1))


def test_single_valued_fields_use_plain_lookups_and_multi_hot_fields_use_bags(
    tiny_dataset: Dataset,
) -> None:
    model = build_model("dlrm", tiny_dataset.schema, preset_config("dlrm", "small"))
    assert all(isinstance(t, torch.nn.Embedding) for t in model.sparse_arch.categorical)
    assert len(model.sparse_arch.categorical) == len(tiny_dataset.schema.categorical)
    assert all(isinstance(t, torch.nn.EmbeddingBag) for t in model.sparse_arch.multi_hot)


def test_multi_hot_padding_contributes_nothing(tiny_dataset: Dataset) -> None:
    model = build_model("deepfm", tiny_dataset.schema, preset_config("deepfm", "small")).eval()
    batch = tiny_dataset.train.features(slice(0, 8))
    bag = model.sparse_arch.multi_hot[0]
    padded = batch.multi_hot[:, 0, :].clone()
    widened = torch.cat([padded, torch.zeros_like(padded)], dim=1)  # more padding slots
    torch.testing.assert_close(bag(padded), bag(widened))


def test_unknown_model_and_preset_are_named() -> None:
    with pytest.raises(UnknownNameError, match="unknown model 'dlrn'") as err:
        preset_config("dlrn", "heavy")
    assert "dlrm" in err.value.hint
    with pytest.raises(UnknownNameError, match="huge"):
        preset_config("dlrm", "huge")


def test_bad_configs_say_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="must end at embedding_dim"):
        DLRMConfig(64, (128, 32), (64, 1))
    with pytest.raises(ConfigError, match="unknown dlrm config keys: \\['widht'\\]"):
        config_from_dict("dlrm", {"widht": 3})


def test_dot_interaction_matches_explicit_pairs() -> None:
    x = torch.randn(3, 4, 5)
    got = DotInteraction(4)(x)
    expected = torch.stack(
        [(x[:, i] * x[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4)], 1
    )
    torch.testing.assert_close(got, expected)


def test_fm_term_matches_explicit_pairs() -> None:
    x = torch.randn(3, 4, 5)
    expected = sum((x[:, i] * x[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4))
    torch.testing.assert_close(FactorizationMachine()(x).squeeze(1), expected)


def test_cross_layer_matches_its_formula() -> None:
    torch.manual_seed(0)
    cross = CrossNetV2(6, 1)
    x0 = torch.randn(2, 6)
    layer = cross.layers[0]
    torch.testing.assert_close(cross(x0), x0 * layer(x0) + x0)


def test_models_read_the_schema_not_a_field_count() -> None:
    schema = FeatureSchema(
        (
            Feature("d", FeatureKind.DENSE),
            Feature("a", FeatureKind.CATEGORICAL, 10),
            Feature("b", FeatureKind.MULTI_HOT, 7, max_len=3),
            Feature("c", FeatureKind.MULTI_HOT, 5, max_len=2),
        )
    )
    model = build_model("dcnv2", schema, preset_config("dcnv2", "small"))
    dense = torch.randn(4, 1)
    categorical = torch.randint(0, 10, (4, 1))
    multi_hot = torch.randint(0, 5, (4, 2, 3))
    assert model(dense, categorical, multi_hot).shape == (4,)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_models_run_on_the_criteo_shaped_schema(model_name: str) -> None:
    """26 categorical fields and no multi-hot field: the bag tensor has a zero-sized axis."""
    from recaccel.data.synthetic import SyntheticConfig, make_criteo_synthetic

    dataset = make_criteo_synthetic(SyntheticConfig(rows=200, max_rows_per_table=50))
    model = build_model(model_name, dataset.schema, preset_config(model_name, "small"))
    batch = dataset.train.features(slice(0, 16))
    assert batch.multi_hot.shape == (16, 0, 1)
    assert model(*batch.as_tuple()).shape == (16,)


# ---- dropped fields and mixed-dimension embeddings ----

DROPPED = ("age", "item_id", "genres")  # a dense, a categorical and the multi-hot field


def _variant(model_name: str, **options: Any) -> ModelConfig:
    return dataclasses.replace(preset_config(model_name, "small"), **options)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_dropped_fields_have_no_weights_and_still_take_every_input(
    tiny_dataset: Dataset, model_name: str
) -> None:
    full = build_model(model_name, tiny_dataset.schema, preset_config(model_name, "small"))
    model = build_model(
        model_name, tiny_dataset.schema, _variant(model_name, dropped_fields=DROPPED)
    )
    assert count_parameters(model) < count_parameters(full)
    assert "item_id" not in model.sparse_arch.fields
    batch = tiny_dataset.train.features(slice(0, 16))  # the full schema's three tensors
    logits = model(*batch.as_tuple())
    assert logits.shape == (16,) and torch.isfinite(logits).all()


def test_unknown_dropped_field_names_the_valid_ones(tiny_dataset: Dataset) -> None:
    with pytest.raises(ConfigError, match="lacks: \\['movie'\\]") as err:
        build_model("deepfm", tiny_dataset.schema, _variant("deepfm", dropped_fields=("movie",)))
    assert "item_id" in err.value.hint and "genres" in err.value.hint


def test_dlrm_needs_a_dense_field_it_reads(tiny_dataset: Dataset) -> None:
    dense = tuple(f.name for f in tiny_dataset.schema.dense)
    with pytest.raises(ConfigError, match="at least one dense"):
        build_model("dlrm", tiny_dataset.schema, _variant("dlrm", dropped_fields=dense))


def test_configs_saved_before_the_field_options_load_as_before(tiny_dataset: Dataset) -> None:
    for model_name in MODELS:
        preset = preset_config(model_name, "base")
        old = {
            k: v
            for k, v in config_to_dict(preset).items()
            if k not in ("dropped_fields", "mixed_dim_alpha", "embedding_dims")
        }
        assert config_from_dict(model_name, old) == preset
        keys = build_model(model_name, tiny_dataset.schema, preset).state_dict()
        assert not any("projections" in k or "dense_columns" in k for k in keys)


@pytest.mark.parametrize(
    ("cardinalities", "base", "alpha", "dims"),
    [
        ([3, 12, 48, 3000], 16, 0.5, (16, 8, 4, 2)),  # smallest table keeps base; floor 2
        ([3, 3000], 16, 0.0, (16, 16)),  # α = 0: today's uniform widths
        ([10, 10, 1000], 64, 0.25, (64, 64, 20)),
        ([5, 50_000], 3, 1.0, (3, 2)),
        ([], 8, 0.5, ()),
    ],
)
def test_mixed_dimensions_follow_ginarts_power_rule(
    cardinalities: list[int], base: int, alpha: float, dims: tuple[int, ...]
) -> None:
    assert mixed_dimensions(cardinalities, base, alpha) == dims


@pytest.mark.parametrize("model_name", list(MODELS))
def test_mixed_dimension_tables(tiny_dataset: Dataset, model_name: str) -> None:
    config = _variant(model_name, mixed_dim_alpha=0.5)
    model = build_model(model_name, tiny_dataset.schema, config)
    cards = [f.cardinality for f in tiny_dataset.schema.sparse]
    assert model.sparse_arch.dims == mixed_dimensions(cards, config.embedding_dim, 0.5)
    uniform = build_model(model_name, tiny_dataset.schema, preset_config(model_name, "small"))
    assert count_parameters(model) != count_parameters(uniform)
    if model_spec(model_name).shared_embedding_dim:  # narrow tables project up to D
        assert model.sparse_arch.out_dims == (config.embedding_dim,) * len(cards)
        assert any(isinstance(p, torch.nn.Linear) for p in model.sparse_arch.projections)
    logits = model(*tiny_dataset.train.features(slice(0, 16)).as_tuple())
    assert logits.shape == (16,) and torch.isfinite(logits).all()


def test_bad_embedding_options_say_what_to_fix(tiny_dataset: Dataset) -> None:
    with pytest.raises(ConfigError, match="not both"):
        _variant("dcnv2", mixed_dim_alpha=0.3, embedding_dims=(4,) * 8)
    with pytest.raises(ConfigError, match="exceed embedding_dim"):
        _variant("dlrm", embedding_dims=(32,) * 8)  # small DLRM shares 16
    with pytest.raises(ConfigError, match=">= 0"):
        _variant("deepfm", mixed_dim_alpha=-1.0)
    with pytest.raises(ConfigError, match="3 widths for 8 sparse fields") as err:
        build_model(
            "wide_deep", tiny_dataset.schema, _variant("wide_deep", embedding_dims=(4,) * 3)
        )
    assert "user_id" in err.value.hint


@pytest.mark.parametrize("model_name", list(MODELS))
def test_exports_with_dropped_fields_and_mixed_dims(tiny_dataset: Dataset, model_name: str) -> None:
    config = _variant(model_name, dropped_fields=DROPPED, mixed_dim_alpha=0.5)
    model = build_model(model_name, tiny_dataset.schema, config).eval()
    batch = Dim("batch", min=1, max=4096)
    program = export(
        model,
        tiny_dataset.train.features(slice(0, 8)).as_tuple(),
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
    )
    other_size = tiny_dataset.test.features(slice(0, 33)).as_tuple()
    torch.testing.assert_close(program.module()(*other_size), model(*other_size))
