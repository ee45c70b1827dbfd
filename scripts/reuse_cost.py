"""Per-request model compute with and without request-level reuse: the table in docs/reuse.md.

    .venv/bin/python scripts/reuse_cost.py [--presets small,base,heavy] [--families ...]
        [--artifact artifacts/dlrm-heavy-optimized/02-prune-1] [--rounds 5]

For each zoo family × preset (random weights: compute does not depend on them) and each
artifact given, one rank request — one user against 10, 100 and 1,000 MovieLens candidate
rows — is scored by the model as it is (every row holds the user's columns) and by its split
twin (models/split: the user's part once), on PyTorch eager and on ONNX Runtime, one thread
each. Medians of interleaved rounds, µs per request; the split's predictions are checked equal
first (max |Δ logit| printed). The machine's speed drifts: compare within one run.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from recaccel.artifact import load_artifact
from recaccel.data.registry import load_dataset
from recaccel.data.rows import Rows
from recaccel.data.schema import Side
from recaccel.models.registry import MODELS, build_model, preset_config
from recaccel.models.split import from_model
from recaccel.runtime.export import export_onnx, onnx_feeds, onnx_session
from recaccel.runtime.split_export import SPLIT_INPUT_NAMES, export_split_onnx

SIZES = (10, 100, 1000)


def _time_us(call: Callable[[], object], budget_s: float = 0.15) -> float:
    """Median µs of a call, repeated within a small time budget (at least 3 calls)."""
    call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,base,heavy")
    parser.add_argument("--families", default=",".join(MODELS))
    parser.add_argument("--artifact", action="append", default=[], type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset("movielens-100k")
    schema = dataset.schema
    rows = dataset.test.features(slice(0, max(SIZES)))
    models: list[tuple[str, torch.nn.Module]] = []
    for family in args.families.split(","):
        for preset in args.presets.split(","):
            torch.manual_seed(0)
            models.append(
                (f"{family} {preset}", build_model(family, schema, preset_config(family, preset)))
            )
    for path in args.artifact:
        models.append((path.name, load_artifact(path).model))
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print("| model | rows | torch unsplit | torch split | ORT unsplit | ORT split | max |Δ| |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in models:
            model = model.eval()
            twin = from_model(model, schema)
            plain_path = export_onnx(model, schema, Path(tmp) / f"{label}.onnx")
            split_path = export_split_onnx(twin, schema, Path(tmp) / f"{label}-split.onnx")
            plain_session, split_session = onnx_session(plain_path), onnx_session(split_path)
            for n in SIZES:
                dense, categorical, multi_hot = (t[:n] for t in rows.as_tuple())
                request = (dense[:1], categorical[:1], multi_hot[:1])
                owner = torch.zeros(n, dtype=torch.long)
                split_inputs = (*request, dense, categorical, multi_hot, owner)
                # The unsplit model's rows, as serving builds them: the user's columns in each.
                plain_inputs = tuple(t.clone() for t in (dense, categorical, multi_hot))
                for columns, full, one in zip(
                    schema.columns_on_side(Side.REQUEST), plain_inputs, request, strict=True
                ):
                    full[:, list(columns)] = one[:, list(columns)]
                with torch.no_grad():
                    delta = float((model(*plain_inputs) - twin(*split_inputs)).abs().max())
                plain_feeds = onnx_feeds(Rows(*(t.numpy() for t in plain_inputs)))
                split_feeds = {
                    k: t.numpy() for k, t in zip(SPLIT_INPUT_NAMES, split_inputs, strict=True)
                }
                cells: dict[str, list[float]] = {k: [] for k in ("tp", "ts", "op", "os")}
                for _ in range(args.rounds):
                    with torch.no_grad():
                        cells["tp"].append(_time_us(functools.partial(model, *plain_inputs)))
                        cells["ts"].append(_time_us(functools.partial(twin, *split_inputs)))
                    cells["op"].append(
                        _time_us(functools.partial(plain_session.run, None, plain_feeds))
                    )
                    cells["os"].append(
                        _time_us(functools.partial(split_session.run, None, split_feeds))
                    )
                med = {k: statistics.median(v) for k, v in cells.items()}
                print(
                    f"| {label} | {n:,} | {med['tp']:,.0f} | {med['ts']:,.0f} "
                    f"({med['tp'] / med['ts']:.2f}×) | {med['op']:,.0f} | {med['os']:,.0f} "
                    f"({med['op'] / med['os']:.2f}×) | {delta:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
