"""The search for the highest QPS within the bound: next_qps against tables, and the loop
against a fake server whose capacity is known."""

from __future__ import annotations

import pytest

from recaccel.bench.search import SearchPolicy, bracket, next_qps, search
from recaccel.errors import ConfigError

POLICY = SearchPolicy(start_qps=50, growth=2, rel_tol=0.1, min_qps=5, max_runs=20)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], 50),
        ([(50, True)], 100),
        ([(50, True), (100, True)], 200),
        ([(50, True), (100, True), (200, False)], 150),
        ([(50, True), (100, True), (200, False), (150, True)], 175),
        ([(50, True), (100, True), (200, False), (150, True), (175, False)], 162.5),
        # converged: (175 - 162.5) / 162.5 < 0.1
        ([(50, True), (200, False), (150, True), (175, False), (162.5, True)], None),
        # the first run fails: shrink until one passes, give up below min_qps
        ([(50, False)], 25),
        ([(50, False), (25, False), (12.5, False)], 6.25),
        ([(50, False), (25, False), (12.5, False), (6.25, False)], None),
        ([(50, False), (25, True)], 37.5),
        # noise: a pass above a fail; the bracket is (highest pass, lowest fail above it)
        ([(50, True), (100, False), (150, True)], 300),
        ([(50, True), (100, False), (150, True), (300, False)], 225),
    ],
)
def test_next_qps(history: list[tuple[float, bool]], expected: float | None) -> None:
    assert next_qps(history, POLICY) == expected


def test_bracket() -> None:
    assert bracket([]) == (None, None)
    assert bracket([(10, True), (40, False), (30, False), (5, False)]) == (10, 30)


@pytest.mark.parametrize("capacity", [7.0, 80.0, 333.0, 5000.0])
def test_search_converges_on_a_known_capacity(capacity: float) -> None:
    result = search(lambda qps: qps, lambda qps: qps <= capacity, POLICY)
    assert result.stopped == "converged"
    assert result.best is not None
    best = result.best[0]
    assert best <= capacity < best * (1 + POLICY.rel_tol)
    assert result.runs[0][0] == 50


def test_search_stops_at_the_run_cap_and_when_nothing_passes() -> None:
    capped = search(lambda qps: qps, lambda _: True, SearchPolicy(max_runs=3))
    assert capped.stopped == "run cap" and len(capped.runs) == 3
    assert capped.best is not None and capped.best[0] == 200
    none = search(lambda qps: qps, lambda _: False, POLICY)
    assert none.stopped == "nothing passes above min_qps" and none.best is None
    assert all(not ok for _, _, ok in none.runs)


@pytest.mark.parametrize(
    "kwargs",
    [{"start_qps": 0}, {"growth": 1.0}, {"rel_tol": 0}, {"rel_tol": 1}, {"max_runs": 0}],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SearchPolicy(**kwargs)  # type: ignore[arg-type]
