"""Several max-QPS searches on one machine, advanced in round robin: the order of the runs, and
results identical to running each search alone, against fake servers of known capacity."""

from __future__ import annotations

import pytest

from recaccel.bench.search import SearchPolicy, search, search_interleaved
from recaccel.errors import ConfigError

POLICY = SearchPolicy(start_qps=50, growth=2, rel_tol=0.1, min_qps=5, max_runs=20)


def test_each_pass_gives_every_unfinished_search_one_run_in_order() -> None:
    capacity = {"a": 150.0, "b": 60.0}
    seen: list[tuple[str, float]] = []

    def run(name: str, qps: float) -> tuple[str, float]:
        seen.append((name, qps))
        return name, qps

    def meets(result: tuple[str, float]) -> bool:
        name, qps = result
        return qps <= capacity[name]

    found = search_interleaved(["a", "b"], run, meets, {"a": POLICY, "b": POLICY})
    # The docstring's example: A 50, B 50, A 100, B 100 (fails), A 200 (fails), B 75 (fails),
    # A 150, ...
    assert seen[:7] == [("a", 50), ("b", 50), ("a", 100), ("b", 100), ("a", 200), ("b", 75),
                        ("a", 150)]  # fmt: skip
    # Runs alternate while both searches go on; the one left finishes alone.
    names = [name for name, _ in seen]
    last_b = max(i for i, name in enumerate(names) if name == "b")
    assert names[: last_b + 1] == ["a", "b"] * ((last_b + 1) // 2)
    assert set(names[last_b + 1 :]) <= {"a"}
    for name in ("a", "b"):
        alone = search(lambda qps, n=name: (n, qps), meets, POLICY)  # type: ignore[misc]
        assert found[name] == alone
        best = found[name].best
        assert best is not None and best[0] <= capacity[name] < best[0] * 1.1


@pytest.mark.parametrize(
    ("capacity", "policy", "stopped", "runs"),
    [
        (1000.0, SearchPolicy(start_qps=50, growth=2, max_runs=3), "run cap", 3),
        (
            1.0,
            SearchPolicy(start_qps=50, growth=2, min_qps=10, max_runs=9),
            "nothing passes above min_qps",
            3,  # 50, 25, 12.5 fail; 6.25 is below min_qps
        ),
        # 50 passes, 100 fails, 75 passes: (100 - 75) / 75 <= 0.5
        (80.0, SearchPolicy(start_qps=50, growth=2, rel_tol=0.5, max_runs=9), "converged", 3),
    ],
)
def test_each_search_keeps_its_own_policy_and_stop_reason(
    capacity: float, policy: SearchPolicy, stopped: str, runs: int
) -> None:
    steady = SearchPolicy(start_qps=10, growth=2, rel_tol=0.5, max_runs=2)
    found = search_interleaved(
        ["x", "steady"],
        lambda name, qps: qps,
        lambda qps: qps <= capacity,
        {"x": policy, "steady": steady},
    )
    assert found["x"].stopped == stopped
    assert len(found["x"].runs) == runs
    assert len(found["steady"].runs) <= steady.max_runs


def test_names_must_be_unique_and_each_needs_a_policy() -> None:
    with pytest.raises(ConfigError, match="unique"):
        search_interleaved(["a", "a"], lambda n, q: q, lambda r: True, {"a": POLICY})
    with pytest.raises(ConfigError, match="no search policy"):
        search_interleaved(["a", "b"], lambda n, q: q, lambda r: True, {"a": POLICY})
