"""Quantization as an artifact-to-artifact step: a quantized child of a trained artifact.

The quantized modules live in `models/` (so loading needs no optimization code); this step
applies them, scores the result on the validation and test splits, and saves it with the
transform recorded in the manifest, where loading replays it before the weights go in.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from recaccel.artifact import Artifact, LineageStep, Manifest, save_artifact
from recaccel.data.dataset import Dataset
from recaccel.models.quant.embedding import quantize_embeddings
from recaccel.models.transforms import quantize_embeddings_transform
from recaccel.train.metrics import Metrics, evaluate, paired_bootstrap_auc_delta
from recaccel.train.trainer import predict

# Training rows a static quantizer sees to set its activation ranges.
CALIBRATION_ROWS = 4096


def save_transformed(
    parent: Artifact,
    model: nn.Module,
    dataset: Dataset,
    out: Path,
    transform: dict[str, Any] | None,
    step: LineageStep,
) -> tuple[Manifest, Metrics, Metrics]:
    """Score `model` (a transformed copy of `parent.model`) and save it as `parent`'s child.

    `transform` is the structural change loading must replay (None: same structure, new
    weights). Returns the saved manifest and the validation and test metrics.
    """
    parent.module_weights(step.op)
    model.eval()
    validation = evaluate(dataset.validation.label, predict(model, dataset.validation))
    test_scores = predict(model, dataset.test)
    test = evaluate(dataset.test.label, test_scores)
    parent_scores = predict(parent.model, dataset.test)
    delta = paired_bootstrap_auc_delta(dataset.test.label, test_scores, parent_scores)
    manifest = replace(
        parent.manifest,
        parent=parent.manifest.artifact_id,
        lineage=(*parent.manifest.lineage, step),
        transforms=(*parent.manifest.transforms, *([transform] if transform else [])),
        metrics={"validation": validation.to_dict(), "test": test.to_dict()},
        references={
            "parent": {
                "setting": f"{parent.manifest.model} {parent.manifest.artifact_id}",
                "test": evaluate(dataset.test.label, parent_scores).to_dict(),
                "delta_test_auc": delta.to_dict(),
            }
        },
        training={},
    )
    return save_artifact(out, model, manifest), validation, test


def quantize_embeddings_step(
    parent: Artifact, dataset: Dataset, bits: int, out: Path
) -> tuple[Manifest, Metrics, Metrics]:
    """Row-wise INT8/INT4 tables (FBGEMM kernels where present) as a child artifact."""
    model, tables = quantize_embeddings(copy.deepcopy(parent.model), bits, inplace=True)
    float_bytes = sum(t.float_bytes for t in tables)
    quantized_bytes = sum(t.bytes for t in tables)
    step = LineageStep(
        "quantize_embeddings",
        {
            "bits": bits,
            "tables_quantized": sum(t.bits is not None for t in tables),
            "tables_kept_float": sum(t.bits is None for t in tables),
            "embedding_bytes": [float_bytes, quantized_bytes],
            "ratio": round(float_bytes / max(quantized_bytes, 1), 2),
        },
    )
    transform = quantize_embeddings_transform(bits)  # names the (fused) layout
    return save_transformed(parent, model, dataset, out, transform, step)


def calibration_rows(dataset: Dataset, rows: int, seed: int = 0) -> np.ndarray:
    """Indices of the training rows a static quantizer calibrates on (never validation/test)."""
    rng = np.random.default_rng(seed)
    count = min(rows, len(dataset.train))
    return np.sort(rng.choice(len(dataset.train), size=count, replace=False))


def quantize_dense_step(
    parent: Artifact, dataset: Dataset, mode: str, out: Path, force: bool = False
) -> tuple[Manifest, Metrics, Metrics]:
    """The MLPs in INT8 (dynamic, or static calibrated on training rows) or FP16/BF16."""
    from recaccel.models.quant.dense import quantize_dense

    calibration = dataset.train.features(calibration_rows(dataset, CALIBRATION_ROWS))
    model, report = quantize_dense(
        copy.deepcopy(parent.model), mode, calibration=calibration, inplace=True, force=force
    )
    step = LineageStep("quantize_dense", report.to_dict())
    transform = {"op": "quantize_dense", "mode": mode}
    return save_transformed(parent, model, dataset, out, transform, step)
