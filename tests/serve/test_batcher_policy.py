"""SLO-aware dynamic batching: pure decisions, tested against tables worked out by hand.

The latency model is affine from 100 rows: median = 0.01·rows ms, p99 = 1 + 0.01·rows ms (so
p99 is 2 ms at 100 rows, 3 ms at 200, 6 ms at 500, 11 ms at 1000), and 2 ms below 100 rows.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

import recaccel.serve
from recaccel.errors import ConfigError
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint
from recaccel.serve.batcher_policy import (
    BatchPlan,
    BatchPolicy,
    Pending,
    dispatch_at,
    latest_start,
    plan_batch,
    take,
)

MODEL = LatencyModel.from_points(
    [LatencyPoint(100, 1.0, 2.0, 50), LatencyPoint(1000, 10.0, 11.0, 50)]
)
POLICY = BatchPolicy(max_rows=1000, max_queue_delay_s=0.010, safety_s=0.001)


@pytest.mark.parametrize(
    ("queue_rows", "max_rows", "count"),
    [
        ([], 256, 0),
        ([100], 256, 1),
        ([100, 100, 100], 256, 2),
        ([100, 100, 56], 256, 3),  # exactly max_rows
        ([100, 100, 57], 256, 2),  # one row over: the third waits
        ([300, 10], 256, 1),  # a head larger than max_rows goes alone
        ([10, 300], 256, 1),  # an oversized request behind it waits its turn
        ([256, 1], 256, 1),
        ([1] * 10, 4, 4),
        ([5, 1, 1], 4, 1),
    ],
)
def test_take_never_splits_a_request(queue_rows: list[int], max_rows: int, count: int) -> None:
    assert take(queue_rows, max_rows) == count


@pytest.mark.parametrize(("queue_rows", "max_rows"), [([1], 0), ([0, 1], 10), ([1, -3], 10)])
def test_take_refuses_impossible_sizes(queue_rows: list[int], max_rows: int) -> None:
    with pytest.raises(ConfigError, match="row"):
        take(queue_rows, max_rows)


@pytest.mark.parametrize(
    ("arrival", "deadline", "rows", "max_delay", "safety", "expected"),
    [
        (0.0, 0.050, 300, 0.010, 0.001, 0.010),  # light SLO: the queue delay binds
        (0.0, 0.050, 300, 0.100, 0.001, 0.045),  # 50 − p99 4 − safety 1 ms
        (0.0, 0.050, 1000, 0.100, 0.0, 0.039),  # 50 − 11 ms
        (0.0, 0.050, 50, 0.100, 0.0, 0.048),  # below the smallest measured size: its 2 ms
        (1.0, 1.003, 200, 0.100, 0.0, 1.000),  # starts now or misses
        (0.0, 0.002, 100, 0.100, 0.001, -0.001),  # already too late: in the past, send now
    ],
)
def test_dispatch_at_is_the_earlier_of_deadline_and_queue_delay(
    arrival: float, deadline: float, rows: int, max_delay: float, safety: float, expected: float
) -> None:
    assert dispatch_at(arrival, deadline, rows, MODEL, max_delay, safety) == pytest.approx(expected)


def test_a_bigger_batch_must_leave_earlier() -> None:
    times = [dispatch_at(0.0, 0.050, rows, MODEL, 1.0, 0.0) for rows in range(1, 2000, 50)]
    assert times == sorted(times, reverse=True)


Q = tuple[int, float, float]  # rows, arrival, deadline


@pytest.mark.parametrize(
    ("queue", "now", "expected"),
    [
        # Alone, a loose deadline: wait for company up to the queue delay.
        ([(100, 0.0, 0.050)], 0.0, BatchPlan(1, 100, 0.010, "queue_delay")),
        # A tight deadline: 8 − 2 (p99) − 1 (safety) = 5 ms.
        ([(100, 0.0, 0.008)], 0.0, BatchPlan(1, 100, 0.005, "deadline")),
        # max_rows reached: at once.
        ([(500, 0.0, 0.05), (500, 0.001, 0.05)], 0.002, BatchPlan(2, 1000, 0.002, "full")),
        # The next request does not fit: waiting cannot grow this batch.
        ([(600, 0.0, 0.05), (600, 0.001, 0.05)], 0.002, BatchPlan(1, 600, 0.002, "full")),
        # A single request larger than max_rows goes alone, at once.
        ([(1500, 0.0, 0.1)], 0.0, BatchPlan(1, 1500, 0.0, "full")),
        # With the 800-row request the head would need 6.5 − 10 − 1 < now: it goes alone.
        ([(100, 0.0, 0.0065), (800, 0.001, 1.0)], 0.002, BatchPlan(1, 100, 0.002, "split")),
        # Three requests would start by 10 − 6 − 1 = 3 ms < now 4 ms; two by 6 ms: split at 2.
        (
            [(100, 0.0, 0.010), (100, 0.0, 1.0), (300, 0.0, 1.0)],
            0.004,
            BatchPlan(2, 200, 0.004, "split"),
        ),
        # The head cannot be saved (1 ms deadline, now 2 ms): send at once.
        ([(100, 0.0, 0.001)], 0.002, BatchPlan(1, 100, 0.002, "late")),
        # ...and it constrains nobody: the other request's deadline is far, the delay binds.
        (
            [(100, 0.0, 0.001), (100, 0.0015, 0.050)],
            0.002,
            BatchPlan(2, 200, 0.010, "queue_delay"),
        ),
        # A later request's own deadline binds the batch: 9 − 3 − 1 = 5 ms.
        ([(100, 0.0, 1.0), (100, 0.001, 0.009)], 0.001, BatchPlan(2, 200, 0.005, "deadline")),
        # The queue delay passed while the loop was busy: now, never in the past.
        ([(100, 0.0, 0.050)], 0.020, BatchPlan(1, 100, 0.020, "queue_delay")),
    ],
)
def test_plan_batch(queue: list[Q], now: float, expected: BatchPlan) -> None:
    plan = plan_batch([Pending(*q) for q in queue], now, MODEL, POLICY)
    assert plan is not None
    assert (plan.count, plan.rows, plan.trigger) == (
        expected.count,
        expected.rows,
        expected.trigger,
    )
    assert plan.dispatch_at == pytest.approx(expected.dispatch_at)
    assert plan.wait_s(now) == pytest.approx(max(0.0, expected.dispatch_at - now))
    assert plan.due(now) is (plan.dispatch_at <= now)


def test_an_empty_queue_has_no_plan() -> None:
    assert plan_batch([], 0.0, MODEL, POLICY) is None


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("max_rows", {"max_rows": 0}),
        ("max_queue_delay_s", {"max_rows": 10, "max_queue_delay_s": -0.001}),
        ("safety_s", {"max_rows": 10, "safety_s": float("nan")}),
    ],
)
def test_policy_names_the_bad_field(field: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=field):
        BatchPolicy(**kwargs)  # type: ignore[arg-type]


def test_every_saveable_request_meets_its_deadline_when_sent_as_planned() -> None:
    """Property: over random queues, a plan never sends before `now` or after the queue
    delay, never splits below take(), and a batch sent at its dispatch time finishes (at its
    p99, with the safety margin) by the deadline of every request that could still make it."""
    rng = random.Random(7)
    for _ in range(500):
        now = rng.uniform(0.0, 0.02)
        queue = []
        for _ in range(rng.randint(1, 8)):
            arrival = rng.uniform(0.0, now)
            queue.append(Pending(rng.choice([1, 50, 100, 300, 700]), arrival, arrival + 0.05))
        queue.sort(key=lambda p: p.arrival)
        if rng.random() < 0.3:  # some requests carry their own, tighter, deadline
            i = rng.randrange(len(queue))
            queue[i] = Pending(queue[i].rows, queue[i].arrival, now + rng.uniform(-0.005, 0.02))
        plan = plan_batch(queue, now, MODEL, POLICY)
        assert plan is not None
        assert 1 <= plan.count <= take([p.rows for p in queue], POLICY.max_rows)
        assert plan.rows == sum(p.rows for p in queue[: plan.count])
        assert plan.dispatch_at >= now
        assert plan.dispatch_at <= max(now, queue[0].arrival + POLICY.max_queue_delay_s) + 1e-12
        finish = plan.dispatch_at + MODEL.predict_ms(plan.rows) / 1e3 + POLICY.safety_s
        for request in queue[: plan.count]:
            if latest_start(request.deadline, request.rows, MODEL, POLICY.safety_s) >= now:
                assert finish <= request.deadline + 1e-12, (queue, now, plan)


def test_a_thin_loop_over_plan_batch_batches_and_meets_every_deadline() -> None:
    """Simulation: 100-row requests every 2 ms with a 50 ms SLO, one executor that always
    takes the full p99. The loop only asks plan_batch and sends when due."""
    step, arrival_every, slo = 0.0005, 0.002, 0.050
    queue: list[Pending] = []
    busy_until, batches, finished = 0.0, [], []
    for tick in range(2000):  # one second
        now = tick * step
        if tick % round(arrival_every / step) == 0:
            queue.append(Pending(100, now, now + slo))
        plan = plan_batch(queue, now, MODEL, POLICY)
        if plan is not None and plan.due(now) and busy_until <= now:
            sent, queue = queue[: plan.count], queue[plan.count :]
            busy_until = now + MODEL.predict_ms(plan.rows) / 1e3
            batches.append(plan.count)
            finished += [(request, busy_until) for request in sent]
    assert len(finished) >= 490
    assert all(done <= request.deadline for request, done in finished)
    assert sum(batches) / len(batches) >= 4  # requests were merged, not sent one by one


@pytest.mark.parametrize("module", ["batcher_policy", "router", "autoscaler", "admission"])
def test_the_serving_policies_stay_pure(module: str) -> None:
    """The decisions take time as an argument and do no I/O: the loops that call them do."""
    path = Path(recaccel.serve.__file__).parent / f"{module}.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "multiprocessing", "fastapi", "time", "threading"}
