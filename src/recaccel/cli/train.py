"""`recaccel train`: train zoo models, save them as artifacts, and print their scores beside the
baselines'."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from recaccel.cli.common import console, names
from recaccel.errors import ConfigError

if TYPE_CHECKING:
    from recaccel.train.pipeline import TrainReport


def _train_table(report: TrainReport, test_rows: int) -> Table:
    """Each model's scores, then the baselines', with ΔAUC against the first baseline."""
    table = Table(title=f"{report.dataset}: test split ({test_rows:,} rows)")
    columns = ["model", "parameters", "best epoch", "val AUC", "test AUC", "test logloss"]
    reference = report.baselines[0].name if report.baselines else None
    if reference:
        columns.append("test ΔAUC [95% CI]")
        table.caption = f"ΔAUC: minus {reference}'s test AUC, paired bootstrap over the same rows"
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for m in report.models:
        table.add_row(
            f"{m.model} ({m.preset})",
            f"{m.manifest.parameters:,}",
            str(m.fit.best_epoch),
            f"{m.validation.auc:.4f}",
            f"{m.test.auc:.4f}",
            f"{m.test.logloss:.4f}",
            *([str(m.vs_baselines[reference])] if reference else []),
        )
    for b in report.baselines:
        scores = (b.validation.auc, b.test.auc, b.test.logloss)
        table.add_row(f"{b.name} ({b.setting})", "", "", *(f"{x:.4f}" for x in scores))
    return table


def handle(args: argparse.Namespace) -> int:
    from recaccel.data.registry import DatasetOptions, load_dataset
    from recaccel.models.registry import MODELS
    from recaccel.train.pipeline import train_models
    from recaccel.train.trainer import TrainConfig

    models = names(args.model, list(MODELS), "model")
    runs = []
    for model in models:
        for preset in names(args.preset, list(MODELS[model].presets), f"preset for {model}"):
            runs.append((model, preset))
    config = TrainConfig(
        max_epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    if args.rows is not None and args.dataset != "criteo-synthetic":
        raise ConfigError(
            f"--rows applies to criteo-synthetic only, not {args.dataset}", "drop --rows"
        )
    progress = not args.json
    dataset = load_dataset(
        args.dataset, DatasetOptions(progress=progress, synthetic_rows=args.rows)
    )
    report = train_models(
        dataset, runs, Path(args.out), config, not args.no_baselines, progress=progress
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    table = _train_table(report, len(dataset.test))
    console.print(table)
    if report.synthetic:
        console.print("[yellow]synthetic data: these AUCs mean nothing about accuracy[/yellow]")
    for m in report.models:
        console.print(f"artifact: {m.path}")
    return 0


def add_parser(verbs: Any) -> None:
    train = verbs.add_parser(
        "train",
        help="train zoo models and save artifacts",
        description="Train models with early stopping on validation AUC; report test AUC and "
        "logloss beside logistic-regression and item-popularity baselines.",
    )
    train.add_argument(
        "--dataset", default="movielens-100k", help="dataset name (default: %(default)s)"
    )
    train.add_argument(
        "--model",
        default="dlrm",
        help="dlrm, dcnv2, deepfm, wide_deep, tower, a comma list, or all",
    )
    train.add_argument("--preset", default="heavy", help="heavy, base, small, a comma list, or all")
    train.add_argument(
        "--out", required=True, help="artifact directory (a parent directory when training several)"
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="maximum epochs (default: %(default)s); 0 saves the initial random weights, "
        "for size and speed studies",
    )
    train.add_argument(
        "--rows", type=int, help="rows to generate (criteo-synthetic only; default: 1,000,000)"
    )
    train.add_argument(
        "--patience", type=int, default=2, help="epochs without validation gain before stopping"
    )
    train.add_argument("--batch-size", type=int, default=512)
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    train.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-baselines", action="store_true", help="skip the reference baselines")
    train.add_argument("--json", action="store_true", help="print the report as JSON")
    train.set_defaults(run=handle)
