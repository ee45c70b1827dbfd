"""The search's timers on the serving runtimes (optimize/trial_timing.py says why it times there).

ONNX Runtime: each student is exported (its split twin, with reuse), checked against PyTorch
as every export is, and timed in a session of the measurement's threads. An export costs a
second or two per trial, against the trial's training. torch-aot would match a torch-aot
server more closely, but compiling costs tens of seconds per student; ONNX Runtime stands in
for the compiled runtimes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recaccel.data.dataset import FeatureBatch
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.split import from_model
from recaccel.optimize.latency import Scorer
from recaccel.optimize.trial_timing import ModelTimer, eager_scorer
from recaccel.runtime.executor import as_rows
from recaccel.runtime.export import (
    UnsupportedOnBackendError,
    export_onnx,
    onnx_feeds,
    onnx_session,
)
from recaccel.runtime.reuse import split_inputs
from recaccel.runtime.split_export import export_split_onnx, split_feeds


class OnnxScorer:
    """An ONNX Runtime session called as a scorer of (dense, categorical, multi_hot).

    With `one_request` the session runs a split graph and the rows are one rank request whose
    request row is the first, as `OneRankRequest` calls a twin in PyTorch.
    """

    def __init__(self, session: Any, one_request: bool) -> None:
        self.session = session
        self.one_request = one_request

    def __call__(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        batch = FeatureBatch(dense, categorical, multi_hot)
        if self.one_request:
            feeds = split_feeds(split_inputs(as_rows(batch).as_one_request()))
        else:
            feeds = onnx_feeds(batch)
        return torch.from_numpy(self.session.run(None, feeds)[0])


def onnx_scorer(model: nn.Module, schema: FeatureSchema, one_request: bool, threads: int) -> Scorer:
    """The model exported and run in ONNX Runtime on `threads` intra-op threads."""
    with tempfile.TemporaryDirectory(prefix="recaccel-trial-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            if one_request:
                export_split_onnx(from_model(model, schema), schema, path)
            else:
                export_onnx(model, schema, path)
        except UnsupportedOnBackendError as error:
            raise ConfigError(
                f"the search cannot time this {type(model).__name__} on ONNX Runtime: {error}",
                'time it with latency_backend = "torch-eager"',
            ) from None
        session = onnx_session(path, threads)  # the graph is in memory from here
    return OnnxScorer(session, one_request)


SEARCH_TIMERS: Mapping[str, ModelTimer] = {"torch-eager": eager_scorer, "onnxruntime": onnx_scorer}
