"""One LoadGen run's result, and our verdict on it beside LoadGen's.

LoadGen judges a run VALID or INVALID on its own measure (loadgen_log.py); it counts a refusal
as a fast success and cannot know whether every sample was answered once. `ScenarioResult`
holds both LoadGen's result and our books (sut.py), and says whether the run meets its latency
bound by both. Running the scenarios is loadgen.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recaccel.bench.books import Ranked
from recaccel.bench.loadgen_log import LATENCY_NOT_MET, LoadGenResult
from recaccel.bench.sut import SutReport

LATENCY_PERCENTILE = 0.99
KEPT_UP = 0.95  # completed / target QPS at which a run is taken to have kept up


def late_allowance(requests: int) -> int:
    """How many of `requests` may end past the bound with the percentile still within it."""
    return math.floor(round((1 - LATENCY_PERCENTILE) * requests, 9))


@dataclass(frozen=True)
class ScenarioResult:
    """One LoadGen run, its verdict and our books.

    `meets_bound`: LoadGen says VALID (latency percentile within the bound, enough queries and
    time, early stopping satisfied) and `bound_misses` finds nothing: every sample completed
    exactly once, none failed, and the percentile still holds with each refusal counted as an
    answer past the bound. LoadGen alone counts a refusal as a fast answer, which would let a
    server meet any bound by refusing; refusing nothing at all is more than a p99 asks, and four
    refusals in 15,000 requests ended a search at a run whose p99 was 42.9 ms of 50.
    """

    scenario: str
    target_qps: float  # Server: server_target_qps; Offline: offline_expected_qps
    latency_bound_ms: float | None
    loadgen: LoadGenResult
    sut: SutReport
    wall_s: float
    client_cpu_s: float  # this process: LoadGen and the client
    server_cpu_s: float | None  # the server's process tree; None without a pid
    out_dir: Path
    answered_late: int = 0  # 200s answered after `latency_bound_ms` (client latency)
    rankings: Mapping[int, Ranked] = field(default_factory=dict, repr=False, compare=False)
    # Every completed sample's client latency (ms): for CDFs; not in `to_dict`.
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def requests(self) -> int:
        return self.sut.books.completed

    @property
    def ok_qps(self) -> float:
        """Answered (200) requests per second of the run: LoadGen's QPS counts a refusal as a
        fast completion, so an Offline run against a server that sheds reads this instead."""
        return self.sut.books.ok / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def server_cpu_s_per_1k(self) -> float | None:
        if self.server_cpu_s is None or self.requests == 0:
            return None
        return self.server_cpu_s / self.requests * 1000

    @property
    def client_cpu_s_per_1k(self) -> float | None:
        return None if self.requests == 0 else self.client_cpu_s / self.requests * 1000

    @property
    def bound_misses(self) -> tuple[str, ...]:
        """What our books find wrong with the run, beyond LoadGen's verdict; () when nothing."""
        books, misses = self.sut.books, []
        if not books.consistent:
            misses.append("samples lost or completed twice")
        if books.failed:
            misses.append(f"{books.failed} failed")
        late, allowed = books.rejected + self.answered_late, late_allowance(books.completed)
        if books.rejected and late > allowed:
            misses.append(
                f"{books.rejected} refused + {self.answered_late} answered late "
                f"> the {allowed} a p{LATENCY_PERCENTILE * 100:g} allows"
            )
        return tuple(misses)

    @property
    def meets_bound(self) -> bool:
        return self.loadgen.valid and not self.bound_misses

    @property
    def meets_bound_briefly(self) -> bool:
        """What a short run can show: the latency bound held by LoadGen's own measure, the
        server kept up with the arrivals (95%), and `bound_misses` finds nothing. LoadGen's
        statistical requirements (early stopping, minimum queries and duration) are left to
        runs long enough for them: the served selection's runs are short, and confirms its
        choice by measuring it again."""
        latency_met = LATENCY_NOT_MET not in self.loadgen.reasons
        kept_up = self.loadgen.completed_qps >= KEPT_UP * self.target_qps
        return latency_met and kept_up and not self.bound_misses

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (rankings left out: they are for the accuracy check)."""
        data = {
            name: getattr(self, name)
            for name in (
                "scenario",
                "target_qps",
                "latency_bound_ms",
                "wall_s",
                "client_cpu_s",
                "server_cpu_s",
                "answered_late",
                "requests",
                "ok_qps",
                "server_cpu_s_per_1k",
                "client_cpu_s_per_1k",
                "meets_bound",
                "bound_misses",
            )
        }
        data["out_dir"] = str(self.out_dir)
        data["loadgen"] = asdict(self.loadgen)
        data["sut"] = asdict(self.sut)
        return data
