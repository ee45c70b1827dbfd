"""Elastic scaling policy: how many worker processes the load asks for, and when to act on it.

The worker pool (elsewhere) samples its load every few seconds and calls

    decision, state = decide(config, state, sample, now)

then starts or stops workers to reach `decision.target_workers`, logs `decision.reason` and
exports it as a metric. Everything here is a pure function of its arguments.

**What the load asks for.** As Kubernetes' HPA, `desired = ceil(running × utilization /
target_utilization)`, where utilization is busy time over wall time averaged over the running
workers: the busy worker-equivalents divided by how busy each should be. The target (0.7 by
default, KServe/Knative's default `container-concurrency-target-percentage` of 70%) leaves
headroom for bursts. Utilization saturates at 1 and so understates an overload; the queue
delay does not, so a queue delay above its target asks for at least one worker more than are
running. Within `tolerance` of the target (HPA's default 10%) the load asks for no change: near
a boundary of the ceiling, noise would otherwise ask for one worker more, then one fewer.

It is computed from the *running* workers and compared with the *target* count: while new
workers start, the running ones are saturated but ask only for the target already set, so a
slow start does not trigger a second scale-up.

**When to act.** As Ray Serve's autoscaler: a change is made only after the load has asked for
it at every sample for the delay, and any sample that does not ask for it starts the wait over.
Ray's delays are 30 s up and 600 s down, for replicas that take minutes to place and start;
a worker process here loads in seconds, so the defaults are 3 s and 30 s (the serving
config's `[autoscaler]` takes them from here). Up is quick (a
missed SLO costs now), down is slow (a worker restarts in `load_s`, and traffic that dipped
usually returns). The step taken is the one asked for throughout the wait — the fewest workers
wanted over an up-wait, the most over a down-wait, as HPA's stabilization window keeps the
safest recommendation — so one spike or one lull does not set the size. `max_step` limits each
change; the next step waits its delay again, so it is a rate limit. A count outside
[min_workers, max_workers] (the configuration changed) is corrected at once.

Left out: scaling to zero (a model's load and warm-up is far longer than a rank request's SLO)
and a KPA-style panic mode (a burst beyond the upscale delay is admission control's to shed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from recaccel.errors import ConfigError

# Differences of large clock readings are off by an ulp; a delay of 30 s must pass at 30 s.
_EPS = 1e-9


@dataclass(frozen=True)
class AutoscalerConfig:
    min_workers: int
    max_workers: int
    target_utilization: float = 0.7
    target_queue_delay_ms: float = 10.0  # a fifth of the default 50 ms rank SLO
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 30.0
    max_step: int | None = None  # most workers added or removed by one change; None: any
    tolerance: float = 0.1  # |utilization / target − 1| within this asks for no change

    def __post_init__(self) -> None:
        if self.min_workers < 1:
            raise ConfigError(
                f"autoscaler min_workers must be >= 1, not {self.min_workers}",
                "scaling to zero is not supported: a worker takes seconds to load a model",
            )
        if self.max_workers < self.min_workers:
            raise ConfigError(
                f"autoscaler max_workers ({self.max_workers}) must be >= "
                f"min_workers ({self.min_workers})"
            )
        if not 0 < self.target_utilization <= 1:
            raise ConfigError(
                f"autoscaler target_utilization must be in (0, 1], not {self.target_utilization}",
                "0.7 keeps 30% headroom for bursts",
            )
        if not self.target_queue_delay_ms > 0:
            raise ConfigError(
                f"autoscaler target_queue_delay_ms must be > 0, not {self.target_queue_delay_ms}"
            )
        for name in ("upscale_delay_s", "downscale_delay_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"autoscaler {name} must be >= 0, not {value}")
        if self.max_step is not None and self.max_step < 1:
            raise ConfigError(
                f"autoscaler max_step must be >= 1 or None, not {self.max_step}",
                "None lets one change reach the desired count",
            )
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"autoscaler tolerance must be in [0, 1), not {self.tolerance}")


@dataclass(frozen=True)
class LoadSample:
    """The pool's load over the last sampling window, ending at `at`."""

    at: float  # for the log; decisions are timed by `decide`'s `now`
    workers: int  # running and ready (not those still starting)
    utilization: float  # busy time / wall time over the window, summed over workers / workers
    queue_delay_ms: float  # p95 (or mean) of the time requests waited before their batch ran
    queued_requests: int
    in_flight: int

    def __post_init__(self) -> None:
        for name in ("workers", "utilization", "queue_delay_ms", "queued_requests", "in_flight"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"load sample {name} must be >= 0, not {value}")


@dataclass(frozen=True)
class AutoscalerState:
    """What `decide` remembers between calls; start from `AutoscalerState.initial(...)`."""

    workers: int  # the target count last decided
    # The load has asked for more (fewer) workers at every sample since then; None: it has not.
    want_up_since: float | None = None
    want_down_since: float | None = None
    last_change_at: float | None = None
    want_up_workers: int = 0  # the fewest workers asked for since want_up_since
    want_down_workers: int = 0  # the most workers asked for since want_down_since

    @classmethod
    def initial(cls, workers: int, now: float) -> AutoscalerState:
        """The pool as started: `workers` running since `now`, nothing wanted yet. A count
        outside the configured bounds is corrected by the first `decide`."""
        return cls(workers=workers, last_change_at=now)


@dataclass(frozen=True)
class Decision:
    target_workers: int
    reason: str  # logged and exported by the caller: what was measured, what it asks, why
    changed: bool
    desired: int  # what this sample alone asks for, within [min, max]


def _clamp(workers: int, config: AutoscalerConfig) -> int:
    return max(config.min_workers, min(config.max_workers, workers))


def desired_workers(config: AutoscalerConfig, sample: LoadSample, current: int) -> tuple[int, str]:
    """What this sample alone asks for (before the delays), clamped to [min, max], and why."""
    if sample.workers == 0:
        return current, "no running worker to measure"
    busy = sample.workers * sample.utilization
    by_utilization = math.ceil(busy / config.target_utilization - _EPS)
    load = (
        f"utilization {sample.utilization:.2f} of {sample.workers} running "
        f"(target {config.target_utilization:.2f})"
    )
    if sample.queue_delay_ms > config.target_queue_delay_ms:
        wanted = max(by_utilization, sample.workers + 1)
        why = (
            f"queue delay {sample.queue_delay_ms:.1f} ms > target "
            f"{config.target_queue_delay_ms:g} ms ({sample.queued_requests} queued), {load}"
        )
        return _clamp(wanted, config), why
    if abs(sample.utilization / config.target_utilization - 1) <= config.tolerance + _EPS:
        return _clamp(current, config), f"{load}: within {config.tolerance:.0%} of target"
    return _clamp(by_utilization, config), f"{load} asks for {by_utilization}"


def _step(current: int, wanted: int, max_step: int | None) -> int:
    if max_step is None:
        return wanted
    return current + max(-max_step, min(max_step, wanted - current))


def decide(
    config: AutoscalerConfig, state: AutoscalerState, sample: LoadSample, now: float
) -> tuple[Decision, AutoscalerState]:
    """The worker count to run now, and the state for the next call (module docstring)."""
    current = state.workers
    bounded = _clamp(current, config)
    if bounded != current:
        reason = (
            f"scale {current} → {bounded}: outside [{config.min_workers}, "
            f"{config.max_workers}] (min_workers, max_workers)"
        )
        corrected = AutoscalerState(bounded, last_change_at=now)
        return Decision(bounded, reason, True, bounded), corrected

    desired, why = desired_workers(config, sample, current)
    if desired > current:
        since = now if state.want_up_since is None else state.want_up_since
        wanted = desired if state.want_up_since is None else min(state.want_up_workers, desired)
        return _persisting(config, state, now, "up", since, wanted, desired, why)
    if desired < current:
        since = now if state.want_down_since is None else state.want_down_since
        wanted = desired if state.want_down_since is None else max(state.want_down_workers, desired)
        return _persisting(config, state, now, "down", since, wanted, desired, why)
    held = AutoscalerState(current, last_change_at=state.last_change_at)
    return Decision(current, f"hold at {current}: {why}", False, desired), held


def _persisting(
    config: AutoscalerConfig,
    state: AutoscalerState,
    now: float,
    direction: Literal["up", "down"],
    since: float,
    wanted: int,
    desired: int,
    why: str,
) -> tuple[Decision, AutoscalerState]:
    """A change the load asks for: made once it has been asked for throughout the delay."""
    current = state.workers
    delay = config.upscale_delay_s if direction == "up" else config.downscale_delay_s
    waited = now - since
    if waited + _EPS >= delay:
        target = _step(current, wanted, config.max_step)
        reason = (
            f"scale {direction} {current} → {target}: {why}; {wanted} wanted throughout "
            f"{waited:.0f} s >= {direction}scale_delay_s {delay:g} s"
        )
        return Decision(target, reason, True, desired), AutoscalerState(target, last_change_at=now)
    reason = (
        f"hold at {current}: {why}; {wanted} wanted for {waited:.0f} s "
        f"of {direction}scale_delay_s {delay:g} s"
    )
    if direction == "up":
        kept = AutoscalerState(current, since, None, state.last_change_at, wanted, 0)
    else:
        kept = AutoscalerState(current, None, since, state.last_change_at, 0, wanted)
    return Decision(current, reason, False, desired), kept
