"""`recaccel inspect`: show an artifact's manifest."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from recaccel.cli.common import console


def _training_text(training: dict[str, Any]) -> str:
    if not training:
        return "not recorded"
    best = training.get("best_epoch")
    kept = "the starting weights" if best == 0 else f"epoch {best}"
    return (
        f"best: {kept} ({training.get('epochs_run')} epochs trained, {training.get('seconds')} s)"
    )


def _delta_text(delta: dict[str, float] | None) -> str:
    if not delta:
        return "not measured"
    return f"{delta['delta']:+.4f} [95% CI {delta['low']:+.4f}, {delta['high']:+.4f}]"


def handle(args: argparse.Namespace) -> int:
    from recaccel.artifact import read_manifest

    manifest = read_manifest(Path(args.artifact))
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2))
        return 0
    table = Table(show_header=False, title=f"artifact {manifest.artifact_id}")
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "model": f"{manifest.model} (preset {manifest.preset or 'custom'})",
        "config": json.dumps(manifest.model_config),
        "dataset": f"{manifest.dataset.get('name')} "
        f"(synthetic: {manifest.dataset.get('synthetic')})"
        if manifest.dataset
        else "none (imported without --dataset)",
        "features": ", ".join(f"{f['name']}:{f['kind']}" for f in manifest.schema["features"]),
        "parameters": f"{manifest.parameters:,}",
        "weights on disk": f"{manifest.weights_bytes:,} bytes",
        "resident": f"{manifest.resident_bytes:,} bytes",
        **{
            f"{split} AUC / logloss": f"{m['auc']:.4f} / {m['logloss']:.4f} ({m['rows']:,} rows)"
            for split, m in manifest.metrics.items()
        },
        **{
            f"reference: {name}": f"test AUC {ref['test']['auc']:.4f} ({ref['setting']}); "
            f"this model's ΔAUC {_delta_text(ref.get('delta_test_auc'))}"
            for name, ref in manifest.references.items()
        },
        "training": _training_text(manifest.training),
        "parent": str(manifest.parent),
        "lineage": " → ".join(f"{s.op}({json.dumps(s.params)})" for s in manifest.lineage),
        "transforms": json.dumps(list(manifest.transforms)) if manifest.transforms else "none",
        "format version": str(manifest.format_version),
        "created": manifest.created_at,
        "software": json.dumps(manifest.software),
    }
    for key, value in rows.items():
        table.add_row(key, escape(value))
    console.print(table)
    return 0


def add_parser(verbs: Any) -> None:
    inspect = verbs.add_parser("inspect", help="show an artifact's manifest")
    inspect.add_argument("artifact", help="artifact directory")
    inspect.add_argument("--json", action="store_true", help="print the manifest as JSON")
    inspect.set_defaults(run=handle)
