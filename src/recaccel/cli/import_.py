"""`recaccel import`: make a model trained elsewhere (ONNX, torch.export, a PyTorch class) an
artifact (the verb is a keyword in Python, hence the module's trailing underscore)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from recaccel.cli.common import console
from recaccel.errors import ConfigError


def handle(args: argparse.Namespace) -> int:
    from recaccel.data.registry import DatasetOptions, load_dataset
    from recaccel.train.imports import import_artifact

    try:
        init = json.loads(args.init) if args.init else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--init is not JSON: {exc}", "--init '{\"dim\": 16}'") from None
    if not isinstance(init, dict):
        raise ConfigError(
            "--init must be a JSON object of keyword arguments", "e.g. '{\"dim\": 16}'"
        )
    dataset = (
        load_dataset(args.dataset, DatasetOptions(progress=not args.json)) if args.dataset else None
    )
    report = import_artifact(
        args.model,
        Path(args.schema),
        Path(args.out),
        weights=Path(args.weights) if args.weights else None,
        init=init,
        dataset=dataset,
    )
    manifest = report.manifest
    if args.json:
        print(json.dumps({"path": str(report.path), **manifest.to_dict()}, indent=2))
        return 0
    console.print(
        f"imported {manifest.model_config['format']} model {manifest.artifact_id}: "
        f"{manifest.parameters:,} parameters, {manifest.weights_bytes:,} bytes"
    )
    for split, m in manifest.metrics.items():
        console.print(
            f"{split} AUC {m['auc']:.4f}, logloss {m['logloss']:.4f} ({m['rows']:,} rows)"
        )
    if report.unbound:
        console.print(
            f"[yellow]features no model input takes: {', '.join(report.unbound)}[/yellow]"
        )
    console.print(f"artifact: {report.path}")
    return 0


def add_parser(verbs: Any) -> None:
    imports = verbs.add_parser(
        "import",
        help="make a model trained elsewhere (ONNX, torch.export, a PyTorch class) an artifact",
        description="Bind a ranking model of your own to recaccel's features with a schema file "
        "(TOML or YAML: the features, and which features each model input takes), run it on a "
        "probe batch to check the binding, and save it as an artifact that the other verbs "
        "take. See docs/importing.md.",
    )
    imports.add_argument(
        "model", help="model.onnx, model.pt2 (torch.export.save) or package.module:Class"
    )
    imports.add_argument("--schema", required=True, help="the schema file (.toml, .yaml)")
    imports.add_argument("--out", required=True, help="artifact directory to write")
    imports.add_argument(
        "--weights", help="a class's state dict (.safetensors, or .pt from torch.save)"
    )
    imports.add_argument("--init", help="a class's constructor keyword arguments, as JSON")
    imports.add_argument(
        "--dataset", help="score it on this dataset (its schema must be the file's) for AUC"
    )
    imports.add_argument("--json", action="store_true", help="print the manifest as JSON")
    imports.set_defaults(run=handle)
