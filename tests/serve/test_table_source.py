"""Rank rows from a users table and an items table of your own (serve/table_source.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recaccel.data.dataset import Dataset
from recaccel.data.movielens import feature_tables
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side
from recaccel.errors import ConfigError
from recaccel.serve.errors import NotFoundError, PayloadTooLargeError, RequestError
from recaccel.serve.features import FeatureStore
from recaccel.serve.table_source import TableSource

SCHEMA = FeatureSchema(
    (
        Feature("price", FeatureKind.DENSE),
        Feature("user_id", FeatureKind.CATEGORICAL, 11, side=Side.REQUEST),
        Feature("age", FeatureKind.DENSE, side=Side.REQUEST),
        Feature("item_id", FeatureKind.CATEGORICAL, 21),
        Feature("tags", FeatureKind.MULTI_HOT, 6, max_len=3),
    )
)


def users() -> pa.Table:
    return pa.table({"user_id": [3, 7, 1], "age": [0.5, -1.0, 2.0]})


def items() -> pa.Table:
    # Not sorted by id: the source sorts its catalogue.
    return pa.table(
        {
            "item_id": [20, 4, 9],
            "price": [1.5, 0.25, -0.75],
            "tags": [[1, 2], [], [5, 4, 3]],
        }
    )


def test_rows_put_the_users_and_each_items_features_at_their_schema_columns() -> None:
    source = TableSource(SCHEMA, users(), items())
    rows, ids = source.rows(7, [9, 20])
    np.testing.assert_array_equal(ids, [9, 20])
    # dense: price (item), age (user); categorical: user_id, item_id.
    np.testing.assert_array_equal(rows.dense, [[-0.75, -1.0], [1.5, -1.0]])
    np.testing.assert_array_equal(rows.categorical, [[7, 9], [7, 20]])
    np.testing.assert_array_equal(rows.multi_hot[:, 0, :], [[5, 4, 3], [1, 2, 0]])
    assert rows.dense.dtype == np.float32 and rows.categorical.dtype == np.int64


def test_no_candidates_ranks_the_whole_catalogue_in_id_order() -> None:
    source = TableSource(SCHEMA, users(), items())
    rows, ids = source.rows(3)
    np.testing.assert_array_equal(ids, [4, 9, 20])
    np.testing.assert_array_equal(source.catalogue, [4, 9, 20])
    np.testing.assert_array_equal(rows.categorical[:, 1], [4, 9, 20])
    assert source.knows_user(1) and not source.knows_user(2) and not source.knows_user("1")


def test_a_request_the_tables_cannot_answer_is_refused_with_its_status() -> None:
    source = TableSource(SCHEMA, users(), items(), max_candidates=2)
    with pytest.raises(NotFoundError, match="unknown user 5"):
        source.rows(5, [4])
    with pytest.raises(NotFoundError, match=r"unknown item id.*: 8"):
        source.rows(3, [4, 8])
    with pytest.raises(PayloadTooLargeError):
        source.rows(3, [4, 9, 20])
    with pytest.raises(RequestError, match="no raw feature values"):
        source.rows(3, [4], {"age": 30})
    with pytest.raises(RequestError, match="repeat"):
        source.rows(3, [4, 4])


TABLE_MISTAKES = [
    # (which table, its columns replaced, what the error must say)
    ("users", {"age": None}, "has no column 'age'"),
    ("users", {"user_id": [3, 7, 12]}, "outside 0..10"),
    ("users", {"age": [0.5, None, 2.0]}, "nulls"),
    ("users", {"user_id": [3, 3, 1]}, "repeats user_id"),
    ("items", {"item_id": [1.0, 2.0, 3.0]}, "integer ids"),
    ("items", {"tags": [[1, 2, 3, 4], [], []]}, "row 0"),
    ("items", {"tags": [[1], [6], []]}, "row 1"),
    ("items", {"price": ["a", "b", "c"]}, "non-numbers"),
]


@pytest.mark.parametrize(("which", "columns", "says"), TABLE_MISTAKES)
def test_a_wrong_table_is_refused_at_start_naming_the_column(
    which: str, columns: dict[str, object], says: str
) -> None:
    tables = {"users": users(), "items": items()}
    table = tables[which]
    for name, values in columns.items():
        table = table.drop_columns([name])
        if values is not None:
            table = table.append_column(name, pa.array(values))
    tables[which] = table
    with pytest.raises(ConfigError, match=None) as caught:
        TableSource(SCHEMA, tables["users"], tables["items"])
    assert says in caught.value.message, caught.value.message


def test_tables_are_read_from_parquet_and_a_missing_file_is_named(tmp_path: Path) -> None:
    pq.write_table(users(), tmp_path / "users.parquet")
    pq.write_table(items(), tmp_path / "items.parquet")
    source = TableSource.from_files(SCHEMA, tmp_path / "users.parquet", tmp_path / "items.parquet")
    np.testing.assert_array_equal(source.rows(1, [4])[0].dense, [[0.25, 2.0]])
    with pytest.raises(ConfigError, match="no feature table at"):
        TableSource.from_files(SCHEMA, tmp_path / "nope.parquet", tmp_path / "items.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        TableSource.from_files(SCHEMA, tmp_path / "bad.parquet", tmp_path / "items.parquet")


def test_movielens_tables_serve_the_rows_its_own_store_serves(tiny_dataset: Dataset) -> None:
    """The same features through two sources: a users and an items table made from the
    dataset's encoding, and the dataset's own store, at the store's now."""
    encoding = tiny_dataset.encoding
    assert encoding is not None
    users_table, items_table = feature_tables(encoding, tiny_dataset.schema)
    tables = TableSource(tiny_dataset.schema, users_table, items_table)
    store = FeatureStore.from_dataset(tiny_dataset)
    np.testing.assert_array_equal(tables.catalogue, store.catalogue)
    for user in encoding.users.ids[:5].tolist():
        for candidates in (None, store.catalogue[::-3].tolist()):
            got, got_ids = tables.rows(user, candidates)
            want, want_ids = store.rows(user, candidates)
            np.testing.assert_array_equal(got_ids, want_ids)
            for ours, theirs in zip(got.as_tuple(), want.as_tuple(), strict=True):
                np.testing.assert_array_equal(ours, theirs)


def test_tables_may_be_csv_with_bags_as_space_separated_ids(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("user_id,age\n3,0.5\n7,-1.0\n1,2.0\n")
    (tmp_path / "items.csv").write_text("item_id,price,tags\n20,1.5,1 2\n4,0.25,\n9,-0.75,5 4 3\n")
    source = TableSource.from_files(SCHEMA, tmp_path / "users.csv", tmp_path / "items.csv")
    rows, _ = source.rows(7, [9, 20])
    np.testing.assert_array_equal(rows.multi_hot[:, 0, :], [[5, 4, 3], [1, 2, 0]])
    np.testing.assert_array_equal(rows.dense, [[-0.75, -1.0], [1.5, -1.0]])
    (tmp_path / "items.csv").write_text("item_id,price,tags\n20,1.5,1 x\n")
    with pytest.raises(ConfigError, match="row 0 is '1 x'"):
        TableSource.from_files(SCHEMA, tmp_path / "users.csv", tmp_path / "items.csv")
