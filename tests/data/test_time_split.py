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
from recaccel.data.movielens_encoding import (
    AGE_LABELS,
    CATEGORICAL,
    DENSE,
    USER_CATEGORICAL,
    age_bucket_codes,
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


def test_the_kept_encoding_matches_the_schema_and_the_tables(
    tiny_dataset: Dataset, tiny_tables: MovieLensTables
) -> None:
    """Serving re-encodes rows through `Dataset.encoding`: its layout must be the schema's."""
    schema, encoding = tiny_dataset.schema, tiny_dataset.encoding
    assert encoding is not None
    assert tuple(f.name for f in schema.categorical) == CATEGORICAL
    assert tuple(f.name for f in schema.dense) == DENSE
    np.testing.assert_array_equal(encoding.users.ids, np.sort(tiny_tables.users["user_id"]))
    np.testing.assert_array_equal(encoding.items.ids, np.sort(tiny_tables.items["item_id"]))
    assert encoding.last_timestamp == tiny_tables.ratings["timestamp"].max()
    assert encoding.dense_mean.tolist() == tiny_dataset.info["dense_mean"]
    assert encoding.users.categorical.shape == (len(encoding.users.ids), len(USER_CATEGORICAL))
    assert encoding.items.genres.shape[1:] == (1, schema.multi_hot_len)


def test_age_buckets_are_half_open_and_unknown_outside() -> None:
    ages = np.array([-1, 0, 17.9, 18, 24, 25, 55.5, 56, 199, 200, np.nan])
    codes = age_bucket_codes(ages).tolist()
    assert codes == [0, 1, 1, 2, 2, 3, 6, 7, 7, 0, 0]
    assert AGE_LABELS[codes[3] - 1] == "18-24"
