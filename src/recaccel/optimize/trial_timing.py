"""What the architecture search times a model on, and how a caller names another runtime.

PyTorch eager pays a fixed fraction of a millisecond of Python per call, whatever the batch.
That hides how a request's cost grows with its candidates: the search's DCNv2 students scaled
2.0–2.4× from 100 to 1,000 candidates timed in eager and 6.7× on ONNX Runtime, which is what
serves them (results/reuse.md). A search whose objective is that growth (`reuse = true`) should
time on a serving runtime: a search step's `latency_backend` names one.

The search lives below the runtimes (tests/test_layering.py), so it cannot export a graph
itself: it takes its timers from its caller, a mapping of backend name to `ModelTimer`.
`EAGER_ONLY` is what it has on its own; `recaccel optimize` passes the runtimes' set
(runtime/trial_timing.py: ONNX Runtime too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.models.split import OneRankRequest, from_model
from recaccel.optimize.latency import Scorer

# (model, schema, one_request, threads) -> what the search times: with one_request the model's
# split twin, scoring its rows as one rank request (models/split) — the model as it serves with
# reuse. ConfigError when the model cannot run there.
ModelTimer = Callable[[nn.Module, FeatureSchema, bool, int], Scorer]

DEFAULT_SEARCH_LATENCY_BACKEND = "torch-eager"


def eager_scorer(
    model: nn.Module, schema: FeatureSchema, one_request: bool, threads: int
) -> Scorer:
    """The model in PyTorch eager (the measurement sets the threads)."""
    return OneRankRequest(from_model(model, schema)) if one_request else model


EAGER_ONLY: Mapping[str, ModelTimer] = {"torch-eager": eager_scorer}


def timer_for(backend: str, timers: Mapping[str, ModelTimer]) -> ModelTimer:
    """The timer named `backend`; ConfigError naming the ones this caller gave."""
    timer = timers.get(backend)
    if timer is None:
        raise ConfigError(
            f"search latency_backend {backend!r} is not one this search can time on",
            f"use one of {', '.join(timers)} (the `recaccel optimize` command offers "
            "onnxruntime too)",
        )
    return timer
