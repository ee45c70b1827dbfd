"""`recaccel optimize`: apply a recipe of optimization steps to an artifact under the accuracy
guard, and print the kept variants and each step's decision."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from recaccel.cli.common import console

if TYPE_CHECKING:
    from recaccel.optimize.report import OptimizeReport


def _optimize_table(report: OptimizeReport) -> Table:
    batch = report.serving_batch
    table = Table(title=f"recipe {report.recipe!r} on {report.dataset}")
    columns = [
        "variant", "model", "params", "bytes on disk", "ms @1", f"ms @{batch}",
        f"rows/s @{batch}", "speedup", "smaller", "val AUC", "test AUC", "test ΔAUC [95% CI]",
    ]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right", no_wrap=True)
    for v in report.variants:
        table.add_row(
            v.name,
            v.model,
            f"{v.parameters:,}",
            f"{v.weights_bytes:,}",
            f"{v.latency_batch1.median_ms:.3f}",
            f"{v.latency_serving.median_ms:.3f}",
            f"{v.latency_serving.rows_per_second:,.0f}",
            f"{v.speedup:.2f}x",
            f"{v.size_ratio:.2f}x",
            f"{v.validation.auc:.4f}",
            f"{v.test.auc:.4f}",
            str(v.delta_vs_original) if v.delta_vs_original else "—",
        )
    table.caption = (
        f"latency: median model compute on {report.machine['threads']} thread(s), variants "
        "interleaved; ΔAUC: paired bootstrap vs the original on the same test rows"
    )
    return table


def handle(args: argparse.Namespace) -> int:
    from recaccel.artifact import require_trained_dataset
    from recaccel.optimize.pipeline import run_recipe
    from recaccel.optimize.recipe import load_recipe
    from recaccel.optimize.report import build_report
    from recaccel.runtime.trial_timing import SEARCH_TIMERS
    from recaccel.train.trainer import TrainConfig

    recipe = load_recipe(args.recipe)  # a bad recipe fails before any data is loaded
    if args.threads is not None:
        recipe = dataclasses.replace(
            recipe, measure=dataclasses.replace(recipe.measure, threads=args.threads)
        )
    progress = not args.json
    dataset = require_trained_dataset(Path(args.artifact), progress)
    config = TrainConfig(max_epochs=args.epochs, seed=args.seed)
    out = Path(args.out)
    run = run_recipe(
        Path(args.artifact), dataset, recipe, out, config, progress=progress, timers=SEARCH_TIMERS
    )
    report = build_report(run, dataset)
    report.write(out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    console.print(_optimize_table(report))
    for d in report.decisions:
        console.print(
            f"step {escape(d['step'])}: {escape(d['attempt'])} → {d['decision']}: "
            f"{escape(d['reason'])}"
        )
    if report.synthetic:
        console.print("[yellow]synthetic data: these AUCs mean nothing about accuracy[/yellow]")
    console.print(f"final artifact: {report.final}")
    console.print(f"report: {out / 'report.md'}, {out / 'report.json'}")
    return 0


def add_parser(verbs: Any) -> None:
    optimize = verbs.add_parser(
        "optimize",
        help="distil, search, prune and quantize an artifact under an accuracy guard",
        description="Apply a recipe of optimization steps to a trained artifact. Each step is "
        "judged on validation AUC against the original (and must buy size or speed); every "
        "attempt is saved with its lineage, and a report compares the kept variants.",
    )
    optimize.add_argument("artifact", help="trained artifact directory (recaccel train --out)")
    optimize.add_argument(
        "--recipe",
        default="default",
        help="a built-in recipe (default, search, search-reuse; default: %(default)s) or a "
        ".toml/.yaml file",
    )
    optimize.add_argument("--out", required=True, help="directory for the variants and report")
    optimize.add_argument(
        "--threads", type=int, help="threads for the latency measurements (default: the recipe's)"
    )
    optimize.add_argument(
        "--epochs", type=int, default=20, help="maximum epochs of each training step"
    )
    optimize.add_argument("--seed", type=int, default=0)
    optimize.add_argument("--json", action="store_true", help="print the report as JSON")
    optimize.set_defaults(run=handle)
