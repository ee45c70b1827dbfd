"""The model's three input tensors checked against its schema and turned into `Rows`.

Decoding gives named arrays of any datatype; this module says whether they are the batch the
model takes (names, datatypes, shapes, ids inside their tables, finite dense values) and hands
them on without a copy where an executor can take them as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from recaccel.data.rows import Rows
from recaccel.data.schema import INPUT_NAMES, Feature, FeatureSchema
from recaccel.serve.errors import PayloadTooLargeError, RequestError
from recaccel.serve.protocol.wire import DATATYPE_OF, DATATYPES


@dataclass(frozen=True)
class ModelInput:
    """What one of the model's three inputs must be, derived once per schema."""

    name: str
    datatype: str
    accepted: tuple[str, ...]  # datatypes taken, cast to `datatype`
    tail: tuple[int, ...]  # the shape after the batch dimension
    fields: tuple[Feature, ...]  # one per column (axis 1)
    limits: np.ndarray | None  # uint64 cardinalities, broadcast against one row; None: dense

    @property
    def wanted(self) -> str:
        return f"{self.datatype} {[-1, *self.tail]}"

    @property
    def columns(self) -> str:
        names = ", ".join(f.name for f in self.fields) or "none"
        return f"{self.name} columns in order: {names}"


# The graph's input names, in order (export.py), and the schema kind each carries.
_DENSE, _CATEGORICAL, _MULTI_HOT = INPUT_NAMES

# Schema properties rebuild their tuples on every access (~2 µs each), which a request would
# pay a dozen times; schemas are few and long-lived, so each one's inputs are derived once.
_MODEL_INPUTS: dict[int, tuple[FeatureSchema, dict[str, ModelInput]]] = {}


def model_inputs(schema: FeatureSchema) -> dict[str, ModelInput]:
    """What each of the model's inputs must be for `schema`, by input name, in graph order."""
    cached = _MODEL_INPUTS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    if len(_MODEL_INPUTS) >= 64:
        _MODEL_INPUTS.clear()
    ids = ("INT64", "INT32")
    multi_hot = schema.multi_hot
    inputs = {
        _DENSE: ModelInput(_DENSE, "FP32", ("FP32",), (len(schema.dense),), schema.dense, None),
        _CATEGORICAL: ModelInput(
            _CATEGORICAL,
            "INT64",
            ids,
            (len(schema.categorical),),
            schema.categorical,
            _limits(schema.categorical),
        ),
        _MULTI_HOT: ModelInput(
            _MULTI_HOT,
            "INT64",
            ids,
            (len(multi_hot), schema.multi_hot_len),
            multi_hot,
            _limits(multi_hot)[:, None],
        ),
    }
    _MODEL_INPUTS[id(schema)] = (schema, inputs)
    return inputs


def _limits(fields: tuple[Feature, ...]) -> np.ndarray:
    return np.array([f.cardinality for f in fields], dtype=np.uint64)


def features_from_inputs(
    inputs: Mapping[str, np.ndarray], schema: FeatureSchema, max_rows: int
) -> Rows:
    """The model batch in `inputs`, checked against `schema`: names, datatypes, shapes, ids.

    An input whose per-row size is zero (a schema with no dense field, say) may be left out.
    More than `max_rows` rows is a `PayloadTooLargeError` (413); every other problem is a
    `RequestError` (400) naming the input and what it should have been. Arrays are kept
    without a copy where an executor can take them (writable, aligned, right dtype); views of a
    request body are read-only, so those are copied once, here.
    """
    specs = model_inputs(schema)
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise RequestError(
            f"unknown input(s) {unknown}", f"the model's inputs are: {', '.join(specs)}"
        )
    for spec in specs.values():
        if spec.name not in inputs and math.prod(spec.tail) > 0:
            raise RequestError(
                f"input {spec.name!r} is missing; the model wants {spec.wanted}",
                f"see GET /v2/models/<name> for the inputs; {spec.columns}",
            )
    arrays = {name: _model_input(array, specs[name]) for name, array in inputs.items()}
    rows = _rows({name: a.shape[0] for name, a in arrays.items()})
    if rows > max_rows:
        raise PayloadTooLargeError(
            f"the request has {rows} rows; this server takes at most {max_rows} per request",
            "split the request",
        )
    for spec in specs.values():
        if spec.name not in arrays:  # zero values per row: nothing to send
            arrays[spec.name] = np.zeros((rows, *spec.tail), DATATYPES[spec.datatype])
    _check_ids(arrays[_CATEGORICAL], specs[_CATEGORICAL])
    _check_ids(arrays[_MULTI_HOT], specs[_MULTI_HOT])
    _check_finite(arrays[_DENSE], specs[_DENSE])
    return Rows(arrays[_DENSE], arrays[_CATEGORICAL], arrays[_MULTI_HOT])


def _model_input(array: np.ndarray, spec: ModelInput) -> np.ndarray:
    """`array` as an executor can take it without a copy, or why it is not the model's input."""
    got = DATATYPE_OF.get((array.dtype.kind, array.dtype.itemsize))
    if got not in spec.accepted:
        raise RequestError(
            f"input {spec.name!r} is {got or array.dtype}; the model wants {spec.datatype}",
            f"send {' or '.join(spec.accepted)}",
        )
    if array.shape[1:] != spec.tail or array.ndim != 1 + len(spec.tail):
        raise RequestError(
            f"input {spec.name!r} has shape {list(array.shape)}; the model wants {spec.wanted}",
            f"-1 is the number of rows; {spec.columns}",
        )
    return np.require(array, DATATYPES[spec.datatype], ("C", "A", "W"))


def _rows(rows: Mapping[str, int]) -> int:
    """B, the rows every input has, or why there is no one B."""
    if len(set(rows.values())) > 1:
        raise RequestError(
            f"inputs disagree on the number of rows: {dict(rows)}",
            "row i of every input describes the same candidate",
        )
    count = int(next(iter(rows.values())))
    if count < 1:
        raise RequestError("the request has 0 rows; send at least one")
    return count


def _check_finite(dense: np.ndarray, spec: ModelInput) -> None:
    """Refuse NaN and infinity, which would come back as a NaN score (JSON null)."""
    finite = np.isfinite(dense)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise RequestError(
            f"input {spec.name!r} at [{row}, {column}] ({spec.fields[column].name!r}) is "
            f"{dense[row, column]}",
            "dense features must be finite numbers",
        )


def _check_ids(ids: np.ndarray, spec: ModelInput) -> None:
    """Refuse an id outside its field's embedding table, which a backend would fail on.

    Viewed as unsigned, a negative id is huge, so one comparison catches both ends.
    """
    if ids.size == 0 or spec.limits is None:
        return
    bad = ids.view(np.uint64) >= spec.limits
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        field_ = spec.fields[where[1]]
        raise RequestError(
            f"input {spec.name!r} at {list(where)} ({field_.name!r}) is id {ids[where]}, "
            f"outside [0, {field_.cardinality})",
            "encode values with the model's schema; 0 is the id of an unknown value",
        )
