"""Which features are the request's (one value per rank request) and which the candidates'."""

from __future__ import annotations

import numpy as np

from recaccel.data.dataset import Dataset
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side


def test_movielens_marks_the_users_fields_request_side(tiny_dataset: Dataset) -> None:
    schema = tiny_dataset.schema
    request = {f.name for f in schema.on_side(Side.REQUEST)}
    assert request == {
        "age",
        "user_tenure",
        "user_id",
        "age_bucket",
        "gender",
        "occupation",
        "zip_prefix",
    }
    # The movie's age when rated depends on the item: a candidate feature, as the item's own.
    assert {f.name for f in schema.on_side(Side.CANDIDATE)} == {
        "release_year",
        "movie_age",
        "item_id",
        "release_decade",
        "genres",
    }


def test_request_side_columns_are_equal_in_every_row_of_one_users_request(
    tiny_dataset: Dataset,
) -> None:
    """What the side promises, checked on the encoding itself: one user scored at one time
    against many items has one value per request-side column."""
    encoding = tiny_dataset.encoding
    assert encoding is not None
    items = np.arange(len(encoding.items.ids))
    rows = encoding.at(encoding.last_timestamp).rows(3, items)
    schema = tiny_dataset.schema
    dense, categorical = rows[0], rows[1]
    columns = [(dense, i, f) for i, f in enumerate(schema.dense)]
    columns += [(categorical, i, f) for i, f in enumerate(schema.categorical)]
    for values, column, feature in columns:
        distinct = len(np.unique(values[:, column]))
        if feature.side is Side.REQUEST:
            assert distinct == 1, feature.name
        elif feature.name in ("item_id", "movie_age"):
            assert distinct > 1, feature.name


def test_side_survives_the_manifest_round_trip() -> None:
    schema = FeatureSchema(
        (
            Feature("user", FeatureKind.CATEGORICAL, 10, side=Side.REQUEST),
            Feature("item", FeatureKind.CATEGORICAL, 10),
        )
    )
    again = FeatureSchema.from_dict(schema.to_dict())
    assert [f.side for f in again.features] == [Side.REQUEST, Side.CANDIDATE]


def test_a_schema_saved_before_sides_reads_every_feature_as_a_candidates() -> None:
    data = FeatureSchema((Feature("user", FeatureKind.CATEGORICAL, 10, side=Side.REQUEST),))
    saved = data.to_dict()
    del saved["features"][0]["side"]
    assert FeatureSchema.from_dict(saved).features[0].side is Side.CANDIDATE


def test_schemas_that_differ_only_in_sides_are_one_contract() -> None:
    """An artifact saved before sides existed still matches its dataset's schema."""
    marked = FeatureSchema((Feature("user", FeatureKind.CATEGORICAL, 10, side=Side.REQUEST),))
    unmarked = FeatureSchema((Feature("user", FeatureKind.CATEGORICAL, 10),))
    assert marked == unmarked
