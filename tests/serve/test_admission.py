"""Admission control: which requests are refused at once, with which status and Retry-After.

Times are binary fractions of a second (0.25, 0.125…) so that sums compare exactly.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from recaccel.errors import ConfigError
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint
from recaccel.serve.admission import (
    Admission,
    AdmissionConfig,
    admit,
    deadline_for,
    queue_wait_s,
    retry_after,
)
from recaccel.serve.errors import OverloadedError, RequestError

# Normal requests may fill 900 rows and 9 requests; high-priority ones 1000 and 10.
CONFIG = AdmissionConfig(max_queue_rows=1000, max_queue_requests=10, reserved_fraction=0.1)

BASE: dict[str, Any] = {
    "now": 0.0,
    "request_rows": 100,
    "deadline": 0.5,
    "predicted_wait_s": 0.125,
    "predicted_exec_s": 0.125,
    "queued_rows": 0,
    "queued_requests": 0,
    "draining": False,
    "priority": 0,
}


@pytest.mark.parametrize(
    ("changes", "accepted", "status", "retry", "why"),
    [
        ({}, True, 200, 0.0, "admitted"),
        ({"draining": True}, False, 503, 1.0, "draining"),
        ({"draining": True, "predicted_wait_s": 2.5}, False, 503, 3.0, "draining"),
        # Draining comes first, even over a full queue.
        ({"draining": True, "queued_requests": 10}, False, 503, 1.0, "draining"),
        # Request bounds: 9 queued fill a normal request's 9; a high-priority one has 10.
        ({"queued_requests": 8, "queued_rows": 100}, True, 200, 0.0, "admitted"),
        ({"queued_requests": 9, "queued_rows": 100}, False, 429, 1.0, "9 requests queued"),
        ({"queued_requests": 9, "queued_rows": 100, "priority": 1}, True, 200, 0.0, "admitted"),
        ({"queued_requests": 10, "queued_rows": 100, "priority": 5}, False, 429, 1.0, "queue full"),
        # Row bounds: 850 + 100 > 900 for normal, <= 1000 for high priority.
        ({"queued_requests": 3, "queued_rows": 800}, True, 200, 0.0, "admitted"),
        ({"queued_requests": 3, "queued_rows": 850}, False, 429, 1.0, "850 rows queued"),
        ({"queued_requests": 3, "queued_rows": 850, "priority": 1}, True, 200, 0.0, "admitted"),
        ({"queued_requests": 3, "queued_rows": 950, "priority": 1}, False, 429, 1.0, "1000 rows"),
        # Priority 0 and below are normal.
        ({"queued_requests": 9, "queued_rows": 100, "priority": -1}, False, 429, 1.0, "normal"),
        # An empty queue admits one request larger than the row bound: it runs alone.
        ({"request_rows": 5000}, True, 200, 0.0, "admitted"),
        # Deadlines: 0.25 + 0.25 finishes exactly at 0.5, on time; 0.375 + 0.25 does not.
        ({"predicted_wait_s": 0.25, "predicted_exec_s": 0.25}, True, 200, 0.0, "admitted"),
        ({"predicted_wait_s": 0.375, "predicted_exec_s": 0.25}, False, 429, 1.0, "125.0 ms past"),
        ({"predicted_wait_s": 1.5, "predicted_exec_s": 0.25}, False, 429, 2.0, "past its deadline"),
        # Even alone it cannot make it: the reason says what to change.
        ({"predicted_wait_s": 0.0, "predicted_exec_s": 0.625}, False, 429, 1.0, "fewer rows"),
        # Priority does not excuse a missed deadline.
        ({"predicted_wait_s": 0.5, "priority": 1}, False, 429, 1.0, "past its deadline"),
        # The same deadline, reached later: less time left.
        ({"now": 0.25}, True, 200, 0.0, "admitted"),
        ({"now": 0.375}, False, 429, 1.0, "past its deadline"),
    ],
)
def test_admit(
    changes: dict[str, Any], accepted: bool, status: int, retry: float, why: str
) -> None:
    verdict = admit(CONFIG, **{**BASE, **changes})
    assert (verdict.accepted, verdict.status, verdict.retry_after_s) == (accepted, status, retry)
    assert why in verdict.reason


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, "admitted"),
        ({"draining": True, "queued_requests": 10}, "draining"),
        ({"queued_requests": 9, "queued_rows": 100}, "queue_full"),
        ({"queued_requests": 3, "queued_rows": 850}, "queue_full"),
        ({"predicted_wait_s": 0.375, "predicted_exec_s": 0.25}, "deadline"),
        ({"predicted_wait_s": 0.0, "predicted_exec_s": 0.625}, "deadline"),
    ],
)
def test_each_verdict_names_the_rule_that_decided_it(changes: dict[str, Any], code: str) -> None:
    assert admit(CONFIG, **{**BASE, **changes}).code == code


@pytest.mark.parametrize(
    ("drain_s", "seconds"),
    [(0.0, 1.0), (0.001, 1.0), (1.0, 1.0), (1.2, 2.0), (2.0, 2.0), (59.9, 60.0)],
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(
    drain_s: float, seconds: float
) -> None:
    assert retry_after(drain_s) == seconds


def test_a_refusal_raises_the_error_the_app_answers_with() -> None:
    Admission(True, 200, 0.0, "admitted", "admitted").raise_if_refused()
    refused = admit(CONFIG, **{**BASE, "draining": True, "predicted_wait_s": 4.2})
    with pytest.raises(OverloadedError, match="draining") as raised:
        refused.raise_if_refused()
    assert (raised.value.status, raised.value.retry_after_s) == (503, 5.0)
    assert raised.value.code == "draining"


@pytest.mark.parametrize(
    ("max_rows", "max_requests", "fraction", "normal", "high"),
    [
        (1000, 10, 0.1, (900, 9), (1000, 10)),
        (1000, 10, 0.0, (1000, 10), (1000, 10)),
        (1, 1, 0.1, (1, 1), (1, 1)),  # 10% of 1 rounds down to nothing reserved
        (100, 7, 0.25, (75, 6), (100, 7)),  # floor(1.75) = 1 request reserved
    ],
)
def test_bounds_reserve_a_slice_for_high_priority(
    max_rows: int,
    max_requests: int,
    fraction: float,
    normal: tuple[int, int],
    high: tuple[int, int],
) -> None:
    config = AdmissionConfig(max_rows, max_requests, reserved_fraction=fraction)
    assert config.bounds(0) == normal
    assert config.bounds(1) == high


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("max_queue_rows", {"max_queue_rows": 0}),
        ("max_queue_requests", {"max_queue_requests": 0}),
        ("default_slo_ms", {"default_slo_ms": 0.0}),
        ("default_slo_ms", {"default_slo_ms": math.inf}),
        ("reserved_fraction", {"reserved_fraction": 1.0}),
        ("reserved_fraction", {"reserved_fraction": -0.1}),
    ],
)
def test_config_names_the_bad_field(field: str, kwargs: dict[str, float]) -> None:
    arguments: dict[str, float] = {"max_queue_rows": 10, "max_queue_requests": 10, **kwargs}
    with pytest.raises(ConfigError, match=field):
        AdmissionConfig(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "deadline_ms", "default_ms", "expected"),
    [
        (10.0, None, 50.0, 10.05),  # the server's default SLO
        (10.0, 20.0, 50.0, 10.02),  # the request's own, tighter
        (10.0, 500.0, 50.0, 10.5),  # or looser
        (10.0, 0.5, 50.0, 10.0005),
    ],
)
def test_deadline_for(
    now: float, deadline_ms: float | None, default_ms: float, expected: float
) -> None:
    assert deadline_for(now, deadline_ms, default_ms) == pytest.approx(expected)


@pytest.mark.parametrize("deadline_ms", [0.0, -5.0, math.nan, math.inf])
def test_a_deadline_that_is_not_a_positive_number_is_a_400(deadline_ms: float) -> None:
    with pytest.raises(RequestError, match="deadline_ms must be a positive") as raised:
        deadline_for(10.0, deadline_ms, 50.0)
    assert raised.value.status == 400
    assert "50 ms" in raised.value.hint


MODEL = LatencyModel.from_points(
    [LatencyPoint(100, 1.0, 2.0, 50), LatencyPoint(1000, 10.0, 11.0, 50)]
)


@pytest.mark.parametrize(
    ("backlog", "max_rows", "workers", "seconds"),
    [
        ([], 1000, 1, 0.0),
        ([300], 1000, 1, 0.003),  # median 0.01 ms per row
        ([1000, 1000, 500], 1000, 1, 0.025),  # 10 + 10 + 5 ms
        ([1000, 1000, 500], 1000, 2, 0.0125),
        ([400, 400, 400], 1000, 1, 0.012),  # 800 together (8 ms), then 400 (4 ms)
        # One request per batch: a request is never split, however small max_rows is.
        ([100, 100, 100], 1, 1, 0.003),
        ([2500], 1000, 1, 0.025),  # larger than max_rows: it runs alone, whole
    ],
)
def test_queue_wait_s(backlog: list[int], max_rows: int, workers: int, seconds: float) -> None:
    assert queue_wait_s(backlog, max_rows, MODEL, workers) == pytest.approx(seconds)


def test_queue_wait_s_needs_a_worker() -> None:
    with pytest.raises(ConfigError, match="workers"):
        queue_wait_s([100], 1000, MODEL, 0)
