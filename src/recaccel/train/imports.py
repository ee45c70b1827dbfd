"""`recaccel import`, end to end: bind and probe a model trained elsewhere, score it on a
dataset when one is named, and save it as an artifact (imported/model.py does the binding)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from recaccel.artifact import LineageStep, Manifest, save_artifact
from recaccel.data.dataset import Dataset
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError
from recaccel.imported.binding import unbound_features
from recaccel.imported.model import IMPORTED, MODEL_FILES, import_model
from recaccel.train.metrics import evaluate
from recaccel.train.trainer import predict


@dataclass(frozen=True)
class ImportReport:
    manifest: Manifest
    path: Path
    unbound: tuple[str, ...]  # features the schema declares and the model does not take


def _layout(schema: FeatureSchema) -> list[tuple[str, str, int, int]]:
    return [(f.name, f.kind.value, f.cardinality, f.max_len) for f in schema.features]


def import_artifact(
    source: str,
    schema_file: Path,
    out: Path,
    *,
    weights: Path | None = None,
    init: dict[str, Any] | None = None,
    dataset: Dataset | None = None,
) -> ImportReport:
    """Import the model at `source` with its schema file and write it to `out` as an artifact.

    With a dataset, the schema must be the dataset's (same features, kinds, cardinalities, in
    order), and the model's validation and test AUC go into the manifest, as a trained model's
    do.
    """
    model, schema, config, data = import_model(source, schema_file, weights=weights, init=init)
    metrics: dict[str, dict[str, Any]] = {}
    dataset_info: dict[str, Any] = {}
    if dataset is not None:
        if _layout(schema) != _layout(dataset.schema):
            raise ConfigError(
                f"the schema file's features are not dataset {dataset.name!r}'s",
                "declare the dataset's features, in its order: "
                + ", ".join(f"{f.name}:{f.kind}" for f in dataset.schema.features),
            )
        # The dataset's vocabularies and descriptions, which a schema file need not repeat;
        # the file's sides, which the user declared.
        schema = FeatureSchema(
            tuple(
                replace(ours, side=theirs.side)
                for ours, theirs in zip(dataset.schema.features, schema.features, strict=True)
            ),
            label=dataset.schema.label,
            name=dataset.schema.name,
        )
        for name in ("validation", "test"):
            split = getattr(dataset, name)
            metrics[name] = evaluate(split.label, predict(model, split)).to_dict()
        dataset_info = {
            "name": dataset.name,
            "synthetic": dataset.synthetic,
            "rows": dataset.rows(),
            **dataset.info,
        }
    manifest = Manifest(
        model=IMPORTED,
        preset=None,
        model_config=config.to_dict(),
        schema=schema.to_dict(),
        dataset=dataset_info,
        metrics=metrics,
        lineage=(LineageStep("import", {"from": config.source, "format": config.format}),),
    )
    files = {MODEL_FILES[config.format]: data} if data is not None else None
    # An ONNX or torch.export model's weights are in its own file; a class's in its state dict.
    state: dict[str, torch.Tensor] | None = None if data is None else {}
    saved = save_artifact(out, model, manifest, files=files, state=state)
    return ImportReport(saved, out, tuple(unbound_features(schema, model.binding)))
