"""When a Server run counts as within the latency bound: LoadGen's verdict, then our books —
nothing lost or failed, and the p99 still holding with every refusal counted as late."""

from __future__ import annotations

from pathlib import Path

import pytest

from recaccel.bench.books import Books, Outcome, Percentiles
from recaccel.bench.loadgen_log import LatencyNs, LoadGenResult
from recaccel.bench.scenario_result import ScenarioResult, late_allowance
from recaccel.bench.sut import ClientOverhead, SutReport

BOUND_MS = 50.0


def scenario(
    *, answered_ms: list[float], refused: int = 0, failed: int = 0, valid: bool = True
) -> ScenarioResult:
    books = Books()
    outcomes = (
        [Outcome(200, ms / 1e3) for ms in answered_ms]
        + [Outcome(429, 0.002, reason="server_overloaded")] * refused
        + [Outcome(None, 1.0, error="TimeoutError")] * failed
    )
    for sample_id, outcome in enumerate(outcomes):
        books.issue(sample_id, sample_id)
        books.complete(sample_id, outcome)
    loadgen = LoadGenResult(
        scenario="Server",
        valid=valid,
        reasons=() if valid else ("latency constraint not met",),
        scheduled_qps=100.0,
        completed_qps=100.0,
        query_count=len(outcomes),
        overlatency_count=0,
        latency=LatencyNs(0, 0, 0, {}),
        early_stopping="",
        errors=(),
    )
    overhead = ClientOverhead(1.0, 2.0, Percentiles(0, 0.0, 0.0, 0.0))
    return ScenarioResult(
        scenario="Server",
        target_qps=100.0,
        latency_bound_ms=BOUND_MS,
        loadgen=loadgen,
        sut=SutReport(books.report(), overhead),
        wall_s=10.0,
        client_cpu_s=1.0,
        server_cpu_s=None,
        out_dir=Path("unused"),
        answered_late=books.answered_over(BOUND_MS),
    )


@pytest.mark.parametrize("requests, allowed", [(99, 0), (100, 1), (1_000, 10), (15_099, 150)])
def test_a_p99_allows_one_request_in_a_hundred_past_the_bound(requests: int, allowed: int) -> None:
    assert late_allowance(requests) == allowed


def test_a_few_refusals_within_the_percentile_still_meet_the_bound() -> None:
    # 1,000 requests, 4 refused and 6 answered late: 10 past the bound, the 1% a p99 allows.
    result = scenario(answered_ms=[10.0] * 990 + [80.0] * 6, refused=4)
    assert result.answered_late == 6
    assert result.bound_misses == ()
    assert result.meets_bound


def test_refusals_that_push_the_percentile_past_the_bound_miss_it() -> None:
    # LoadGen counts the refusals as fast answers and says VALID; counted as late, 11 > 10.
    result = scenario(answered_ms=[10.0] * 989 + [80.0] * 6, refused=5)
    assert result.loadgen.valid and not result.meets_bound
    assert result.bound_misses == ("5 refused + 6 answered late > the 10 a p99 allows",)


def test_one_failure_misses_the_bound_whatever_the_latencies() -> None:
    result = scenario(answered_ms=[10.0] * 999, failed=1)
    assert result.bound_misses == ("1 failed",)
    assert not result.meets_bound


def test_without_refusals_the_latency_verdict_is_loadgens() -> None:
    # Late answers alone are LoadGen's to judge (its early-stopping rule is stricter than ours).
    assert scenario(answered_ms=[10.0] * 980 + [80.0] * 20).meets_bound
    invalid = scenario(answered_ms=[10.0] * 1_000, valid=False)
    assert invalid.bound_misses == () and not invalid.meets_bound
