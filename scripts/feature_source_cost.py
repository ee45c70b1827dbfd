"""What a rank request's rows cost from each feature source: the MovieLens store against a
table source serving the same features from users and items tables (docs/importing.md).

    .venv/bin/python scripts/feature_source_cost.py [--rounds 7] [--calls 2000]

For 10, 100 and 1,000 candidates: CPU µs per `rows()` call of each source, the sources
interleaved within each round, the median over rounds. Random known users, random distinct
candidates from the catalogue. The machine's speed drifts: compare figures of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from recaccel.data.movielens import feature_tables
from recaccel.data.registry import DatasetOptions, load_dataset
from recaccel.runtime.profiler import describe_machine, machine_facts
from recaccel.serve.features import FeatureSource, FeatureStore
from recaccel.serve.table_source import TableSource

SIZES = (10, 100, 1000)


def per_call_us(source: FeatureSource, requests: list[tuple[int, list[int]]]) -> float:
    start = time.process_time()
    for user, candidates in requests:
        source.rows(user, candidates)
    return (time.process_time() - start) / len(requests) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    dataset = load_dataset("movielens-100k", DatasetOptions(progress=False))
    assert dataset.encoding is not None
    users_table, items_table = feature_tables(dataset.encoding, dataset.schema)
    sources: dict[str, FeatureSource] = {
        "store": FeatureStore.from_dataset(dataset),
        "tables": TableSource(dataset.schema, users_table, items_table),
    }
    rng = np.random.default_rng(0)
    users = dataset.encoding.users.ids
    catalogue = sources["store"].catalogue
    machine = describe_machine(machine_facts())
    print(f"{machine['cpu']}, {machine['cores']} cores, python {machine['python']}")
    print("| candidates | MovieLens store, µs per request | table source, µs per request |")
    print("|---:|---:|---:|")
    for size in SIZES:
        requests = [
            (int(rng.choice(users)), rng.choice(catalogue, size, replace=False).tolist())
            for _ in range(args.calls)
        ]
        times: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name, source in sources.items():
                times[name].append(per_call_us(source, requests))
        store, tables = (statistics.median(times[name]) for name in sources)
        print(f"| {size:,} | {store:.1f} | {tables:.1f} |")


if __name__ == "__main__":
    main()
