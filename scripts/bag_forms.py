"""ONNX Runtime per-request compute with each form of the multi-hot bags (runtime/onnx_lookups.py).

    .venv/bin/python scripts/bag_forms.py ARTIFACT [ARTIFACT ...] [--rounds 50]

Each artifact is exported twice, unsplit and as its split twin (models/split: one rank request,
the user's part once): with its short bags summed slot by slot (`PER_SLOT_MAX_BAG`, what the
exporter does) and gathered whole then reduced (what it did before; the form it keeps for long
bags). One rank request of 10, 100 and 1,000 MovieLens validation rows, one thread, the four
graphs called in interleaved rounds; medians in µs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from recaccel.artifact import load_artifact
from recaccel.data.registry import load_dataset
from recaccel.models.split import from_model
from recaccel.optimize.latency import sample_rows, time_rounds
from recaccel.runtime import onnx_lookups
from recaccel.runtime.executor import as_rows
from recaccel.runtime.export import export_onnx, onnx_feeds, onnx_session
from recaccel.runtime.reuse import split_inputs
from recaccel.runtime.split_export import export_split_onnx, split_feeds

SIZES = (10, 100, 1000)
FORMS = {"slot by slot": onnx_lookups.PER_SLOT_MAX_BAG, "gathered whole": 0}


def _sessions(path: Path, tmp: Path) -> dict[str, Any]:
    """Each form's unsplit and split graph, keyed "FORM/GRAPH", as ORT sessions of one thread."""
    artifact = load_artifact(path)
    twin = from_model(artifact.model, artifact.schema)
    sessions = {}
    for form, limit in FORMS.items():
        with mock.patch.object(onnx_lookups, "PER_SLOT_MAX_BAG", limit):
            tag = form.replace(" ", "-")
            plain = export_onnx(artifact.model, artifact.schema, tmp / f"{tag}.onnx")
            split = export_split_onnx(twin, artifact.schema, tmp / f"{tag}-split.onnx")
        sessions[f"{form}/unsplit"] = onnx_session(plain)
        sessions[f"{form}/split"] = onnx_session(split)
    return sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    dataset = load_dataset("movielens-100k")
    print(f"# {platform.processor() or platform.machine()}, medians of {args.rounds} rounds, µs\n")
    print("| artifact | graph | rows | gathered whole | slot by slot | × |")
    print("|---|---|---:|---:|---:|---:|")
    for path in args.artifacts:
        with tempfile.TemporaryDirectory() as tmp:
            sessions = _sessions(path, Path(tmp))
            for rows in SIZES:
                batch = sample_rows(dataset.validation, rows)
                feeds = {
                    "unsplit": onnx_feeds(batch),
                    "split": split_feeds(split_inputs(as_rows(batch).as_one_request())),
                }
                calls = {}
                for key, session in sessions.items():
                    graph_feeds = feeds[key.split("/")[1]]
                    calls[key] = lambda s=session, f=graph_feeds: s.run(None, f)
                times = time_rounds(calls, repeats=args.rounds, warmup=5)
                for graph in ("unsplit", "split"):
                    whole, slots = (
                        statistics.median(times[f"{form}/{graph}"]) * 1e3
                        for form in ("gathered whole", "slot by slot")
                    )
                    print(
                        f"| {path.name} | {graph} | {rows:,} | {whole:,.0f} | {slots:,.0f} "
                        f"| {whole / slots:.2f} |"
                    )


if __name__ == "__main__":
    main()
