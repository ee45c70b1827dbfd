"""Model-input rows as numpy arrays: what serving carries from a request to its executor.

`FeatureBatch` (dataset.py) holds the same three inputs as torch tensors, for training and the
PyTorch executors. Serving keeps numpy from the request body to the executor and back: ONNX
Runtime and OpenVINO read numpy as it is, the PyTorch executors wrap it without a copy
(`torch.from_numpy`), and a request path that never builds a tensor pays no torch dispatch per
request. Shapes, as in schema.py:

    dense        (B, n_dense)            float32
    categorical  (B, n_categorical)      int64
    multi_hot    (B, n_multi_hot, L)     int64

Rows may also say which rank request each row belongs to (`requests`: the row counts of
consecutive runs of rows that share one request's user and context). An executor that computes
the request's share of the model once (request-level reuse, models/split) reads it; None means
no such grouping is known (an OIP batch, training rows), and each row is its own request.
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
    requests: np.ndarray | None = None  # (R,) int64 row counts per request, summing to B

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def __getitem__(self, rows: slice) -> Rows:
        """A slice of the rows (views, no copy), its request grouping cut to match."""
        requests = self.requests
        if requests is not None:
            start, stop, step = rows.indices(len(self))
            if step != 1:
                raise ValueError("Rows take contiguous slices only")
            ends = np.cumsum(requests)
            counts = np.clip(ends, start, stop) - np.clip(ends - requests, start, stop)
            requests = counts[counts > 0]
        return Rows(self.dense[rows], self.categorical[rows], self.multi_hot[rows], requests)

    def as_one_request(self) -> Rows:
        """These rows, grouped as one rank request (every row shares its request columns)."""
        return Rows(self.dense, self.categorical, self.multi_hot, np.array([len(self)]))

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.dense, self.categorical, self.multi_hot

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        """One batch of every part's rows, in order; the part itself when there is one."""
        if len(parts) == 1:
            return parts[0]
        requests = None
        if any(p.requests is not None for p in parts):
            requests = np.concatenate(
                [p.requests if p.requests is not None else np.ones(len(p), np.int64) for p in parts]
            )
        return Rows(
            np.concatenate([p.dense for p in parts]),
            np.concatenate([p.categorical for p in parts]),
            np.concatenate([p.multi_hot for p in parts]),
            requests,
        )

    def request_starts(self) -> tuple[np.ndarray, np.ndarray]:
        """Each request's first row, and each row's request (its index in `requests`); with
        no grouping, every row is its own request."""
        if self.requests is None:
            every = np.arange(len(self))
            return every, every
        counts = self.requests
        starts = np.cumsum(counts) - counts
        return starts, np.repeat(np.arange(len(counts)), counts)

    def request_rows(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
        """Each request's request row (its first: a request's request-side columns are equal
        in all its rows) as the three arrays, and each row's request."""
        starts, owner = self.request_starts()
        return (
            self.dense.take(starts, axis=0),
            self.categorical.take(starts, axis=0),
            self.multi_hot.take(starts, axis=0),
        ), owner
