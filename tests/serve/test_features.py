"""The feature store encodes a served (user, item, time) row exactly as the dataset encoded it,
and answers every bad request with the documented error and a message that names the problem."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from recaccel.artifact import Artifact
from recaccel.data.dataset import Dataset
from recaccel.data.movielens import (
    TEST,
    TRAIN,
    VALIDATION,
    build_movielens_dataset,
    per_user_time_split,
)
from recaccel.data.movielens_encoding import AGE_LABELS, CATEGORICAL, DENSE
from recaccel.data.movielens_source import MovieLensTables
from recaccel.data.rank_rows import RawFeatureError, UnknownUserError
from recaccel.data.rows import Rows
from recaccel.errors import ConfigError
from recaccel.serve.errors import NotFoundError, PayloadTooLargeError, RequestError
from recaccel.serve.features import FeatureStore, candidate_ids, catalogue_rows, row_lookup

SAMPLE = 40  # rows checked per split
PART = {"train": TRAIN, "validation": VALIDATION, "test": TEST}
COL = {name: i for i, name in enumerate(CATEGORICAL)}
DENSE_COL = {name: i for i, name in enumerate(DENSE)}
NEW_USER = {"age": 31, "gender": "F", "occupation": "engineer", "zip_code": "94043"}


@pytest.fixture(scope="module")
def store(tiny_dataset: Dataset) -> FeatureStore:
    return FeatureStore.from_dataset(tiny_dataset)


def _split_timestamps(tables: MovieLensTables, split: str) -> np.ndarray:
    """Each row's timestamp, in the split's row order (the ratings' order within the split)."""
    part = per_user_time_split(tables.ratings) == PART[split]
    return tables.ratings["timestamp"].to_numpy()[part]


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_a_served_row_is_the_datasets_row(
    split: str, store: FeatureStore, tiny_dataset: Dataset, tiny_tables: MovieLensTables
) -> None:
    data = tiny_dataset.split(split)
    timestamps = _split_timestamps(tiny_tables, split)
    sample = np.random.default_rng(0).choice(len(data), SAMPLE, replace=False)
    for i in sample:
        user, item = (int(v) for v in data.categorical[i, [COL["user_id"], COL["item_id"]]])
        batch, items = store.rows(user, [item], raw={"timestamp": int(timestamps[i])})
        assert items.tolist() == [item]
        # Exact: the store and the dataset go through the same encoding.
        np.testing.assert_array_equal(batch.dense[0], data.dense[i])
        np.testing.assert_array_equal(batch.categorical[0], data.categorical[i])
        np.testing.assert_array_equal(batch.multi_hot[0], data.multi_hot[i])


def test_rows_at_now_are_the_encodings_rows_bit_for_bit(
    store: FeatureStore, tiny_dataset: Dataset
) -> None:
    """The store's prebuilt tables (`MovieLensEncoding.at`) give what `encode_rows` gives."""
    encoding = tiny_dataset.encoding
    assert encoding is not None
    items = store.catalogue[::-3]  # out of order, not every item
    item_rows = np.searchsorted(store.catalogue, items)
    for row, user in enumerate(encoding.users.ids.tolist()):
        fast, _ = store.rows(user, items)
        slow = encoding.encode_rows(
            encoding.users, np.array([row]), item_rows, np.array([float(encoding.last_timestamp)])
        )
        for got, want in zip(fast.as_tuple(), slow, strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_time_free_features_need_no_timestamp(store: FeatureStore, tiny_dataset: Dataset) -> None:
    data = tiny_dataset.test
    user = int(data.categorical[0, COL["user_id"]])
    mine = data.categorical[:, COL["user_id"]] == user
    items = data.categorical[mine, COL["item_id"]]
    batch, _ = store.rows(user, items)  # scored at the store's now
    np.testing.assert_array_equal(batch.categorical, data.categorical[mine])
    np.testing.assert_array_equal(batch.multi_hot, data.multi_hot[mine])
    static = [DENSE_COL["age"], DENSE_COL["release_year"]]
    np.testing.assert_array_equal(batch.dense[:, static], data.dense[mine][:, static])


def test_served_scores_equal_the_models_scores_on_dataset_rows(
    store: FeatureStore,
    tiny_dataset: Dataset,
    tiny_tables: MovieLensTables,
    train_tiny: Callable[[str, str, Path], Artifact],
    tmp_path: Path,
) -> None:
    model = train_tiny("dlrm", "small", tmp_path / "dlrm").model.eval()
    data = tiny_dataset.test
    timestamps = _split_timestamps(tiny_tables, "test")
    rows = np.arange(0, len(data), 7)
    with torch.no_grad():
        expected = model(*data.features(rows).as_tuple())
        served = torch.cat(
            [
                model(
                    *map(
                        torch.from_numpy,
                        store.rows(
                            int(data.categorical[i, COL["user_id"]]),
                            [int(data.categorical[i, COL["item_id"]])],
                            raw={"timestamp": int(timestamps[i])},
                        )[0].as_tuple(),
                    )
                )
                for i in rows
            ]
        )
    torch.testing.assert_close(served, expected, rtol=0, atol=1e-6)


def test_whole_catalogue(store: FeatureStore, tiny_tables: MovieLensTables) -> None:
    catalogue = np.sort(tiny_tables.items["item_id"].to_numpy())
    np.testing.assert_array_equal(store.catalogue, catalogue)
    assert store.catalogue.dtype == np.int64 and not store.catalogue.flags.writeable
    batch, items = store.rows(1)
    np.testing.assert_array_equal(items, catalogue)
    assert len(batch) == len(catalogue) and items.dtype == np.int64
    np.testing.assert_array_equal(batch.categorical[:, COL["item_id"]], catalogue)
    assert (batch.categorical[:, COL["user_id"]] == 1).all()
    # The same rows as asking for every item by id.
    listed, _ = store.rows(1, catalogue.tolist())
    for got, want in zip(batch.as_tuple(), listed.as_tuple(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_rows_follow_the_request_order(store: FeatureStore) -> None:
    order = [17, 3, 60, 1, 42]
    batch, items = store.rows(2, order)
    assert items.tolist() == order
    assert batch.categorical[:, COL["item_id"]].tolist() == order
    single = [store.rows(2, [item])[0] for item in order]
    for name in ("dense", "categorical", "multi_hot"):
        stacked = np.concatenate([getattr(b, name) for b in single])
        np.testing.assert_array_equal(getattr(batch, name), stacked)


def test_numpy_candidates_are_accepted_and_never_aliased(store: FeatureStore) -> None:
    request = np.array([5, 6, 7], dtype=np.int32)
    batch, items = store.rows(np.int64(3), request)  # type: ignore[arg-type]
    request[:] = 1
    assert items.tolist() == [5, 6, 7] and items.dtype == np.int64
    batch.categorical[:] = 0  # the batch is the caller's; the store's tables are untouched
    again, _ = store.rows(3, [5, 6, 7])
    assert again.categorical[:, COL["item_id"]].tolist() == [5, 6, 7]


def test_now_is_the_datasets_last_rating(
    store: FeatureStore, tiny_dataset: Dataset, tiny_tables: MovieLensTables
) -> None:
    assert tiny_dataset.encoding is not None
    now = tiny_dataset.encoding.rank_rows().now
    assert now == int(tiny_tables.ratings["timestamp"].max())
    items = [2, 3]  # item 1 has no release year, so no movie age
    at_now, _ = store.rows(4, items, raw={"timestamp": now})
    default, _ = store.rows(4, items)
    np.testing.assert_array_equal(default.dense, at_now.dense)
    later, _ = store.rows(4, items, raw={"timestamp": now + 365 * 86_400})
    movie_age, tenure = DENSE_COL["movie_age"], DENSE_COL["user_tenure"]
    assert (later.dense[:, movie_age] > default.dense[:, movie_age]).all()
    assert (later.dense[:, tenure] > default.dense[:, tenure]).all()


def test_a_time_before_the_users_first_rating_is_tenure_zero(
    store: FeatureStore, tiny_dataset: Dataset
) -> None:
    batch, _ = store.rows(4, [1], raw={"timestamp": 0})
    tenure = float(batch.dense[0, DENSE_COL["user_tenure"]])
    mean, std = (
        tiny_dataset.info[k][DENSE_COL["user_tenure"]] for k in ("dense_mean", "dense_std")
    )
    assert np.isfinite(batch.dense).all()
    assert tenure == pytest.approx((0.0 - mean) / std, rel=1e-6)


def test_knows_user(store: FeatureStore) -> None:
    assert store.knows_user(1) and store.knows_user(np.int64(40))
    assert not store.knows_user(999) and not store.knows_user("1") and not store.knows_user(True)


def _user_frame(tables: MovieLensTables, user: int) -> dict[str, Any]:
    row = tables.users.set_index("user_id").loc[user]
    return {k: (int(row[k]) if k == "age" else str(row[k])) for k in NEW_USER}


def test_an_unknown_user_with_raw_features_is_scored(
    store: FeatureStore, tiny_tables: MovieLensTables
) -> None:
    known = 7
    raw = _user_frame(tiny_tables, known)
    stranger, _ = store.rows(9_999, [1, 2, 3], raw=raw)
    same, _ = store.rows(known, [1, 2, 3])
    # The user's features are the known user's with the same raw values, but its id is unknown.
    assert (stranger.categorical[:, COL["user_id"]] == 0).all()
    user_columns = [COL[c] for c in ("age_bucket", "gender", "occupation", "zip_prefix")]
    np.testing.assert_array_equal(
        stranger.categorical[:, user_columns], same.categorical[:, user_columns]
    )
    np.testing.assert_array_equal(stranger.dense[:, :3], same.dense[:, :3])
    # No rating history: tenure is 0 days, less than the known user's.
    tenure = DENSE_COL["user_tenure"]
    assert (stranger.dense[:, tenure] < same.dense[:, tenure]).all()


def test_a_new_user_with_some_features_has_the_rest_unknown(store: FeatureStore) -> None:
    batch, _ = store.rows(9_999, [1], raw={"age": 31})
    codes = batch.categorical[0]
    assert int(codes[COL["age_bucket"]]) == AGE_LABELS.index("25-34") + 1
    assert [int(codes[COL[c]]) for c in ("user_id", "gender", "occupation", "zip_prefix")] == [
        0
    ] * 4


def test_raw_features_override_a_known_users_stored_ones(
    store: FeatureStore, tiny_dataset: Dataset
) -> None:
    stored, _ = store.rows(5, [1, 2])
    schema = tiny_dataset.schema
    vocabulary = schema["occupation"].vocabulary
    assert vocabulary is not None
    own = int(stored.categorical[0, COL["occupation"]])
    other = next(v for i, v in enumerate(vocabulary, start=1) if i != own)
    changed, _ = store.rows(5, [1, 2], raw={"occupation": other})
    assert (changed.categorical[:, COL["occupation"]] == vocabulary.index(other) + 1).all()
    rest = [i for i in range(len(CATEGORICAL)) if i != COL["occupation"]]
    np.testing.assert_array_equal(changed.categorical[:, rest], stored.categorical[:, rest])
    np.testing.assert_array_equal(changed.dense, stored.dense)
    # Outside the vocabulary is the unknown id 0, as training encodes it; a foreign zip is "other".
    odd, _ = store.rows(5, [1], raw={"occupation": "astronaut", "gender": "X", "zip_code": "K1A"})
    assert int(odd.categorical[0, COL["occupation"]]) == 0
    assert int(odd.categorical[0, COL["gender"]]) == 0
    zips = schema["zip_prefix"].vocabulary
    assert zips is not None
    assert int(odd.categorical[0, COL["zip_prefix"]]) == zips.index("other") + 1


BAD: list[tuple[str, dict[str, Any], type[RequestError], str]] = [
    ("empty", {"item_ids": []}, RequestError, "candidates is empty"),
    ("duplicates", {"item_ids": [1, 2, 2, 3, 3]}, RequestError, "repeat 2 item id(s): 2, 3"),
    ("string id", {"item_ids": [1, "2"]}, RequestError, "candidates[1] is '2' (str)"),
    ("float id", {"item_ids": [1, 2.5]}, RequestError, "candidates[1] is 2.5 (float)"),
    ("bool id", {"item_ids": [True]}, RequestError, "candidates[0] is True (bool)"),
    ("None id", {"item_ids": [1, None]}, RequestError, "candidates[1] is None"),
    ("nested", {"item_ids": [[1, 2]]}, RequestError, "candidates[0] is [1, 2] (list)"),
    ("a string", {"item_ids": "12"}, RequestError, "list of integer item ids, got str"),
    ("a number", {"item_ids": 12}, RequestError, "list of integer item ids, got int"),
    ("float array", {"item_ids": np.array([1.5])}, RequestError, "integer item ids"),
    ("a bool among ints", {"item_ids": [True, 2]}, RequestError, "candidates[0] is True"),
    ("past int64 as a float", {"item_ids": [2.0**63]}, RequestError, "integer item ids"),
    (
        "unknown items",
        {"item_ids": [1, 999, 1000]},
        NotFoundError,
        "2 unknown item id(s): 999, 1000",
    ),
    ("huge id", {"item_ids": [2**63]}, NotFoundError, "unknown item id(s): 9223372036854775808"),
    ("too big", {"item_ids": [2**64]}, RequestError, "flat list of 64-bit integer item ids"),
    ("user id str", {"user_id": "7"}, RequestError, "user_id must be an integer, got '7'"),
    ("user id bool", {"user_id": True}, RequestError, "user_id must be an integer, got True"),
    ("unknown user", {"user_id": 999}, NotFoundError, "unknown user 999"),
    (
        "unknown user, only a time",
        {"user_id": 999, "raw": {"timestamp": 1}},
        NotFoundError,
        "unknown user 999",
    ),
    (
        "raw name",
        {"raw": {"height": 180, "age": 3}},
        RequestError,
        "unknown raw feature(s): height",
    ),
    ("raw not a map", {"raw": [("age", 3)]}, RequestError, "raw features must be an object"),
    ("age str", {"raw": {"age": "31"}}, RequestError, "'age' must be a number of years"),
    ("age bool", {"raw": {"age": True}}, RequestError, "'age' must be a number of years"),
    ("age range", {"raw": {"age": 250}}, RequestError, "from 0 to 199, got 250"),
    ("age nan", {"raw": {"age": float("nan")}}, RequestError, "'age' must be"),
    ("age huge", {"raw": {"age": 10**400}}, RequestError, "'age' must be"),
    ("gender int", {"raw": {"gender": 1}}, RequestError, "'gender' must be a string, got 1 (int)"),
    ("zip null", {"raw": {"zip_code": None}}, RequestError, "'zip_code' must be a string"),
    ("time negative", {"raw": {"timestamp": -5}}, RequestError, "'timestamp' must be unix seconds"),
    ("time str", {"raw": {"timestamp": "now"}}, RequestError, "'timestamp' must be unix seconds"),
    ("time far", {"raw": {"timestamp": 1e300}}, RequestError, "from 0 to 4294967295, got 1e+300"),
]


@pytest.mark.parametrize(
    ("request_", "error", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_requests_get_their_error_and_a_message_naming_the_problem(
    store: FeatureStore, request_: dict[str, Any], error: type[RequestError], message: str
) -> None:
    call = {"user_id": 1, "item_ids": [1, 2], "raw": None, **request_}
    with pytest.raises(RequestError) as caught:
        store.rows(call["user_id"], call["item_ids"], raw=call["raw"])
    assert type(caught.value) is error
    assert message in caught.value.message


def test_many_unknown_items_are_counted_not_all_listed(store: FeatureStore) -> None:
    unknown = list(range(1_000, 1_015))
    with pytest.raises(NotFoundError, match=re.escape("and 5 more")) as caught:
        store.rows(1, [1, *unknown])
    assert caught.value.status == 404
    assert caught.value.message.startswith("15 unknown item id(s): 1000, 1001,")
    assert "1010" not in caught.value.message


def test_too_many_candidates_is_413(tiny_dataset: Dataset) -> None:
    small = FeatureStore.from_dataset(tiny_dataset, max_candidates=3)
    assert len(small.rows(1, [1, 2, 3])[0]) == 3
    with pytest.raises(PayloadTooLargeError, match="4 candidates exceed this server's limit of 3"):
        small.rows(1, [1, 2, 3, 4])
    assert len(small.rows(1)[0]) == len(small.catalogue)  # the whole catalogue is not limited
    with pytest.raises(ConfigError, match="max_candidates"):
        FeatureStore.from_dataset(tiny_dataset, max_candidates=0)


def test_a_dataset_without_users_cannot_serve_rank() -> None:
    from recaccel.data.synthetic import SyntheticConfig, make_criteo_synthetic

    criteo = make_criteo_synthetic(SyntheticConfig(rows=100, max_rows_per_table=50))
    with pytest.raises(ConfigError, match="'criteo-synthetic' has no users or items"):
        FeatureStore.from_dataset(criteo)


def test_a_user_with_no_ratings_is_known_with_no_history(tiny_tables: MovieLensTables) -> None:
    extra = pd.DataFrame(
        {"user_id": [41], "age": [30], "gender": ["M"], "occupation": ["artist"], "zip_code": ["1"]}
    )
    users = pd.concat([tiny_tables.users, extra], ignore_index=True)
    dataset = build_movielens_dataset(
        MovieLensTables(tiny_tables.ratings, users, tiny_tables.items, "fixture")
    )
    store = FeatureStore.from_dataset(dataset)
    assert store.knows_user(41)
    batch, _ = store.rows(41, [1])
    assert np.isfinite(batch.dense).all()
    assert int(batch.categorical[0, COL["user_id"]]) == 41


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("RECACCEL_SLOW_TESTS") != "1", reason="set RECACCEL_SLOW_TESTS=1"
)
def test_real_movielens_rows_are_reproduced() -> None:
    from recaccel.data.movielens_source import load_movielens_100k

    tables = load_movielens_100k(progress=False)
    dataset = build_movielens_dataset(tables)
    store = FeatureStore.from_dataset(dataset)
    assert len(store.catalogue) == 1_682
    data = dataset.test
    timestamps = _split_timestamps(tables, "test")
    for i in np.random.default_rng(1).choice(len(data), 200, replace=False):
        user, item = (int(v) for v in data.categorical[i, :2])
        batch, _ = store.rows(user, [item], raw={"timestamp": int(timestamps[i])})
        np.testing.assert_array_equal(batch.dense[0], data.dense[i])
        np.testing.assert_array_equal(batch.categorical[0], data.categorical[i])
        np.testing.assert_array_equal(batch.multi_hot[0], data.multi_hot[i])


@pytest.mark.parametrize("spread", [False, True])  # ids in a lookup table, or binary search
def test_catalogue_rows_finds_every_known_id_and_names_every_unknown_one(spread: bool) -> None:
    rng = np.random.default_rng(0)
    catalogue = np.unique(rng.integers(0, 200, 60)) * (1 << 40 if spread else 1)
    lookup = row_lookup(catalogue)
    assert (lookup is None) == spread
    edges = np.array([-1, 0, 1, catalogue[-1], catalogue[-1] + 1, 1 << 62])
    for _ in range(200):
        ids = rng.choice(np.concatenate([catalogue, edges, catalogue + 1]), 5, replace=False)
        known = np.isin(ids, catalogue)
        if known.all():
            rows = catalogue_rows(ids, catalogue, lookup, "hint")
            np.testing.assert_array_equal(catalogue[rows], ids)
        else:
            with pytest.raises(NotFoundError) as error:
                catalogue_rows(ids, catalogue, lookup, "hint")
            for unknown in ids[~known].tolist():
                assert str(unknown) in error.value.message


class TwoUsers:
    """A `RankRows` of no dataset: rows are (user row, item row), one raw value, `boost`."""

    user_ids = np.array([10, 20])
    item_ids = np.array([1, 2, 3])
    raw_features = ("boost",)
    user_features = ("boost",)

    def rows(self, user_row: int | None, item_rows: np.ndarray, raw: object) -> Rows:
        boost = (raw or {}).get("boost") if isinstance(raw, dict) else None
        if boost is not None and not isinstance(boost, int):
            raise RawFeatureError("boost must be an integer", "e.g. 2")
        if user_row is None and boost is None:
            raise UnknownUserError("nobody")
        n = len(item_rows)
        user = -1 if user_row is None else user_row
        categorical = np.stack([np.full(n, user), item_rows], axis=1)
        return Rows(np.zeros((n, 0), np.float32), categorical, np.zeros((n, 0, 1), np.int64))


def test_the_store_serves_any_datasets_rank_rows_and_answers_its_refusals() -> None:
    store = FeatureStore(TwoUsers())
    rows, ids = store.rows(20, [3, 1])
    assert ids.tolist() == [3, 1] and rows.categorical.tolist() == [[1, 2], [1, 0]]
    rows, _ = store.rows(99, [2], {"boost": 1})  # a new user, described by a raw value
    assert rows.categorical.tolist() == [[-1, 1]]
    with pytest.raises(NotFoundError, match="unknown user 99") as error:
        store.rows(99, [2])
    assert "(boost)" in error.value.hint
    with pytest.raises(RequestError, match="boost must be an integer"):
        store.rows(10, [2], {"boost": "lots"})
    with pytest.raises(NotFoundError, match="unknown item id"):
        store.rows(10, [4])


def test_whole_floats_are_integer_ids_as_json_schema_counts_them() -> None:
    assert candidate_ids([1.0, 2, 3.0], 10).tolist() == [1, 2, 3]
    assert candidate_ids([1.0, 2, 3.0], 10).dtype == np.int64
