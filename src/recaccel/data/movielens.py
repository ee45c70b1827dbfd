"""MovieLens-100K as a CTR task: features, label, and the per-user time split.

Label: rating >= 4 (the user liked the movie). Every row is (user, item, time) with:

- categorical: user id, item id, age bucket, gender, occupation, zip prefix, release decade;
- multi-hot: the movie's genres (a pooled bag);
- dense (standardised with training-split statistics only): age, release year, the movie's age
  when rated, and how long the user had been rating (log days) — the last two from the timestamp.

The split is by time *within each user*: each user's ratings in time order, the earliest 80%
train, the next 10% validation, the last 10% test. A random split leaks a user's future into
training; a single global time cut leaves most test rows from users never seen in training.

Encoding goes through one path, `MovieLensEncoding.encode_rows`: each user and each item is
encoded once into a table, and a row is a gather from those tables plus the dense features
computed from its time. The dataset keeps that encoding (`Dataset.encoding`) so that serving
encodes a (user, item, time) row the dataset never held exactly as training encoded its own:
a served score equals the model's score on the same row only if nothing is re-implemented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recaccel.data.dataset import Dataset, Split
from recaccel.data.movielens_source import MovieLensTables
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side
from recaccel.errors import ChecksumError

if TYPE_CHECKING:
    from recaccel.data.movielens_rank import MovieLensRankRows

LIKED_RATING = 4
TRAIN, VALIDATION, TEST = 0, 1, 2
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


def per_user_time_split(
    ratings: pd.DataFrame, validation_fraction: float = 0.1, test_fraction: float = 0.1
) -> np.ndarray:
    """Assign each rating to TRAIN, VALIDATION or TEST by time within its user.

    Each user's ratings are ordered by (timestamp, item_id) — the item id breaks ties so the
    split is deterministic. The last round(test_fraction * n) go to test, the
    round(validation_fraction * n) before them to validation (at least one each when the user
    has 3 or more ratings), the rest to train.

    Returns:
        (N,) int8 array aligned with `ratings`' rows.
    """
    order = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="stable").index
    ordered_users = ratings.loc[order, "user_id"].to_numpy()
    position = ratings.loc[order].groupby("user_id").cumcount().to_numpy()
    count = pd.Series(ordered_users).map(pd.Series(ordered_users).value_counts()).to_numpy()
    enough = count >= 3
    n_test = np.where(enough, np.maximum(1, np.round(test_fraction * count)), 0)
    n_val = np.where(enough, np.maximum(1, np.round(validation_fraction * count)), 0)
    from_end = count - position  # 1 for the user's last rating
    split = np.full(len(ratings), TRAIN, dtype=np.int8)
    split[from_end <= n_test + n_val] = VALIDATION
    split[from_end <= n_test] = TEST
    out = np.empty(len(ratings), dtype=np.int8)
    out[ratings.index.get_indexer(order)] = split
    return out


def _vocabulary(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if v}))


def _lookup(vocabulary: tuple[str, ...]) -> dict[str, int]:
    """Index i+1 for vocabulary[i]; callers map anything else (missing, unseen) to 0."""
    return {v: i + 1 for i, v in enumerate(vocabulary)}


def _encode(values: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Index i+1 for vocabulary[i]; 0 for anything else (missing, unseen)."""
    lookup = _lookup(vocabulary)
    return values.map(lambda v: lookup.get(v, 0)).to_numpy(dtype=np.int64)


def _decade(year: object) -> str:
    return "" if pd.isna(year) else f"{int(year) // 10 * 10}s"  # type: ignore[call-overload]


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
        return {name: _lookup(v) for name, v in self.vocabularies.items()}

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


def _user_table(
    users: pd.DataFrame, ratings: pd.DataFrame, vocab: Mapping[str, tuple[str, ...]]
) -> UserTable:
    users = users.sort_values("user_id", kind="stable")
    ids = users["user_id"].to_numpy(np.int64)
    age = users["age"].to_numpy(np.float64)
    categorical = np.stack(
        [
            ids,
            age_bucket_codes(age),
            _encode(users["gender"], vocab["gender"]),
            _encode(users["occupation"], vocab["occupation"]),
            _encode(users["zip_code"].map(zip_prefix), vocab["zip_prefix"]),
        ],
        axis=1,
    )
    first = ratings.groupby("user_id")["timestamp"].min().reindex(ids).to_numpy(np.float64)
    return UserTable(ids, categorical, age, first)


def _item_table(
    items: pd.DataFrame, decades: tuple[str, ...], genres: tuple[str, ...], max_genres: int
) -> ItemTable:
    items = items.sort_values("item_id", kind="stable")
    ids = items["item_id"].to_numpy(np.int64)
    release_year = items["release_year"].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    categorical = np.stack([ids, _encode(items["release_year"].map(_decade), decades)], axis=1)
    genre_index = _lookup(genres)
    block = np.zeros((len(ids), 1, max_genres), dtype=np.int64)
    for row, names in enumerate(items["genres"]):
        block[row, 0, : len(names)] = [genre_index[g] for g in names]
    return ItemTable(ids, categorical, release_year, block)


def _rows_of(ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    """The row in the sorted `ids` of each wanted id; every one must be there."""
    rows = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    missing = ids[rows] != wanted
    if missing.any():
        raise ChecksumError(
            f"{int(missing.sum())} ratings name {what} missing from the {what} table, e.g. "
            f"{wanted[missing][:5].tolist()}",
            "the ratings, users and items tables must come from one copy of MovieLens",
        )
    return rows


def _side(name: str) -> Side:
    return Side.REQUEST if name in REQUEST_FEATURES else Side.CANDIDATE


def build_movielens_dataset(tables: MovieLensTables) -> Dataset:
    """Encode the raw tables into a `Dataset` with the per-user time split."""
    ratings = tables.ratings.reset_index(drop=True)
    split = per_user_time_split(ratings)

    vocab = {
        "age_bucket": AGE_LABELS,
        "gender": _vocabulary(tables.users["gender"]),
        "occupation": _vocabulary(tables.users["occupation"]),
        "zip_prefix": _vocabulary(tables.users["zip_code"].map(zip_prefix)),
        "release_decade": _vocabulary(tables.items["release_year"].map(_decade)),
    }
    genres = _vocabulary([g for gs in tables.items["genres"] for g in gs])
    max_genres = max(len(gs) for gs in tables.items["genres"])
    schema = FeatureSchema(
        name="movielens-100k",
        label="liked",
        features=(
            Feature(
                "age", FeatureKind.DENSE, description="user age, standardised", side=Side.REQUEST
            ),
            Feature("release_year", FeatureKind.DENSE, description="standardised; missing = mean"),
            Feature("movie_age", FeatureKind.DENSE, description="years from release to rating"),
            Feature(
                "user_tenure",
                FeatureKind.DENSE,
                description="log1p days since first rating",
                side=Side.REQUEST,
            ),
            Feature(
                "user_id",
                FeatureKind.CATEGORICAL,
                int(tables.users["user_id"].max()) + 1,
                description="raw MovieLens user id",
                side=Side.REQUEST,
            ),
            Feature(
                "item_id",
                FeatureKind.CATEGORICAL,
                int(tables.items["item_id"].max()) + 1,
                description="raw MovieLens item id",
            ),
            *(
                Feature(
                    name,
                    FeatureKind.CATEGORICAL,
                    len(v) + 1,
                    vocabulary=v,
                    side=_side(name),
                )
                for name, v in vocab.items()
            ),
            Feature(
                "genres",
                FeatureKind.MULTI_HOT,
                len(genres) + 1,
                max_len=max_genres,
                vocabulary=genres,
            ),
        ),
    )

    users = _user_table(tables.users, ratings, vocab)
    items = _item_table(tables.items, vocab["release_decade"], genres, max_genres)
    user_rows = _rows_of(users.ids, ratings["user_id"].to_numpy(np.int64), "users")
    item_rows = _rows_of(items.ids, ratings["item_id"].to_numpy(np.int64), "items")
    rated_at = ratings["timestamp"].to_numpy(np.float64)
    # Standardise with training rows only: validation and test statistics must not leak in.
    train = raw_dense(
        users.age[user_rows], items.release_year[item_rows], rated_at, users.first_rating[user_rows]
    )[split == TRAIN]
    encoding = MovieLensEncoding(
        users=users,
        items=items,
        vocabularies={name: vocab[name] for name in ("gender", "occupation", "zip_prefix")},
        dense_mean=np.nanmean(train, axis=0),
        dense_std=np.nanstd(train, axis=0) + 1e-6,
        last_timestamp=int(ratings["timestamp"].max()),
    )
    dense, categorical, multi_hot = encoding.encode_rows(users, user_rows, item_rows, rated_at)
    label = (ratings["rating"].to_numpy() >= LIKED_RATING).astype(np.float32)

    def take(part: int) -> Split:
        mask = split == part
        return Split(dense[mask], categorical[mask], multi_hot[mask], label[mask])

    return Dataset(
        name="movielens-100k",
        schema=schema,
        train=take(TRAIN),
        validation=take(VALIDATION),
        test=take(TEST),
        info={
            "source": tables.source,
            "label": f"rating >= {LIKED_RATING}",
            "split": "per-user chronological 80/10/10",
            "dense_mean": encoding.dense_mean.tolist(),
            "dense_std": encoding.dense_std.tolist(),
        },
        encoding=encoding,
    )


def feature_tables(encoding: MovieLensEncoding, schema: FeatureSchema) -> tuple[pa.Table, pa.Table]:
    """Every user's and every item's encoded features at the catalogue's last rating time, as
    the users and items tables a table feature source serves from (serve/table_source.py):
    `user_id` + the request-side features, `item_id` + the candidate-side ones (the movie's
    age at that time among them). For trying /v1/rank from tables, and measuring it."""
    at = encoding.at(encoding.last_timestamp)
    users: dict[str, Any] = {"user_id": encoding.users.ids}
    items: dict[str, Any] = {"item_id": encoding.items.ids}
    for column, feature in enumerate(schema.dense):
        side = users if feature.side is Side.REQUEST else items
        side[feature.name] = (at.user_dense if side is users else at.item_dense)[:, column]
    for column, feature in enumerate(schema.categorical):
        side = users if feature.side is Side.REQUEST else items
        source = at.user_categorical if side is users else at.item_categorical
        side[feature.name] = source[:, column]  # user_id and item_id: the ids themselves
    for column, feature in enumerate(schema.multi_hot):  # the genres: the item's
        items[feature.name] = [[int(i) for i in bag if i] for bag in at.item_multi_hot[:, column]]
    return pa.table(users), pa.table(items)
