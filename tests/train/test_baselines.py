"""The reference points: popularity and logistic regression on the same split."""

from __future__ import annotations

import numpy as np

from recaccel.data.dataset import Dataset
from recaccel.train.baselines import item_popularity, logistic_regression, one_hot


def test_popularity_scores_items_by_their_training_like_rate(tiny_dataset: Dataset) -> None:
    result = item_popularity(tiny_dataset)
    assert result.name == "popularity" and "pseudo-count" in result.setting
    assert result.test.rows == len(tiny_dataset.test)
    # The fixture gives items a quality that drives ratings: popularity must find it.
    assert result.validation.auc > 0.6


def test_logistic_regression_beats_chance_and_picks_c_on_validation(tiny_dataset: Dataset) -> None:
    result = logistic_regression(tiny_dataset)
    assert result.setting.startswith("C=")
    assert result.validation.auc > 0.6


def test_one_hot_has_a_column_per_id_and_dense_value(tiny_dataset: Dataset) -> None:
    schema = tiny_dataset.schema
    matrix = one_hot(tiny_dataset.train, tiny_dataset)
    width = len(schema.dense) + sum(f.cardinality for f in schema.sparse)
    assert matrix.shape == (len(tiny_dataset.train), width)
    # Each row: its dense values, one id per categorical field, one per genre in its bag.
    genres = (tiny_dataset.train.multi_hot > 0).sum(axis=(1, 2))
    ones = np.asarray((matrix[:, len(schema.dense) :] != 0).sum(axis=1)).ravel()
    np.testing.assert_array_equal(ones, len(schema.categorical) + genres)
