"""Run MLPerf LoadGen scenarios against a live server and combine its verdict with ours.

LoadGen decides when each query is sent (the Server scenario's Poisson arrivals at a target
QPS; the Offline scenario's everything at once), measures every latency from its own issue
time, and judges the run VALID or INVALID by MLPerf's rules (loadgen_log.py). We add what it
cannot know: how many answers were refusals or errors (LoadGen counts a 429 as a fast
success), whether each sample was completed exactly once, what the client itself cost, and
the server's CPU time per 1,000 requests (cpu.py): the run's `ScenarioResult`
(scenario_result.py).

    result = run_server_scenario("http://127.0.0.1:8000", workload, target_qps=200,
                                 latency_p99_ms=50, duration_s=10, min_query_count=500,
                                 out_dir=Path("results/bench/200qps"), server_pid=pid)
    result.meets_bound, result.loadgen.completed_qps, result.loadgen.latency.ms("99.00")

LoadGen requires both a minimum duration and a minimum query count in the Server scenario and
runs until both are met; a p99 needs about 460 queries before early stopping lets a run be
VALID, so a short run at a low QPS is INVALID for that reason alone (loadgen_log.py).

LoadGen writes its logs (summary, detail) into `out_dir`; the trace is off (it grows with
every query and nothing here reads it). It reads `audit.config` from the path we give it:
`out_dir/audit.config`, absent, so a stray audit file in the working directory — MLPerf's
compliance tests override settings with one — cannot change a run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlperf_loadgen as lg

from recaccel.bench.cpu import process_tree_cpu_s
from recaccel.bench.loadgen_log import read_result
from recaccel.bench.scenario_result import LATENCY_PERCENTILE, ScenarioResult
from recaccel.bench.search import SearchPolicy, SearchResult, search
from recaccel.bench.sut import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    HttpSut,
    Transport,
)
from recaccel.bench.workload import RankWorkload
from recaccel.errors import ConfigError

# Early stopping needs ~460 queries for a p99 with none over the bound; a little more leaves
# room for one or two over it.
DEFAULT_MIN_QUERY_COUNT = 600


def server_settings(
    target_qps: float,
    latency_p99_ms: float,
    duration_s: float,
    min_query_count: int,
    max_duration_s: float | None = None,
) -> lg.TestSettings:
    """LoadGen's Server scenario, performance only, at `target_qps` Poisson arrivals.

    `max_duration_s` caps the run: LoadGen stops issuing then, even short of `min_query_count`
    (and calls the run INVALID for it), so a low target QPS cannot make a run last minutes.
    """
    _check_positive(target_qps=target_qps, latency_p99_ms=latency_p99_ms)
    settings = _settings(lg.TestScenario.Server, duration_s, min_query_count)
    if max_duration_s is not None:
        if max_duration_s < duration_s:
            raise ConfigError(
                f"max_duration_s={max_duration_s} is below duration_s={duration_s}",
                "let a run last at least its minimum duration",
            )
        settings.max_duration_ms = math.ceil(max_duration_s * 1000)
    settings.server_target_qps = float(target_qps)
    settings.server_target_latency_ns = round(latency_p99_ms * 1e6)
    settings.server_target_latency_percentile = LATENCY_PERCENTILE
    return settings


def offline_settings(
    expected_qps: float, duration_s: float, min_query_count: int
) -> lg.TestSettings:
    """LoadGen's Offline scenario: every sample at once; throughput is what counts."""
    _check_positive(expected_qps=expected_qps)
    settings = _settings(lg.TestScenario.Offline, duration_s, min_query_count)
    settings.offline_expected_qps = float(expected_qps)
    return settings


def run_server_scenario(
    url: str,
    workload: RankWorkload,
    target_qps: float,
    latency_p99_ms: float,
    duration_s: float,
    min_query_count: int,
    out_dir: Path,
    *,
    server_pid: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_duration_s: float | None = None,
    transport: Callable[[], Transport] | None = None,
) -> ScenarioResult:
    """One Server-scenario run at `target_qps` with p99 <= `latency_p99_ms` as the bound.

    Args:
        url: the server's base URL (http://host:port).
        workload: the requests; LoadGen picks sample indexes among them.
        duration_s, min_query_count: LoadGen runs until both are reached.
        out_dir: LoadGen's logs go here (created).
        server_pid: the server's pid, to report its CPU time (Linux only).
        concurrency: connections in the client's pool.
        timeout_s: a request unanswered by then fails.
        max_duration_s: stop issuing after this long (see `server_settings`); None: no cap.
        transport: makes the client's transport (HttpSut's `transport`; default its pool), for
            a caller that books each answer as it comes (bench/soak_run.py).
    """
    settings = server_settings(
        target_qps, latency_p99_ms, duration_s, min_query_count, max_duration_s
    )
    return _run(
        settings,
        "Server",
        target_qps,
        latency_p99_ms,
        url,
        workload,
        out_dir,
        server_pid,
        concurrency,
        timeout_s,
        transport,
    )


def run_offline_scenario(
    url: str,
    workload: RankWorkload,
    expected_qps: float,
    duration_s: float,
    min_query_count: int,
    out_dir: Path,
    *,
    server_pid: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ScenarioResult:
    """One Offline-scenario run: LoadGen issues about `expected_qps` × `duration_s` samples
    at once; the client sends them `concurrency` at a time. Arguments as the Server run's."""
    settings = offline_settings(expected_qps, duration_s, min_query_count)
    return _run(
        settings,
        "Offline",
        expected_qps,
        None,
        url,
        workload,
        out_dir,
        server_pid,
        concurrency,
        timeout_s,
    )


def find_max_qps(
    url: str,
    workload: RankWorkload,
    latency_p99_ms: float,
    duration_s: float,
    out_dir: Path,
    *,
    policy: SearchPolicy | None = None,
    meets: Callable[[ScenarioResult], bool] = lambda result: result.meets_bound,
    min_query_count: int = DEFAULT_MIN_QUERY_COUNT,
    server_pid: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[ScenarioResult], None] | None = None,
    query_count: Callable[[float], int] | None = None,
) -> SearchResult[ScenarioResult]:
    """The highest Server-scenario QPS whose run `meets_bound` (search.py: grow, then bisect).

    Each run's logs go to `out_dir/run-NN-<qps>qps`. Returns every run in order — the
    latency-throughput curve — and the best passing one. `progress` sees each run as it ends.
    `query_count(qps)`, when given, is each run's minimum query count in place of
    `min_query_count`.
    """
    count = 0

    def run(target_qps: float) -> ScenarioResult:
        nonlocal count
        count += 1
        result = run_server_scenario(
            url,
            workload,
            target_qps,
            latency_p99_ms,
            duration_s,
            min_query_count if query_count is None else query_count(target_qps),
            out_dir / f"run-{count:02d}-{target_qps:.4g}qps",
            server_pid=server_pid,
            concurrency=concurrency,
            timeout_s=timeout_s,
        )
        if progress is not None:
            progress(result)
        return result

    return search(run, meets, policy or SearchPolicy())


# --- the run itself ------------------------------------------------------------------------------


def _settings(scenario: Any, duration_s: float, min_query_count: int) -> lg.TestSettings:
    if not duration_s > 0:
        raise ConfigError(f"duration_s={duration_s} must be positive", "e.g. 10")
    if min_query_count < 1:
        raise ConfigError(
            f"min_query_count={min_query_count} < 1",
            "LoadGen's Server scenario needs one; a VALID p99 needs about 460",
        )
    settings = lg.TestSettings()
    settings.scenario = scenario
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = math.ceil(duration_s * 1000)
    settings.min_query_count = int(min_query_count)
    return settings


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{name}={value} must be a positive number")


def _log_settings(out_dir: Path) -> lg.LogSettings:
    output = lg.LogOutputSettings()
    output.outdir = str(out_dir)
    output.copy_summary_to_stdout = False
    output.copy_detail_to_stdout = False
    settings = lg.LogSettings()
    settings.log_output = output
    settings.enable_trace = False
    return settings


def _no_op(indexes: list[int]) -> None:
    """QSL load/unload: the bodies are prebuilt and always in memory."""


def _run(
    settings: lg.TestSettings,
    scenario: str,
    target_qps: float,
    latency_bound_ms: float | None,
    url: str,
    workload: RankWorkload,
    out_dir: Path,
    server_pid: int | None,
    concurrency: int,
    timeout_s: float,
    transport: Callable[[], Transport] | None = None,
) -> ScenarioResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    server_before = None if server_pid is None else process_tree_cpu_s(server_pid)
    with HttpSut(
        workload.bodies, url, concurrency=concurrency, timeout_s=timeout_s, transport=transport
    ) as sut:
        sut_handle = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
        qsl_handle = lg.ConstructQSL(len(workload), len(workload), _no_op, _no_op)
        try:
            client_before, start = time.process_time(), time.monotonic()
            lg.StartTestWithLogSettings(
                sut_handle,
                qsl_handle,
                settings,
                _log_settings(out_dir),
                str(out_dir / "audit.config"),
            )
            wall_s = time.monotonic() - start
            client_cpu_s = time.process_time() - client_before
            server_cpu_s = (
                None
                if server_pid is None or server_before is None
                else process_tree_cpu_s(server_pid) - server_before
            )
        finally:
            lg.DestroyQSL(qsl_handle)
            lg.DestroySUT(sut_handle)
    return ScenarioResult(
        scenario=scenario,
        target_qps=target_qps,
        latency_bound_ms=latency_bound_ms,
        loadgen=read_result(out_dir),
        sut=sut.report(),
        wall_s=wall_s,
        client_cpu_s=client_cpu_s,
        server_cpu_s=server_cpu_s,
        out_dir=out_dir,
        answered_late=0 if latency_bound_ms is None else sut.books.answered_over(latency_bound_ms),
        rankings=sut.books.rankings,
        latencies_ms=sut.books.latencies_ms(),
    )
