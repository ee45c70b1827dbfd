"""Model-input rows as numpy arrays: what serving carries from a request to its executor.

`FeatureBatch` (dataset.py) holds the same three inputs as torch tensors, for training and the
PyTorch executors. Serving keeps numpy from the request body to the executor and back: ONNX
Runtime and OpenVINO read numpy as it is, the PyTorch executors wrap it without a copy
(`torch.from_numpy`), and a request path that never builds a tensor pays no torch dispatch per
request. Shapes, as in schema.py:

    dense        (B, n_dense)            float32
    categorical  (B, n_categorical)      int64
    multi_hot    (B, n_multi_hot, L)     int64
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rows:
    """B rows of the three model inputs (see the module docstring)."""

    dense: np.ndarray
    categorical: np.ndarray
    multi_hot: np.ndarray

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def __getitem__(self, rows: slice) -> Rows:
        """A slice of the rows (views, no copy)."""
        return Rows(self.dense[rows], self.categorical[rows], self.multi_hot[rows])

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.dense, self.categorical, self.multi_hot

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        """One batch of every part's rows, in order; the part itself when there is one."""
        if len(parts) == 1:
            return parts[0]
        return Rows(
            np.concatenate([p.dense for p in parts]),
            np.concatenate([p.categorical for p in parts]),
            np.concatenate([p.multi_hot for p in parts]),
        )
