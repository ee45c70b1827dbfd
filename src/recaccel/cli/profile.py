"""`recaccel profile`: time every (artifact, backend, device, precision, threads) configuration;
with --select, choose the one that serves the most rank requests within the SLO and accuracy
budget, and with --served, choose by serving the best candidates under load."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from recaccel.cli.common import console, errors
from recaccel.defaults import DEFAULT_CANDIDATES, DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS
from recaccel.errors import ConfigError

if TYPE_CHECKING:
    from recaccel.runtime.profile import Profile
    from recaccel.runtime.select import Requirements, Selection
    from recaccel.serve.choice import ServedSelection


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{value!r} is not a comma list of integers", "e.g. 1,16,64") from None


def _words(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _profile_table(profile: Profile) -> Table:
    from recaccel.runtime.profile_report import batch_cells, config_cells

    batches = profile.batches
    table = Table(title=f"latency per batch: median ms (p99) — {profile.dataset}")
    for column in ("artifact", "backend", "device", "precision", "thr", "val AUC"):
        table.add_column(column, no_wrap=True)
    for batch in batches:
        table.add_column(f"@{batch}", justify="right", no_wrap=True)
    for e in profile.entries:
        if e.ok:
            table.add_row(*config_cells(e), *batch_cells(e, batches))
    table.caption = "configurations timed interleaved on the same validation rows"
    return table


def _selection_table(selection: Selection) -> Table:
    from recaccel.runtime.profile_report import selection_cells

    needs = selection.requirements
    table = Table(
        title=f"selection: p99 ≤ {needs.slo_p99_ms:g} ms for {needs.candidates} candidates, "
        f"AUC budget {needs.relative_budget:g} rel, {needs.cores} core(s)"
    )
    columns = ["configuration", "val AUC", "ΔAUC", f"p99 @{needs.candidates}", "req/batch",
               "workers", "est. req/s", "verdict"]  # fmt: skip
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("configuration", "verdict") else "right"
        )
    for j in selection.table:
        if j.request_p99_ms is not None:  # unmeasured ones are listed as not runnable
            table.add_row(*(escape(cell) for cell in selection_cells(j)))
    return table


def handle(args: argparse.Namespace) -> int:
    import os

    from recaccel.artifact import require_trained_dataset
    from recaccel.runtime.profile import load_profile
    from recaccel.runtime.profile_report import (
        not_runnable,
        selection_summary,
        write_profile_outputs,
    )
    from recaccel.runtime.profiler import ProfileOptions, run_profile
    from recaccel.runtime.select import Requirements, select
    from recaccel.serve.choice import SERVED_FILE, served_table

    needs = Requirements(
        args.slo_ms, args.candidates, args.accuracy_budget, args.cores or os.cpu_count() or 1
    )
    out = Path(args.out)
    # Every argument is checked before anything is loaded or measured.
    options = ProfileOptions(
        backends=_words(args.backends),
        devices=_words(args.devices),
        precisions=_words(args.precisions),
        threads=None if args.threads is None else _ints(args.threads),
        batches=_ints(args.batches),
        serving_batch=args.candidates,
        repeats=args.repeats,
        seconds_per_batch=args.seconds_per_batch,
    )
    if args.profile is not None:
        if args.artifacts:
            raise ConfigError("give artifacts to measure, or --from a saved profile, not both")
        profile = load_profile(Path(args.profile))
    else:
        if not args.artifacts:
            raise ConfigError(
                "no artifacts to profile", "name artifact directories, or --from a profile.json"
            )
        progress = not args.json
        dataset = require_trained_dataset(Path(args.artifacts[0]), progress)
        profile = run_profile(
            [Path(a) for a in args.artifacts], dataset, options, progress=progress
        )
    selection = select(profile, needs) if args.select else None
    write_profile_outputs(profile, selection, out)
    served = None
    if args.served:
        if not args.select:
            raise ConfigError("--served chooses among what --select ranks", "add --select")
        served = _served_selection(profile, needs, args, out)
    if args.json:
        print(
            json.dumps(
                {
                    "profile": profile.to_dict(),
                    "selection": None if selection is None else selection.to_dict(),
                    "served": None if served is None else served.to_dict(),
                    "out": str(out),
                },
                indent=2,
            )
        )
        return 0
    console.print(_profile_table(profile))
    for what, why in not_runnable(profile).items():
        console.print(f"not runnable: {escape(what)}: {escape(why)}", highlight=False)
    if selection is not None:
        console.print(_selection_table(selection))
        console.print(escape(selection_summary(selection)))
    if served is not None:
        console.print(escape(served_table(served)), highlight=False)
        console.print(f"served selection: {out / SERVED_FILE}, {out / 'served.md'}")
    console.print(f"profile: {out / 'profile.json'}, {out / 'profile.md'}, {out / 'profile.png'}")
    return 0


def _served_selection(
    profile: Profile, needs: Requirements, args: argparse.Namespace, out: Path
) -> ServedSelection:
    """Measure the best candidates served (bench/served.py) and write served.json and .md."""
    from recaccel.bench.served import ServedOptions, select_served
    from recaccel.bench.workload import RankWorkload
    from recaccel.data.registry import DatasetOptions, load_dataset
    from recaccel.machine import describe_machine
    from recaccel.runtime.profiler import machine_facts
    from recaccel.serve.choice import save_served, served_table

    if not profile.dataset:
        raise ConfigError("the profile does not name its dataset: the workload comes from it")
    dataset = load_dataset(profile.dataset, DatasetOptions(progress=False))
    workload = RankWorkload.from_dataset(dataset, n_samples=20_000, seed=0)
    options = ServedOptions(
        slo_ms=needs.slo_p99_ms,
        relative_budget=needs.relative_budget,
        cores=needs.cores,
        budget_s=args.served_budget_s,
    )
    say = (lambda line: None) if args.json else (lambda line: errors.print(line, highlight=False))
    served = select_served(
        profile,
        workload,
        options,
        out / "served",
        progress=say,
        machine=describe_machine(machine_facts()),
    )
    save_served(served, out)
    (out / "served.md").write_text(served_table(served))
    return served


def add_parser(verbs: Any) -> None:
    profile = verbs.add_parser(
        "profile",
        help="measure every backend, precision and thread count; select the best for an SLO",
        description="Time each (artifact, backend, device, precision, threads) configuration "
        "at several batch sizes, interleaved, and score the validation split with each. Writes "
        "profile.json (the latency model serving uses), profile.md and profile.png. With "
        "--select, picks the configuration that serves the most rank requests within the SLO "
        "and accuracy budget, and explains the choice.",
    )
    profile.add_argument(
        "artifacts", nargs="*", help="artifact directories; the first is the baseline"
    )
    profile.add_argument(
        "--from", dest="profile", help="select from a saved profile.json instead of measuring"
    )
    profile.add_argument(
        "--out", default="artifacts/profile", help="output directory (default: %(default)s)"
    )
    profile.add_argument("--backends", help="comma list (default: every installed backend)")
    profile.add_argument(
        "--devices", help="comma list, e.g. cpu,cuda (default: cpu, and cuda when visible)"
    )
    profile.add_argument(
        "--precisions", help="comma list (default: all each backend runs natively)"
    )
    profile.add_argument(
        "--threads", help="comma list of intra-op thread counts (default: 1 and all cores)"
    )
    profile.add_argument(
        "--batches",
        default="1,16,64,256,1024",
        help="batch sizes in rows (default: %(default)s); the --candidates size is added",
    )
    profile.add_argument(
        "--repeats",
        type=int,
        default=200,
        help="timed rounds per batch size at most (default: %(default)s)",
    )
    profile.add_argument(
        "--seconds-per-batch",
        type=float,
        default=30.0,
        help="cap on each batch size: fewer rounds, at least 30 (default: %(default)s)",
    )
    profile.add_argument("--select", action="store_true", help="pick the configuration for the SLO")
    profile.add_argument(
        "--slo-ms",
        type=float,
        default=DEFAULT_SLO_P99_MS,
        help="p99 latency per rank request (default: %(default)s)",
    )
    profile.add_argument(
        "--candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        help="candidates per rank request, the serving batch (default: %(default)s)",
    )
    profile.add_argument(
        "--accuracy-budget",
        type=float,
        default=DEFAULT_RELATIVE_BUDGET,
        help="relative validation-AUC loss allowed vs the baseline (default: %(default)s)",
    )
    profile.add_argument(
        "--cores", type=int, help="cores the serving workers may use (default: all)"
    )
    profile.add_argument(
        "--served",
        action="store_true",
        help="with --select: serve the best candidates on this machine under load and choose "
        "by what they serve (writes served.json and served.md, which `serve --select` uses)",
    )
    profile.add_argument(
        "--served-budget-s",
        type=float,
        default=300.0,
        help="time for the served candidates, the re-measurement not included "
        "(default: %(default)s)",
    )
    profile.add_argument(
        "--json", action="store_true", help="print the profile and selection as JSON"
    )
    profile.set_defaults(run=handle)
