"""The embedded feature store: (user id, candidate item ids) -> the model's input rows.

/v1/rank scores one user against candidate items. A dataset with users and items (MovieLens,
a dataset spec of your own) says how its rows are encoded through the `RankRows` protocol
(data/rank_rows.py): the raw values a request may bring, what time means, how a new user is
encoded. The store here is the HTTP side of it, the same for every dataset: the candidate
list checked, the user and the items found, the dataset's refusals answered as statuses.
Other sources of rows (tables of your own, Redis) share the protocol below and the checks.

Candidates. Absent means the whole catalogue. Otherwise a non-empty list of distinct integer
item ids, at most `max_candidates` (413 beyond). Duplicates are refused (400): top-k over a
list with repeats is ambiguous (may one item take two of the k places?), and dropping them
quietly would answer fewer rows than the client sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from recaccel.data.dataset import Dataset
from recaccel.data.rank_rows import RankRows, RawFeatureError, UnknownUserError
from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.serve.errors import NotFoundError, PayloadTooLargeError, RequestError
from recaccel.serve.rank import int64_of

DEFAULT_MAX_CANDIDATES = 10_000
_SHOWN = 10  # ids named in one error message


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
    if ids.dtype.kind == "f" and ids.ndim == 1:
        ids = _whole_ids(item_ids, ids)  # JSON Schema's integers include 5.0
    elif isinstance(item_ids, list) and bool in map(type, item_ids):
        ids = np.asarray([], dtype=object)  # numpy reads [true, 2] as [1, 2]; JSON does not
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


def _whole_ids(item_ids: Sequence[int] | np.ndarray, as_floats: np.ndarray) -> np.ndarray:
    """The ids as int64 when every one is a whole number within int64 (ints kept exact, not
    through the float array numpy made of a mixed list); else `as_floats`, to be refused."""
    whole = [int64_of(v) for v in item_ids]
    return as_floats if None in whole else np.array(whole, dtype=np.int64)


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
    remote: bool  # a read leaves the process (admission is checked before it, app.py)

    @property
    def raw_schema(self) -> Mapping[str, Any]:
        """The raw values a request's `features` may carry, name -> JSON Schema (none: empty)."""
        ...

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


class InMemorySource(ABC):
    """A feature source whose rows are in this process: `fetch` is `rows`, answered at once."""

    remote = False

    @abstractmethod
    def rows(
        self,
        user_id: int,
        item_ids: Sequence[int] | np.ndarray | None = None,
        raw: Mapping[str, object] | None = None,
    ) -> tuple[Rows, np.ndarray]:
        """The rows of `user_id` against each candidate (None: the catalogue), and their ids."""

    async def fetch(
        self,
        user_id: int,
        item_ids: Sequence[int] | np.ndarray | None = None,
        raw: Mapping[str, object] | None = None,
    ) -> tuple[Rows, np.ndarray]:
        return self.rows(user_id, item_ids, raw)


class FeatureStore(InMemorySource):
    """A dataset's users and items, encoded once at start-up; `rows` builds a request's model
    input through the dataset's `RankRows` (module docstring).

    Args:
        rank_rows: the dataset's (`Dataset.encoding.rank_rows()`).
        max_candidates: the longest candidate list a request may send (413 beyond).
    """

    def __init__(
        self, rank_rows: RankRows, *, max_candidates: int = DEFAULT_MAX_CANDIDATES
    ) -> None:
        if max_candidates < 1:
            raise ConfigError(f"max_candidates={max_candidates} < 1", "allow at least 1")
        self._rank_rows = rank_rows
        self.max_candidates = max_candidates
        # A dict answers one user id in ~50 ns; users are looked up one per request.
        self._user_rows = {int(u): row for row, u in enumerate(rank_rows.user_ids.tolist())}
        self._catalogue = rank_rows.item_ids.copy()
        self._catalogue.setflags(write=False)
        self._row_of_id = row_lookup(self._catalogue)
        self._all_items = np.arange(len(self._catalogue))
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
        store = cls(dataset.encoding.rank_rows(), max_candidates=max_candidates)
        store.schema = dataset.schema
        return store

    @property
    def catalogue(self) -> np.ndarray:
        """Every item id that can be ranked, sorted (int64, read-only)."""
        return self._catalogue

    @property
    def raw_schema(self) -> Mapping[str, Any]:
        return self._rank_rows.raw_schema

    @property
    def user_ids(self) -> np.ndarray:
        """Every user id of the dataset."""
        return self._rank_rows.user_ids

    def knows_user(self, user_id: object) -> bool:
        """Whether `user_id` is a user of the dataset (False for anything not an integer)."""
        return is_user_id_in(user_id, self._user_rows)

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
            raw: raw feature values (the dataset's `raw_features`) that replace the stored
                ones in every row.

        Returns:
            The rows and the int64 item ids in their order (the request's order).

        Raises:
            RequestError: a malformed request or raw value (400); PayloadTooLargeError: too
            many candidates (413); NotFoundError: an unknown user without raw features, or
            unknown items (404).
        """
        user = user_id_of(user_id)
        ids = (
            self._catalogue.copy()
            if item_ids is None
            else candidate_ids(item_ids, self.max_candidates)
        )
        item_rows = self._all_items if item_ids is None else self._item_rows(ids)
        rank_rows = self._rank_rows
        try:
            return rank_rows.rows(self._user_rows.get(user), item_rows, raw), ids
        except RawFeatureError as error:
            raise RequestError(error.message, error.hint) from None
        except UnknownUserError:
            raise NotFoundError(
                f"unknown user {user}",
                "send a known user_id, or the user's raw features "
                f"({', '.join(rank_rows.user_features)}) to score a new user",
            ) from None

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
