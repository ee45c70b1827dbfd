"""A soak's mechanism: hold an open-loop load on a live server and watch its process tree.

The load is the bench's own: one MLPerf LoadGen Server-scenario run (Poisson arrivals at the
target QPS) for the whole soak, through the bench's client (sut.py's HttpSut over
http_pool.py's keep-alive pool), so the connections live as long as the soak, as a real
client's would. LoadGen's result covers the run as a whole; a soak also needs it window by
window, so the client's transport is wrapped (`RecordingTransport`) to book each request's
send time, latency and outcome as it ends. Its latency runs from the send to the answer, the
pool's wait for a connection included; it leaves out LoadGen's hand-off to the client's loop,
which LoadGen's own figure for the whole run includes.

Meanwhile a thread samples the server's tree (proc_usage.py) every `sample_s`, on a fixed
schedule from the soak's start (a slow read does not shift the next sample). The tree is also
read once before the load begins and once after it has ended, when the client has closed its
connections and `SETTLE_S` has let the server close its ends (soak.py: "fds after the load").

    run = run_soak(url, pid, workload, target_qps=350, layout=SoakLayout(600), p99_ms=50,
                   out_dir=Path("/tmp/soak"))
    windows = summarise_windows(run.answers, run.samples, layout)    # soak.py
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recaccel.bench.http_pool import HttpPool
from recaccel.bench.loadgen import run_server_scenario
from recaccel.bench.proc_usage import tree_usage
from recaccel.bench.scenario_result import ScenarioResult
from recaccel.bench.soak import ERROR, OK, REFUSED, Answers, ResourceSample, SoakLayout
from recaccel.bench.sut import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    RANK_PATH,
    Transport,
    outcome_of,
)
from recaccel.bench.workload import RankWorkload
from recaccel.errors import ConfigError

KIND_CODES = {"ok": OK, "rejected": REFUSED, "failed": ERROR}
SETTLE_S = 2.0  # after the client closed its connections, before reading the tree again


class AnswerRecorder:
    """Each request's end, booked into flat arrays.

    Arrays, not a list of objects: a 10-minute soak books hundreds of thousands of requests,
    and as many tracked objects would make each of Python's full garbage collections long
    enough (tens of ms) to show in the client's latencies; arrays hold no references, so the
    collector never scans them. Written on the client's loop thread; the counters may be read
    from another (the progress lines), the arrays once the run is over.
    """

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s  # time.monotonic() at the soak's start
        self._sent_s = array("d")
        self._latency_ms = array("d")
        self._kind = array("B")
        self._why: dict[int, str] = {}
        self.counts = [0, 0, 0]  # by kind: OK, REFUSED, ERROR

    def record(self, sent_s: float, latency_s: float, kind: int, why: str | None) -> None:
        if kind != OK:
            self._why[len(self._kind)] = why or "unstated"
        self._sent_s.append(sent_s - self.start_s)
        self._latency_ms.append(latency_s * 1e3)
        self._kind.append(kind)
        self.counts[kind] += 1

    def answers(self) -> Answers:
        return Answers(
            sent_s=np.array(self._sent_s, dtype=np.float64),
            latency_ms=np.array(self._latency_ms, dtype=np.float64),
            kind=np.array(self._kind, dtype=np.uint8),
            why=dict(self._why),
        )


class RecordingTransport:
    """The client's transport (HttpSut's `Transport`), booking every request it carries."""

    def __init__(self, inner: Transport, recorder: AnswerRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    async def post(self, body: bytes) -> tuple[int, bytes]:
        sent_s = time.monotonic()
        try:
            status, answer = await self._inner.post(body)
        except BaseException as error:  # booked, then raised on: HttpSut books it too
            self._recorder.record(sent_s, time.monotonic() - sent_s, ERROR, type(error).__name__)
            raise
        latency_s = time.monotonic() - sent_s
        outcome = outcome_of(status, answer, latency_s)
        why = outcome.reason or outcome.error
        self._recorder.record(sent_s, latency_s, KIND_CODES[outcome.kind], why)
        return status, answer

    async def close(self) -> None:
        await self._inner.close()


class ResourceSampler:
    """A thread sampling the tree of `pid` at start_s, start_s + sample_s, ... until stopped.

    A tree that can no longer be read (the server exited) ends the sampling; `lost` says why.
    """

    def __init__(
        self,
        pid: int,
        start_s: float,
        sample_s: float,
        on_sample: Callable[[ResourceSample], None] | None = None,
    ) -> None:
        self._pid = pid
        self._start_s = start_s
        self._sample_s = sample_s
        self._on_sample = on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recaccel-soak-sampler", daemon=True)
        self.samples: list[ResourceSample] = []
        self.lost: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        due_s = self._start_s
        while not self._stop.wait(max(0.0, due_s - time.monotonic())):
            sample = sample_tree(self._pid, self._start_s)
            if sample is None:
                self.lost = f"process {self._pid} gone at {due_s - self._start_s:.0f} s"
                return
            self.samples.append(sample)
            if self._on_sample is not None:
                self._on_sample(sample)
            due_s += self._sample_s


def sample_tree(pid: int, start_s: float) -> ResourceSample | None:
    """The tree of `pid` now, timed from `start_s`; None when it cannot be read (exited)."""
    t_s = time.monotonic() - start_s
    try:
        usage = tree_usage(pid)
    except ConfigError:
        return None
    return ResourceSample(t_s, usage.processes, usage.rss_bytes, usage.fds, usage.sockets)


@dataclass(frozen=True)
class SoakRun:
    answers: Answers
    samples: tuple[ResourceSample, ...]
    before: ResourceSample | None  # before the load began
    after: ResourceSample | None  # once it had ended and the client's connections were closed
    scenario: ScenarioResult  # LoadGen's view of the whole run, and the client's books
    sampling_lost: str | None  # why sampling ended early, if it did


def run_soak(
    url: str,
    pid: int,
    workload: RankWorkload,
    target_qps: float,
    layout: SoakLayout,
    p99_ms: float,
    out_dir: Path,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[ResourceSample, AnswerRecorder], None] | None = None,
) -> SoakRun:
    """Offer `target_qps` to the server at `url` for `layout.duration_s`, sampling the process
    tree of `pid` every `layout.sample_s`. LoadGen's logs go to `out_dir`. `progress` sees each
    sample and the answers booked so far."""
    start_s = time.monotonic()
    before = sample_tree(pid, start_s)
    recorder = AnswerRecorder(start_s)

    def on_sample(sample: ResourceSample) -> None:
        if progress is not None:
            progress(sample, recorder)

    def transport() -> RecordingTransport:
        pool = HttpPool(url, RANK_PATH, max_connections=concurrency, timeout_s=timeout_s)
        return RecordingTransport(pool, recorder)

    sampler = ResourceSampler(pid, start_s, layout.sample_s, on_sample)
    sampler.start()
    try:
        scenario = run_server_scenario(
            url,
            workload,
            target_qps,
            p99_ms,
            layout.duration_s,
            min_query_count=1,  # the duration alone decides when the soak ends
            out_dir=out_dir,
            server_pid=pid,
            concurrency=concurrency,
            timeout_s=timeout_s,
            transport=transport,
        )
    finally:
        sampler.stop()
    time.sleep(SETTLE_S)
    after = sample_tree(pid, start_s)
    samples = tuple(sampler.samples)
    return SoakRun(recorder.answers(), samples, before, after, scenario, sampler.lost)
