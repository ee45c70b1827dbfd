"""Request-level reuse in the executors: the split twin as the form a backend runs, and a
batch's rows as the twin's inputs (docs/reuse.md).

A batch reaches an executor as rows that each hold their request's columns (what the feature
store builds) and `Rows.requests`, how many consecutive rows each request has. The twin takes
each request's first row as its request row and every row as a candidate row, with `owner`
saying whose it is; rows with no grouping (an OIP batch) are each their own request, which is
exact and saves nothing.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from recaccel.data.dataset import FeatureBatch
from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.split import SplitModel, from_model
from recaccel.runtime.executor import ExecutorConfig, ExecutorError, as_rows


def split_twin(model: nn.Module, schema: FeatureSchema, config: ExecutorConfig) -> SplitModel:
    """The twin of an executor's model, or ExecutorError saying why it has none."""
    try:
        return from_model(model, schema)
    except ConfigError as error:
        raise ExecutorError(config, f"request-level reuse: {error.message}", error.hint) from None


def split_inputs(batch: FeatureBatch | Rows) -> tuple[np.ndarray, ...]:
    """The twin's seven inputs: each request's row (its first), every row, each row's owner."""
    rows = as_rows(batch)
    request, owner = rows.request_rows()
    return (*request, *rows.as_tuple(), owner)
