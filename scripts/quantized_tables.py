"""An artifact with quantized tables on ONNX Runtime against its PyTorch modules, and its bytes.

Scores the test split of the artifact's dataset with the PyTorch executor (the quantized
modules' FBGEMM kernels) and with ONNX Runtime (the graph of runtime/onnx_lookups.py), and
prints the largest |Δ probability|, both AUCs, and the bytes of each artifact's ONNX form
(weights included) beside the float parent's:

    .venv/bin/python scripts/quantized_tables.py \
        artifacts/dlrm-heavy-optimized/03-quantize_embeddings-1 \
        --parent artifacts/dlrm-heavy-optimized/02-prune-1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from recaccel.artifact import load_artifact, trained_dataset
from recaccel.runtime.executor import ExecutorConfig, load_executor
from recaccel.runtime.export import onnx_size_bytes
from recaccel.runtime.onnx_exec import cached_onnx
from recaccel.train.metrics import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--parent", type=Path, help="the float artifact, for its bytes")
    args = parser.parse_args()
    artifact = load_artifact(args.artifact)
    dataset = trained_dataset(args.artifact)
    if dataset is None:
        raise SystemExit(f"{args.artifact} records no dataset to score")
    batch, labels = dataset.test.features(), dataset.test.label
    scores = {}
    for backend in ("torch-eager", "onnxruntime"):
        with load_executor(artifact, ExecutorConfig(backend)) as executor:
            scores[backend] = executor.run(batch)
    gap = float(np.max(np.abs(scores["onnxruntime"] - scores["torch-eager"])))
    print(f"{args.artifact}: {len(labels):,} test rows")
    for backend, got in scores.items():
        print(f"  {backend:12s} test AUC {evaluate(labels, got).auc:.6f}")
    print(f"  max |Δ probability| ONNX Runtime vs PyTorch: {gap:.2e}")
    forms = [("this artifact", artifact)]
    if args.parent is not None:
        forms.append(("float parent", load_artifact(args.parent)))
    for label, each in forms:
        path = cached_onnx(each, "fp32")
        print(
            f"  {label}: weights.safetensors {each.manifest.weights_bytes:,} B, "
            f"ONNX form {onnx_size_bytes(path):,} B ({path})"
        )


if __name__ == "__main__":
    main()
