"""The feature schema: one object that models, export and serving read.

Layers never count fields themselves; they ask the schema. A model's input is three tensors
whose column order is the schema's order within each kind:

    dense        (B, n_dense)            float32
    categorical  (B, n_categorical)      int64, index 0 = unknown / out of vocabulary
    multi_hot    (B, n_multi_hot, L)     int64, index 0 = padding, L = max `max_len`

A kind with no features still has its tensor, with a zero-sized axis, so every model and every
exported graph has the same three inputs.

Each feature also has a side. In a rank request one user's row is scored against n candidate
items: a `request` feature (the user's, the context's) has one value for the whole request, a
`candidate` feature (the item's, or a user × item pair's) one per candidate. The side says what
may be computed once per request; a feature whose side is unknown is a candidate feature, read
per row, which is always correct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from recaccel.errors import ConfigError

# The three tensors' names where a model's graph names its inputs (ONNX, Triton, OIP), and its
# output's: (B,) float32 logits.
INPUT_NAMES = ("dense", "categorical", "multi_hot")
OUTPUT_NAME = "score"


class Side(StrEnum):
    REQUEST = "request"  # one value per rank request: the user's, the context's
    CANDIDATE = "candidate"  # one value per candidate row: the item's, a user x item pair's


class FeatureKind(StrEnum):
    DENSE = "dense"
    CATEGORICAL = "categorical"  # one id per row: a plain embedding lookup
    MULTI_HOT = "multi_hot"  # a bag of ids per row: a pooled embedding bag


@dataclass(frozen=True)
class Feature:
    """One input field.

    Args:
        name: unique within the schema.
        kind: dense, categorical or multi-hot.
        cardinality: number of embedding rows, index 0 included (unknown id or padding).
        max_len: multi-hot only: ids per row, padded with 0.
        vocabulary: raw value of index i+1 for string-valued fields; None where the index is
            the raw integer id itself (or the field is dense).
        description: what the field is, for `inspect` and for people.
        side: request (one value per rank request) or candidate (one per candidate row).
    """

    name: str
    kind: FeatureKind
    cardinality: int = 0
    max_len: int = 1
    vocabulary: tuple[str, ...] | None = None
    description: str = ""
    # Not compared: two schemas that encode the same features the same way are the same
    # contract for a model, whichever side serving computes them on (an artifact saved before
    # sides existed still matches its dataset's schema).
    side: Side = field(default=Side.CANDIDATE, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a feature needs a name")
        if self.kind is FeatureKind.DENSE:
            if self.cardinality or self.vocabulary:
                raise ConfigError(f"dense feature {self.name!r} cannot have a cardinality")
            return
        if self.cardinality < 2:
            raise ConfigError(
                f"feature {self.name!r}: cardinality {self.cardinality} < 2",
                "count index 0 (unknown/padding) plus at least one real id",
            )
        if self.kind is FeatureKind.MULTI_HOT and self.max_len < 1:
            raise ConfigError(f"multi-hot feature {self.name!r} needs max_len >= 1")
        if self.vocabulary is not None and len(self.vocabulary) + 1 != self.cardinality:
            raise ConfigError(
                f"feature {self.name!r}: {len(self.vocabulary)} vocabulary entries "
                f"but cardinality {self.cardinality}",
                "cardinality must be len(vocabulary) + 1 (index 0 is unknown)",
            )

    def embedding_dim_hint(self, max_dim: int) -> int:
        """A mixed-dimension size for this field's embedding, capped at `max_dim`.

        The common rule of thumb (Google's feature-column guide, used by mixed-dimension
        embedding work): about 6 * cardinality ** 0.25, rounded up to a multiple of 4 so
        vectorised kernels stay aligned. Small tables get small vectors; a 3-value field
        needs no 128-wide embedding.
        """
        if self.kind is FeatureKind.DENSE:
            raise ConfigError(f"dense feature {self.name!r} has no embedding")
        hint = 4 * math.ceil(6 * self.cardinality**0.25 / 4)
        return int(max(4, min(max_dim, hint)))


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered features of a dataset plus its label name."""

    features: tuple[Feature, ...]
    label: str = "label"
    name: str = ""
    _by_name: dict[str, Feature] = field(init=False, repr=False, compare=False)
    _by_kind: dict[FeatureKind, tuple[Feature, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"duplicate feature names in schema: {duplicates}")
        if not self.features:
            raise ConfigError("a schema needs at least one feature")
        object.__setattr__(self, "_by_name", {f.name: f for f in self.features})
        # Asked for on every served batch (executor.check_batch): built once.
        kinds = {k: tuple(f for f in self.features if f.kind is k) for k in FeatureKind}
        object.__setattr__(self, "_by_kind", kinds)

    def of_kind(self, kind: FeatureKind) -> tuple[Feature, ...]:
        return self._by_kind[kind]

    @property
    def dense(self) -> tuple[Feature, ...]:
        return self.of_kind(FeatureKind.DENSE)

    @property
    def categorical(self) -> tuple[Feature, ...]:
        return self.of_kind(FeatureKind.CATEGORICAL)

    @property
    def multi_hot(self) -> tuple[Feature, ...]:
        return self.of_kind(FeatureKind.MULTI_HOT)

    @property
    def sparse(self) -> tuple[Feature, ...]:
        """Every embedded field, categorical first then multi-hot: the order models embed in."""
        return self.categorical + self.multi_hot

    def on_side(self, side: Side) -> tuple[Feature, ...]:
        """The features of one side, in schema order."""
        return tuple(f for f in self.features if f.side is side)

    def columns_on_side(self, side: Side) -> tuple[tuple[int, ...], ...]:
        """The columns of one side's features in each of the three tensors (dense,
        categorical, multi-hot), e.g. to copy a request's row into its candidates' rows."""
        return tuple(
            tuple(i for i, f in enumerate(self.of_kind(kind)) if f.side is side)
            for kind in (FeatureKind.DENSE, FeatureKind.CATEGORICAL, FeatureKind.MULTI_HOT)
        )

    @property
    def multi_hot_len(self) -> int:
        """L, the padded bag length of the multi-hot tensor (1 when there is no such field)."""
        return max((f.max_len for f in self.multi_hot), default=1)

    def __getitem__(self, name: str) -> Feature:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(
                f"schema {self.name!r} has no feature {name!r}",
                f"known features: {', '.join(self._by_name)}",
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "features": [
                {
                    "name": f.name,
                    "kind": f.kind.value,
                    "cardinality": f.cardinality,
                    "max_len": f.max_len,
                    "vocabulary": list(f.vocabulary) if f.vocabulary is not None else None,
                    "description": f.description,
                    "side": f.side.value,
                }
                for f in self.features
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        try:
            features = tuple(
                Feature(
                    name=f["name"],
                    kind=FeatureKind(f["kind"]),
                    cardinality=int(f.get("cardinality", 0)),
                    max_len=int(f.get("max_len", 1)),
                    vocabulary=tuple(f["vocabulary"]) if f.get("vocabulary") is not None else None,
                    description=f.get("description", ""),
                    side=Side(f.get("side", Side.CANDIDATE)),
                )
                for f in data["features"]
            )
            return cls(
                features=features, label=data.get("label", "label"), name=data.get("name", "")
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"malformed feature schema: {exc!r}",
                "a schema is {'features': [{'name', 'kind', 'cardinality', ...}], 'label'}",
            ) from None
