"""`recaccel bench`: serve the baseline, the ablations and recaccel side by side under MLPerf
LoadGen, and write the report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from recaccel.cli.common import console, errors
from recaccel.defaults import DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS

if TYPE_CHECKING:
    from recaccel.bench.results import BenchResult


def _bench_command(args: argparse.Namespace) -> str:
    """The `recaccel bench` command line that reproduces this run, for the report."""
    import shlex

    words = ["recaccel", "bench", *args.artifacts, "--baseline", args.baseline]
    if args.profile:
        words += ["--profile", args.profile]
    words += ["--slo-ms", f"{args.slo_ms:g}", "--accuracy-budget", f"{args.accuracy_budget:g}"]
    if args.duration_s is not None:
        words += ["--duration-s", f"{args.duration_s:g}"]
    if args.quick:
        words.append("--quick")
    if args.base_port is not None:
        words += ["--base-port", str(args.base_port)]
    return shlex.join([*words, "--out", args.out])


def _bench_table(result: BenchResult) -> Table:
    table = Table(title=f"recaccel bench: p99 ≤ {result.slo_ms:g} ms per rank request")
    columns = ["configuration", "model", "runtime", "served AUC", "max QPS in SLO",
               "Offline QPS", f"p99 ms @ {result.reference_qps:.4g} QPS", "LoadGen"]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for c in result.configs:
        ref = c.at_reference
        table.add_row(
            c.name,
            c.model,
            escape(c.runtime),
            "—" if c.served_auc is None else f"{c.served_auc:.4f}",
            "none" if c.max_qps is None else f"{c.max_qps:.1f}",
            "—" if c.offline is None else f"{c.offline.ok_qps:.1f}",
            "—" if ref is None else f"{ref.p99_ms:.2f}",
            "—" if ref is None else ref.verdict,
        )
    return table


def handle(args: argparse.Namespace) -> int:
    from recaccel.artifact import require_trained_dataset
    from recaccel.bench.fleet import choose_ports
    from recaccel.bench.plan import MAX_SERVERS, check_coverage
    from recaccel.bench.report import write_report
    from recaccel.bench.run import BenchOptions, artifact_ref, default_candidates, run_bench
    from recaccel.runtime.profile import load_profile

    # Every argument is checked before anything is loaded, started or measured.
    settings: dict[str, Any] = {
        "slo_ms": args.slo_ms,
        "relative_budget": args.accuracy_budget,
        "base_port": args.base_port,
    }
    if args.duration_s is not None:
        settings["duration_s"] = args.duration_s
    options = BenchOptions.quick_settings(**settings) if args.quick else BenchOptions(**settings)
    if args.base_port is not None:
        choose_ports(MAX_SERVERS, args.base_port)  # ConfigError if one is taken
    heavy = Path(args.baseline)
    heavy_ref = artifact_ref(heavy)
    candidates = [Path(a) for a in args.artifacts] or default_candidates(heavy)
    refs = [artifact_ref(c) for c in candidates]
    profile = None if args.profile is None else load_profile(Path(args.profile))
    if profile is not None:
        check_coverage(profile, heavy_ref, refs)
    dataset = require_trained_dataset(heavy, progress=False)
    out = Path(args.out)

    def say(text: str) -> None:
        errors.print(escape(text), highlight=False)

    result = run_bench(
        heavy,
        candidates,
        dataset,
        out,
        options,
        profile,
        profile_source=args.profile or "",
        command=_bench_command(args),
        say=say,
    )
    written = write_report(result, out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    console.print(_bench_table(result))
    for bar in result.headline.bars:
        value = "—" if bar.value is None else f"{bar.value:.4g}"
        paper = {True: "meets", False: "misses", None: "cannot judge"}[bar.meets_paper]
        aim = {True: "meets", False: "misses", None: "cannot judge"}[bar.meets_aim]
        console.print(
            f"{escape(bar.claim)}: {value} — {paper} the paper's bar ({bar.paper:g}), {aim} "
            f"our aim ({bar.aim:g}); {escape(bar.basis)}",
            highlight=False,
        )
    console.print(f"report: {', '.join(str(p) for p in written)} ({result.wall_s:.0f} s)")
    return 0


def add_parser(verbs: Any) -> None:
    bench = verbs.add_parser(
        "bench",
        help="benchmark baseline, ablations and recaccel under MLPerf LoadGen; write a report",
        description="Serve four configurations side by side — baseline (the heavy FP32 model "
        "in PyTorch eager, one request at a time), model-only, system-only and recaccel (the "
        "selected model, runtime, batching and workers) — and measure each, interleaved, under "
        "the same p99 SLO: served test AUC, Offline throughput, the highest Server-scenario QPS "
        "within the SLO, and latency at the baseline's highest QPS. Writes report.md, "
        "report.json and plots to --out.",
    )
    bench.add_argument(
        "artifacts",
        nargs="*",
        help="artifacts recaccel may select among (default: those `recaccel optimize` kept "
        "in BASELINE-optimized)",
    )
    bench.add_argument(
        "--baseline",
        default="artifacts/dlrm-heavy",
        help="the heavy FP32 artifact (default: %(default)s)",
    )
    bench.add_argument(
        "--profile",
        help="profile.json of the baseline (first) and the artifacts (default: measure one, "
        "reduced, in about a minute or two)",
    )
    bench.add_argument(
        "--slo-ms",
        type=float,
        default=DEFAULT_SLO_P99_MS,
        help="p99 latency bound per rank request, for every configuration (default: %(default)s)",
    )
    bench.add_argument(
        "--duration-s",
        type=float,
        help="minimum length of each Server-scenario run (default 10; 4 with --quick)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="short runs, few of them: a smoke check in minutes"
    )
    bench.add_argument(
        "--accuracy-budget",
        type=float,
        default=DEFAULT_RELATIVE_BUDGET,
        help="relative validation-AUC loss the selection may accept (default: %(default)s)",
    )
    bench.add_argument(
        "--base-port",
        type=int,
        help="serve on 127.0.0.1 ports BASE..BASE+3 (default: free ports)",
    )
    bench.add_argument(
        "--out", default="results/bench", help="report directory (default: %(default)s)"
    )
    bench.add_argument("--json", action="store_true", help="print report.json")
    bench.set_defaults(run=handle)
