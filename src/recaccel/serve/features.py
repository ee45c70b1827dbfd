"""The embedded feature store: (user id, candidate item ids) -> the model's input rows.

/v1/rank scores one user against candidate items. The model learned from rows the dataset
pipeline encoded, and a served score equals the model's score on the same (user, item) row only
if serving encodes that row the same way. So this module re-implements no encoding: it keeps the
dataset's `MovieLensEncoding` (every user and item encoded once, plus the training statistics
that standardise the dense features) and sends each request's rows through the same
encoding the training rows went through. Most requests are scored at the store's now with
stored users: for those, every user's and every item's share of a row is encoded once at
start-up (`MovieLensEncoding.at`), and a request costs two numpy gathers. A request with its
own time or raw user values goes through `encode_rows` itself. Either way: numpy arrays
(`Rows`), no torch, no pandas and no per-row Python.

Time. Two dense features depend on when a row is scored: the movie's age and the user's
tenure. A request is scored "now", and the store's now is the dataset's last rating time, the
end of the catalogue's time frame, not the wall clock: MovieLens-100K ends in April 1998, and
a wall-clock now would put every row decades past anything the model saw, far outside the
range its dense inputs were standardised on. A request may name its own time with the raw
feature `timestamp` (unix seconds), which is also how a dataset row is reproduced at its time.

Raw features. A request may carry raw user values (`age`, `gender`, `occupation`,
`zip_code`) that replace the stored ones for every row, encoded as training encodes them,
including its rule that a string outside a vocabulary is the unknown id 0. That is how a user
the store does not know is scored: with at least one raw user feature it is a new user (unknown
user id, features it did not send unknown, no rating history so tenure 0); with none it is 404.

Candidates. Absent means the whole catalogue. Otherwise a non-empty list of distinct integer
item ids, at most `max_candidates` (413 beyond). Duplicates are refused (400): top-k over a
list with repeats is ambiguous (may one item take two of the k places?), and dropping them
quietly would answer fewer rows than the client sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recaccel.data.dataset import Dataset
from recaccel.data.movielens import AGE_BINS, MovieLensEncoding, UserTable
from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.serve.errors import NotFoundError, PayloadTooLargeError, RequestError

DEFAULT_MAX_CANDIDATES = 10_000
USER_FEATURES = ("age", "gender", "occupation", "zip_code")
RAW_FEATURES = (*USER_FEATURES, "timestamp")
_SHOWN = 10  # ids named in one error message
_MIN_AGE, _MAX_AGE = AGE_BINS[0], AGE_BINS[-1]  # the ages the training encoding has buckets for
# Unix seconds up to 2106 (2**32): past that a movie's age, in float32, is no longer a number a
# model has any use for, and far enough past it is inf.
_MAX_TIMESTAMP = 2**32


@dataclass(frozen=True)
class RawFeatures:
    """A request's raw feature values; None where it sent none."""

    age: float | None = None
    gender: str | None = None
    occupation: str | None = None
    zip_code: str | None = None
    timestamp: float | None = None

    @property
    def describes_user(self) -> bool:
        """Whether any raw user feature (USER_FEATURES) was sent."""
        return not (
            self.age is None
            and self.gender is None
            and self.occupation is None
            and self.zip_code is None
        )


def _as_float(value: object) -> float:
    """An int or float (numpy's too) as a float; NaN for anything else, bool included (JSON
    true is not a number of years) and ints too large for a float."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _number(name: str, value: object, low: float, high: float, what: str) -> float:
    number = _as_float(value)
    if not low <= number < high:  # NaN and inf fail too
        raise RequestError(f"raw feature {name!r} must be {what}, got {value!r}")
    return number


def _string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise RequestError(
            f"raw feature {name!r} must be a string, got {value!r} ({type(value).__name__})"
        )
    return value


def parse_raw(raw: Mapping[str, object] | None) -> RawFeatures:
    """Check a request's raw feature values: known names, right types, ages and times in range.

    Strings are not checked against a vocabulary: training encodes a value outside it as the
    unknown id 0, and so does serving.
    """
    if raw is None:
        return RawFeatures()
    if not isinstance(raw, Mapping):
        raise RequestError(
            f"raw features must be an object of name: value, got {type(raw).__name__}",
            f"known features: {', '.join(RAW_FEATURES)}",
        )
    unknown = sorted(str(name) for name in raw if name not in RAW_FEATURES)
    if unknown:
        raise RequestError(
            f"unknown raw feature(s): {', '.join(unknown)}",
            f"known features: {', '.join(RAW_FEATURES)}",
        )
    numbers: dict[str, float] = {}
    strings: dict[str, str] = {}
    for name, value in raw.items():
        if name == "age":
            what = f"a number of years from {_MIN_AGE} to {_MAX_AGE - 1}"
            numbers[name] = _number(name, value, _MIN_AGE, _MAX_AGE, what)
        elif name == "timestamp":
            what = f"unix seconds from 0 to {_MAX_TIMESTAMP - 1}"
            numbers[name] = _number(name, value, 0, _MAX_TIMESTAMP, what)
        else:
            strings[name] = _string(name, value)
    return RawFeatures(
        age=numbers.get("age"),
        gender=strings.get("gender"),
        occupation=strings.get("occupation"),
        zip_code=strings.get("zip_code"),
        timestamp=numbers.get("timestamp"),
    )


def describe_ids(ids: np.ndarray) -> str:
    """Up to _SHOWN ids, then how many more."""
    shown = ", ".join(str(i) for i in ids[:_SHOWN].tolist())
    return shown + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def _first_non_integer(values: Sequence[object]) -> str:
    """Where a candidate list stops being integers, for the message (error path only)."""
    for i, value in enumerate(values):
        if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_):
            return f": candidates[{i}] is {value!r} ({type(value).__name__})"
    return ""


def candidate_ids(item_ids: Sequence[int] | np.ndarray, max_candidates: int) -> np.ndarray:
    """A request's candidate list as a new int64 array, refused unless non-empty, flat,
    integer, distinct and at most `max_candidates` long."""
    if not isinstance(item_ids, list | np.ndarray) and (
        isinstance(item_ids, str | bytes) or not isinstance(item_ids, Sequence)
    ):
        raise RequestError(
            f"candidates must be a list of integer item ids, got {type(item_ids).__name__}"
        )
    if len(item_ids) == 0:
        raise RequestError(
            "candidates is empty",
            "send at least one item id, or leave candidates out to rank the whole catalogue",
        )
    if len(item_ids) > max_candidates:
        raise PayloadTooLargeError(
            f"{len(item_ids)} candidates exceed this server's limit of {max_candidates}",
            f"send at most {max_candidates}, or leave candidates out to rank the whole catalogue",
        )
    try:
        ids = np.asarray(item_ids)
    except (ValueError, TypeError, OverflowError):
        ids = np.asarray([], dtype=object)
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) != len(item_ids):
        where = "" if isinstance(item_ids, np.ndarray) else _first_non_integer(item_ids)
        raise RequestError(
            f"candidates must be a flat list of 64-bit integer item ids{where}",
            'e.g. "candidates": [1, 50, 181]',
        )
    if ids.dtype.kind == "u" and int(ids.max()) > np.iinfo(np.int64).max:
        raise NotFoundError(
            f"unknown item id(s): {describe_ids(ids[ids > np.iinfo(np.int64).max])}"
        )
    # A copy of an array argument, so the caller's array is never aliased; a list's is new.
    ids = ids.astype(np.int64, copy=isinstance(item_ids, np.ndarray))
    ordered = np.sort(ids)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated):
        repeated = np.unique(repeated)
        raise RequestError(
            f"candidates repeat {len(repeated)} item id(s): {describe_ids(repeated)}",
            "send each item once: top-k over repeated items is ambiguous",
        )
    return ids


def user_id_of(value: object) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_):
        raise RequestError(f"user_id must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


# A catalogue whose ids are small next to its size (MovieLens: 1 to 1,682) is looked up in a
# table indexed by id, a gather; ids spread wider (up to 2**63) are found by binary search.
_MAX_LOOKUP_IDS = 1 << 22


def row_lookup(catalogue: np.ndarray) -> np.ndarray | None:
    """id -> row in `catalogue` (-1: not in it) for ids 0..max, or None when the ids are too
    spread out for such a table (more than 4 per item and past `_MAX_LOOKUP_IDS`)."""
    if len(catalogue) == 0 or catalogue[0] < 0:
        return None
    top = int(catalogue[-1])
    if top >= max(_MAX_LOOKUP_IDS, 4 * len(catalogue)):
        return None
    table = np.full(top + 1, -1, dtype=np.int64)
    table[catalogue] = np.arange(len(catalogue))
    return table


class FeatureSource(Protocol):
    """What /v1/rank asks for a request's rows: `FeatureStore` (a dataset's users and items,
    with raw features and time), `TableSource` (users and items tables of your own, in
    memory) or `RedisSource` (an online store, read per request)."""

    schema: FeatureSchema | None  # the features its rows hold; serving checks models against it
    max_candidates: int

    @property
    def catalogue(self) -> np.ndarray:
        """Every item id that can be ranked, sorted."""
        ...

    @property
    def user_ids(self) -> np.ndarray:
        """Every user id it knows."""
        ...

    async def fetch(
        self,
        user_id: int,
        item_ids: Sequence[int] | np.ndarray | None = None,
        raw: Mapping[str, object] | None = None,
    ) -> tuple[Rows, np.ndarray]:
        """The rows of `user_id` against each candidate (None: the catalogue), and their ids.

        Raises RequestError (400), PayloadTooLargeError (413), NotFoundError (404) or, from a
        remote store, FeatureStoreError (503)."""
        ...


class FeatureStore:
    """Users and items encoded once at start-up; `rows` builds a request's model input.

    `now` is the time a request without a `timestamp` is scored at: the dataset's last rating.

    Args:
        encoding: the dataset's encoding (`Dataset.encoding`).
        max_candidates: the longest candidate list a request may send (413 beyond).
    """

    def __init__(
        self, encoding: MovieLensEncoding, *, max_candidates: int = DEFAULT_MAX_CANDIDATES
    ) -> None:
        if max_candidates < 1:
            raise ConfigError(f"max_candidates={max_candidates} < 1", "allow at least 1")
        self._encoding = encoding
        self.max_candidates = max_candidates
        # A dict answers one user id in ~50 ns; users are looked up one per request.
        self._user_rows = {int(u): row for row, u in enumerate(encoding.users.ids.tolist())}
        self._catalogue = encoding.items.ids.copy()
        self._catalogue.setflags(write=False)
        self._row_of_id = row_lookup(self._catalogue)
        self._all_items = np.arange(len(self._catalogue))
        self.now = encoding.last_timestamp
        self._at_now = encoding.at(self.now)
        # The schema of the dataset the store was built from; serving checks a model's
        # against it, so rows are never encoded for a model trained on other vocabularies.
        self.schema: FeatureSchema | None = None

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, *, max_candidates: int = DEFAULT_MAX_CANDIDATES
    ) -> FeatureStore:
        """The store of a dataset with users and items; ConfigError for one without."""
        if dataset.encoding is None:
            raise ConfigError(
                f"dataset {dataset.name!r} has no users or items, so it cannot serve rank requests",
                "ranking needs a user to rank items for: give the server users and items "
                "tables (--users, --items), or serve a dataset that has them (movielens-100k, "
                "criteo-synthetic, a dataset spec of your own)",
            )
        store = cls(dataset.encoding, max_candidates=max_candidates)
        store.schema = dataset.schema
        return store

    @property
    def catalogue(self) -> np.ndarray:
        """Every item id that can be ranked, sorted (int64, read-only)."""
        return self._catalogue

    @property
    def user_ids(self) -> np.ndarray:
        """Every user id of the dataset."""
        return self._encoding.users.ids

    def knows_user(self, user_id: object) -> bool:
        """Whether `user_id` is a user of the dataset (False for anything not an integer)."""
        return is_user_id_in(user_id, self._user_rows)

    async def fetch(
        self,
        user_id: int,
        item_ids: Sequence[int] | np.ndarray | None = None,
        raw: Mapping[str, object] | None = None,
    ) -> tuple[Rows, np.ndarray]:
        """`rows`, for serving: in memory, so answered at once."""
        return self.rows(user_id, item_ids, raw)

    def rows(
        self,
        user_id: int,
        item_ids: Sequence[int] | np.ndarray | None = None,
        raw: Mapping[str, object] | None = None,
    ) -> tuple[Rows, np.ndarray]:
        """The model input for `user_id` against each candidate, one row per candidate.

        Args:
            user_id: a user the store knows, or any id when `raw` describes the user.
            item_ids: candidate item ids, distinct; None ranks the whole catalogue.
            raw: raw feature values (RAW_FEATURES) that replace the stored ones in every row;
                `timestamp` scores the rows at that time instead of `self.now`.

        Returns:
            The rows and the int64 item ids in their order (the request's order).

        Raises:
            RequestError: a malformed request (400); PayloadTooLargeError: too many candidates
            (413); NotFoundError: an unknown user without raw features, or unknown items (404).
        """
        user = user_id_of(user_id)
        features = parse_raw(raw)
        ids = (
            self._catalogue.copy()
            if item_ids is None
            else candidate_ids(item_ids, self.max_candidates)
        )
        users, user_row = self._user(user, features)
        item_rows = self._all_items if item_ids is None else self._item_rows(ids)
        if users is self._encoding.users and features.timestamp in (None, self.now):
            return Rows(*self._at_now.rows(user_row, item_rows)), ids
        rated_at = float(self.now if features.timestamp is None else features.timestamp)
        # One user at one time against every candidate: length-1 rows broadcast.
        encoded = self._encoding.encode_rows(
            users, np.array([user_row]), item_rows, np.array([rated_at])
        )
        return Rows(*encoded), ids

    def _user(self, user: int, features: RawFeatures) -> tuple[UserTable, int]:
        """The user table and row the request's rows take their user features from."""
        row = self._user_rows.get(user)
        if not features.describes_user:
            if row is None:
                raise NotFoundError(
                    f"unknown user {user}",
                    "send a known user_id, or the user's raw features "
                    f"({', '.join(USER_FEATURES)}) to score a new user",
                )
            return self._encoding.users, row
        one = self._encoding.user(
            row,
            age=features.age,
            gender=features.gender,
            occupation=features.occupation,
            zip_code=features.zip_code,
        )
        return one, 0

    def _item_rows(self, ids: np.ndarray) -> np.ndarray:
        """Each id's row in the catalogue; NotFoundError naming the ids it does not hold."""
        catalogue = self._catalogue
        return catalogue_rows(
            ids,
            catalogue,
            self._row_of_id,
            f"the catalogue has {len(catalogue)} items, ids {catalogue[0]} to "
            f"{catalogue[-1]}; leave candidates out to rank all of them",
        )


def catalogue_rows(
    ids: np.ndarray, catalogue: np.ndarray, row_of_id: np.ndarray | None, hint: str
) -> np.ndarray:
    """Each id's row in the sorted `catalogue` (`row_of_id`: its `row_lookup`, or None);
    NotFoundError naming the ids it does not hold."""
    if row_of_id is not None:
        # The usual case, every id known, in three numpy calls: a clipped gather, then each
        # row's id compared with the request's (an unknown id's row, -1 or a clipped
        # neighbour's, holds another id). Any miss takes the path below, which names them.
        rows = row_of_id.take(ids, mode="clip")
        if (catalogue.take(rows) == ids).all():
            return rows
        inside = (ids >= 0) & (ids < len(row_of_id))
        rows = row_of_id.take(np.where(inside, ids, 0))
        unknown = ~inside | (rows < 0)
    else:
        rows = np.minimum(np.searchsorted(catalogue, ids), len(catalogue) - 1)
        unknown = catalogue[rows] != ids
    if unknown.any():
        missing = ids[unknown]
        raise NotFoundError(f"{len(missing)} unknown item id(s): {describe_ids(missing)}", hint)
    return rows


def is_user_id_in(user_id: object, rows: Mapping[int, int]) -> bool:
    """Whether `user_id` is an integer key of `rows` (False for anything not an integer)."""
    return (
        isinstance(user_id, int | np.integer)
        and not isinstance(user_id, bool | np.bool_)
        and int(user_id) in rows
    )
