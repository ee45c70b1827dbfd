"""The per-user time split: right proportions, and nothing from a user's future in training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recaccel.data.dataset import Dataset
from recaccel.data.movielens import (
    TEST,
    TRAIN,
    VALIDATION,
    build_movielens_dataset,
    per_user_time_split,
)
from recaccel.data.movielens_source import MovieLensTables


def test_each_users_train_rows_precede_validation_and_test(tiny_tables: MovieLensTables) -> None:
    ratings = tiny_tables.ratings
    split = per_user_time_split(ratings)
    frame = ratings.assign(split=split)
    for _, rows in frame.groupby("user_id"):
        train = rows[rows.split == TRAIN].timestamp
        val = rows[rows.split == VALIDATION].timestamp
        test = rows[rows.split == TEST].timestamp
        assert train.max() <= val.min() <= val.max() <= test.min()


def test_split_is_80_10_10_within_every_user(tiny_tables: MovieLensTables) -> None:
    split = per_user_time_split(tiny_tables.ratings)
    counts = pd.crosstab(tiny_tables.ratings["user_id"], split)
    # 30 ratings a user: 24 / 3 / 3.
    assert (
        (counts[TRAIN] == 24).all()
        and (counts[VALIDATION] == 3).all()
        and (counts[TEST] == 3).all()
    )


def test_split_does_not_depend_on_row_order(tiny_tables: MovieLensTables) -> None:
    ratings = tiny_tables.ratings
    shuffled = ratings.sample(frac=1.0, random_state=1)
    expected = pd.Series(per_user_time_split(ratings), index=ratings.index)
    got = pd.Series(per_user_time_split(shuffled), index=shuffled.index)
    assert (expected.loc[shuffled.index] == got).all()


def test_ties_are_broken_by_item_id() -> None:
    ratings = pd.DataFrame(
        {
            "user_id": [1] * 10,
            "item_id": list(range(10, 0, -1)),
            "rating": [4] * 10,
            "timestamp": [5] * 10,
        }
    )
    split = per_user_time_split(ratings)
    # Items 1..8 train, 9 validation, 10 test: the item id orders equal timestamps.
    by_item = dict(zip(ratings["item_id"], split, strict=True))
    assert by_item[10] == TEST and by_item[9] == VALIDATION
    assert all(by_item[i] == TRAIN for i in range(1, 9))


def test_users_with_few_ratings_stay_in_train() -> None:
    ratings = pd.DataFrame(
        {"user_id": [1, 1], "item_id": [1, 2], "rating": [4, 2], "timestamp": [1, 2]}
    )
    assert (per_user_time_split(ratings) == TRAIN).all()


def test_dense_features_are_standardised_on_train_only(tiny_tables: MovieLensTables) -> None:
    """Changing only test rows' raw values must not move the training rows' encoded features."""
    base = build_movielens_dataset(tiny_tables)
    split = per_user_time_split(tiny_tables.ratings)
    shifted_ratings = tiny_tables.ratings.copy()
    # Push every test rating far into the future: train statistics must not notice.
    shifted_ratings.loc[split == TEST, "timestamp"] += 10 * 365 * 86_400
    shifted = build_movielens_dataset(
        MovieLensTables(shifted_ratings, tiny_tables.users, tiny_tables.items, "fixture")
    )
    np.testing.assert_array_equal(base.train.dense, shifted.train.dense)
    assert not np.array_equal(base.test.dense, shifted.test.dense)


def test_encoded_dataset_matches_its_schema(tiny_dataset: Dataset) -> None:
    schema = tiny_dataset.schema
    total = sum(len(tiny_dataset.split(s)) for s in ("train", "validation", "test"))
    assert total == 40 * 30
    for name in ("train", "validation", "test"):
        split = tiny_dataset.split(name)
        assert split.dense.shape[1] == len(schema.dense) and split.dense.dtype == np.float32
        assert split.categorical.shape[1] == len(schema.categorical)
        assert split.multi_hot.shape[1:] == (len(schema.multi_hot), schema.multi_hot_len)
        for i, feature in enumerate(schema.categorical):
            assert (
                split.categorical[:, i].min() >= 0
                and split.categorical[:, i].max() < feature.cardinality
            )
        assert split.multi_hot.max() < schema["genres"].cardinality
        assert set(np.unique(split.label)) <= {0.0, 1.0}
    assert np.isfinite(tiny_dataset.train.dense).all()
