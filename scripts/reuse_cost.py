"""Per-request model compute with and without request-level reuse: the table in docs/reuse.md.

    .venv/bin/python scripts/reuse_cost.py [--presets small,base,heavy] [--families ...]
        [--artifact artifacts/dlrm-heavy-optimized/02-prune-1] [--aot] [--rounds 5]
    .venv/bin/python scripts/reuse_cost.py --auc --artifact ARTIFACT   # test AUC, both ways
    .venv/bin/python scripts/reuse_cost.py --cache --artifact ARTIFACT  # what a cache hit saves

For each zoo family × preset (random weights: compute does not depend on them) and each
artifact given, one rank request — one user against 10, 100 and 1,000 MovieLens candidate
rows — is scored by the model as it is (every row holds the user's columns) and by its split
twin (models/split: the user's part once), on PyTorch eager, ONNX Runtime and (`--aot`)
AOTInductor, one thread each. Medians of interleaved rounds, µs per request; the largest
|Δ logit| between the two forms is printed beside them. The machine's speed drifts: compare
within one run.
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from recaccel.artifact import load_artifact
from recaccel.data.registry import load_dataset
from recaccel.data.rows import Rows
from recaccel.data.schema import INPUT_NAMES, FeatureSchema, Side
from recaccel.models.registry import MODELS, build_model, preset_config
from recaccel.models.split import SplitModel, from_model, joined_rows, split_example
from recaccel.runtime.executor import ExecutorConfig, load_executor
from recaccel.runtime.export import export_onnx, onnx_session
from recaccel.runtime.part_cache import PartCacheSettings
from recaccel.runtime.split_export import SPLIT_INPUT_NAMES, export_split_onnx
from recaccel.train.metrics import evaluate

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


def _aot(
    module: torch.nn.Module, example: tuple[torch.Tensor, ...], axes: tuple[str, ...], path: Path
) -> Callable[..., object]:
    """`module` compiled by AOTInductor (as the torch-aot backend does), each input's first
    axis dynamic under the named dim; the loader's flat `run`, as the executor calls it."""
    dims = {name: Dim(name, min=1) for name in set(axes)}
    program = torch.export.export(module, example, dynamic_shapes=tuple({0: dims[a]} for a in axes))
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    loader = torch._inductor.aoti_load_package(str(path)).loader
    return lambda *inputs: loader.run(list(inputs))


def _runners(
    model: torch.nn.Module, twin: SplitModel, schema: FeatureSchema, tmp: Path, aot: bool
) -> dict[str, tuple[Callable[..., object], Callable[..., object]]]:
    """Per runtime, (unsplit, split) callables taking torch tensors."""
    plain = onnx_session(export_onnx(model, schema, tmp / "plain.onnx"))
    split = onnx_session(export_split_onnx(twin, schema, tmp / "split.onnx"))

    def on_ort(session: Any, names: Sequence[str]) -> Callable[..., object]:
        return lambda *inputs: session.run(
            None, {k: t.numpy() for k, t in zip(names, inputs, strict=True)}
        )

    runners: dict[str, tuple[Callable[..., object], Callable[..., object]]] = {
        "torch": (torch.no_grad()(model), torch.no_grad()(twin)),
        "ORT": (on_ort(plain, INPUT_NAMES), on_ort(split, SPLIT_INPUT_NAMES)),
    }
    if aot:
        example = split_example(schema, 2, 4)
        runners["torch-aot"] = (
            _aot(model, example[3:6], ("rows",) * 3, tmp / "plain.pt2"),
            _aot(twin, example, ("requests",) * 3 + ("rows",) * 4, tmp / "split.pt2"),
        )
    return runners


def test_auc_with_reuse(path: Path) -> None:
    """The artifact's test-split AUC scored by each backend with and without reuse, the rows
    grouped as rank requests: the rows of one user at one time."""
    dataset = load_dataset("movielens-100k")
    split = dataset.test
    batch = split.features(slice(0, len(split)))
    # A rank request is one user at one time: rows whose request-side columns are all equal
    # (a test row's user tenure is its own rating's, so one user's rows are several requests).
    arrays = [t.numpy() for t in batch.as_tuple()]
    request_columns = dataset.schema.columns_on_side(Side.REQUEST)
    key = np.concatenate(
        [
            a[:, list(c)].reshape(len(a), -1).astype(np.float64)
            for a, c in zip(arrays, request_columns, strict=True)
        ],
        axis=1,
    )
    _, request_of_row = np.unique(key, axis=0, return_inverse=True)
    order = np.argsort(request_of_row, kind="stable")
    rows = Rows(*(a[order] for a in arrays))
    labels = split.label[order]
    counts = np.bincount(request_of_row)
    grouped = Rows(*rows.as_tuple(), counts[counts > 0])
    print(f"{path}: {len(rows):,} test rows as {len(counts):,} rank requests")
    for backend in ("onnxruntime", "torch-aot"):
        plain = evaluate(labels, load_executor(path, ExecutorConfig(backend)).run(rows))
        scores = load_executor(path, ExecutorConfig(backend, reuse=True)).run(grouped)
        split_auc = evaluate(labels, scores).auc
        print(f"  {backend}: test AUC {plain.auc:.6f} without reuse, {split_auc:.6f} with")


def cache_cost(path: Path, rounds: int) -> None:
    """µs per rank request through each executor that can keep request parts: reuse without
    the cache, then with it on a user never seen before (a miss) and on one seen (a hit).
    What a hit saves is the request half; what a miss costs over no cache, the second graph
    call and the key. A new user is the request's row with its request-side dense columns
    moved by a step per call (MovieLens: the user's tenure), so no two calls share a key."""
    dataset = load_dataset("movielens-100k")
    test = dataset.test.features(slice(0, max(SIZES))).as_tuple()
    request_dense = list(dataset.schema.columns_on_side(Side.REQUEST)[0])
    if not request_dense:
        raise SystemExit("--cache needs a request-side dense column to make new users with")
    print(f"{path.name}; machine: {platform.processor() or platform.machine()}")
    print("| backend | rows | reuse | cache: a miss | cache: a hit |")
    print("|---|---:|---:|---:|---:|")
    for backend in ("torch-eager", "onnxruntime"):
        split = load_executor(path, ExecutorConfig(backend, reuse=True))
        cached = load_executor(path, ExecutorConfig(backend, reuse=True))
        cached.use_part_cache(PartCacheSettings(ttl_s=3600, max_entries=1_000_000))
        for n in SIZES:
            candidates = tuple(t[:n] for t in test)
            owner = torch.zeros(n, dtype=torch.long)
            user = tuple(t[:1] for t in test)
            rows = joined_rows(dataset.schema, user, candidates, owner)
            request = Rows(*(t.numpy() for t in rows), np.array([n]))
            steps = itertools.count(1)

            def new_user(request: Rows = request, steps: Iterator[int] = steps) -> Rows:
                dense = request.dense.copy()
                dense[:, request_dense] += 1e-3 * next(steps)
                return Rows(dense, request.categorical, request.multi_hot, request.requests)

            cells: dict[str, list[float]] = collections.defaultdict(list)
            for _ in range(rounds):
                calls = {
                    "reuse": functools.partial(split.run, request),
                    "miss": lambda cached=cached, new_user=new_user: cached.run(new_user()),
                    "hit": functools.partial(cached.run, request),
                }
                for name, call in calls.items():
                    cells[name].append(_time_us(call))
            us = {k: statistics.median(v) for k, v in cells.items()}
            print(f"| {backend} | {n:,} | {us['reuse']:,.0f} | {us['miss']:,.0f} | "
                  f"{us['hit']:,.0f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,base,heavy")
    parser.add_argument("--families", default=",".join(MODELS))
    parser.add_argument("--artifact", action="append", default=[], type=Path)
    parser.add_argument("--aot", action="store_true", help="also AOTInductor (~30 s a form)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--auc",
        action="store_true",
        help="only: each --artifact's test AUC through its executors with and without reuse",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="only: each --artifact's request cost with the request-part cache, hits and misses",
    )
    args = parser.parse_args()
    if args.cache:
        for path in args.artifact:
            cache_cost(path, args.rounds)
        return
    if args.auc:
        for path in args.artifact:
            test_auc_with_reuse(path)
        return
    torch.set_num_threads(1)
    dataset = load_dataset("movielens-100k")
    schema = dataset.schema
    rows = dataset.test.features(slice(0, max(SIZES)))
    models: list[tuple[str, torch.nn.Module]] = [
        (f"{family} {preset}", build_model(family, schema, preset_config(family, preset)))
        for family in args.families.split(",")
        if family
        for preset in args.presets.split(",")
    ]
    models += [(path.name, load_artifact(path).model) for path in args.artifact]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")
    runtimes = ["torch", "ORT"] + (["torch-aot"] if args.aot else [])
    print(
        "| model | rows | "
        + " | ".join(f"{r} unsplit | {r} split" for r in runtimes)
        + " | max \\|Δ\\| |"
    )
    print("|---|---:|" + "---:|---:|" * len(runtimes) + "---:|")
    for label, model in models:
        model = model.eval()
        twin = from_model(model, schema)
        with tempfile.TemporaryDirectory() as tmp:
            runners = _runners(model, twin, schema, Path(tmp), args.aot)
            for n in SIZES:
                candidates = tuple(t[:n].contiguous() for t in rows.as_tuple())
                request = tuple(t[:1] for t in candidates)
                owner = torch.zeros(n, dtype=torch.long)
                split_inputs = (*request, *candidates, owner)
                # The unsplit model's rows, as serving builds them: the user's columns in each.
                plain_inputs = joined_rows(schema, request, candidates, owner)
                with torch.no_grad():
                    delta = float((model(*plain_inputs) - twin(*split_inputs)).abs().max())
                cells: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
                for _ in range(args.rounds):
                    for runtime, pair in runners.items():
                        for form, (run, inputs) in enumerate(
                            zip(pair, (plain_inputs, split_inputs), strict=True)
                        ):
                            cells[runtime, form].append(_time_us(functools.partial(run, *inputs)))
                line = f"| {label} | {n:,} |"
                for runtime in runners:
                    plain_us, split_us = (statistics.median(cells[runtime, f]) for f in (0, 1))
                    line += f" {plain_us:,.0f} | {split_us:,.0f} ({plain_us / split_us:.2f}×) |"
                print(f"{line} {delta:.1e} |", flush=True)


if __name__ == "__main__":
    main()
