"""What a dataset gives `/v1/rank`: its users and items, and how it encodes a request's rows.

Serving's feature store (serve/features.py) checks a request (its candidates, its user id)
and answers in HTTP terms; everything that depends on which dataset it is — the raw values a
request may bring, what time means, how a new user is encoded — lives behind this protocol,
in the dataset's own module (MovieLens: data/movielens_rank.py). So `serve/` names no dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from recaccel.data.rows import Rows
from recaccel.errors import RecaccelError


class RawFeatureError(RecaccelError):
    """A request's raw feature values are malformed: an unknown name, a wrong type, a value out
    of range. Serving answers 400 with the message."""


class UnknownUserError(RecaccelError):
    """A user id the dataset does not hold, and no raw values that describe a new user."""


class RankRows(Protocol):
    """A dataset's users and items, encoded, and the rows of one user against candidates."""

    user_ids: np.ndarray  # every user id, in row order
    item_ids: np.ndarray  # every item id, sorted: the catalogue, in row order
    raw_features: tuple[str, ...]  # the raw values a request may send
    # Each raw value's JSON Schema, by name: what the OpenAPI document says `features` takes.
    raw_schema: Mapping[str, Any]
    user_features: tuple[str, ...]  # those that describe a user (a new user needs one)

    def rows(
        self, user_row: int | None, item_rows: np.ndarray, raw: Mapping[str, object] | None
    ) -> Rows:
        """The rows of user `user_row` (None: not a user of the dataset) against items
        `item_rows`, raw values in place of stored ones.

        Raises RawFeatureError for bad raw values and UnknownUserError for a user row of None
        without a raw value that describes the user."""
        ...
