"""The system under test's books: what was issued, how each sample ended, and proof that each
was completed exactly once.

LoadGen trusts the SUT to report every sample it issued, once. A sample reported twice or
never corrupts its statistics (or hangs the run), and a sample answered 429 looks to LoadGen
like a fast success: LoadGen has no notion of a failed query. So the books count outcomes by
kind — ok (a 200 that parsed), rejected (429/503: the server shed it), failed (any other status,
a transport error, a timeout, a 200 that did not parse) — and the report must show rejected and
failed beside LoadGen's latencies, which include those samples' quick answers. Refusals are
also counted by the `reason` code recaccel's server puts in the body (a full queue, a missed
deadline, the in-flight limit, draining; "unstated" when the body names none), since near
capacity a handful of them decide whether a run is within the bound.

Thread safety: samples are issued on LoadGen's thread and completed on the client's event-loop
thread, so every mutation holds one lock. Percentiles are computed only in `report`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

REJECTED_STATUSES = frozenset({429, 503})  # overload: admission control or draining
UNSTATED_REASON = "unstated"  # a refusal whose body names no reason (not recaccel's server)
MAX_VIOLATIONS_KEPT = 20  # a broken run could produce one per sample; the first few say enough


@dataclass(frozen=True)
class Ranked:
    """A 200's ranking: item ids and their scores, best first, as the server answered."""

    item_ids: np.ndarray  # (k,) int64
    scores: np.ndarray  # (k,) float64


@dataclass(frozen=True)
class Outcome:
    """How one sample ended. `status` is None when no HTTP answer came (error names why)."""

    status: int | None
    latency_s: float  # from issue to answer (or error), measured by the client
    server_ms: float | None = None  # the server's own time for a 200
    ranked: Ranked | None = None  # a 200's ranking
    error: str | None = None  # exception type, or what was wrong with a 200's body
    reason: str | None = None  # a refusal's reason code, as its body states it

    @property
    def kind(self) -> str:
        """'ok', 'rejected' or 'failed'."""
        if self.status is not None and 200 <= self.status < 300 and self.error is None:
            return "ok"
        if self.status in REJECTED_STATUSES:
            return "rejected"
        return "failed"


@dataclass(frozen=True)
class Percentiles:
    """p50, p99 and max of a sample, in ms; zeros (and n=0) when there was none."""

    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of_ms(cls, values_ms: list[float] | np.ndarray) -> Percentiles:
        values = np.asarray(values_ms, dtype=np.float64)
        if values.size == 0:
            return cls(0, 0.0, 0.0, 0.0)
        p50, p99 = np.percentile(values, [50, 99])
        return cls(int(values.size), float(p50), float(p99), float(values.max()))


@dataclass(frozen=True)
class BookReport:
    """The books at the end of a run.

    `consistent` is the check a report leads with: every issued sample completed exactly
    once, nothing completed that was not issued.
    """

    issued: int
    completed: int
    ok: int
    rejected: int
    failed: int
    by_status: Mapping[str, int]  # "200", "429", ..., and "error" for no answer
    errors: Mapping[str, int]  # error name -> count (failed samples only)
    outstanding: int  # issued, never completed
    violations: tuple[str, ...]  # the first MAX_VIOLATIONS_KEPT, described
    violation_count: int
    client_latency: Percentiles  # every completed sample, issue to answer
    server_latency: Percentiles  # `server_ms` of the ok samples
    # By outcome: under overload LoadGen's percentiles mix fast refusals with answers; what
    # admission control promises is the answered requests' latency, and a refusal's speed.
    ok_latency: Percentiles = Percentiles(0, 0.0, 0.0, 0.0)
    rejected_latency: Percentiles = Percentiles(0, 0.0, 0.0, 0.0)
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)  # most first

    @property
    def consistent(self) -> bool:
        return (
            self.violation_count == 0 and self.outstanding == 0 and (self.issued == self.completed)
        )


class Books:
    """Issued and completed samples, by LoadGen sample id. See the module docstring.

    `rankings` keeps the first ranking per sample index (LoadGen reissues indexes; the body,
    so the ranking, is the same) for the served-accuracy check.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}  # sample id -> index: issued, not yet completed
        self._issued = 0
        self._completed = 0
        self._kinds: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._refusals: Counter[str] = Counter()
        self._violations: list[str] = []
        self._violation_count = 0
        self._latencies_ms: list[float] = []
        self._kind_latencies_ms: dict[str, list[float]] = {"ok": [], "rejected": []}
        self._server_ms: list[float] = []
        self.rankings: dict[int, Ranked] = {}

    def issue(self, sample_id: int, index: int) -> None:
        with self._lock:
            if sample_id in self._open:
                self._violate(f"sample id {sample_id} issued twice while still open")
                return
            self._open[sample_id] = index
            self._issued += 1

    def complete(self, sample_id: int, outcome: Outcome) -> None:
        with self._lock:
            index = self._open.pop(sample_id, None)
            if index is None:
                self._violate(f"sample id {sample_id} completed twice, or never issued")
                return
            self._completed += 1
            kind = outcome.kind
            self._kinds[kind] += 1
            self._statuses["error" if outcome.status is None else str(outcome.status)] += 1
            if kind == "failed" and outcome.error is not None:
                self._errors[outcome.error] += 1
            if kind == "rejected":
                self._refusals[outcome.reason or UNSTATED_REASON] += 1
            self._latencies_ms.append(outcome.latency_s * 1e3)
            if kind in self._kind_latencies_ms:
                self._kind_latencies_ms[kind].append(outcome.latency_s * 1e3)
            if kind == "ok":
                if outcome.server_ms is not None:
                    self._server_ms.append(outcome.server_ms)
                if outcome.ranked is not None:
                    self.rankings.setdefault(index, outcome.ranked)

    def latencies_ms(self) -> np.ndarray:
        """(completed,) float64 every completed sample's client latency, in completion order:
        what a latency CDF is drawn from."""
        with self._lock:
            return np.asarray(self._latencies_ms, dtype=np.float64)

    def answered_over(self, bound_ms: float) -> int:
        """How many answered (200) samples took longer than `bound_ms`, issue to answer."""
        with self._lock:
            return sum(1 for ms in self._kind_latencies_ms["ok"] if ms > bound_ms)

    def report(self) -> BookReport:
        with self._lock:
            return BookReport(
                issued=self._issued,
                completed=self._completed,
                ok=self._kinds["ok"],
                rejected=self._kinds["rejected"],
                failed=self._kinds["failed"],
                by_status=dict(sorted(self._statuses.items())),
                errors=dict(self._errors.most_common()),
                outstanding=len(self._open),
                violations=tuple(self._violations),
                violation_count=self._violation_count,
                client_latency=Percentiles.of_ms(self._latencies_ms),
                server_latency=Percentiles.of_ms(self._server_ms),
                ok_latency=Percentiles.of_ms(self._kind_latencies_ms["ok"]),
                rejected_latency=Percentiles.of_ms(self._kind_latencies_ms["rejected"]),
                rejected_by_reason=dict(self._refusals.most_common()),
            )

    def _violate(self, what: str) -> None:
        self._violation_count += 1
        if len(self._violations) < MAX_VIOLATIONS_KEPT:
            self._violations.append(what)
