"""What `recaccel bench` measured, as plain data, and the headline drawn from it.

Everything a report shows is here, flattened from LoadGen's results (`RunSummary.of`), so the
report and its plots can be rendered — and tested — from a canned result without a server.

The headline compares recaccel with the baseline three ways, each against the seed paper's bar
and this project's aim:

- **latency**: recaccel's p99 at the *reference load*, as a fraction of the baseline's p99
  there. The reference load is the baseline's highest QPS within the SLO. A baseline that meets
  the SLO at no load (its largest requests alone take longer than the SLO) has none; then it is
  the highest load the baseline kept up with (completed at least 95% of the scheduled QPS and
  shed nothing), or failing that the lowest load tried — `reference_basis` says which.
- **throughput**: recaccel's highest QPS within the SLO over the baseline's. Where the baseline
  has none, over the baseline's Offline throughput instead: its maximum with no latency bound
  at all, a figure that flatters the baseline, so the ratio errs low.
- **accuracy**: the relative change of the test AUC computed from recaccel's served scores
  against the baseline's served scores (a loss of at most 0.1% passes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recaccel.bench.plan import BASELINE, RECACCEL
from recaccel.bench.scenario_result import ScenarioResult
from recaccel.defaults import DEFAULT_RELATIVE_BUDGET

KEPT_UP_FRACTION = 0.95  # completed / scheduled QPS for a run to count as keeping up
CDF_PERCENTILES = tuple(float(p) for p in np.linspace(0, 100, 201))
PAPER_P99_FRACTION = 0.30  # the seed paper: latency "less than 30% of the baseline"
AIM_P99_FRACTION = 0.10
PAPER_QPS_RATIO = 2.0  # the seed paper: throughput "more than double"
AIM_QPS_RATIO = 30.0


@dataclass(frozen=True)
class RunSummary:
    """One LoadGen run, as a report needs it. Latencies are LoadGen's, in ms."""

    scenario: str  # "Server" or "Offline"
    target_qps: float
    valid: bool  # LoadGen's verdict
    meets_bound: bool  # VALID, and no `misses`
    reasons: tuple[str, ...]  # why INVALID
    scheduled_qps: float | None  # Server only
    completed_qps: float  # LoadGen's; counts a refusal as a completion
    ok_qps: float  # answered (200) requests per second of wall time
    samples: int  # requests sent (an Offline run is one LoadGen query of them all)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    ok: int
    rejected: int
    failed: int
    consistent: bool
    server_cpu_s_per_1k: float | None
    client_cpu_s_per_1k: float | None
    client_loop_lag_p99_ms: float
    wall_s: float
    log_dir: str
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)  # reason code -> count
    # What our books found wrong beyond LoadGen's verdict (ScenarioResult.bound_misses).
    misses: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: ScenarioResult) -> RunSummary:
        lg, books = result.loadgen, result.sut.books
        percentile = lg.latency.percentiles

        def ms(p: str) -> float:
            return percentile.get(p, 0) / 1e6

        return cls(
            scenario=result.scenario,
            target_qps=result.target_qps,
            valid=lg.valid,
            meets_bound=result.meets_bound,
            reasons=lg.reasons,
            scheduled_qps=lg.scheduled_qps,
            completed_qps=lg.completed_qps,
            ok_qps=result.ok_qps,
            samples=books.issued,
            p50_ms=ms("50.00"),
            p90_ms=ms("90.00"),
            p99_ms=ms("99.00"),
            p999_ms=ms("99.90"),
            ok=books.ok,
            rejected=books.rejected,
            failed=books.failed,
            consistent=books.consistent,
            server_cpu_s_per_1k=result.server_cpu_s_per_1k,
            client_cpu_s_per_1k=result.client_cpu_s_per_1k,
            client_loop_lag_p99_ms=result.sut.overhead.loop_lag.p99_ms,
            wall_s=result.wall_s,
            log_dir=str(result.out_dir),
            rejected_by_reason=dict(books.rejected_by_reason),
            misses=result.bound_misses,
        )

    @property
    def verdict(self) -> str:
        return "VALID" if self.valid else "INVALID"

    @property
    def rejected_with_reasons(self) -> str:
        """The refusals, their reasons named where the server gave them: "5 (deadline 3,
        queue_full 2)", or "0"."""
        reasons = ", ".join(f"{reason} {n}" for reason, n in self.rejected_by_reason.items())
        return f"{self.rejected}{f' ({reasons})' if reasons else ''}"

    @property
    def kept_up(self) -> bool:
        """The server answered everything at about the rate it was sent (a Server run)."""
        return (
            self.scheduled_qps is not None
            and self.completed_qps >= KEPT_UP_FRACTION * self.scheduled_qps
            and self.rejected + self.failed == 0
        )


@dataclass(frozen=True)
class AucChange:
    """Served test AUC minus the baseline's served AUC on the same rows, 95% paired bootstrap."""

    delta: float
    low: float
    high: float
    relative: float  # AUC / baseline AUC − 1


@dataclass(frozen=True)
class ConfigResult:
    name: str
    description: str
    command: str  # the exact `recaccel serve` command, with its environment
    artifact: str
    model: str  # e.g. "deepfm@8e22cda6"
    runtime: str  # backend, precision, threads, workers, batching
    artifact_test_auc: float | None  # recorded in the artifact's manifest
    served_auc: float | None  # from the scores this server returned
    auc_change: AucChange | None  # vs the baseline's served scores
    offline: RunSummary | None
    search: tuple[RunSummary, ...]  # the Server runs of the max-QPS search, in order
    search_stopped: str
    max_qps: float | None  # the highest target QPS whose run met the bound
    at_reference: RunSummary | None  # the Server run at the reference load
    reference_cdf_ms: tuple[float, ...] = ()  # client latency at CDF_PERCENTILES, that run

    @property
    def best_run(self) -> RunSummary | None:
        if self.max_qps is None:
            return None
        return next(
            (r for r in self.search if r.target_qps == self.max_qps and r.meets_bound), None
        )


def reference_load(baseline_runs: Sequence[RunSummary], max_qps: float | None) -> tuple[float, str]:
    """The load every configuration is compared at, and why it is that one (module
    docstring). `baseline_runs` are the baseline's search runs, at least one."""
    if max_qps is not None:
        return max_qps, "the baseline's highest QPS within the SLO"
    if not baseline_runs:
        raise ValueError("no baseline runs to choose a reference load from")
    kept = [r.target_qps for r in baseline_runs if r.kept_up]
    if kept:
        return max(kept), (
            "the baseline meets the SLO at no load tried: the highest load it kept up with "
            f"(completed ≥ {KEPT_UP_FRACTION:.0%} of the scheduled QPS, nothing shed)"
        )
    return min(r.target_qps for r in baseline_runs), (
        "the baseline meets the SLO at no load tried and kept up with none: the lowest load tried"
    )


def cdf_ms(latencies_ms: np.ndarray) -> tuple[float, ...]:
    """Latency at each of CDF_PERCENTILES; empty without latencies."""
    if len(latencies_ms) == 0:
        return ()
    return tuple(float(v) for v in np.percentile(latencies_ms, CDF_PERCENTILES))


@dataclass(frozen=True)
class Bar:
    """One claim: the measured value against the paper's bar and our aim."""

    claim: str
    value: float | None
    paper: float
    aim: float
    higher_is_better: bool
    basis: str = ""

    def _meets(self, bar: float) -> bool | None:
        if self.value is None:
            return None
        return self.value >= bar if self.higher_is_better else self.value <= bar

    @property
    def meets_paper(self) -> bool | None:
        return self._meets(self.paper)

    @property
    def meets_aim(self) -> bool | None:
        return self._meets(self.aim)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meets_paper": self.meets_paper, "meets_aim": self.meets_aim}


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return None if top is None or bottom is None or bottom <= 0 else top / bottom


@dataclass(frozen=True)
class Headline:
    reference_qps: float
    reference_basis: str
    baseline_p99_ms: float | None
    recaccel_p99_ms: float | None
    baseline_verdict: str | None  # LoadGen's, at the reference load
    recaccel_verdict: str | None
    baseline_max_qps: float | None
    recaccel_max_qps: float | None
    baseline_offline_qps: float | None
    bars: tuple[Bar, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bars"] = [bar.to_dict() for bar in self.bars]
        return data


def headline(
    baseline: ConfigResult, recaccel: ConfigResult, reference_qps: float, reference_basis: str
) -> Headline:
    """The three claims (module docstring) from the two configurations' results."""
    base_ref, ours_ref = baseline.at_reference, recaccel.at_reference
    base_p99 = None if base_ref is None else base_ref.p99_ms
    ours_p99 = None if ours_ref is None else ours_ref.p99_ms
    offline = None if baseline.offline is None else baseline.offline.ok_qps
    if baseline.max_qps is not None:
        qps_ratio = _ratio(recaccel.max_qps, baseline.max_qps)
        qps_basis = "both within the SLO"
    else:
        qps_ratio = _ratio(recaccel.max_qps, offline)
        qps_basis = (
            "the baseline has no QPS within the SLO: recaccel's highest QPS within it over the "
            "baseline's Offline throughput (no latency bound)"
        )
    relative = None if recaccel.auc_change is None else recaccel.auc_change.relative
    bars = (
        Bar(
            "p99 at the reference load, recaccel / baseline",
            _ratio(ours_p99, base_p99),
            PAPER_P99_FRACTION,
            AIM_P99_FRACTION,
            higher_is_better=False,
            basis=f"{reference_qps:.4g} QPS: {reference_basis}",
        ),
        Bar(
            "highest QPS within the SLO, recaccel / baseline",
            qps_ratio,
            PAPER_QPS_RATIO,
            AIM_QPS_RATIO,
            higher_is_better=True,
            basis=qps_basis,
        ),
        Bar(
            "served test AUC, relative change vs the baseline's",
            relative,
            -DEFAULT_RELATIVE_BUDGET,  # MLPerf's 99.9% of the reference accuracy
            -DEFAULT_RELATIVE_BUDGET,
            higher_is_better=True,
            basis="scores returned by each server on the whole test split",
        ),
    )
    return Headline(
        reference_qps=reference_qps,
        reference_basis=reference_basis,
        baseline_p99_ms=base_p99,
        recaccel_p99_ms=ours_p99,
        baseline_verdict=None if base_ref is None else base_ref.verdict,
        recaccel_verdict=None if ours_ref is None else ours_ref.verdict,
        baseline_max_qps=baseline.max_qps,
        recaccel_max_qps=recaccel.max_qps,
        baseline_offline_qps=offline,
        bars=bars,
    )


@dataclass(frozen=True)
class BenchResult:
    configs: tuple[ConfigResult, ...]
    slo_ms: float
    reference_qps: float
    reference_basis: str
    command: str  # the `recaccel bench` command that made it
    machine: dict[str, Any]
    settings: dict[str, Any]  # durations, query counts, search policy, seed
    workload: dict[str, Any]  # the candidate counts actually sent (SizeStats)
    profile: str  # the profile the selection used, and whether it was measured in this run
    test_rows: int
    started_at: str
    wall_s: float

    def config(self, name: str) -> ConfigResult:
        return next(c for c in self.configs if c.name == name)

    @property
    def headline(self) -> Headline:
        return headline(
            self.config(BASELINE), self.config(RECACCEL), self.reference_qps, self.reference_basis
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["headline"] = self.headline.to_dict()
        return data
