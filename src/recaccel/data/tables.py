"""Feature tables of your own: Parquet (or anything Arrow reads) with one column per feature,
each holding the value the model takes, already encoded (docs/importing.md):

    dense         a float per row
    categorical   an index per row, 0 to cardinality - 1
    multi_hot     a list of indices per row, at most max_len (0 is padding, and none is needed)

Read and checked once, into the schema's three arrays (`Rows`) with zeros in the columns a
table does not hold, so that a model row is a sum of gathers from several tables: a user's
share, an item's, an interaction's own. Serving's table source (serve/table_source.py) and a
dataset of your own (data/own.py) both build their rows so.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from recaccel.data.rows import Rows
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side
from recaccel.errors import ConfigError

KEYS = {Side.REQUEST: "user_id", Side.CANDIDATE: "item_id"}


def read_table(path: Path) -> pa.Table:
    """A Parquet or CSV file (by suffix) as an Arrow table; ConfigError for a missing or
    unreadable file. In CSV a multi-hot value is its ids separated by spaces ("3 17 42")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no feature table at {path}", "pass a Parquet or CSV file")
    csv = path.suffix == ".csv"
    try:
        return pa_csv.read_csv(path) if csv else pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        problem = f"{path} is not a readable {'CSV' if csv else 'Parquet'} file: {exc}"
        raise ConfigError(problem, "write it again") from None


def _column(table: pa.Table, name: str, where: str) -> pa.ChunkedArray:
    try:
        return table.column(name)
    except KeyError:
        raise ConfigError(
            f"the {where} table has no column {name!r}",
            f"its columns: {', '.join(table.column_names)}",
        ) from None


def encoded_side(schema: FeatureSchema, side: Side, table: pa.Table, where: str) -> Rows:
    """The side's features of every row of `table` (see `encoded`)."""
    return encoded(schema, schema.on_side(side), table, where)


def encoded(
    schema: FeatureSchema, features: Iterable[Feature], table: pa.Table, where: str
) -> Rows:
    """`features` of every row of `table`, at their columns in the schema's three tensors
    (every other column zero), checked against the schema; ConfigError naming the column."""
    wanted = {f.name for f in features}
    n = table.num_rows
    dense = np.zeros((n, len(schema.dense)), dtype=np.float32)
    categorical = np.zeros((n, len(schema.categorical)), dtype=np.int64)
    multi_hot = np.zeros((n, len(schema.multi_hot), schema.multi_hot_len), dtype=np.int64)
    for kind, target in (
        (FeatureKind.DENSE, dense),
        (FeatureKind.CATEGORICAL, categorical),
        (FeatureKind.MULTI_HOT, multi_hot),
    ):
        for column, feature in enumerate(schema.of_kind(kind)):
            if feature.name not in wanted:
                continue
            values = _column(table, feature.name, where)
            if kind is FeatureKind.DENSE:
                target[:, column] = _dense(values, feature.name, where)
            elif kind is FeatureKind.CATEGORICAL:
                target[:, column] = _ids(values, feature.name, feature.cardinality, where)
            else:
                target[:, column, :] = _bags(
                    values, feature.name, feature.cardinality, feature.max_len,
                    schema.multi_hot_len, where,
                )  # fmt: skip
    return Rows(dense, categorical, multi_hot)


def _dense(values: pa.ChunkedArray, name: str, where: str) -> np.ndarray:
    try:
        array: np.ndarray = values.to_numpy(zero_copy_only=False).astype(np.float32)
    except (pa.ArrowInvalid, TypeError, ValueError):
        array = np.array([np.nan])
    if values.null_count or not np.isfinite(array).all():
        raise ConfigError(
            f"{where} column {name!r} (a dense feature) holds nulls, non-numbers or infinities",
            "fill them as training did (e.g. with the training mean)",
        )
    return array


def _ids(values: pa.ChunkedArray, name: str, cardinality: int, where: str) -> np.ndarray:
    if not pa.types.is_integer(values.type) or values.null_count:
        raise ConfigError(
            f"{where} column {name!r} (a categorical feature) is {values.type}"
            + (" with nulls" if values.null_count else ""),
            "store each row's encoded index, an integer from 0 (unknown) to cardinality - 1",
        )
    array: np.ndarray = values.to_numpy().astype(np.int64)
    bad = (array < 0) | (array >= cardinality)
    if bad.any():
        raise ConfigError(
            f"{where} column {name!r} has {int(bad.sum())} index(es) outside 0..{cardinality - 1}"
            f", e.g. {int(array[bad][0])}",
            "store the indices the model's table was trained on (0 = unknown)",
        )
    return array


def _bags(
    values: pa.ChunkedArray, name: str, cardinality: int, max_len: int, width: int, where: str
) -> np.ndarray:
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):  # CSV: "3 17 42"
        bags = [_split(text, name, row, where) for row, text in enumerate(values.to_pylist())]
    elif pa.types.is_integer(kind):  # CSV whose bags all hold one id
        bags = [[] if i is None else [i] for i in values.to_pylist()]
    elif (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_integer(
        kind.value_type
    ):
        bags = [bag or [] for bag in values.to_pylist()]
    else:
        raise ConfigError(
            f"{where} column {name!r} (a multi-hot feature) is {kind}",
            "store a list of integer indices per row (in CSV: the ids separated by spaces)",
        )
    out = np.zeros((len(values), width), dtype=np.int64)
    for row, bag in enumerate(bags):  # once, at start
        if len(bag) > max_len or any(i is None or not 0 <= i < cardinality for i in bag):
            raise ConfigError(
                f"{where} column {name!r} row {row} is {bag}",
                f"at most {max_len} indices, each in 0..{cardinality - 1} (0 is padding)",
            )
        out[row, : len(bag)] = bag
    return out


def _split(text: str | None, name: str, row: int, where: str) -> list[int]:
    """A CSV bag, "3 17 42", as its ids."""
    try:
        return [int(i) for i in (text or "").split()]
    except ValueError:
        raise ConfigError(
            f"{where} column {name!r} row {row} is {text!r}",
            "write a bag as its integer ids separated by spaces",
        ) from None


def table_keys(table: pa.Table, side: Side, where: str, *, unique: bool = True) -> np.ndarray:
    """The table's `user_id` (request side) or `item_id` (candidate side) column as int64;
    ConfigError for a missing or non-integer column, or (`unique`) a repeated id."""
    keys = _column(table, KEYS[side], where)
    if not pa.types.is_integer(keys.type) or keys.null_count:
        raise ConfigError(f"{where} column {KEYS[side]!r} must be integer ids without nulls")
    ids: np.ndarray = keys.to_numpy().astype(np.int64)
    if unique and len(np.unique(ids)) != len(ids):
        raise ConfigError(f"the {where} table repeats {KEYS[side]}s", "one row per id")
    return ids
