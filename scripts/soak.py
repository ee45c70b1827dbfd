"""Soak a server: hold 70% of its capacity for 10 minutes and judge whether it stays healthy.

Starts `recaccel serve ARTIFACT` with --serve-args (or soaks a server already running: --url
and --pid, the pid of its top process, whose tree is read from /proc), finds the highest QPS
whose p99 stays within --p99-ms (the bench's search: MLPerf LoadGen Server-scenario runs,
bench/loadgen.py `find_max_qps`) unless --qps is given, then offers --load-fraction of it as
Poisson arrivals of /v1/rank requests for --duration-s. Every --sample-s it sums RSS and open
fds over the server's process tree; per --window-s window it counts what was answered, refused
(by reason) and failed, and the answered requests' p99. It prints a markdown table and a
verdict (bench/soak.py states the criteria: RSS and fds other than sockets grow <= 5% after
the warm-up, fds after the load within 5% of before it, p99 stable per window, no errors, no
refusals), and writes every sample to --out.

    .venv/bin/python scripts/soak.py artifacts/dlrm-heavy-optimized/02-prune-1 \
        --serve-args "--processes 2" --duration-s 600 --out /tmp/soak.json
    .venv/bin/python scripts/soak.py --url http://127.0.0.1:8000 --pid 12345 --qps 200

The requests: the artifact's dataset's users and items (lognormal candidate counts, median
100, p99 about 1,000: bench/workload.py), --dataset NAME for another, or --bodies FILE, one
/v1/rank body per line, sent as they are. One request is sent first; the soak starts only if
it is answered 200. --serve-args takes one string; one flag alone needs the = form:
--serve-args=--reuse. The load generator shares the machine with the server (about 0.3 ms of
CPU per request): on a small machine its share is part of what limits the capacity found.

Exit status: 0 the verdict passes, 1 it fails (the failed criteria are named) or no load
meets the p99 bound, 2 bad arguments or a server that cannot be soaked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recaccel.bench.loadgen import find_max_qps
from recaccel.bench.proc_usage import tree_usage
from recaccel.bench.scenario_result import ScenarioResult
from recaccel.bench.search import SearchPolicy
from recaccel.bench.soak import (
    MIB,
    OK,
    ResourceSample,
    SoakCriteria,
    SoakLayout,
    Verdict,
    WindowSummary,
    judge,
    markdown_report,
    summarise_windows,
)
from recaccel.bench.soak_bursts import around_trouble, markdown_bursts
from recaccel.bench.soak_run import AnswerRecorder, SoakRun, run_soak
from recaccel.bench.sut import RANK_PATH, outcome_of
from recaccel.bench.workload import RankWorkload
from recaccel.errors import ConfigError, RecaccelError
from recaccel.machine import describe_machine

PASSED, FAILED, BAD_ARGUMENTS, INTERRUPTED = 0, 1, 2, 130
WORKLOAD_SAMPLES = 20_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    parser.add_argument("artifact", nargs="?", help="start `recaccel serve ARTIFACT` and soak it")
    parser.add_argument("--serve-args", default="", help="more `recaccel serve` flags, one string")
    parser.add_argument("--url", help="soak this running server instead (http://host:port)")
    parser.add_argument("--pid", type=int, help="with --url: its top process, for /proc")
    parser.add_argument("--qps", type=float, help="offer this load; default: measure capacity")
    parser.add_argument("--load-fraction", type=float, default=0.7, help="of the capacity")
    parser.add_argument(
        "--p99-ms", type=float, default=SoakCriteria.p99_ms, help="the latency target"
    )
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS and fds this often")
    parser.add_argument("--window-s", type=float, default=60.0, help="latency and counts per")
    parser.add_argument(
        "--warmup-s", type=float, help="not judged for growth and p99 (default: one window)"
    )
    parser.add_argument("--max-growth", type=float, default=0.05, help="RSS and fds, relative")
    parser.add_argument("--search-duration-s", type=float, default=10.0, help="each search run")
    parser.add_argument("--start-qps", type=float, default=50.0, help="the search's first run")
    parser.add_argument("--dataset", help="whose users and items the requests name")
    parser.add_argument("--bodies", type=Path, help="send these /v1/rank bodies (a line each)")
    parser.add_argument("--out", type=Path, help="write every sample and window here (JSON)")
    parser.add_argument(
        "--logs", type=Path, help="server and LoadGen logs (default: a new temporary directory)"
    )
    args = parser.parse_args(argv)
    if (args.artifact is None) == (args.url is None):
        parser.error("give either an ARTIFACT to serve or the --url of a running server")
    if (args.url is None) != (args.pid is None):
        parser.error("--url and --pid go together: the server's address and its process")
    if args.serve_args and args.artifact is None:
        parser.error("--serve-args applies when the script starts the server (ARTIFACT)")
    if args.qps is not None and not args.qps > 0:
        parser.error(f"--qps {args.qps:g} must be positive")
    if not 0 < args.load_fraction <= 1:
        parser.error(f"--load-fraction {args.load_fraction:g} must be in (0, 1]")
    if args.dataset and args.bodies:
        parser.error("--dataset and --bodies are two sources of requests; give one")
    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: no directory {args.out.parent} to write it in")
    return args


def load_workload(args: argparse.Namespace) -> RankWorkload:
    if args.bodies is not None:
        try:
            lines = [line for line in args.bodies.read_bytes().splitlines() if line.strip()]
        except OSError as error:
            raise ConfigError(f"cannot read --bodies {args.bodies}: {error}") from None
        return RankWorkload.from_bodies(lines, str(args.bodies))
    from recaccel.artifact import trained_dataset
    from recaccel.data.registry import DatasetOptions, load_dataset

    dataset = None
    if args.artifact is not None and args.dataset is None:
        dataset = trained_dataset(Path(args.artifact))  # ArtifactError: none there
    if dataset is None:
        dataset = load_dataset(args.dataset or "movielens-100k", DatasetOptions(progress=False))
    return RankWorkload.from_dataset(dataset, n_samples=WORKLOAD_SAMPLES, seed=0)


@contextmanager
def soaked_server(args: argparse.Namespace, logs: Path) -> Iterator[tuple[str, int]]:
    """(url, pid) of the server to soak: the one given, or one started here and stopped after."""
    if args.artifact is None:
        tree_usage(args.pid)  # ConfigError: no such process, or no /proc
        yield args.url.rstrip("/"), args.pid
        return
    from recaccel.bench.fleet import ServerFleet
    from recaccel.bench.plan import ServerPlan
    from recaccel.bench.run import artifact_ref

    ref = artifact_ref(Path(args.artifact))
    serve_args = (str(ref.path), *shlex.split(args.serve_args))
    # The fleet keeps RECACCEL_<SECTION>_* settings from a server unless the plan names them:
    # here they are the user's, so they go through.
    env = {key: value for key, value in os.environ.items() if key.startswith("RECACCEL_")}
    plan = ServerPlan("soak", "the soaked server", ref, args.serve_args, serve_args, env)
    with ServerFleet([plan], logs / "server") as fleet:
        print(f"serving: {fleet['soak'].command} (pid {fleet['soak'].pid})", flush=True)
        yield fleet["soak"].url, fleet["soak"].pid


def preflight(url: str, body: bytes) -> None:
    """One rank request, answered with a ranking, or ConfigError: a soak of errors proves
    nothing."""
    request = urllib.request.Request(
        url + RANK_PATH, body, {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    except OSError as error:
        raise ConfigError(f"no answer from {url}: {error}", "is the server running?") from None
    outcome = outcome_of(status, text, 0.0)
    if outcome.kind != "ok":
        raise ConfigError(
            f"{url} answered a rank request with HTTP {status} "
            f"({outcome.reason or outcome.error}): {text[:300]!r}",
            "does the server serve the users and items the requests name? (--dataset, --bodies)",
        )


def show_search_run(run: ScenarioResult) -> None:
    p99_ms, verdict = run.loadgen.latency.ms("99.00"), "meets" if run.meets_bound else "misses"
    print(
        f"  search: {run.target_qps:7.1f} QPS  p99 {p99_ms:7.2f} ms  {verdict} the bound"
        f" {', '.join(run.bound_misses)}",
        flush=True,
    )


def capacity(
    url: str, pid: int, workload: RankWorkload, args: argparse.Namespace, logs: Path
) -> tuple[float | None, list[dict[str, Any]]]:
    """The highest QPS whose run meets p99 <= --p99-ms (bench/search.py), and every run."""
    policy = SearchPolicy(start_qps=args.start_qps, growth=2, rel_tol=0.1, max_runs=10)
    result = find_max_qps(
        url,
        workload,
        args.p99_ms,
        args.search_duration_s,
        logs / "capacity",
        policy=policy,
        server_pid=pid,
        progress=show_search_run,
    )
    runs = [
        {"target_qps": qps, "p99_ms": run.loadgen.latency.ms("99.00"), "meets_bound": ok}
        for qps, run, ok in result.runs
    ]
    print(f"  search {result.stopped}", flush=True)
    return (None if result.best is None else result.best[0]), runs


def show_progress(sample: ResourceSample, recorder: AnswerRecorder) -> None:
    answered, refused, errors = recorder.counts
    print(
        f"  {sample.t_s:6.0f} s  RSS {sample.rss_bytes / MIB:8.1f} MiB  fds {sample.fds:5d}"
        f" (sockets {sample.sockets:4d})  processes {sample.processes:3d}  answered"
        f" {answered:9,d}  refused {refused:6,d}  errors {errors:6,d}",
        flush=True,
    )


def record(
    argv: Sequence[str],
    target_qps: float,
    search: dict[str, Any],
    layout: SoakLayout,
    criteria: SoakCriteria,
    run: SoakRun,
    windows: Sequence[WindowSummary],
    verdict: Verdict,
) -> dict[str, Any]:
    """Everything the soak measured, for --out."""
    books, loadgen = run.scenario.sut.books, run.scenario.loadgen
    return {
        "command": shlex.join(["scripts/soak.py", *argv]),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),  # as the bench's report states it
        "target_qps": target_qps,
        "capacity_search": search,
        "layout": dataclasses.asdict(layout),
        "criteria": dataclasses.asdict(criteria),
        "samples": [dataclasses.asdict(s) for s in run.samples],
        "before_the_load": None if run.before is None else dataclasses.asdict(run.before),
        "after_the_load": None if run.after is None else dataclasses.asdict(run.after),
        "sampling_lost": run.sampling_lost,
        "windows": [dataclasses.asdict(w) for w in windows],
        "verdict": {
            "passed": verdict.passed,
            "checks": [dataclasses.asdict(c) for c in verdict.checks],
        },
        "loadgen": {
            "completed_qps": loadgen.completed_qps,
            "valid": loadgen.valid,
            "p99_ms": loadgen.latency.ms("99.00"),
            "queries": loadgen.query_count,
        },
        "client_books": {
            "ok": books.ok,
            "rejected": books.rejected,
            "failed": books.failed,
            "consistent": books.consistent,
        },
        "server_cpu_s_per_1k": run.scenario.server_cpu_s_per_1k,
    }


def soak(args: argparse.Namespace, argv: Sequence[str]) -> int:
    layout = SoakLayout(
        args.duration_s,
        args.window_s,
        args.window_s if args.warmup_s is None else args.warmup_s,
        args.sample_s,
    )
    criteria = SoakCriteria(p99_ms=args.p99_ms, max_growth=args.max_growth)
    workload = load_workload(args)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="recaccel-soak-"))
    print(f"logs: {logs}", flush=True)
    with soaked_server(args, logs) as (url, pid):
        preflight(url, workload.bodies[0])
        search: dict[str, Any] = {"capacity_qps": None, "runs": []}
        if args.qps is None:
            search["capacity_qps"], search["runs"] = capacity(url, pid, workload, args, logs)
            if search["capacity_qps"] is None:
                print(f"FAIL: no load meets p99 <= {args.p99_ms:g} ms; nothing to soak at")
                return FAILED
            print(f"capacity: {search['capacity_qps']:.1f} QPS", flush=True)
        target_qps = args.qps or args.load_fraction * search["capacity_qps"]
        print(f"soaking at {target_qps:.1f} QPS for {layout.duration_s:g} s", flush=True)
        soak_logs = logs / "soak"
        run = run_soak(
            url, pid, workload, target_qps, layout, args.p99_ms, soak_logs, progress=show_progress
        )
    windows = summarise_windows(run.answers, run.samples, layout)
    verdict = judge(windows, criteria, run.before, run.after)
    trouble = around_trouble(run.answers)
    summary = record(argv, target_qps, search, layout, criteria, run, windows, verdict)
    summary["around_trouble"] = [[dataclasses.asdict(s) for s in burst] for burst in trouble]
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{markdown_report(windows, verdict)}\n")
    if trouble:
        print(f"Around the refusals and errors, by send time:\n\n{markdown_bursts(trouble)}")
    whole, books = run.scenario, summary["client_books"]
    print(
        f"LoadGen, the whole run: {whole.loadgen.completed_qps:.1f} QPS completed, p99 "
        f"{whole.loadgen.latency.ms('99.00'):.2f} ms; server CPU "
        f"{whole.server_cpu_s_per_1k or 0:.2f} s per 1,000 requests"
    )
    if run.sampling_lost:
        print(f"sampling ended early: {run.sampling_lost}")
    if int((run.answers.kind == OK).sum()) != books["ok"]:
        print(f"warning: the windows' counts and the client's books differ: {books}")
    return PASSED if verdict.passed else FAILED


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)  # bad arguments: usage and exit status 2
    try:
        return soak(args, argv)
    except RecaccelError as error:
        print(f"soak.py: {error}", file=sys.stderr)
        return BAD_ARGUMENTS
    except KeyboardInterrupt:
        print("soak.py: interrupted; the server (if started here) is stopped", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
