"""Where to try next when looking for the highest QPS that meets the latency bound.

A pure decision over the runs so far, (target QPS, met?) pairs, so it is tested against tables
and the slow part — running LoadGen — stays outside. The search:

1. starts at `start_qps`;
2. while every run has met the bound, multiplies the best passing QPS by `growth`;
3. once a run fails above the best pass, bisects between the best pass and the lowest fail
   above it, until they are within `rel_tol` of the pass;
4. if the first run fails, divides by `growth` until one passes, or gives up below `min_qps`.

Example (start 50, growth 2, rel_tol 0.1): 50 ok, 100 ok, 200 fail -> 150 ok -> 175 fail ->
162.5 ok -> (175 - 162.5) / 162.5 < 0.1: stop, 162.5 is the answer.

Load measurements are noisy, so the history may not be monotone (a pass above a fail). The rule
still terminates: the bracket is (highest pass, lowest fail above it), and every step narrows
or moves it. The runs that contradict it stay in the curve a report plots.

Several searches can share one machine fairly (`search_interleaved`): each pass gives every
unfinished search one run, in turn, so drift in the machine's speed (a neighbour's load, heat)
falls on every configuration alike instead of on whichever happened to run last.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from recaccel.errors import ConfigError

R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class SearchPolicy:
    start_qps: float = 50.0
    growth: float = 2.0
    rel_tol: float = 0.05  # stop when (lowest fail - highest pass) / highest pass <= this
    min_qps: float = 1.0  # below this the server meets the bound at no load worth naming
    max_runs: int = 12

    def __post_init__(self) -> None:
        if self.start_qps <= 0 or self.min_qps <= 0:
            raise ConfigError("start_qps and min_qps must be positive")
        if self.growth <= 1:
            raise ConfigError(f"growth={self.growth} must exceed 1", "e.g. 2: double each step")
        if not 0 < self.rel_tol < 1:
            raise ConfigError(f"rel_tol={self.rel_tol} must be in (0, 1)", "e.g. 0.05")
        if self.max_runs < 1:
            raise ConfigError(f"max_runs={self.max_runs} < 1")


def bracket(history: Sequence[tuple[float, bool]]) -> tuple[float | None, float | None]:
    """(highest passing QPS, lowest failing QPS above it); None where there is none."""
    passed = max((qps for qps, ok in history if ok), default=None)
    failed = [qps for qps, ok in history if not ok and (passed is None or qps > passed)]
    return passed, min(failed, default=None)


def next_qps(history: Sequence[tuple[float, bool]], policy: SearchPolicy) -> float | None:
    """The next target QPS to run, or None when the search is done (run cap not included)."""
    if not history:
        return policy.start_qps
    low, high = bracket(history)
    if low is None:
        assert high is not None  # history is not empty and nothing passed
        lower = high / policy.growth
        return lower if lower >= policy.min_qps else None
    if high is None:
        return low * policy.growth
    if (high - low) / low <= policy.rel_tol:
        return None
    return (low + high) / 2


@dataclass(frozen=True)
class SearchResult(Generic[R]):
    """Every run in the order made (the latency-throughput curve), the best passing run, and
    why the search stopped."""

    runs: tuple[tuple[float, R, bool], ...]  # (target QPS, result, met the bound?)
    best: tuple[float, R] | None
    stopped: str  # "converged", "run cap", "nothing passes above min_qps"


def next_target(runs: Sequence[tuple[float, R, bool]], policy: SearchPolicy) -> float | None:
    """The next target QPS after `runs`, or None when the search is done or at its run cap."""
    if len(runs) >= policy.max_runs:
        return None
    return next_qps([(qps, ok) for qps, _, ok in runs], policy)


def search_result(runs: Sequence[tuple[float, R, bool]], policy: SearchPolicy) -> SearchResult[R]:
    """The runs of a finished search, its best passing run and why it stopped."""
    passing = [(qps, result) for qps, result, ok in runs if ok]
    best = max(passing, key=lambda pair: pair[0], default=None)
    if next_qps([(qps, ok) for qps, _, ok in runs], policy) is not None:
        stopped = "run cap"
    elif best is None:
        stopped = "nothing passes above min_qps"
    else:
        stopped = "converged"
    return SearchResult(tuple(runs), best, stopped)


def search(
    run: Callable[[float], R], meets: Callable[[R], bool], policy: SearchPolicy
) -> SearchResult[R]:
    """Run targets chosen by `next_qps` until it is done or `policy.max_runs` runs are made."""
    runs: list[tuple[float, R, bool]] = []
    while (target := next_target(runs, policy)) is not None:
        result = run(target)
        runs.append((target, result, meets(result)))
    return search_result(runs, policy)


def search_interleaved(
    names: Sequence[K],
    run: Callable[[K, float], R],
    meets: Callable[[R], bool],
    policies: Mapping[K, SearchPolicy],
) -> dict[K, SearchResult[R]]:
    """One search per name, advanced in round robin: each pass makes one run of every search
    not yet done, in `names` order, until all are done.

    Example (two searches, A passing up to 150 and B up to 60, both starting at 50 with
    growth 2): A 50, B 50, A 100, B 100 (fails), A 200 (fails), B 75 (fails), A 150, ...
    """
    if len(set(names)) != len(names):
        raise ConfigError(f"search names must be unique: {list(names)}")
    missing = [name for name in names if name not in policies]
    if missing:
        raise ConfigError(f"no search policy for {missing}")
    runs: dict[K, list[tuple[float, R, bool]]] = {name: [] for name in names}
    active = list(names)
    while active:
        for name in list(active):
            target = next_target(runs[name], policies[name])
            if target is None:
                active.remove(name)
                continue
            result = run(name, target)
            runs[name].append((target, result, meets(result)))
    return {name: search_result(runs[name], policies[name]) for name in names}
