"""The client's books, with fake transports in place of HTTP: every sample LoadGen issues is
completed exactly once, whatever the transport does, and failures are counted, not dropped."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass

import orjson
import pytest

from recaccel.bench.books import Books, Outcome, Ranked
from recaccel.bench.sut import HttpSut, outcome_of


@dataclass(frozen=True)
class Sample:
    """What LoadGen hands issue_queries."""

    id: int
    index: int


def ok_body(items: list[tuple[int, float]], server_ms: float = 1.5) -> bytes:
    return orjson.dumps(
        {
            "model": "m",
            "version": "1",
            "user_id": 1,
            "items": [{"item_id": i, "score": s} for i, s in items],
            "candidates": len(items),
            "server_ms": server_ms,
        }
    )


class ScriptedTransport:
    """Answers by the body it is sent: b"ok", b"429", b"500", b"503", b"raise", b"garbage",
    b"slow" (waits on an event the test never sets: cancelled at stop)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    async def post(self, body: bytes) -> tuple[int, bytes]:
        self.sent.append(body)
        await asyncio.sleep(0)  # answer on a later loop turn, as the network would
        if body == b"ok":
            return 200, ok_body([(7, 0.9), (3, 0.2)])
        if body == b"garbage":
            return 200, b"{not json"
        if body == b"raise":
            raise ConnectionResetError("peer went away")
        if body == b"slow":
            await asyncio.Event().wait()
        if body == b"429":  # recaccel's server names the rule that refused
            return 429, b'{"error": "no", "reason": "deadline"}'
        return int(body), b'{"error": "no"}'

    async def close(self) -> None:
        self.closed = True


class Recorder:
    """Stands in for mlperf_loadgen.QuerySamplesComplete; called from the loop thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: Counter[int] = Counter()

    def __call__(self, sample_id: int) -> None:
        with self.lock:
            self.ids[sample_id] += 1


def run_sut(bodies: list[bytes], samples: list[list[Sample]], drain_timeout_s: float = 30):
    transport = ScriptedTransport()
    recorder = Recorder()
    sut = HttpSut(bodies, "http://unused", complete=recorder, transport=lambda: transport)
    sut.start()
    for batch in samples:  # one issue_queries call per batch, as LoadGen's thread makes them
        sut.issue_queries(batch)
    sut.flush_queries()
    sut.stop(drain_timeout_s)
    return sut, recorder, transport


def test_every_sample_is_completed_once_whatever_the_transport_does() -> None:
    bodies = [b"ok", b"429", b"500", b"503", b"raise", b"garbage", b"404"]
    samples = [[Sample(100 + i, i % len(bodies))] for i in range(70)]  # Server: one per call
    samples.append([Sample(500 + i, i % len(bodies)) for i in range(35)])  # Offline: many
    sut, recorder, transport = run_sut(bodies, samples)

    issued = {s.id for batch in samples for s in batch}
    assert set(recorder.ids) == issued
    assert set(recorder.ids.values()) == {1}
    report = sut.report().books
    assert report.consistent and report.violations == ()
    assert report.issued == report.completed == 105
    assert report.ok == 15
    assert report.rejected == 30  # 429 and 503
    assert report.rejected_by_reason == {"deadline": 15, "unstated": 15}
    assert report.failed == 60  # 500, 404, a raised error, an unparseable 200
    assert report.ok + report.rejected + report.failed == report.completed
    assert report.by_status == {
        "200": 30,
        "404": 15,
        "429": 15,
        "500": 15,
        "503": 15,
        "error": 15,
    }
    assert report.errors == {
        "ConnectionResetError": 15,
        "bad 200 body: JSONDecodeError": 15,
        "HTTP 404": 15,
        "HTTP 500": 15,
    }
    assert report.client_latency.n == 105 and report.server_latency.n == 15
    assert report.ok_latency.n == 15 and report.rejected_latency.n == 30
    assert report.server_latency.p50_ms == 1.5
    assert transport.closed and len(transport.sent) == 105


def test_rankings_are_kept_per_sample_index() -> None:
    sut, _, _ = run_sut([b"ok", b"500"], [[Sample(1, 0)], [Sample(2, 1)], [Sample(3, 0)]])
    rankings = sut.books.rankings
    assert set(rankings) == {0}
    assert rankings[0].item_ids.tolist() == [7, 3]
    assert rankings[0].scores.tolist() == [0.9, 0.2]


def test_samples_still_in_flight_at_stop_are_completed_as_failed() -> None:
    sut, recorder, _ = run_sut([b"slow", b"ok"], [[Sample(1, 0), Sample(2, 1)]], 0.05)
    assert recorder.ids == Counter({1: 1, 2: 1})
    report = sut.report().books
    assert report.consistent
    assert report.ok == 1 and report.failed == 1 and report.errors == {"cancelled": 1}


def test_an_index_outside_the_workload_fails_its_sample_not_the_run() -> None:
    sut, recorder, _ = run_sut([b"ok"], [[Sample(1, 5)], [Sample(2, 0)]])
    assert recorder.ids == Counter({1: 1, 2: 1})
    report = sut.report().books
    assert report.ok == 1 and report.errors == {"IndexError": 1}


def test_a_failing_completion_callback_does_not_stop_the_others() -> None:
    calls: list[int] = []

    def complete(sample_id: int) -> None:
        calls.append(sample_id)
        if sample_id == 1:
            raise RuntimeError("LoadGen said no")

    transport = ScriptedTransport()
    with HttpSut([b"ok"], "http://x", complete=complete, transport=lambda: transport) as sut:
        sut.issue_queries([Sample(1, 0), Sample(2, 0)])
    assert sorted(calls) == [1, 2]
    assert sut.report().books.consistent


def test_the_client_reports_its_own_overhead() -> None:
    sut, _, _ = run_sut([b"ok"], [[Sample(i, 0)] for i in range(20)])
    overhead = sut.report().overhead
    assert overhead.issue_us_p50 > 0 and overhead.issue_us_p99 >= overhead.issue_us_p50
    assert overhead.loop_lag.n >= 0  # how many probes fired depends on the machine's speed


def test_books_record_twice_completed_and_never_issued_samples_as_violations() -> None:
    books = Books()
    books.issue(1, 0)
    books.issue(1, 0)  # issued again while open
    books.complete(1, Outcome(200, 0.001))
    books.complete(1, Outcome(200, 0.001))  # twice
    books.complete(9, Outcome(500, 0.001))  # never issued
    books.issue(2, 0)  # never completed
    report = books.report()
    assert report.violation_count == 3 and len(report.violations) == 3
    assert report.outstanding == 1
    assert not report.consistent
    assert report.completed == 1 and report.ok == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"error": "queue full: 9 requests queued", "reason": "queue_full"}', "queue_full"),
        (b'{"error": "no reason given"}', None),
        (b'{"error": "x", "reason": 3}', None),
        (b'{"error": "x", "reason": ""}', None),
        (b"[1, 2]", None),
        (b"<html>proxy says 503</html>", None),
        (b"", None),
    ],
)
def test_a_refusal_keeps_the_reason_its_body_states(body: bytes, reason: str | None) -> None:
    outcome = outcome_of(429, body, 0.001)
    assert outcome.kind == "rejected" and outcome.reason == reason


@pytest.mark.parametrize(
    ("status", "body", "kind", "error"),
    [
        (200, ok_body([(1, 0.5)]), "ok", None),
        (200, b"[]", "failed", "bad 200 body: TypeError"),
        (200, orjson.dumps({"items": [{"item_id": 1}], "server_ms": 1}), "failed", None),
        (200, orjson.dumps({"items": [], "server_ms": "x"}), "failed", None),
        (429, b"", "rejected", None),
        (503, b"", "rejected", None),
        (500, b"", "failed", "HTTP 500"),  # named in the report's errors, as a reset is
        (413, b"", "failed", "HTTP 413"),
    ],
)
def test_outcome_of_an_answer(status: int, body: bytes, kind: str, error: str | None) -> None:
    outcome = outcome_of(status, body, 0.002)
    assert outcome.kind == kind
    assert outcome.latency_s == 0.002
    if error is not None:
        assert outcome.error == error
    if kind == "ok":
        assert outcome.server_ms == 1.5
        assert isinstance(outcome.ranked, Ranked) and outcome.ranked.item_ids.tolist() == [1]
