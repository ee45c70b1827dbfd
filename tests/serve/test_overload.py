"""The adaptive limit on inference requests in flight: its target, its signals (standing delay,
event-loop lag), how it moves, the guard on a real loop made late on purpose, and the
middleware refusing past it without reading the request."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from starlette.types import Message, Receive, Scope, Send

from recaccel.errors import ConfigError
from recaccel.serve.app import RequestMetrics
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.overload import (
    OverloadGuard,
    OverloadPolicy,
    congestion_s,
    next_limit,
    overload_target_s,
    smoothed_lag_s,
    standing_delay_s,
)


@pytest.mark.parametrize(
    ("configured_ms", "slo_ms", "target_s"),
    [(None, 50.0, 0.005), (None, 200.0, 0.020), (3.0, 50.0, 0.003), (0.0, 50.0, 0.0)],
)
def test_the_target_is_a_tenth_of_the_slo_unless_set(
    configured_ms: float | None, slo_ms: float, target_s: float
) -> None:
    assert overload_target_s(configured_ms, slo_ms) == pytest.approx(target_s)


def test_one_late_timer_moves_the_lag_average_by_half() -> None:
    lag = smoothed_lag_s(0.0, 0.016, 0.5)
    assert lag == pytest.approx(0.008)
    assert smoothed_lag_s(lag, 0.016, 0.5) == pytest.approx(0.012)
    assert smoothed_lag_s(0.0, -0.001, 0.5) == 0.0  # a timer fired early is no lag


def test_a_standing_delay_needs_enough_requests_to_tell_a_queue_from_one_large_request() -> None:
    policy = OverloadPolicy(target_s=0.010, min_requests=8)
    assert standing_delay_s(0.030, 7, policy) == 0.0
    assert standing_delay_s(0.030, 8, policy) == 0.030


POLICY = OverloadPolicy(target_s=0.010, min_limit=2, initial_limit=64, max_limit=100)


@pytest.mark.parametrize(
    ("limit", "congestion_s", "streak", "reached", "expected"),
    [
        (64, 0.011, 1, True, 64),  # one interval just over target: a burst, not overload
        (64, 0.011, 2, True, 57),  # two: cut gently, 10% at least (0.9 > 10/11)
        (64, 0.0125, 2, False, 51),  # in proportion to the overshoot: × 10/12.5
        (64, 0.100, 3, True, 32),  # far over: halved at most
        (2, 0.5, 9, True, 2),  # never below the floor
        (20, 0.005, 0, True, 21),  # under target and binding: one more
        (12, 0.005, 0, False, 18),  # under target, not binding, below initial: × 1.5 back
        (60, 0.0, 0, False, 64),  # but not past the initial limit
        (64, 0.005, 0, False, 64),  # at it, not binding: no evidence, no change
        (80, 0.005, 0, False, 80),  # above it too
        (12, 0.011, 1, False, 12),  # over target, not yet lasting: no return either
        (100, 0.0, 0, True, 100),  # capped
        (20, 0.010, 0, True, 21),  # at the target is not over it
    ],
)
def test_the_limit_is_cut_in_proportion_to_a_lasting_overshoot_and_recovers_once_calm(
    limit: int, congestion_s: float, streak: int, reached: bool, expected: int
) -> None:
    assert next_limit(limit, congestion_s, streak, reached, POLICY) == expected


def test_the_congestion_signal_is_the_worse_of_standing_delay_and_loop_lag() -> None:
    assert congestion_s(0.012, 0.003) == 0.012
    assert congestion_s(0.002, 0.015) == 0.015


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_s": -0.001},
        {"target_s": float("nan")},
        {"target_s": 0.01, "lag_weight": 0.0},
        {"target_s": 0.01, "min_requests": 0},
        {"target_s": 0.01, "min_limit": 8, "initial_limit": 4},
        {"target_s": 0.01, "backoff": 0.95},
        {"target_s": 0.01, "gentlest_cut": 1.0},
        {"target_s": 0.01, "patience": 0},
        {"target_s": 0.01, "recovery": 1.0},
        {"target_s": 0.01, "interval_s": 0.0},
    ],
)
def test_a_bad_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        OverloadPolicy(**kwargs)  # type: ignore[arg-type]


def test_the_guard_refuses_past_its_limit_and_learns_from_answered_requests() -> None:
    guard = OverloadGuard(OverloadPolicy(target_s=0.010, initial_limit=10, min_requests=3))
    assert [guard.enter() for _ in range(11)] == [True] * 10 + [False]
    for interval, limit in enumerate((10, 5)):  # every one waited 20 ms: a standing queue
        for _ in range(3):
            guard.leave(0.020, answered=True)
        guard.close_interval()
        assert guard.standing_s == 0.020 and guard.limit == limit, interval
    guard.leave(0.001, answered=True)  # one quick answer is too few for a verdict
    guard.close_interval()
    # 3 in flight bind nothing and nothing is congested: the cut returns toward the initial 10.
    assert guard.standing_s == 0.0 and guard.limit == 8


def test_a_zero_target_never_refuses_and_starts_no_sampler() -> None:
    async def scenario() -> OverloadGuard:
        guard = OverloadGuard(OverloadPolicy(target_s=0.0, initial_limit=1, min_limit=1))
        guard.start()
        admitted = [guard.enter() for _ in range(10)]
        assert admitted == [True] * 10
        time.sleep(0.05)
        await asyncio.sleep(0.01)
        await guard.stop()
        return guard

    assert asyncio.run(scenario()).lag_s == 0.0


def test_a_blocked_loop_cuts_the_limit() -> None:
    seen: list[tuple[int, float]] = []

    async def scenario() -> OverloadGuard:
        policy = OverloadPolicy(target_s=0.010, interval_s=0.02, initial_limit=64)
        guard = OverloadGuard(
            policy, lambda g: seen.append((g.limit, g.lag_s)), sample_interval_s=0.002
        )
        guard.start()
        assert guard.enter()  # a request in flight throughout: the server is not idle
        await asyncio.sleep(0.03)
        for _ in range(4):  # the loop busy for 60 ms at a stretch, four times over
            time.sleep(0.06)
            await asyncio.sleep(0.005)  # the sampler runs after the stall
        await guard.stop()
        return guard

    guard = asyncio.run(scenario())
    assert guard.limit < 64, seen
    assert max(lag for _, lag in seen) > 0.010, seen


def test_an_idle_guard_stops_sampling_until_a_request_arrives() -> None:
    intervals: list[float] = []

    async def scenario() -> None:
        policy = OverloadPolicy(target_s=0.010, interval_s=0.02)
        guard = OverloadGuard(
            policy, lambda g: intervals.append(time.monotonic()), sample_interval_s=0.002
        )
        guard.start()
        await asyncio.sleep(0.3)  # idle: one quiet interval, then asleep
        asleep = len(intervals)
        assert asleep <= 2, intervals
        assert guard.enter()  # a request wakes it, and while one is in flight it samples
        await asyncio.sleep(0.3)
        assert len(intervals) >= asleep + 5, intervals
        guard.leave(0.001, answered=True)
        await asyncio.sleep(0.3)  # quiet again: asleep again
        settled = len(intervals)
        await asyncio.sleep(0.2)
        assert len(intervals) == settled, intervals
        await guard.stop()

    asyncio.run(scenario())


def full_guard() -> OverloadGuard:
    guard = OverloadGuard(OverloadPolicy(target_s=0.010, initial_limit=2, min_limit=2))
    guard.standing_s, guard.lag_s = 0.025, 0.004
    assert guard.enter() and guard.enter()
    return guard


@pytest.mark.parametrize(
    ("path", "shed_it"),
    [
        ("/v1/rank", True),
        ("/v2/models/ranker/infer", True),
        ("/v2/models/ranker/versions/2/infer", True),
        ("/v2/health/ready", False),
        ("/metrics", False),
        ("/v2/repository/models/ranker/load", False),
    ],
)
def test_an_overloaded_loop_refuses_inference_before_reading_it(path: str, shed_it: bool) -> None:
    metrics = ServerMetrics()
    called: list[str] = []
    sent: list[Message] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> Message:
        raise AssertionError("the body was read")

    async def send(message: Message) -> None:
        sent.append(message)

    guard = full_guard()
    middleware = RequestMetrics(inner, metrics, log_requests=False, overload=guard)
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "state": {}}
    asyncio.run(middleware(scope, receive, send))

    status = sent[0]["status"]
    headers = dict(sent[0]["headers"])
    rejected = metrics.registry.get_sample_value(
        "recaccel_rejected_total", {"model": "", "reason": "server_overloaded"}
    )
    if shed_it:
        assert called == [] and status == 429
        assert headers[b"retry-after"] == b"1" and b"x-request-id" in headers
        message = json.loads(sent[1]["body"])["error"]
        assert "2 inference requests in flight" in message and "10 ms" in message
        assert rejected == 1 and guard.in_flight == 2
    else:
        assert called == [path] and status == 200
        assert rejected is None and guard.in_flight == 2  # probes are not counted


def test_an_admitted_request_is_counted_while_in_flight_and_timed_when_answered() -> None:
    guard = OverloadGuard(OverloadPolicy(target_s=0.010, min_requests=1))
    during: list[int] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        during.append(guard.in_flight)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: Message) -> None:
        pass

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    middleware = RequestMetrics(inner, ServerMetrics(), log_requests=False, overload=guard)
    scope = {"type": "http", "method": "POST", "path": "/v1/rank", "headers": [], "state": {}}
    asyncio.run(middleware(scope, receive, send))
    assert during == [1] and guard.in_flight == 0
    guard.close_interval()
    assert 0 < guard.standing_s < 1
