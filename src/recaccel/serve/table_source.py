"""A feature source from two tables of your own: users and items, encoded once at start.

`/v1/rank` scores one user against candidate items. Any model's rows can be assembled from
two tables when every feature is either the user's (request side) or the item's (candidate
side), which the schema says (data/schema.py, `side`):

    users   user_id (int64) + one column per request-side feature
    items   item_id (int64) + one column per candidate-side feature

Each column holds the value the model takes, already encoded: a dense feature's float, a
categorical feature's index (0 to cardinality - 1), a multi-hot feature's list of indices (at
most `max_len`, no padding needed). Parquet or anything Arrow reads (pyarrow): the tables are
checked and encoded once into arrays, so a request costs two gathers and an add per kind, as
the MovieLens store does (features.py), and no per-row Python.

A candidate-side feature that depends on the user too (a user x item pair: the movie's age when
this user rates it) cannot come from the items table; this source refuses a schema whose
features its tables do not hold, naming them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureKind, FeatureSchema, Side
from recaccel.errors import ConfigError
from recaccel.serve.errors import NotFoundError, RequestError
from recaccel.serve.features import (
    DEFAULT_MAX_CANDIDATES,
    candidate_ids,
    catalogue_rows,
    is_user_id_in,
    row_lookup,
    user_id_of,
)

KEYS = {Side.REQUEST: "user_id", Side.CANDIDATE: "item_id"}
_KIND_INDEX = {FeatureKind.DENSE: 0, FeatureKind.CATEGORICAL: 1, FeatureKind.MULTI_HOT: 2}


def read_table(path: Path) -> pa.Table:
    """A Parquet file as an Arrow table; ConfigError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no feature table at {path}", "pass a Parquet file")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(
            f"{path} is not a readable Parquet file: {exc}", "write it again"
        ) from None


def _column(table: pa.Table, name: str, where: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ConfigError(
            f"the {where} table has no column {name!r}",
            f"its columns: {', '.join(table.column_names)}",
        )
    return table.column(name)


def _encoded(schema: FeatureSchema, side: Side, table: pa.Table, where: str) -> Rows:
    """The side's features of every row of `table`, at their columns in the schema's three
    tensors (the other side's columns zero), checked against the schema."""
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
            if feature.side is not side:
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
    if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)) or not (
        pa.types.is_integer(values.type.value_type)
    ):
        raise ConfigError(
            f"{where} column {name!r} (a multi-hot feature) is {values.type}",
            "store a list of integer indices per row",
        )
    out = np.zeros((len(values), width), dtype=np.int64)
    for row, bag in enumerate(values.to_pylist()):  # once, at start
        bag = bag or []
        if len(bag) > max_len or any(i is None or not 0 <= i < cardinality for i in bag):
            raise ConfigError(
                f"{where} column {name!r} row {row} is {bag}",
                f"at most {max_len} indices, each in 0..{cardinality - 1} (0 is padding)",
            )
        out[row, : len(bag)] = bag
    return out


def _keys(table: pa.Table, side: Side, where: str) -> np.ndarray:
    keys = _column(table, KEYS[side], where)
    if not pa.types.is_integer(keys.type) or keys.null_count:
        raise ConfigError(f"{where} column {KEYS[side]!r} must be integer ids without nulls")
    ids: np.ndarray = keys.to_numpy().astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ConfigError(f"the {where} table repeats {KEYS[side]}s", "one row per id")
    return ids


class TableSource:
    """Rows for (user, candidates) from a users table and an items table (module docstring).

    Args:
        schema: the served model's features, each with its side.
        users: user_id + the request-side features.
        items: item_id + the candidate-side features.
        max_candidates: the longest candidate list a request may send (413 beyond).
    """

    def __init__(
        self,
        schema: FeatureSchema,
        users: pa.Table,
        items: pa.Table,
        *,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
    ) -> None:
        if max_candidates < 1:
            raise ConfigError(f"max_candidates={max_candidates} < 1", "allow at least 1")
        self.schema: FeatureSchema | None = schema
        self.max_candidates = max_candidates
        user_ids = _keys(users, Side.REQUEST, "users")
        self._user_rows = {int(u): row for row, u in enumerate(user_ids.tolist())}
        self._users = _encoded(schema, Side.REQUEST, users, "users")
        item_ids = _keys(items, Side.CANDIDATE, "items")
        encoded = _encoded(schema, Side.CANDIDATE, items, "items")  # errors name file rows
        order = np.argsort(item_ids, kind="stable")
        self._catalogue = item_ids[order]
        self._catalogue.setflags(write=False)
        self._items = Rows(
            encoded.dense[order], encoded.categorical[order], encoded.multi_hot[order]
        )
        self._row_of_id = row_lookup(self._catalogue)
        self._request_bags = any(f.side is Side.REQUEST for f in schema.multi_hot)

    @classmethod
    def from_parquet(
        cls,
        schema: FeatureSchema,
        users: Path,
        items: Path,
        *,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
    ) -> TableSource:
        return cls(schema, read_table(users), read_table(items), max_candidates=max_candidates)

    @property
    def catalogue(self) -> np.ndarray:
        """Every item id that can be ranked, sorted (int64, read-only)."""
        return self._catalogue

    def knows_user(self, user_id: object) -> bool:
        return is_user_id_in(user_id, self._user_rows)

    def rows(
        self,
        user_id: int,
        item_ids: Sequence[int] | np.ndarray | None = None,
        raw: Mapping[str, object] | None = None,
    ) -> tuple[Rows, np.ndarray]:
        """The model input for `user_id` against each candidate (None: the whole catalogue),
        and the candidates' ids in their order. Raw feature values are refused: the tables
        hold every feature already encoded."""
        if raw:
            raise RequestError(
                "this server's features come from its tables: it takes no raw feature values",
                'leave out "features"',
            )
        row = self._user_rows.get(user_id_of(user_id))
        if row is None:
            raise NotFoundError(f"unknown user {user_id}", "send a user_id of the users table")
        item_rows: np.ndarray | slice
        if item_ids is None:
            ids, item_rows = self._catalogue.copy(), slice(None)
        else:
            ids = candidate_ids(item_ids, self.max_candidates)
            hint = f"the items table has {len(self._catalogue)} items"
            item_rows = catalogue_rows(ids, self._catalogue, self._row_of_id, hint)
        users, items = self._users, self._items
        # Each item's share of its row, then the user's added in place (the other side's
        # columns are zero in each): a gather and an add per kind.
        if isinstance(item_rows, slice):
            dense, categorical, multi_hot = (a.copy() for a in items.as_tuple())
        else:
            dense, categorical, multi_hot = (a.take(item_rows, axis=0) for a in items.as_tuple())
        dense += users.dense[row]
        categorical += users.categorical[row]
        if self._request_bags:
            multi_hot += users.multi_hot[row]
        return Rows(dense, categorical, multi_hot), ids
