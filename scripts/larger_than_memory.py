"""An embedding table served from a mapped file with only part of it in memory.

The page cache is the cache: rows are read from the file when a lookup touches a page that is
not resident, and the kernel evicts pages when the memory limit is reached. This measures what
a rank request pays for that, against the fraction of the table the memory can hold:

    sudo .venv/bin/python scripts/larger_than_memory.py --table-gib 2 --resident 1,0.5,0.1

For each fraction it runs a lookup process in a memory cgroup (cgroup v1, `memory.limit_in_bytes`
= fraction × table + the process's own memory) that maps the table read-only and answers
requests of `--ids` row ids drawn from a Zipf law over the rows (exponent `--zipf`, the hot rows
scattered through the file as hashing scatters them), gathering and summing the rows as a
pooled lookup does. After `--warm-up` requests it times `--requests` more and reports the
median and p99 per request, and the hit rate: the share of row lookups that did not wait for
the disk (1 − major page faults ÷ lookups; each miss is one fault, as the mapping is advised
MADV_RANDOM: no read-ahead, the access pattern of hashed ids). At fraction 1 there is no limit
and the file is read into the page cache first. Needs root (to make the cgroup) and cgroup v1's
memory controller at /sys/fs/cgroup/memory; the disk's random-read speed sets the figures.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
ROW_FLOATS = 64  # a 64-wide float32 row: 256 bytes, 16 to a page
OWN_MEMORY_BYTES = 64 << 20  # the lookup process itself: Python, numpy, the ids (about 50 MiB)


def zipf_ids(rows: int, count: int, exponent: float, seed: int) -> np.ndarray:
    """`count` row ids whose ranks follow a Zipf law over `rows` ranks (rank r with weight
    r^-exponent), the ranks scattered over the rows by a fixed random permutation."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, rows + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    ranks = np.searchsorted(cdf, rng.random(count) * cdf[-1])
    scattered: np.ndarray = rng.permutation(rows)[ranks].astype(np.int64)
    return scattered


def make_table(path: Path, rows: int) -> None:
    """A table of `rows` random rows, written in chunks (it may not fit in memory)."""
    rng = np.random.default_rng(0)
    with path.open("wb") as out:
        for start in range(0, rows, 1 << 20):
            chunk = min(1 << 20, rows - start)
            out.write(rng.standard_normal((chunk, ROW_FLOATS), dtype=np.float32).tobytes())
        out.flush()
        os.fsync(out.fileno())  # clean pages, so `evict` can drop them


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (clean pages: nothing is lost)."""
    with path.open("rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def warm(path: Path) -> None:
    with path.open("rb") as file:
        while file.read(64 << 20):
            pass


def lookups(table_path: Path, ids_path: Path, per_request: int, warm_up: int) -> dict[str, float]:
    """The lookup process: runs inside the cgroup; returns its measurements."""
    ids = np.load(ids_path)
    with table_path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ)
    mapped.madvise(mmap.MADV_RANDOM)
    table = np.frombuffer(mapped, dtype=np.float32).reshape(-1, ROW_FLOATS)
    requests = ids.reshape(-1, per_request)
    times, faults_before = [], 0
    for number, request in enumerate(requests):
        if number == warm_up:
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        start = time.perf_counter()
        pooled = table[request].sum(axis=0)  # the gather and the pooling
        elapsed = time.perf_counter() - start
        if number >= warm_up:
            times.append(elapsed)
        assert np.isfinite(pooled).all()
    misses = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults_before
    timed = len(requests) - warm_up
    resident = residency(table)
    return {
        "hit_rate": 1.0 - misses / (timed * per_request),
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "resident_at_end": resident,
    }


def residency(table: np.ndarray) -> float:
    """The share of the table's pages in memory (mincore)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    address = table.ctypes.data
    start = address - address % page
    length = table.nbytes + (address - start)
    vector = (ctypes.c_ubyte * ((length + page - 1) // page))()
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), vector) != 0:
        return float("nan")
    return float((np.frombuffer(bytes(vector), dtype=np.uint8) & 1).mean())


def run_limited(
    args: argparse.Namespace, table: Path, ids: Path, fraction: float
) -> dict[str, float]:
    table_bytes = table.stat().st_size
    evict(table)
    group: Path | None = None
    if fraction < 1:
        group = CGROUP_ROOT / f"recaccel-ltm-{os.getpid()}-{int(fraction * 1000)}"
        group.mkdir()
        limit = OWN_MEMORY_BYTES + int(fraction * table_bytes)
        (group / "memory.limit_in_bytes").write_text(str(limit))
    else:
        warm(table)
    command = [sys.executable, __file__, "--child", str(table), str(ids),
               str(args.ids), str(args.warm_up)]  # fmt: skip

    def join_group() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    try:
        answer = subprocess.run(
            command, preexec_fn=join_group, capture_output=True, text=True, check=True
        )
    finally:
        if group is not None:
            group.rmdir()
    result: dict[str, float] = json.loads(answer.stdout)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        table, ids, per_request, warm_up = sys.argv[2:6]
        print(json.dumps(lookups(Path(table), Path(ids), int(per_request), int(warm_up))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-gib", type=float, default=2.0)
    parser.add_argument("--resident", default="1,0.5,0.1", help="comma list of fractions")
    parser.add_argument("--ids", type=int, default=4096, help="row lookups per request")
    parser.add_argument("--zipf", type=float, default=1.05)
    parser.add_argument("--warm-up", type=int, default=300)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if not (CGROUP_ROOT / "memory.limit_in_bytes").exists():
        raise SystemExit(f"no cgroup v1 memory controller at {CGROUP_ROOT}")
    rows = int(args.table_gib * 2**30) // (ROW_FLOATS * 4)
    table = args.dir / f"recaccel-table-{rows}.f32"
    ids_path = args.dir / "recaccel-table-ids.npy"
    if not table.exists() or table.stat().st_size != rows * ROW_FLOATS * 4:
        make_table(table, rows)
    count = (args.warm_up + args.requests) * args.ids
    np.save(ids_path, zipf_ids(rows, count, args.zipf, seed=1))
    print(
        f"table {rows:,} rows × {ROW_FLOATS} float32 = {table.stat().st_size / 2**30:.2f} GiB; "
        f"requests of {args.ids:,} Zipf({args.zipf}) ids; {args.warm_up} warm-up, "
        f"{args.requests} timed"
    )
    print("| resident (limit) | hit rate | p50 ms | p99 ms | resident at the end |")
    print("|---:|---:|---:|---:|---:|")
    for fraction in (float(f) for f in args.resident.split(",")):
        got = run_limited(args, table, ids_path, fraction)
        print(
            f"| {fraction:.0%} | {got['hit_rate']:.4f} | {got['p50_ms']:.2f} | "
            f"{got['p99_ms']:.2f} | {got['resident_at_end']:.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
