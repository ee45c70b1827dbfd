"""Highest Server-scenario QPS within a p99 bound, for one `recaccel serve` configuration.

Until `recaccel bench` exists, this is the reproducible way to measure a server: it starts
`recaccel serve` with the given arguments, builds the rank workload from the dataset
(candidates per request lognormal, median 100, p99 about 1,000), runs MLPerf LoadGen's Server
scenario through `recaccel.bench.loadgen.find_max_qps`, prints every run and stops the server.

    .venv/bin/python scripts/serve_max_qps.py --p99-ms 50 -- \
        artifacts/dlrm-heavy-optimized/02-prune-1 --max-workers 1

`--overload 2` then offers twice the highest QPS found and prints how the answers split:
admission control should refuse the excess at once (429) while the answered requests keep
their p99 within the bound. `--at-qps 300 650` skips the search and does that at each load.
The load generator costs about 0.8 ms of CPU per request: on 2 cores it saturates the machine
before an overload reaches the server, unless `--server-cpus 1` gives each its own core.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from recaccel.bench.loadgen import DEFAULT_MIN_QUERY_COUNT, find_max_qps, run_server_scenario
from recaccel.bench.scenario_result import ScenarioResult
from recaccel.bench.search import SearchPolicy
from recaccel.bench.workload import RankWorkload
from recaccel.data.registry import DatasetOptions, load_dataset
from recaccel.defaults import DEFAULT_SLO_P99_MS

PORT = 8831


def wait_ready(process: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/health/ready") as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def show(run: ScenarioResult) -> None:
    lg, books = run.loadgen, run.sut.books
    print(
        f"target {run.target_qps:7.1f} QPS  {'VALID  ' if lg.valid else 'INVALID'}"
        f"  completed {lg.completed_qps:7.1f}  p50 {lg.latency.ms('50.00'):6.2f} ms"
        f"  p99 {lg.latency.ms('99.00'):7.2f} ms  rejected {books.rejected}"
        f" {dict(books.rejected_by_reason) or ''}  failed {books.failed}"
        f"  server CPU {run.server_cpu_s_per_1k:.2f} s/1k requests",
        flush=True,
    )


def cpu_list(text: str) -> set[int]:
    """A taskset CPU list ("1", "0,2", "2-3") as a set."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p99-ms", type=float, default=DEFAULT_SLO_P99_MS)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--start-qps", type=float, default=50.0)
    parser.add_argument("--out", default="/tmp/recaccel-serve-max-qps")
    parser.add_argument(
        "--overload", type=float, default=0.0, help="then offer this multiple of the best QPS"
    )
    parser.add_argument(
        "--at-qps",
        type=float,
        nargs="*",
        default=[],
        help="skip the search: offer each of these QPS and print how the answers split",
    )
    parser.add_argument(
        "--server-cpus",
        help="pin the server and its workers to these CPUs (taskset list, e.g. 1) and this "
        "load generator to the others, so that overload tests the server, not the client",
    )
    parser.add_argument(
        "--dataset", default="movielens-100k", help="whose users and items the requests name"
    )
    parser.add_argument("--rows", type=int, help="criteo-synthetic: rows, as the artifact's")
    parser.add_argument("serve_args", nargs="+", help="arguments for `recaccel serve`")
    args = parser.parse_args()
    options = DatasetOptions(progress=False, synthetic_rows=args.rows)
    dataset = load_dataset(args.dataset, options)
    workload = RankWorkload.from_dataset(dataset, n_samples=20_000, seed=0)
    print("candidates per request:", workload.stats(), flush=True)
    command = [sys.executable, "-m", "recaccel.cli", "serve", *args.serve_args]
    if args.server_cpus:
        server_cpus = cpu_list(args.server_cpus)
        client_cpus = os.sched_getaffinity(0) - server_cpus
        if not client_cpus:
            raise SystemExit(f"--server-cpus {args.server_cpus} leaves no CPU for the client")
        os.sched_setaffinity(0, client_cpus)
        command = ["taskset", "--cpu-list", args.server_cpus, *command]
    server = subprocess.Popen([*command, "--port", str(PORT)])
    try:
        wait_ready(server)
        if args.at_qps:
            for qps in args.at_qps:
                overload(args, workload, qps, server.pid)
            return
        result = find_max_qps(
            f"http://127.0.0.1:{PORT}",
            workload,
            latency_p99_ms=args.p99_ms,
            duration_s=args.duration_s,
            out_dir=Path(args.out),
            policy=SearchPolicy(start_qps=args.start_qps, growth=2, rel_tol=0.1, max_runs=10),
            server_pid=server.pid,
            progress=show,
        )
        print("stopped:", result.stopped)
        if result.best is not None:
            print(f"highest QPS within p99 <= {args.p99_ms:g} ms: {result.best[0]:.1f}")
        if result.best is not None and args.overload > 0:
            overload(args, workload, result.best[0] * args.overload, server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def overload(args: argparse.Namespace, workload: RankWorkload, qps: float, pid: int) -> None:
    run = run_server_scenario(
        f"http://127.0.0.1:{PORT}",
        workload,
        target_qps=qps,
        latency_p99_ms=args.p99_ms,
        duration_s=args.duration_s,
        min_query_count=DEFAULT_MIN_QUERY_COUNT,
        out_dir=Path(args.out) / f"at-{qps:g}",
        server_pid=pid,
    )
    books = run.sut.books
    ok, refused = books.ok_latency, books.rejected_latency
    print(
        f"offered {qps:.1f} QPS, completed {run.loadgen.completed_qps:.1f}/s;"
        f" answered {books.ok} (p50 {ok.p50_ms:.2f} ms, p99 {ok.p99_ms:.2f} ms),"
        f" refused {books.rejected} (p50 {refused.p50_ms:.2f} ms, p99 {refused.p99_ms:.2f} ms;"
        f" {dict(books.rejected_by_reason)}),"
        f" failed {books.failed}; client loop lag p99 {run.sut.overhead.loop_lag.p99_ms:.1f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
