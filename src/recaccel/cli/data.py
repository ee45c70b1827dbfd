"""`recaccel data`: fetch, cache and summarise a dataset."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape

from recaccel.cli.common import console


def handle(args: argparse.Namespace) -> int:
    from recaccel.data.registry import DatasetOptions, load_dataset

    dataset = load_dataset(args.dataset, DatasetOptions(progress=not args.json))
    summary = {
        "dataset": dataset.name,
        "synthetic": dataset.synthetic,
        "rows": dataset.rows(),
        "positive_rate": {
            s: round(float(dataset.split(s).label.mean()), 4) for s in dataset.rows()
        },
        "features": {
            kind: [f.name for f in dataset.schema.features if f.kind.value == kind]
            for kind in ("dense", "categorical", "multi_hot")
        },
        **{k: v for k, v in dataset.info.items() if k in ("source", "split", "label", "note")},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            console.print(f"[bold]{key}[/bold]: {escape(str(value))}")
    return 0


def add_parser(verbs: Any) -> None:
    data = verbs.add_parser("data", help="fetch, cache and summarise a dataset")
    data.add_argument(
        "--dataset",
        default="movielens-100k",
        help="movielens-100k (default), criteo-synthetic, or a dataset spec file of your own "
        "(.toml: your interactions, users and items; docs/importing.md)",
    )
    data.add_argument("--json", action="store_true", help="print the summary as JSON")
    data.set_defaults(run=handle)
