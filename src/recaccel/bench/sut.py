"""The system under test as LoadGen sees it: a thin asynchronous HTTP client of /v1/rank.

LoadGen calls `issue_queries` from its own thread at the times its scenario schedules; the
client must not delay those calls, or LoadGen measures the client. So `issue_queries` only
records the samples and hands them to one asyncio event loop running in a dedicated thread,
which POSTs each sample's prebuilt body over a pool of keep-alive connections sized to the
concurrency, and reports each sample to LoadGen (`QuerySamplesComplete`) exactly once, however
it ended: 200, 429, 5xx, connection error or timeout (books.py counts which).

The client is `HttpPool` (http_pool.py): pre-framed POSTs on pooled keep-alive connections,
answers parsed by httptools. Measured with scripts/bench_http_clients.py (2-core AMD EPYC, KVM,
2026-12-03; a canned-answer uvicorn server on the same machine, 16 keep-alive connections, 4,000
POSTs of a 100-candidate body, two interleaved rounds): HttpPool 12,300–17,200 requests/s at
53–70 µs of client CPU per request, aiohttp 4,200–6,600 at 150–210 µs, httpx's AsyncClient
about 300 at 3.3 ms. The client shares the cores with the server, so its CPU per request is
what matters: with aiohttp the whole client (LoadGen included) took about 0.55 CPU-ms per
request and capped the canned server near 2,500 QPS; with HttpPool 0.21–0.39 at 1,000–2,000 QPS
(`scripts/compare_stacks.py ARTIFACT --stacks canned:2,bare:2 --at-qps 1000,2000`, its
`client CPU`), and the canned server's limit rose to 3,800–4,800 QPS. The standard asyncio
loop, not uvloop: its timers are exact where uvloop's tick in milliseconds, which the lag
probe below needs, and uvloop saved nothing here.

The client measures its own overhead so a report can show it was not the bottleneck: the time
`issue_queries` takes per sample (LoadGen's thread), and the event loop's lag — how late a
timer set every `LAG_PROBE_INTERVAL_S` fires. A loop that lags by milliseconds is delaying
requests and responses, and the latencies it reports are partly its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import mlperf_loadgen as lg
import numpy as np
import orjson

from recaccel.bench.books import (
    REJECTED_STATUSES,
    BookReport,
    Books,
    Outcome,
    Percentiles,
    Ranked,
)
from recaccel.bench.http_pool import HttpPool
from recaccel.errors import ConfigError
from recaccel.serve.heap import freeze_long_lived_heap

log = logging.getLogger(__name__)
RANK_PATH = "/v1/rank"
LAG_PROBE_INTERVAL_S = 0.005
START_TIMEOUT_S = 30.0
DEFAULT_CONCURRENCY = 128
DEFAULT_TIMEOUT_S = 30.0


class QuerySample(Protocol):
    """What LoadGen hands `issue_queries` (mlperf_loadgen.QuerySample): a unique id to
    complete, and the QSL index of the sample to send."""

    @property
    def id(self) -> int: ...

    @property
    def index(self) -> int: ...


class Transport(Protocol):
    """POST a body, return (status, response body). Made on, and used from, the loop thread."""

    async def post(self, body: bytes) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


def outcome_of(status: int, body: bytes, latency_s: float) -> Outcome:
    """A sample's outcome from its HTTP answer: a 200 must carry a ranking and `server_ms`
    (a 200 that does not is counted as failed, not dropped)."""
    if status in REJECTED_STATUSES:
        return Outcome(status, latency_s, reason=refusal_reason(body))
    if status != 200:
        return Outcome(status, latency_s, error=f"HTTP {status}")
    try:
        answer = orjson.loads(body)
        items = answer["items"]
        ranked = Ranked(
            np.array([item["item_id"] for item in items], dtype=np.int64),
            np.array([item["score"] for item in items], dtype=np.float64),
        )
        return Outcome(200, latency_s, float(answer["server_ms"]), ranked)
    except Exception as error:  # any malformed body; never lose the sample over it
        return Outcome(200, latency_s, error=f"bad 200 body: {type(error).__name__}")


def refusal_reason(body: bytes) -> str | None:
    """The `reason` code of a refusal's body (recaccel's server states one), else None."""
    try:
        reason = orjson.loads(body).get("reason")
    except (orjson.JSONDecodeError, AttributeError):  # not JSON, or not an object
        return None
    return reason if isinstance(reason, str) and reason else None


def loadgen_complete(sample_id: int) -> None:
    """Tell LoadGen a sample is done. No response data: PerformanceOnly reads none, and the
    rankings are kept in the books instead."""
    lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])


@dataclass(frozen=True)
class ClientOverhead:
    """What the client itself cost: `issue_us` per sample in `issue_queries` (LoadGen's
    thread), and how late the loop's timers fired (`loop_lag`)."""

    issue_us_p50: float
    issue_us_p99: float
    loop_lag: Percentiles


@dataclass(frozen=True)
class SutReport:
    books: BookReport
    overhead: ClientOverhead


class LagProbe:
    """A timer re-armed every `interval_s` on the loop; each firing records how late it was."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self._loop = loop
        self._interval_s = interval_s
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.lags_ms: list[float] = []

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _arm(self) -> None:
        self._due = time.perf_counter() + self._interval_s
        self._handle = self._loop.call_later(self._interval_s, self._fire)

    def _fire(self) -> None:
        self.lags_ms.append(max(0.0, time.perf_counter() - self._due) * 1e3)
        self._arm()


class HttpSut:
    """LoadGen's system under test over HTTP. Use as a context manager (start/stop).

        with HttpSut(workload.bodies, "http://127.0.0.1:8000") as sut:
            handle = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
            ...  # lg.StartTest...
        sut.report()

    Args:
        bodies: the request body of each QSL index.
        url: the server's base URL.
        concurrency: the most requests in flight (connections in the pool).
        timeout_s: a request not answered by then fails (and is completed).
        complete: reports one sample id to LoadGen; tests pass a recorder.
        transport: makes the transport, called once on the loop thread; default `HttpPool`.
    """

    def __init__(
        self,
        bodies: Sequence[bytes],
        url: str,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        complete: Callable[[int], None] = loadgen_complete,
        transport: Callable[[], Transport] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency={concurrency} < 1", "allow at least 1 connection")
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s={timeout_s} must be positive")
        self._bodies = bodies
        self._complete = complete
        self._make_transport = transport or (
            lambda: HttpPool(url, RANK_PATH, max_connections=concurrency, timeout_s=timeout_s)
        )
        self._transport: Transport | None = None
        self.books = Books()
        self._issue_us: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._probe = LagProbe(self._loop, LAG_PROBE_INTERVAL_S)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="recaccel-bench-client", daemon=True
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        # The workload, dataset and LoadGen's state off every full collection: unfrozen, each
        # paused this process 76-89 ms mid-run, which LoadGen booked as server latency.
        freeze_long_lived_heap()
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(START_TIMEOUT_S)

    def stop(self, drain_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait for samples in flight (up to `drain_timeout_s`, then cancel them: each is
        still completed, as failed), close the connections and end the loop thread."""
        if not self._thread.is_alive():
            return
        done = asyncio.run_coroutine_threadsafe(self._close(drain_timeout_s), self._loop)
        try:
            done.result(drain_timeout_s + START_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> HttpSut:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- LoadGen's callbacks (its thread) -----------------------------------------------------

    def issue_queries(self, samples: Sequence[QuerySample]) -> None:
        start = time.perf_counter()
        batch = [(s.id, s.index) for s in samples]
        for sample_id, index in batch:
            self.books.issue(sample_id, index)
        self._loop.call_soon_threadsafe(self._spawn, batch, start)
        if batch:
            self._issue_us.append((time.perf_counter() - start) * 1e6 / len(batch))

    def flush_queries(self) -> None:
        """Nothing is held back to flush: every sample is sent when issued."""

    # --- the loop's side ----------------------------------------------------------------------

    async def _open(self) -> None:
        self._transport = self._make_transport()
        self._probe.start()

    async def _close(self, drain_timeout_s: float) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled %d samples still in flight at stop", len(pending))
                await asyncio.wait(pending)
        self._probe.stop()
        if self._transport is not None:
            await self._transport.close()

    def _spawn(self, batch: list[tuple[int, int]], issued_s: float) -> None:
        for sample_id, index in batch:
            task = self._loop.create_task(self._serve(sample_id, index, issued_s))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sample_id: int, index: int, issued_s: float) -> None:
        """Send one sample and complete it, exactly once, whatever happens."""
        status, body, error = 0, b"", "cancelled"
        try:
            assert self._transport is not None, "start() opens the transport"
            status, body = await self._transport.post(self._bodies[index])
            error = ""
        except Exception as caught:  # counted as failed; the run goes on
            error = type(caught).__name__
        finally:
            latency_s = time.perf_counter() - issued_s
            if error:
                self._finish(sample_id, Outcome(None, latency_s, error=error))
            else:
                self._finish(sample_id, outcome_of(status, body, latency_s))

    def _finish(self, sample_id: int, outcome: Outcome) -> None:
        try:
            self.books.complete(sample_id, outcome)
        finally:
            try:
                self._complete(sample_id)
            except Exception:
                log.exception("reporting sample %d to LoadGen failed", sample_id)

    # --- results ------------------------------------------------------------------------------

    def report(self) -> SutReport:
        issue = np.asarray(self._issue_us) if self._issue_us else np.zeros(1)
        p50, p99 = np.percentile(issue, [50, 99])
        overhead = ClientOverhead(float(p50), float(p99), Percentiles.of_ms(self._probe.lags_ms))
        return SutReport(self.books.report(), overhead)
