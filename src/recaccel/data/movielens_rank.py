"""MovieLens-100K's rows for `/v1/rank` (the `RankRows` protocol of rank_rows.py).

The model learned from rows the dataset pipeline encoded, and a served score equals the
model's score on the same (user, item) row only if serving encodes that row the same way. So
this module re-implements no encoding: it keeps the dataset's `MovieLensEncoding` (every user
and item encoded once, plus the training statistics that standardise the dense features) and
sends each request's rows through the same encoding the training rows went through. Most
requests are scored at the dataset's now with stored users: for those, every user's and every
item's share of a row is encoded once at start-up (`MovieLensEncoding.at`), and a request
costs two numpy gathers. A request with its own time or raw user values goes through
`encode_rows` itself. Either way: numpy arrays, no torch, no pandas and no per-row Python.

Time. Two dense features depend on when a row is scored: the movie's age and the user's
tenure. A request is scored "now", and the dataset's now is its last rating time, the end of
the catalogue's time frame, not the wall clock: MovieLens-100K ends in April 1998, and a
wall-clock now would put every row decades past anything the model saw, far outside the range
its dense inputs were standardised on. A request may name its own time with the raw feature
`timestamp` (unix seconds), which is also how a dataset row is reproduced at its time.

Raw features. A request may carry raw user values (`age`, `gender`, `occupation`,
`zip_code`) that replace the stored ones for every row, encoded as training encodes them,
including its rule that a string outside a vocabulary is the unknown id 0. That is how a user
the dataset does not know is scored: with at least one raw user feature it is a new user
(unknown user id, features it did not send unknown, no rating history so tenure 0); with none
it is UnknownUserError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from recaccel.data.movielens_encoding import AGE_BINS, MovieLensEncoding
from recaccel.data.rank_rows import RawFeatureError, UnknownUserError
from recaccel.data.rows import Rows

USER_FEATURES = ("age", "gender", "occupation", "zip_code")
RAW_FEATURES = (*USER_FEATURES, "timestamp")
_MIN_AGE, _MAX_AGE = AGE_BINS[0], AGE_BINS[-1]  # the ages the training encoding has buckets for
# Unix seconds up to 2106 (2**32): past that a movie's age, in float32, is no longer a number a
# model has any use for, and far enough past it is inf.
_MAX_TIMESTAMP = 2**32


# What `parse_raw` takes, as JSON Schema (the OpenAPI document shows it for /v1/rank).
RAW_SCHEMA: dict[str, Any] = {
    "age": {"type": "number", "minimum": _MIN_AGE, "exclusiveMaximum": _MAX_AGE},
    "gender": {"type": "string"},
    "occupation": {"type": "string", "description": "unknown values encode as unknown"},
    "zip_code": {"type": "string"},
    "timestamp": {
        "type": "number",
        "minimum": 0,
        "exclusiveMaximum": _MAX_TIMESTAMP,
        "description": "unix seconds: the request's time",
    },
}


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
        raise RawFeatureError(f"raw feature {name!r} must be {what}, got {value!r}")
    return number


def _string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise RawFeatureError(
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
        raise RawFeatureError(
            f"raw features must be an object of name: value, got {type(raw).__name__}",
            f"known features: {', '.join(RAW_FEATURES)}",
        )
    unknown = sorted(str(name) for name in raw if name not in RAW_FEATURES)
    if unknown:
        raise RawFeatureError(
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


class MovieLensRankRows:
    """`RankRows` of a MovieLens encoding (module docstring); `now` is the time a request
    without a `timestamp` is scored at."""

    raw_features: tuple[str, ...] = RAW_FEATURES
    raw_schema: Mapping[str, Any] = MappingProxyType(RAW_SCHEMA)
    user_features: tuple[str, ...] = USER_FEATURES

    def __init__(self, encoding: MovieLensEncoding) -> None:
        self._encoding = encoding
        self.user_ids = encoding.users.ids
        self.item_ids = encoding.items.ids
        self.now = encoding.last_timestamp
        self._at_now = encoding.at(self.now)

    def rows(
        self, user_row: int | None, item_rows: np.ndarray, raw: Mapping[str, object] | None
    ) -> Rows:
        features = parse_raw(raw)
        encoding = self._encoding
        if not features.describes_user:
            if user_row is None:
                raise UnknownUserError("no such user, and no raw user features")
            users, row = encoding.users, user_row
        else:
            users, row = (
                encoding.user(
                    user_row,
                    age=features.age,
                    gender=features.gender,
                    occupation=features.occupation,
                    zip_code=features.zip_code,
                ),
                0,
            )
        if users is encoding.users and features.timestamp in (None, self.now):
            return Rows(*self._at_now.rows(row, item_rows))
        rated_at = float(self.now if features.timestamp is None else features.timestamp)
        # One user at one time against every candidate: length-1 rows broadcast.
        return Rows(*encoding.encode_rows(users, np.array([row]), item_rows, np.array([rated_at])))
