from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import recaccel.data.synthetic as synthetic
from recaccel.data.dataset import Dataset
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side
from recaccel.data.synthetic import (
    CRITEO_KAGGLE_CARDINALITIES,
    SYNTHETIC_NOTE,
    SyntheticConfig,
    criteo_synthetic_schema,
    estimate_embedding_bytes,
    make_criteo_synthetic,
)
from recaccel.errors import ConfigError
from recaccel.models.registry import build_model, preset_config
from recaccel.serve.server import dataset_feature_source

CAP = 500
TINY = SyntheticConfig(rows=2_000, max_rows_per_table=CAP)


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    return make_criteo_synthetic(TINY)


def _all(ds: Dataset, name: str) -> np.ndarray:
    return np.concatenate([getattr(ds.split(s), name) for s in ("train", "validation", "test")])


def test_cardinalities_are_the_published_26() -> None:
    assert len(CRITEO_KAGGLE_CARDINALITIES) == 26
    assert sum(CRITEO_KAGGLE_CARDINALITIES) == 33_762_577


def test_schema_layout_and_capped_cardinalities() -> None:
    schema = criteo_synthetic_schema(CAP)
    assert schema.name == "criteo-synthetic" and schema.label == "click"
    assert [f.name for f in schema.dense] == [f"I{i}" for i in range(1, 14)]
    assert [f.name for f in schema.categorical] == [f"C{i}" for i in range(1, 27)]
    assert schema.multi_hot == ()
    cards = [f.cardinality for f in schema.categorical]
    assert cards == [min(c, CAP) + 1 for c in CRITEO_KAGGLE_CARDINALITIES]
    assert cards[8] == 4  # C9 has 3 real ids + unknown: small tables are not padded to the cap
    assert all("synthetic" in f.description for f in schema.features)


def test_default_config_fits_the_heavy_model_budget() -> None:
    schema = criteo_synthetic_schema(SyntheticConfig().max_rows_per_table)
    weights = estimate_embedding_bytes(schema, embedding_dim=128)
    assert weights == 5_569_322 * 128 * 4
    assert 4 * weights < 24 * 2**30 * 0.5  # weights + gradient + 2 Adam moments: < half of 24 GiB


def test_shapes_dtypes_and_split_sizes(tiny: Dataset) -> None:
    sizes = {"train": 1_600, "validation": 200, "test": 200}
    for name, rows in sizes.items():
        split = tiny.split(name)
        assert len(split) == rows
        assert split.dense.shape == (rows, 13) and split.dense.dtype == np.float32
        assert split.categorical.shape == (rows, 26) and split.categorical.dtype == np.int64
        assert split.multi_hot.shape == (rows, 0, 1) and split.multi_hot.dtype == np.int64
        assert split.label.shape == (rows,) and split.label.dtype == np.float32
        assert set(np.unique(split.label)) <= {0.0, 1.0}
    batch, labels = next(tiny.train.batches(64))
    assert batch.categorical.shape == (64, 26) and labels.shape == (64,)


def test_dense_is_log1p_of_counts(tiny: Dataset) -> None:
    dense = _all(tiny, "dense")
    assert np.isfinite(dense).all() and (dense >= 0).all()
    counts = np.expm1(dense.astype(np.float64))
    np.testing.assert_allclose(counts, np.round(counts), rtol=1e-4, atol=1e-3)


def test_ids_are_real_ids_within_each_table(tiny: Dataset) -> None:
    categorical = _all(tiny, "categorical")
    for j, feature in enumerate(tiny.schema.categorical):
        column = categorical[:, j]
        assert column.min() >= 1, feature.name  # 0 is reserved for unknown
        assert column.max() < feature.cardinality, feature.name


def test_same_seed_same_arrays_other_seed_different(tiny: Dataset) -> None:
    again = make_criteo_synthetic(TINY)
    other = make_criteo_synthetic(SyntheticConfig(rows=2_000, max_rows_per_table=CAP, seed=1))
    for name in ("dense", "categorical", "label"):
        np.testing.assert_array_equal(_all(tiny, name), _all(again, name))
        assert not np.array_equal(_all(tiny, name), _all(other, name))


def test_arrays_do_not_depend_on_chunk_size(tiny: Dataset, monkeypatch: Any) -> None:
    monkeypatch.setattr(synthetic, "_CHUNK_ROWS", 333)
    chunked = make_criteo_synthetic(TINY)
    for name in ("dense", "categorical", "label"):
        np.testing.assert_array_equal(_all(tiny, name), _all(chunked, name))


def test_ids_are_zipf_skewed_but_spread_over_the_table(tiny: Dataset) -> None:
    categorical = _all(tiny, "categorical")
    big = [j for j, c in enumerate(CRITEO_KAGGLE_CARDINALITIES) if c >= 10 * CAP]
    assert len(big) >= 5
    top_share, low_share = [], []
    for j in big:
        counts = np.bincount(categorical[:, j], minlength=CAP + 1)
        # The top 1% of 500 ranks carry H(5, 1.05) / H(500, 1.05) = 0.374 of the mass (0.01 if
        # uniform). The 5 most frequent ids cover at least those ranks' rows, whose share has a
        # std of ~0.011 at 2,000 rows, so 0.25 is > 10 std below the expectation.
        top_share.append(np.sort(counts)[::-1][: CAP // 100].sum() / len(categorical))
        # Without the permutation ids 1..5 would be those top ranks; with it they are average.
        low_share.append(counts[1 : CAP // 100 + 1].sum() / len(categorical))
    assert min(top_share) > 0.25
    assert np.mean(low_share) < 0.1


def test_positive_rate_matches_config(tiny: Dataset) -> None:
    rate = float(_all(tiny, "label").mean())
    assert abs(rate - TINY.positive_rate) < 0.05  # binomial std at 2,000 rows is ~0.01
    skewed = make_criteo_synthetic(
        SyntheticConfig(rows=2_000, max_rows_per_table=CAP, positive_rate=0.05)
    )
    assert abs(float(_all(skewed, "label").mean()) - 0.05) < 0.03


def test_labels_depend_on_features(tiny: Dataset) -> None:
    # The teacher gives training something to fit: some dense field tracks the label.
    label = _all(tiny, "label")
    dense = _all(tiny, "dense").astype(np.float64)
    correlations = [abs(np.corrcoef(dense[:, i], label)[0, 1]) for i in range(13)]
    assert max(correlations) > 0.05


def test_marked_synthetic_with_reproducible_info(tiny: Dataset) -> None:
    assert tiny.synthetic is True
    assert tiny.name == "criteo-synthetic"
    assert tiny.info["note"] == SYNTHETIC_NOTE
    assert "accuracy" in tiny.info["note"]
    assert tiny.info["config"] == {
        "rows": 2_000,
        "max_rows_per_table": CAP,
        "zipf_exponent": 1.05,
        "positive_rate": 0.256,
        "validation_fraction": 0.1,
        "test_fraction": 0.1,
        "seed": 0,
        "rank_users": 10_000,
        "rank_items": 100_000,
    }
    assert SyntheticConfig(**tiny.info["config"]) == TINY


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rows": 9},
        {"max_rows_per_table": 1},
        {"zipf_exponent": 0.0},
        {"zipf_exponent": -1.0},
        {"positive_rate": 0.0},
        {"positive_rate": 1.0},
        {"validation_fraction": 0.0},
        {"test_fraction": 1.0},
        {"validation_fraction": 0.5, "test_fraction": 0.5},
        {"rows": 10, "validation_fraction": 0.01},
    ],
)
def test_bad_config_raises_with_hint(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        SyntheticConfig(**kwargs)
    assert info.value.hint


def test_estimate_embedding_bytes_arithmetic() -> None:
    schema = FeatureSchema(
        (
            Feature("d", FeatureKind.DENSE),
            Feature("a", FeatureKind.CATEGORICAL, cardinality=10),
            Feature("b", FeatureKind.MULTI_HOT, cardinality=5, max_len=3),
        )
    )
    assert estimate_embedding_bytes(schema, embedding_dim=8) == (10 + 5) * 8 * 4
    assert estimate_embedding_bytes(schema, embedding_dim=8, bytes_per_value=2) == 15 * 8 * 2


def test_rank_tables_split_the_fields_between_users_and_items(tiny: Dataset) -> None:
    assert tiny.feature_tables is not None
    users, items = tiny.feature_tables
    schema = tiny.schema
    assert users.num_rows == TINY.rank_users and items.num_rows == TINY.rank_items
    request = {f.name for f in schema.on_side(Side.REQUEST)}
    assert request == {f"I{i}" for i in range(1, 7)} | {f"C{i}" for i in range(1, 14)}
    assert set(users.column_names) == {"user_id", *request}
    assert set(items.column_names) == {"item_id", *(f.name for f in schema.on_side(Side.CANDIDATE))}


def test_rank_rows_draw_the_training_rows_hot_ids(tiny: Dataset) -> None:
    """A user's C1 and an item's C20 are drawn as the training rows' are: the same hottest id."""
    assert tiny.feature_tables is not None
    users, items = tiny.feature_tables
    for table, name in ((users, "C1"), (items, "C20")):
        column = [f.name for f in tiny.schema.categorical].index(name)
        trained = np.bincount(tiny.train.categorical[:, column]).argmax()
        served = np.bincount(table.column(name).to_numpy()).argmax()
        assert served == trained, name


def test_a_model_on_the_criteo_shape_ranks_a_users_candidates(tiny: Dataset) -> None:
    source = dataset_feature_source(tiny, max_candidates=1_000)
    rows, ids = source.rows(7, list(range(1, 301)))
    assert len(rows) == 300 and list(ids[:3]) == [1, 2, 3]
    model = build_model("dlrm", tiny.schema, preset_config("dlrm", "small")).eval()
    with torch.no_grad():
        logits = model(*(torch.from_numpy(a) for a in rows.as_tuple()))
    assert logits.shape == (300,) and torch.isfinite(logits).all()
    # Request-side columns are the user's in every row; candidate-side ones vary.
    request = [j for j, f in enumerate(tiny.schema.categorical) if f.side is Side.REQUEST]
    assert (rows.categorical[:, request] == rows.categorical[0, request]).all()
