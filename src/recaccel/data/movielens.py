"""MovieLens-100K as a CTR task: features, label, and the per-user time split.

Label: rating >= 4 (the user liked the movie). Every row is (user, item, time) with:

- categorical: user id, item id, age bucket, gender, occupation, zip prefix, release decade;
- multi-hot: the movie's genres (a pooled bag);
- dense (standardised with training-split statistics only): age, release year, the movie's age
  when rated, and how long the user had been rating (log days) — the last two from the timestamp.

The split is by time *within each user*: each user's ratings in time order, the earliest 80%
train, the next 10% validation, the last 10% test. A random split leaks a user's future into
training; a single global time cut leaves most test rows from users never seen in training.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from recaccel.data.dataset import Dataset, Split
from recaccel.data.movielens_source import MovieLensTables
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema

LIKED_RATING = 4
TRAIN, VALIDATION, TEST = 0, 1, 2
AGE_BINS = (0, 18, 25, 35, 45, 50, 56, 200)  # MovieLens-1M's published age groups
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
SECONDS_PER_DAY = 86_400
SECONDS_PER_YEAR = 365.25 * SECONDS_PER_DAY
EPOCH_YEAR = 1970


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
    lookup = {v: i + 1 for i, v in enumerate(vocabulary)}
    return values.map(lambda v: lookup.get(v, 0)).to_numpy(dtype=np.int64)


def _decade(year: object) -> str:
    return "" if pd.isna(year) else f"{int(year) // 10 * 10}s"  # type: ignore[call-overload]


def build_movielens_dataset(tables: MovieLensTables) -> Dataset:
    """Encode the raw tables into a `Dataset` with the per-user time split."""
    users = tables.users.assign(
        age_bucket=pd.cut(tables.users["age"], AGE_BINS, right=False, labels=AGE_LABELS).astype(
            str
        ),
        zip_prefix=tables.users["zip_code"].str[:1].where(lambda z: z.str.isdigit(), "other"),
    )
    items = tables.items.assign(release_decade=tables.items["release_year"].map(_decade))
    rows = tables.ratings.merge(users, on="user_id", how="left").merge(
        items, on="item_id", how="left"
    )
    split = per_user_time_split(rows)

    vocab = {
        "age_bucket": AGE_LABELS,
        "gender": _vocabulary(users["gender"]),
        "occupation": _vocabulary(users["occupation"]),
        "zip_prefix": _vocabulary(users["zip_prefix"]),
        "release_decade": _vocabulary(items["release_decade"]),
    }
    genres = _vocabulary([g for gs in items["genres"] for g in gs])
    max_genres = max(len(gs) for gs in items["genres"])
    schema = FeatureSchema(
        name="movielens-100k",
        label="liked",
        features=(
            Feature("age", FeatureKind.DENSE, description="user age, standardised"),
            Feature("release_year", FeatureKind.DENSE, description="standardised; missing = mean"),
            Feature("movie_age", FeatureKind.DENSE, description="years from release to rating"),
            Feature("user_tenure", FeatureKind.DENSE, description="log1p days since first rating"),
            Feature(
                "user_id",
                FeatureKind.CATEGORICAL,
                int(tables.users["user_id"].max()) + 1,
                description="raw MovieLens user id",
            ),
            Feature(
                "item_id",
                FeatureKind.CATEGORICAL,
                int(tables.items["item_id"].max()) + 1,
                description="raw MovieLens item id",
            ),
            *(
                Feature(name, FeatureKind.CATEGORICAL, len(v) + 1, vocabulary=v)
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

    rated_at = rows["timestamp"].to_numpy(dtype=np.float64)
    first_rating = rows.groupby("user_id")["timestamp"].transform("min").to_numpy(np.float64)
    rated_year = EPOCH_YEAR + rated_at / SECONDS_PER_YEAR
    release_year = rows["release_year"].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    dense = np.stack(
        [
            rows["age"].to_numpy(np.float64),
            release_year,
            rated_year - release_year,
            np.log1p((rated_at - first_rating) / SECONDS_PER_DAY),
        ],
        axis=1,
    )
    # Standardise with training rows only: validation and test statistics must not leak in.
    mean = np.nanmean(dense[split == TRAIN], axis=0)
    std = np.nanstd(dense[split == TRAIN], axis=0) + 1e-6
    dense = np.nan_to_num((dense - mean) / std, nan=0.0).astype(np.float32)

    categorical = np.stack(
        [
            rows["user_id"].to_numpy(np.int64),
            rows["item_id"].to_numpy(np.int64),
            *(_encode(rows[name], v) for name, v in vocab.items()),
        ],
        axis=1,
    )
    # Encode genres once per item, then gather by item id: 1.7k items, not 100k rows.
    genre_index = {g: i + 1 for i, g in enumerate(genres)}
    item_genres = np.zeros((schema["item_id"].cardinality, max_genres), dtype=np.int64)
    for item_id, names in zip(items["item_id"], items["genres"], strict=True):
        item_genres[item_id, : len(names)] = [genre_index[g] for g in names]
    multi_hot = item_genres[rows["item_id"].to_numpy()][:, None, :]  # (N, 1, L)
    label = (rows["rating"].to_numpy() >= LIKED_RATING).astype(np.float32)

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
            "dense_mean": mean.tolist(),
            "dense_std": std.tolist(),
        },
    )
