"""A feature source from two tables of your own: users and items, encoded once at start.

`/v1/rank` scores one user against candidate items. Any model's rows can be assembled from
two tables when every feature is either the user's (request side) or the item's (candidate
side), which the schema says (data/schema.py, `side`):

    users   user_id (int64) + one column per request-side feature
    items   item_id (int64) + one column per candidate-side feature

Columns hold encoded values, read and checked by data/tables.py into arrays once, so a request
costs a gather and an add per kind, as the MovieLens store's (features.py), and no per-row
Python.

A candidate-side feature that depends on the user too (a user x item pair: the movie's age when
this user rates it) cannot come from the items table; this source refuses a schema whose
features its tables do not hold, naming them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa

from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema, Side
from recaccel.data.tables import encoded_side, read_table, table_keys
from recaccel.errors import ConfigError
from recaccel.serve.errors import NotFoundError, RequestError
from recaccel.serve.features import (
    DEFAULT_MAX_CANDIDATES,
    InMemorySource,
    candidate_ids,
    catalogue_rows,
    is_user_id_in,
    row_lookup,
    user_id_of,
)


class TableSource(InMemorySource):
    """Rows for (user, candidates) from a users table and an items table (module docstring).

    Args:
        schema: the served model's features, each with its side.
        users: user_id + the request-side features.
        items: item_id + the candidate-side features.
        max_candidates: the longest candidate list a request may send (413 beyond).
    """

    raw_schema: Mapping[str, Any] = MappingProxyType({})  # takes no raw values

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
        user_ids = table_keys(users, Side.REQUEST, "users")
        self._user_rows = {int(u): row for row, u in enumerate(user_ids.tolist())}
        self._users = encoded_side(schema, Side.REQUEST, users, "users")
        item_ids = table_keys(items, Side.CANDIDATE, "items")
        shares = encoded_side(schema, Side.CANDIDATE, items, "items")  # errors name file rows
        order = np.argsort(item_ids, kind="stable")
        self._catalogue = item_ids[order]
        self._catalogue.setflags(write=False)
        self._items = Rows(shares.dense[order], shares.categorical[order], shares.multi_hot[order])
        self._row_of_id = row_lookup(self._catalogue)
        self._request_bags = any(f.side is Side.REQUEST for f in schema.multi_hot)

    @classmethod
    def from_files(
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

    @property
    def user_ids(self) -> np.ndarray:
        """Every user id of the users table."""
        return np.fromiter(self._user_rows, dtype=np.int64, count=len(self._user_rows))

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
