"""What a rank request's rows cost from each feature source: the MovieLens store, a table
source serving the same features from users and items tables (docs/importing.md) and, with
`--redis`, a Redis source reading them from a live server (docs/feature-sources.md).

    .venv/bin/python scripts/feature_source_cost.py [--rounds 7] [--calls 2000] \
        [--redis redis://127.0.0.1:6379/0]

For 10, 100 and 1,000 candidates: µs per call of each source, the sources interleaved within
each round, the median over rounds. Random known users, random distinct candidates from the
catalogue. In-memory sources: CPU time of `rows()`. Redis: wall time of `fetch()` on one
uvloop event loop (a front's), requests one after another, with no local cache ("cold":
every row read from Redis) and with it warmed ("cached": every row read before); the cold
p99 over every call is printed too. `--redis` writes the tables under the namespace `cost`
first. The machine's speed drifts: compare figures of one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import numpy as np
import uvloop

from recaccel.data.movielens import feature_tables
from recaccel.data.registry import DatasetOptions, load_dataset
from recaccel.machine import describe_machine
from recaccel.serve.config import RankSection
from recaccel.serve.features import FeatureStore
from recaccel.serve.redis_source import RedisSource, write_tables
from recaccel.serve.table_source import TableSource

SIZES = (10, 100, 1000)
Requests = list[tuple[int, list[int]]]


def cpu_us(rows: Callable[[int, list[int]], object], requests: Requests) -> list[float]:
    start = time.process_time()
    for user, candidates in requests:
        rows(user, candidates)
    return [(time.process_time() - start) / len(requests) * 1e6]


def redis_us(source: RedisSource, requests: Requests) -> list[float]:
    """Wall µs of each fetch, one after another on one uvloop loop, as a front runs them."""

    async def run() -> list[float]:
        times = []
        for user, candidates in requests:
            start = time.perf_counter()
            await source.fetch(user, candidates)
            times.append((time.perf_counter() - start) * 1e6)
        return times

    return uvloop.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--redis", help="also a Redis source on this server, e.g. redis://...")
    args = parser.parse_args()
    dataset = load_dataset("movielens-100k", DatasetOptions(progress=False))
    assert dataset.encoding is not None
    users_table, items_table = feature_tables(dataset.encoding, dataset.schema)
    store = FeatureStore.from_dataset(dataset)
    tables = TableSource(dataset.schema, users_table, items_table)
    sources: dict[str, Callable[[Requests], list[float]]] = {
        "MovieLens store, CPU": lambda requests: cpu_us(store.rows, requests),
        "table source, CPU": lambda requests: cpu_us(tables.rows, requests),
    }
    if args.redis:
        write_tables(dataset.schema, users_table, items_table, args.redis, "cost")
        rank = RankSection(redis=args.redis, redis_namespace="cost", redis_budget_ms=1_000)
        cold = RedisSource(dataset.schema, dataclasses.replace(rank, redis_cache_ttl_s=0))
        cached = RedisSource(dataset.schema, rank)
        sources["Redis, cold, wall"] = lambda requests: redis_us(cold, requests)
        sources["Redis, cached, wall"] = lambda requests: redis_us(cached, requests)
    rng = np.random.default_rng(0)
    users = dataset.encoding.users.ids
    machine = describe_machine()
    print(f"{machine['cpu']}, {machine['cores']} cores, python {machine['python']}")
    print("| candidates | " + " | ".join(f"{name}, µs/request" for name in sources) + " |")
    print("|---:|" + "---:|" * len(sources))
    for size in SIZES:
        requests = [
            (int(rng.choice(users)), rng.choice(store.catalogue, size, replace=False).tolist())
            for _ in range(args.calls)
        ]
        if args.redis:  # every row of this size's requests read once: the cache is warm
            redis_us(cached, requests)
        medians: dict[str, list[float]] = {name: [] for name in sources}
        every: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name, measure in sources.items():
                times = measure(requests)
                medians[name].append(statistics.median(times))
                every[name] += times
        cells = [f"{statistics.median(medians[name]):.1f}" for name in sources]
        cold_p99 = ""
        if args.redis:
            cold_p99 = f" (cold p99 {np.percentile(every['Redis, cold, wall'], 99):.0f})"
        print(f"| {size:,} | " + " | ".join(cells) + f" |{cold_p99}")


if __name__ == "__main__":
    main()
