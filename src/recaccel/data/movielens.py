"""MovieLens-100K as a CTR task: features, label, and the per-user time split.

Label: rating >= 4 (the user liked the movie). Every row is (user, item, time) with:

- categorical: user id, item id, age bucket, gender, occupation, zip prefix, release decade;
- multi-hot: the movie's genres (a pooled bag);
- dense (standardised with training-split statistics only): age, release year, the movie's age
  when rated, and how long the user had been rating (log days) — the last two from the timestamp.

The split is by time *within each user*: each user's ratings in time order, the earliest 80%
train, the next 10% validation, the last 10% test. A random split leaks a user's future into
training; a single global time cut leaves most test rows from users never seen in training.

Encoding goes through one path, `MovieLensEncoding.encode_rows` (movielens_encoding.py, with
the feature layout), which the dataset keeps (`Dataset.encoding`) so that serving encodes a row
exactly as training encoded its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recaccel.data.dataset import Dataset, Split
from recaccel.data.movielens_encoding import (
    AGE_LABELS,
    REQUEST_FEATURES,
    ItemTable,
    MovieLensEncoding,
    UserTable,
    age_bucket_codes,
    raw_dense,
    vocabulary_lookup,
    zip_prefix,
)
from recaccel.data.movielens_source import MovieLensTables
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side
from recaccel.errors import ChecksumError

LIKED_RATING = 4
TRAIN, VALIDATION, TEST = 0, 1, 2


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


def _encode(values: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Index i+1 for vocabulary[i]; 0 for anything else (missing, unseen)."""
    lookup = vocabulary_lookup(vocabulary)
    return values.map(lambda v: lookup.get(v, 0)).to_numpy(dtype=np.int64)


def _decade(year: object) -> str:
    return "" if pd.isna(year) else f"{int(year) // 10 * 10}s"  # type: ignore[call-overload]


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
    genre_index = vocabulary_lookup(genres)
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
