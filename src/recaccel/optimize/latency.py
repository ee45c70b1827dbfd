"""Model-compute latency of several variants, measured interleaved in one process.

Machines here are shared and noisy: absolute times drift by 2× between runs, ratios hold. So
every variant is timed inside the same loop — one call of each per round, in an order that
rotates each round — and the report reads medians of the same rounds. This measures model
compute only (the forward pass on ready tensors); request decoding, batching and transport
belong to the serving benchmark.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from recaccel.data.dataset import FeatureBatch, Split
from recaccel.errors import ConfigError

DEFAULT_REPEATS = 200
DEFAULT_WARMUP = 20
# Calls of each scorer in a row per round, the first untimed (`time_rounds`): a scorer called
# right after a much larger one finds its weights evicted from the caches it had warm. Timed
# one call each, a 17k-parameter student on ONNX Runtime took 346 µs at 100 rows interleaved
# with the 2.4M-parameter teacher and 147 µs alone (519 and 732 µs at 1,000 rows): ratios and
# how cost grows with rows were both off. Serving calls one model back to back.
MEASURE_BLOCK = 3

Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    median_ms: float
    p99_ms: float
    repeats: int
    threads: int

    @property
    def rows_per_second(self) -> float:
        """Throughput of back-to-back batches of this size on `threads` threads."""
        return self.batch / (self.median_ms / 1e3)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 1)}


def sample_rows(split: Split, rows: int, seed: int = 0) -> FeatureBatch:
    """`rows` random rows of `split` (with replacement when the split is smaller)."""
    if rows < 1:
        raise ConfigError(f"batch size {rows} must be >= 1")
    rng = np.random.default_rng(seed)
    index = rng.choice(len(split), size=rows, replace=rows > len(split))
    return split.features(np.sort(index))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on `threads` intra-op threads, then restore the previous setting."""
    if threads < 1:
        raise ConfigError(f"threads {threads} must be >= 1")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def time_rounds(
    calls: Mapping[str, Callable[[], object]],
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    max_seconds: float | None = None,
    min_repeats: int = 20,
    block: int = 1,
) -> dict[str, list[float]]:
    """Milliseconds of each call per timed round, every call once per round, order rotating.

    Args:
        calls: name -> a call to time (it does all its own work, inputs bound in).
        repeats: timed rounds at most.
        warmup: untimed rounds first (allocator, lazy packing, caches).
        max_seconds: when set, fewer rounds — but at least `min_repeats` — where `repeats`
            rounds would take longer (estimated from the last warm-up round): big batches of
            slow models would otherwise take minutes for a figure that is already stable.
        block: calls of each name in a row per round. With block > 1 the first call of each
            block is not timed: it pays for what the previous name left behind (a runtime's
            worker threads still spinning, a changed torch thread count), which is the
            previous name's cost, not this one's. A round then yields block − 1 samples.
    """
    if repeats < 1 or warmup < 0 or block < 1:
        raise ConfigError(f"repeats {repeats} and block {block} must be >= 1, warmup {warmup} >= 0")
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rounds = warmup + repeats
    round_ = 0
    while round_ < rounds:
        shift = round_ % len(names)  # rotate, so no variant always runs first
        round_start = time.perf_counter()
        for name in names[shift:] + names[:shift]:
            for call in range(block):
                start = time.perf_counter()
                calls[name]()
                elapsed = time.perf_counter() - start
                if round_ >= warmup and (block == 1 or call > 0):
                    samples[name].append(elapsed * 1e3)
        if max_seconds is not None and round_ == max(warmup - 1, 0):
            per_round = time.perf_counter() - round_start
            affordable = int(max_seconds / max(per_round, 1e-9))
            rounds = warmup + max(min(repeats, min_repeats), min(repeats, affordable))
        round_ += 1
    return samples


def measure_interleaved(
    scorers: Mapping[str, Scorer],
    batch: FeatureBatch,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = 1,
    block: int = MEASURE_BLOCK,
) -> dict[str, LatencyStats]:
    """Median and p99 latency of each scorer on the same `batch`, rounds interleaved.

    Args:
        scorers: name -> callable(dense, categorical, multi_hot) -> scores; modules in eval
            mode (a model is a scorer).
        batch: the rows every scorer sees.
        repeats: timed calls of each scorer (about: whole rounds of `block` − 1 each).
        warmup: untimed rounds first (allocator, lazy packing, caches).
        threads: intra-op threads for the measurement (1 = the cost of one core).
        block: calls of each scorer in a row per round, the first untimed (`MEASURE_BLOCK`);
            1 times every call, each right after another scorer's.
    """
    runs = {name: (scorer, batch) for name, scorer in scorers.items()}
    return measure_runs(runs, repeats, warmup, threads, block)


def measure_runs(
    runs: Mapping[str, tuple[Scorer, FeatureBatch]],
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = 1,
    block: int = MEASURE_BLOCK,
) -> dict[str, LatencyStats]:
    """`measure_interleaved` with each run's own rows: name -> (scorer, batch). Sizes that
    are compared (a request of 100 rows against one of 1,000) are timed in the same rounds,
    so a stretch of machine noise falls on both, not on one."""
    calls = {
        name: functools.partial(scorer, *batch.as_tuple()) for name, (scorer, batch) in runs.items()
    }
    rounds = -(-repeats // max(block - 1, 1))  # ceil: at least `repeats` timed calls
    with torch_threads(threads), torch.inference_mode():
        samples = time_rounds(calls, rounds, warmup, block=block)
    return {
        name: LatencyStats(
            batch=len(runs[name][1]),
            median_ms=statistics.median(times),
            p99_ms=percentile(times, 99),
            repeats=len(times),
            threads=threads,
        )
        for name, times in samples.items()
    }
