"""The elastic scaling policy: what the load asks for, the delays before acting, no flapping.

Tables use target utilization 0.5 so that desired = ceil(2 × busy workers) by hand; the
simulations use the defaults a deployment would (0.7, 30 s up, long down).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from recaccel.errors import ConfigError
from recaccel.serve.autoscaler import (
    AutoscalerConfig,
    AutoscalerState,
    Decision,
    LoadSample,
    decide,
    desired_workers,
)

HALF = AutoscalerConfig(
    min_workers=1,
    max_workers=8,
    target_utilization=0.5,
    target_queue_delay_ms=10.0,
    upscale_delay_s=30.0,
    downscale_delay_s=300.0,
)


def _sample(workers: int, utilization: float, queue_ms: float = 1.0, at: float = 0.0) -> LoadSample:
    return LoadSample(at, workers, utilization, queue_ms, queued_requests=0, in_flight=workers)


@pytest.mark.parametrize(
    ("running", "utilization", "queue_ms", "current", "desired", "why"),
    [
        (2, 0.50, 1.0, 2, 2, "within 10%"),
        (2, 0.54, 1.0, 2, 2, "within 10%"),  # 8% over: noise, not load
        (2, 0.46, 1.0, 2, 2, "within 10%"),
        (2, 0.60, 1.0, 2, 3, "asks for 3"),  # ceil(2 × 0.6 / 0.5) = ceil(2.4)
        (2, 1.00, 1.0, 2, 4, "asks for 4"),
        (4, 0.20, 1.0, 4, 2, "asks for 2"),  # ceil(1.6)
        (4, 0.00, 1.0, 4, 1, "asks for 0"),  # clamped to min_workers
        (8, 1.00, 1.0, 8, 8, "asks for 16"),  # clamped to max_workers
        (2, 0.30, 15.0, 2, 3, "queue delay 15.0 ms > target 10 ms"),  # at least one more
        (2, 0.90, 15.0, 2, 4, "queue delay"),  # utilization asks for more still
        # Two running, a third starting: the running ones ask for what is already set.
        (2, 0.60, 1.0, 3, 3, "asks for 3"),
        (3, 0.50, 1.0, 4, 4, "within 10%"),
        (0, 0.00, 50.0, 3, 3, "no running worker"),
    ],
)
def test_desired_workers(
    running: int, utilization: float, queue_ms: float, current: int, desired: int, why: str
) -> None:
    wanted, reason = desired_workers(HALF, _sample(running, utilization, queue_ms), current)
    assert wanted == desired
    assert why in reason


def _run(
    config: AutoscalerConfig,
    state: AutoscalerState,
    samples: Sequence[tuple[float, float]],  # (now, utilization), queue delay below target
) -> tuple[list[Decision], AutoscalerState]:
    decisions = []
    for now, utilization in samples:
        decision, state = decide(config, state, _sample(state.workers, utilization, at=now), now)
        decisions.append(decision)
    return decisions, state


def _targets(decisions: list[Decision]) -> list[int]:
    return [d.target_workers for d in decisions]


@pytest.mark.parametrize(
    ("workers", "samples", "targets"),
    [
        # Wanted at 0, 10, 20, 30 s: acted on at 30 s, the upscale delay.
        (2, [(0, 1.0), (10, 1.0), (20, 1.0), (30, 1.0)], [2, 2, 2, 4]),
        # A sample that does not ask starts the wait over: 30 → 60 s.
        (2, [(0, 1.0), (10, 1.0), (20, 0.5), (30, 1.0), (40, 1.0), (50, 1.0), (60, 1.0)],
         [2, 2, 2, 2, 2, 2, 4]),
        # The step is what was wanted throughout: 4, then 3, then 4 → 3.
        (2, [(0, 1.0), (10, 0.6), (20, 1.0), (30, 1.0)], [2, 2, 2, 3]),
        # Down after 300 s, to the most wanted over the wait: 1, 2, 1 → 2.
        (4, [(0, 0.1), (100, 0.2), (200, 0.1), (299, 0.1), (300, 0.1)], [4, 4, 4, 4, 2]),
        # Wanting up, then down, resets each other's wait.
        (4, [(0, 0.1), (250, 1.0), (260, 0.1), (500, 0.1), (560, 0.1)], [4, 4, 4, 4, 1]),
        # After a change the next one waits its own delay again.
        (2, [(0, 1.0), (30, 1.0), (40, 1.0), (60, 1.0), (70, 1.0)], [2, 4, 4, 4, 8]),
    ],
)  # fmt: skip
def test_decide_acts_only_after_the_delay(
    workers: int, samples: list[tuple[float, float]], targets: list[int]
) -> None:
    decisions, _ = _run(HALF, AutoscalerState.initial(workers, -1000.0), samples)
    assert _targets(decisions) == targets
    previous = workers
    for decision in decisions:
        assert decision.changed is (decision.target_workers != previous)
        assert decision.reason.startswith("scale" if decision.changed else "hold")
        previous = decision.target_workers


def test_reasons_say_what_was_measured_and_how_long_it_was_wanted() -> None:
    decisions, state = _run(HALF, AutoscalerState.initial(2, 0.0), [(100, 1.0), (130, 1.0)])
    assert decisions[0].reason == (
        "hold at 2: utilization 1.00 of 2 running (target 0.50) asks for 4; "
        "4 wanted for 0 s of upscale_delay_s 30 s"
    )
    assert decisions[1].reason == (
        "scale up 2 → 4: utilization 1.00 of 2 running (target 0.50) asks for 4; "
        "4 wanted throughout 30 s >= upscale_delay_s 30 s"
    )
    assert state == AutoscalerState(4, last_change_at=130)


def test_max_step_limits_each_change_and_each_step_waits_its_delay() -> None:
    config = AutoscalerConfig(1, 8, 0.5, upscale_delay_s=30.0, max_step=1)
    samples = [(t, 1.0) for t in range(0, 100, 10)]
    decisions, _ = _run(config, AutoscalerState.initial(2, 0.0), samples)
    assert _targets(decisions) == [2, 2, 2, 3, 3, 3, 3, 4, 4, 4]


def test_zero_delays_act_on_the_first_sample() -> None:
    config = AutoscalerConfig(1, 8, 0.5, upscale_delay_s=0.0, downscale_delay_s=0.0)
    decisions, _ = _run(config, AutoscalerState.initial(2, 0.0), [(0, 1.0), (1, 0.1)])
    assert _targets(decisions) == [4, 1]


def test_a_delay_elapses_on_large_clock_readings() -> None:
    start = 1e6 + 0.1  # monotonic clocks of long-running hosts; 30 s later is 29.999999...
    decisions, _ = _run(HALF, AutoscalerState.initial(2, 0.0), [(start, 1.0), (start + 30, 1.0)])
    assert _targets(decisions) == [2, 4]


@pytest.mark.parametrize(("workers", "target"), [(12, 8), (0, 1)])
def test_a_count_outside_the_bounds_is_corrected_at_once(workers: int, target: int) -> None:
    decision, state = decide(HALF, AutoscalerState(workers), _sample(2, 0.5), 5.0)
    assert (decision.target_workers, decision.changed) == (target, True)
    assert "min_workers, max_workers" in decision.reason
    assert state == AutoscalerState(target, last_change_at=5.0)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("min_workers", {"min_workers": 0, "max_workers": 4}),
        ("max_workers", {"min_workers": 3, "max_workers": 2}),
        ("target_utilization", {"target_utilization": 0.0}),
        ("target_utilization", {"target_utilization": 1.5}),
        ("target_queue_delay_ms", {"target_queue_delay_ms": 0.0}),
        ("upscale_delay_s", {"upscale_delay_s": -1.0}),
        ("downscale_delay_s", {"downscale_delay_s": float("nan")}),
        ("max_step", {"max_step": 0}),
        ("tolerance", {"tolerance": 1.0}),
    ],
)
def test_config_names_the_bad_field(field: str, kwargs: dict[str, float]) -> None:
    arguments: dict[str, float] = {"min_workers": 1, "max_workers": 4, **kwargs}
    with pytest.raises(ConfigError, match=field):
        AutoscalerConfig(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["workers", "utilization", "queue_delay_ms", "in_flight"])
def test_a_negative_measurement_is_refused(field: str) -> None:
    values = {"workers": 1, "utilization": 0.5, "queue_delay_ms": 1.0, "in_flight": 0, field: -1}
    with pytest.raises(ConfigError, match=field):
        LoadSample(at=0.0, queued_requests=0, **values)  # type: ignore[arg-type]


# -- simulations: a pool whose workers start at once, sampled every 10 s ----------------------

DEPLOYED = AutoscalerConfig(
    min_workers=1, max_workers=8, target_utilization=0.7, upscale_delay_s=30.0,
    downscale_delay_s=300.0,
)  # fmt: skip


def _simulate(
    demand: Callable[[float], float], seconds: int, config: AutoscalerConfig = DEPLOYED
) -> list[tuple[float, int, int]]:
    """(time, workers before, workers after) of every change. `demand` is in busy workers;
    utilization saturates at 1 and the queue delay shoots past its target once it does."""
    state = AutoscalerState.initial(config.min_workers, 0.0)
    changes: list[tuple[float, int, int]] = []
    for now in range(0, seconds, 10):
        workers, load = state.workers, demand(now)
        queue_ms = 100.0 if load > 0.95 * workers else 1.0
        sample = LoadSample(now, workers, min(1.0, load / workers), queue_ms, 0, workers)
        decision, state = decide(config, state, sample, now)
        assert config.min_workers <= decision.target_workers <= config.max_workers
        if decision.changed:
            changes.append((now, workers, decision.target_workers))
    return changes


def test_a_ramp_up_and_down_scales_after_each_delay_and_within_bounds() -> None:
    """4 busy workers' worth of load from 100 s to 1000 s, 0.5 otherwise. Each step up waits
    30 s of saturation (utilization hides how far over the pool is, so it climbs in steps);
    6 workers run the load at 0.67, within 10% of 0.7, and hold; 300 s after the load drops,
    one change takes the pool back to 1."""
    changes = _simulate(lambda t: 4.0 if 100 <= t < 1000 else 0.5, 2000)
    assert changes == [(130, 1, 2), (170, 2, 3), (210, 3, 5), (250, 5, 6), (1300, 6, 1)]


def test_the_pool_never_leaves_its_bounds_under_extreme_load() -> None:
    changes = _simulate(lambda t: 50.0 if t < 1000 else 0.0, 3000)
    assert max(after for _, _, after in changes) == DEPLOYED.max_workers
    assert changes[-1][2] == DEPLOYED.min_workers


def test_a_load_swinging_faster_than_the_upscale_delay_changes_nothing() -> None:
    changes = _simulate(lambda t: 4.0 if (t // 10) % 2 else 0.5, 3600)
    assert changes == []


def test_a_slow_swing_scales_up_once_and_never_flaps_down() -> None:
    """60 s busy, 60 s quiet, for an hour: the busy phases outlast the upscale delay and the
    quiet ones never reach the downscale delay, so the pool climbs once and stays."""
    changes = _simulate(lambda t: 4.0 if (t // 60) % 2 == 0 else 0.5, 3600)
    assert all(after > before for _, before, after in changes)
    assert len(changes) <= 5
    assert changes[-1][0] < 600 and changes[-1][2] == 6


def test_noise_around_the_target_is_absorbed_by_the_tolerance() -> None:
    config = AutoscalerConfig(1, 8, 0.7, upscale_delay_s=0.0, downscale_delay_s=0.0)
    state = AutoscalerState.initial(5, 0.0)
    for now, busy in enumerate([3.2, 3.8] * 200):  # 0.64 to 0.76 of 5 workers: ±9%
        decision, state = decide(config, state, _sample(5, busy / 5, at=now), now)
        assert not decision.changed, decision.reason
