"""A table sharded row-wise across Ray Serve replicas: what the fan-out and gather cost a request.

Past one machine's memory, a table is split into K contiguous row ranges (TorchRec's row-wise
sharding plan), each held by one Ray Serve replica. A request's ids are grouped by the shard
that holds them, sent to every shard at once, and the rows that come back are put back in the
request's order. This script measures that on one machine, the replicas on loopback, against
the same lookups in process:

    .venv/bin/python scripts/sharded_tables.py --shards 1,2,4

Requests: `--ids` Zipf-distributed row ids each (as scripts/larger_than_memory.py draws them),
one at a time (closed loop), `--warm-up` untimed then `--requests` timed; per request the p50
and p99 latency. Each replica copies its rows out of the table file into its own memory, as a
replica on another machine would hold them. Needs Ray (`pip install -e '.[ray]'`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from larger_than_memory import ROW_FLOATS, make_table, zipf_ids


class TableShard:
    """Rows [start, stop) of the table, looked up by global row id."""

    def __init__(self, path: str, start: int, stop: int) -> None:
        table = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, ROW_FLOATS)
        self.rows = np.ascontiguousarray(table[start:stop])
        self.start = start

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        rows: np.ndarray = self.rows[ids - self.start]
        return rows


def gather(handles: list[Any], bounds: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The rows of `ids`, in order, fetched from the shards holding them, all at once."""
    shard_of = np.searchsorted(bounds, ids, side="right") - 1
    order = np.argsort(shard_of, kind="stable")
    counts = np.bincount(shard_of, minlength=len(handles))
    parts = np.split(ids[order], np.cumsum(counts)[:-1])
    pending = [h.remote(part) for h, part in zip(handles, parts, strict=True) if len(part)]
    fetched = np.concatenate([p.result() for p in pending])
    out = np.empty((len(ids), ROW_FLOATS), dtype=np.float32)
    out[order] = fetched
    return out


def timed(lookup: Any, requests: np.ndarray, warm_up: int) -> tuple[float, float]:
    times = []
    for number, request in enumerate(requests):
        start = time.perf_counter()
        lookup(request)
        if number >= warm_up:
            times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-gib", type=float, default=0.5)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--ids", type=int, default=4096)
    parser.add_argument("--zipf", type=float, default=1.05)
    parser.add_argument("--warm-up", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    import ray
    from ray import serve

    rows = int(args.table_gib * 2**30) // (ROW_FLOATS * 4)
    path = args.dir / f"recaccel-table-{rows}.f32"
    if not path.exists() or path.stat().st_size != rows * ROW_FLOATS * 4:
        make_table(path, rows)
    count = (args.warm_up + args.requests) * args.ids
    requests = zipf_ids(rows, count, args.zipf, seed=2).reshape(-1, args.ids)
    table = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, ROW_FLOATS)
    local = np.ascontiguousarray(table)
    print(
        f"table {rows:,} rows × {ROW_FLOATS} float32 ({path.stat().st_size / 2**30:.2f} GiB); "
        f"requests of {args.ids:,} Zipf({args.zipf}) ids, one at a time; "
        f"{args.warm_up} warm-up, {args.requests} timed"
    )
    print("| where the rows are | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    p50, p99 = timed(lambda ids: local[ids], requests, args.warm_up)
    print(f"| in process | {p50:.2f} | {p99:.2f} |", flush=True)
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    shard = serve.deployment(ray_actor_options={"num_cpus": 0})(TableShard)
    try:
        for count_shards in (int(k) for k in args.shards.split(",")):
            bounds = np.linspace(0, rows, count_shards + 1).astype(np.int64)
            handles = [
                serve.run(
                    shard.bind(str(path), int(bounds[k]), int(bounds[k + 1])),
                    name=f"shard-{k}",
                    route_prefix=None,
                )
                for k in range(count_shards)
            ]
            for request in requests[:3]:  # every row comes back where it was asked
                assert np.array_equal(gather(handles, bounds, request), local[request])
            p50, p99 = timed(lambda ids, h=handles, b=bounds: gather(h, b, ids), requests,
                             args.warm_up)  # fmt: skip
            print(f"| {count_shards} Ray Serve replica(s) | {p50:.2f} | {p99:.2f} |", flush=True)
            for k in range(count_shards):
                serve.delete(f"shard-{k}")
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


if __name__ == "__main__":
    main()
