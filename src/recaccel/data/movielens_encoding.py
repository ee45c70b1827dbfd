"""How MovieLens-100K's (user, item, time) becomes a model row, one path for training and serving.

Encoding goes through `MovieLensEncoding.encode_rows`: each user and each item is encoded once
into a table (`UserTable`, `ItemTable`), and a row is a gather from those tables plus the dense
features computed from its time. The dataset keeps that encoding (`Dataset.encoding`) so that
serving encodes a (user, item, time) row the dataset never held exactly as training encoded its
own: a served score equals the model's score on the same row only if nothing is re-implemented.
Building the dataset from the raw tables (the label, the time split) is movielens.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recaccel.data.movielens_rank import MovieLensRankRows

AGE_BINS = (0, 18, 25, 35, 45, 50, 56, 200)  # MovieLens-1M's published age groups
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
SECONDS_PER_DAY = 86_400
SECONDS_PER_YEAR = 365.25 * SECONDS_PER_DAY
EPOCH_YEAR = 1970
DENSE = ("age", "release_year", "movie_age", "user_tenure")  # schema order
# Categorical columns in schema order, and which entity owns each.
CATEGORICAL = (
    "user_id", "item_id", "age_bucket", "gender", "occupation", "zip_prefix", "release_decade",
)  # fmt: skip
USER_CATEGORICAL = ("user_id", "age_bucket", "gender", "occupation", "zip_prefix")
ITEM_CATEGORICAL = ("item_id", "release_decade")
# The user's fields, and the user's tenure at the time scored: one value per rank request.
REQUEST_FEATURES = ("age", "user_tenure", *USER_CATEGORICAL)
_USER_COLUMNS = np.array([CATEGORICAL.index(name) for name in USER_CATEGORICAL])
_ITEM_COLUMNS = np.array([CATEGORICAL.index(name) for name in ITEM_CATEGORICAL])
# Which entity each dense feature depends on, besides the time (standardised per column).
_USER_DENSE = np.array([DENSE.index("age"), DENSE.index("user_tenure")])
_ITEM_DENSE = np.array([DENSE.index("release_year"), DENSE.index("movie_age")])


def vocabulary_lookup(vocabulary: tuple[str, ...]) -> dict[str, int]:
    """Index i+1 for vocabulary[i]; callers map anything else (missing, unseen) to 0."""
    return {v: i + 1 for i, v in enumerate(vocabulary)}


def age_bucket_codes(ages: np.ndarray) -> np.ndarray:
    """Each age's code in the `age_bucket` vocabulary (AGE_LABELS): i+1 for AGE_LABELS[i].

    Buckets are half-open ([18, 25) is "18-24"); an age outside [0, 200) or missing (NaN) is 0,
    unknown.
    """
    code = np.searchsorted(np.asarray(AGE_BINS, dtype=np.float64), ages, side="right")
    return np.where((code >= 1) & (code < len(AGE_BINS)), code, 0).astype(np.int64)


def zip_prefix(zip_code: str) -> str:
    """The first digit of a US zip code (a region); "other" for foreign (lettered) or empty ones."""
    head = zip_code[:1]
    return head if head.isdigit() else "other"


def raw_dense(
    age: np.ndarray, release_year: np.ndarray, rated_at: np.ndarray, first_rating: np.ndarray
) -> np.ndarray:
    """The dense features of N rows before standardisation: (N, 4) float64 in DENSE order.

    Each argument is (N,), or (1,) to hold for every row.

    The movie's age is the years from its release year to the rating (NaN when the release year
    is unknown). The user's tenure is log1p of the days since their first rating; it is 0 for a
    user with no earlier rating (`first_rating` NaN) and for a time before the first rating,
    neither of which the dataset holds but a serving request can.
    """
    n = max(len(age), len(release_year), len(rated_at), len(first_rating))
    out = np.empty((n, len(DENSE)))
    out[:, 0] = age
    out[:, 1] = release_year
    out[:, 2] = EPOCH_YEAR + rated_at / SECONDS_PER_YEAR - release_year
    # fmax ignores NaN: no first rating and a time before it are both 0 days.
    out[:, 3] = np.log1p(np.fmax(rated_at - first_rating, 0.0) / SECONDS_PER_DAY)
    return out


def standardise(dense: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std with the training statistics, as float32; missing (NaN) becomes 0,
    the mean. Works in place: `dense` (a temporary from `raw_dense`) is overwritten."""
    np.subtract(dense, mean, out=dense)
    np.divide(dense, std, out=dense)
    dense[np.isnan(dense)] = 0.0
    return dense.astype(np.float32)


@dataclass(frozen=True, eq=False)
class UserTable:
    """Users encoded once: row r of every array is the user `ids[r]`.

    ids: (U,) int64 raw user ids, sorted.
    categorical: (U, 5) int64 codes in USER_CATEGORICAL order (user_id is the raw id itself).
    age: (U,) float64 years; NaN = unknown.
    first_rating: (U,) float64 unix seconds of the user's first rating; NaN = none.
    """

    ids: np.ndarray
    categorical: np.ndarray
    age: np.ndarray
    first_rating: np.ndarray


@dataclass(frozen=True, eq=False)
class ItemTable:
    """Items encoded once: row r of every array is the item `ids[r]`.

    ids: (I,) int64 raw item ids, sorted: the catalogue.
    categorical: (I, 2) int64 codes in ITEM_CATEGORICAL order (item_id is the raw id itself).
    release_year: (I,) float64; NaN = unknown.
    genres: (I, 1, L) int64: the item's multi-hot block, genre codes padded with 0.
    """

    ids: np.ndarray
    categorical: np.ndarray
    release_year: np.ndarray
    genres: np.ndarray


@dataclass(frozen=True, eq=False)
class MovieLensEncoding:
    """What turns (user, item, time) into a model row; the dataset keeps it for serving.

    users, items: every user and item, encoded once.
    vocabularies: the string-valued user fields' (gender, occupation, zip_prefix), to encode
        raw values a serving request brings.
    dense_mean, dense_std: (4,) float64 training-split statistics that standardise DENSE.
    last_timestamp: the latest rating's unix time: where the data's time frame ends.
    """

    users: UserTable
    items: ItemTable
    vocabularies: Mapping[str, tuple[str, ...]]
    dense_mean: np.ndarray
    dense_std: np.ndarray
    last_timestamp: int

    @cached_property
    def _lookups(self) -> dict[str, dict[str, int]]:
        return {name: vocabulary_lookup(v) for name, v in self.vocabularies.items()}

    def encode_rows(
        self,
        users: UserTable,
        user_rows: np.ndarray,
        item_rows: np.ndarray,
        rated_at: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dense, categorical, multi_hot) of the rows (users[user_rows[i]], items[item_rows[i]],
        time rated_at[i]), in the schema's layout.

        `users` is `self.users` for the dataset's own users, or a table from `user()`.
        `user_rows` and `rated_at` may have length 1: one user at one time against every item,
        as a serving request is, without repeating the user's features per row first.
        """
        items = self.items
        dense = standardise(
            raw_dense(
                users.age.take(user_rows),
                items.release_year.take(item_rows),
                rated_at,
                users.first_rating.take(user_rows),
            ),
            self.dense_mean,
            self.dense_std,
        )
        categorical = np.empty((len(item_rows), len(CATEGORICAL)), dtype=np.int64)
        categorical[:, _USER_COLUMNS] = users.categorical.take(user_rows, axis=0)
        categorical[:, _ITEM_COLUMNS] = items.categorical.take(item_rows, axis=0)
        return dense, categorical, items.genres.take(item_rows, axis=0)

    def rank_rows(self) -> MovieLensRankRows:
        """What `/v1/rank`'s store builds a request's rows with (movielens_rank.py)."""
        from recaccel.data.movielens_rank import MovieLensRankRows  # it imports this module

        return MovieLensRankRows(self)

    def at(self, rated_at: float) -> EncodedAt:
        """Every user's and every item's share of a row scored at `rated_at`, encoded once:
        a row is then a gather and an add (see `EncodedAt`), equal to `encode_rows`."""
        users, items = np.arange(len(self.users.ids)), np.arange(len(self.items.ids))
        time = np.array([float(rated_at)])
        user_dense, user_categorical, _ = self.encode_rows(
            self.users, users, np.zeros_like(users), time
        )
        item_dense, item_categorical, item_multi_hot = self.encode_rows(
            self.users, np.zeros(1, dtype=np.int64), items, time
        )
        user_dense[:, _ITEM_DENSE] = 0.0
        user_categorical[:, _ITEM_COLUMNS] = 0
        item_dense[:, _USER_DENSE] = 0.0
        item_categorical[:, _USER_COLUMNS] = 0
        return EncodedAt(user_dense, user_categorical, item_dense, item_categorical, item_multi_hot)

    def user(
        self,
        row: int | None,
        *,
        age: float | None = None,
        gender: str | None = None,
        occupation: str | None = None,
        zip_code: str | None = None,
    ) -> UserTable:
        """One user as a one-row table for `encode_rows`, with raw values in place of stored ones.

        `row` is the user's row in `self.users`; None is a user the dataset never saw: user id
        0 (unknown), every feature unknown, no rating history. Each raw value given is encoded
        as training encodes it: a string outside the vocabulary is 0, unknown.
        """
        if row is None:
            ids = np.zeros(1, dtype=np.int64)
            categorical = np.zeros((1, len(USER_CATEGORICAL)), dtype=np.int64)
            ages = np.full(1, np.nan)
            first = np.full(1, np.nan)
        else:
            one = slice(row, row + 1)
            ids = self.users.ids[one].copy()
            categorical = self.users.categorical[one].copy()
            ages = self.users.age[one].copy()
            first = self.users.first_rating[one].copy()
        column = USER_CATEGORICAL.index
        if age is not None:
            ages[0] = age
            categorical[0, column("age_bucket")] = age_bucket_codes(ages)[0]
        for name, value in (("gender", gender), ("occupation", occupation)):
            if value is not None:
                categorical[0, column(name)] = self._lookups[name].get(value, 0)
        if zip_code is not None:
            code = self._lookups["zip_prefix"].get(zip_prefix(zip_code), 0)
            categorical[0, column("zip_prefix")] = code
        return UserTable(ids, categorical, ages, first)


@dataclass(frozen=True, eq=False)
class EncodedAt:
    """Users and items encoded once for one scoring time: each a share of every model row.

    Standardisation is per column, and each dense column depends on the user or on the item
    (and the time), never both; each categorical column belongs to one of them too. So a row
    (user u, item i) at this time is i's share plus u's, each full width with zeros in the
    other's columns: one gather and one add (`rows`), about 3x faster than filling columns
    by index. Row r of each array is the r-th user or item of the encoding:

    user_dense: (U, 4) float32; user_categorical: (U, 7) int64  (item columns 0)
    item_dense: (I, 4) float32; item_categorical: (I, 7) int64  (user columns 0)
    item_multi_hot: (I, 1, L) int64 genres.
    """

    user_dense: np.ndarray
    user_categorical: np.ndarray
    item_dense: np.ndarray
    item_categorical: np.ndarray
    item_multi_hot: np.ndarray

    def rows(
        self, user_row: int, item_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dense, categorical, multi_hot) of one user against `item_rows`, schema layout."""
        dense = self.item_dense.take(item_rows, axis=0)
        dense += self.user_dense[user_row]
        categorical = self.item_categorical.take(item_rows, axis=0)
        categorical += self.user_categorical[user_row]
        return dense, categorical, self.item_multi_hot.take(item_rows, axis=0)
