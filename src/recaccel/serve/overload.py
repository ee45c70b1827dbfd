"""Shed the load the server as a whole cannot keep up with: standing delay and event-loop lag.

Admission control (admission.py) prices the workers' backlog with the profile's latency model.
That misses overload the profile cannot see: the HTTP process itself saturated (routing,
decoding and feature rows take about 1.4 ms of its CPU per rank request on this machine), or
workers slower than profiled because they share cores with it. Then requests wait in socket
buffers, in the client's connection pool and behind the event loop, admission still sees
a short worker queue, and everything is admitted late: at twice the sustainable load
(scripts/serve_max_qps.py --overload 2) nothing was refused and the answered p99 was 4.7 s.

The guard is an adaptive limit on inference requests in flight in the server, as Netflix's
concurrency-limits and Envoy's adaptive-concurrency filter keep one: a request that arrives
with the limit reached is answered 429 with `Retry-After` at once, before its body is read or
routed, which costs the loop a small fraction of serving it. Every interval (100 ms) the limit
moves by additive increase, multiplicative decrease (`next_limit`: a cut in proportion to the
overshoot, after two congested intervals in a row, and a prompt return to the initial limit
once the congestion has passed) on one congestion signal compared with a
target delay (`admission.overload_target_ms`, by default a tenth of the SLO: 5 ms at 50 ms,
the target of Facebook's queues below):

- **Standing delay**, as CoDel (Nichols and Jacobson, 2012) and Facebook's server queues
  ("Fail at Scale", 2015) detect a queue that no longer drains: the *shortest* time any
  inference request spent in the server during the interval. One large request is slow alone;
  when even the quickest of many is slow, every request is queueing. Fewer than
  `min_requests` answered give no verdict, so a quiet server's limit never falls.
- **Event-loop lag**: how late a timer due every few milliseconds fires, smoothed. It sees the
  wait before a request reaches any handler, which the standing delay cannot time. After an
  interval in which no request arrived and none was in flight, with the limit at rest, the
  timer sleeps until the next request: an idle front otherwise woke 50 times a second.

A plain on/off switch on the same signals was measured first (scripts/serve_max_qps.py, server
on one core): it refused too late, then let the whole client pool in at once when it switched
off, and admitted requests' p99 reached 200 ms. A limit bounds that burst. The target is on
the *quickest* request, so the others run several times longer: at twice the load a server
on one core could take, a target of a fifth of the SLO let the admitted p99 reach 94-97 ms,
a tenth held it at 45 ms, and at the highest load the 2-core server held alone neither
refused anything (550 QPS; it refused 6% at 650, where its p99 was 46 ms). Health, metadata
and metrics are never limited, so probes still see a live server. Priority does not exempt a
request: it is in the body, and reading bodies is the work being shed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from recaccel.errors import ConfigError

# 50 timer wake-ups a second, five per 100 ms interval. Each wake-up of an idle loop costs
# about 0.15 ms of CPU on a VM (docs/serving-plane.md): at 200 a second (5 ms) an idle front
# burned 3% of a core on this probe alone.
SAMPLE_INTERVAL_S = 0.02
TARGET_FRACTION_OF_SLO = 0.1
# A refusal past the limit names this rule, beside admission.py's codes.
SERVER_OVERLOADED = "server_overloaded"


@dataclass(frozen=True)
class OverloadPolicy:
    target_s: float  # the standing delay and loop lag the limit aims under; 0: no limit
    interval_s: float = 0.1  # how often the limit moves
    min_requests: int = 8  # answered in an interval, for a verdict on it
    lag_weight: float = 0.5  # of the newest lag sample in the moving average
    initial_limit: int = 64  # requests in flight
    min_limit: int = 2  # a server refusing everything could not learn it had recovered
    max_limit: int = 2_000
    patience: int = 2  # congested intervals in a row before the limit is cut
    backoff: float = 0.5  # the deepest cut: the limit's least factor after a congested interval
    gentlest_cut: float = 0.9  # and its greatest
    recovery: float = 1.5  # factor per calm interval back up to initial_limit (next_limit)

    def __post_init__(self) -> None:
        if not (self.target_s >= 0 and math.isfinite(self.target_s)):
            raise ConfigError(
                f"admission overload_target_ms must be >= 0, not {self.target_s * 1e3:g}",
                "0 turns the adaptive limit on requests in flight off",
            )
        if not self.interval_s > 0:
            raise ConfigError(f"overload interval_s must be > 0, not {self.interval_s}")
        if self.min_requests < 1:
            raise ConfigError(f"overload min_requests must be >= 1, not {self.min_requests}")
        if not 0 < self.lag_weight <= 1:
            raise ConfigError(f"overload lag_weight must be in (0, 1], not {self.lag_weight}")
        if not 1 <= self.min_limit <= self.initial_limit <= self.max_limit:
            raise ConfigError(
                "overload limits must satisfy 1 <= min_limit <= initial_limit <= max_limit, "
                f"not {self.min_limit}, {self.initial_limit}, {self.max_limit}"
            )
        if not 0 < self.backoff <= self.gentlest_cut < 1:
            raise ConfigError(
                "overload cuts must satisfy 0 < backoff <= gentlest_cut < 1, not "
                f"{self.backoff}, {self.gentlest_cut}"
            )
        if self.patience < 1:
            raise ConfigError(f"overload patience must be >= 1, not {self.patience}")
        if not self.recovery > 1:
            raise ConfigError(f"overload recovery must be > 1, not {self.recovery}")

    @property
    def enabled(self) -> bool:
        return self.target_s > 0


def overload_target_s(configured_ms: float | None, slo_p99_ms: float) -> float:
    """The configured target, or a tenth of the SLO when none is set (module docstring)."""
    if configured_ms is None:
        return slo_p99_ms * TARGET_FRACTION_OF_SLO / 1e3
    return configured_ms / 1e3


def smoothed_lag_s(previous_s: float, sample_s: float, weight: float) -> float:
    """Exponential moving average: one late timer (a 10,000-candidate request's features) is
    not overload; a loop late sample after sample is."""
    return previous_s + weight * (max(0.0, sample_s) - previous_s)


def standing_delay_s(shortest_s: float, answered: int, policy: OverloadPolicy) -> float:
    """The interval's shortest time in the server, or 0 when too few were answered to tell a
    queue from a few large requests."""
    return shortest_s if answered >= policy.min_requests else 0.0


def congestion_s(standing_s: float, lag_s: float) -> float:
    """The one signal the limit follows: the worse of the two delays."""
    return max(standing_s, lag_s)


def next_limit(
    limit: int, congestion: float, streak: int, reached: bool, policy: OverloadPolicy
) -> int:
    """The limit for the next interval; `streak` counts the congested intervals in a row, this
    one included.

    Congested for `patience` intervals: cut in proportion to the overshoot (the limit times
    target / congestion, as Netflix's gradient limit scales by the ratio of no-load to current
    latency), between `backoff` and `gentlest_cut`. So a Poisson burst near capacity, one
    interval just over target, costs nothing, while a real overload halves the limit per
    interval.

    Under target and binding (requests refused, or the limit full): grow by one, probing for
    capacity. Under target and not binding: the cut has outlived its congestion, so return to
    `initial_limit` by `recovery` per interval; above it, stay, since a limit that binds nothing
    says nothing about the server's capacity. Without that return, one burst (LoadGen's Offline
    run, 32 in flight at once) left a server's limit at 12-19 for minutes afterwards, and at
    400 QPS, p99 15 ms, its Poisson bursts were refused past that stale limit.
    """
    if congestion > policy.target_s:
        if streak < policy.patience:
            return limit
        factor = min(policy.gentlest_cut, max(policy.backoff, policy.target_s / congestion))
        return max(policy.min_limit, math.floor(limit * factor))
    if reached:
        return min(policy.max_limit, limit + 1)
    if limit < policy.initial_limit:
        return min(policy.initial_limit, math.ceil(limit * policy.recovery))
    return limit


class OverloadGuard:
    """The limit for the running loop. The middleware calls `enter` for each inference request
    that arrives (False: refuse it) and `leave` when it is answered."""

    def __init__(
        self,
        policy: OverloadPolicy,
        on_interval: Callable[[OverloadGuard], None] | None = None,
        sample_interval_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self.policy = policy
        self.limit = policy.initial_limit
        self.in_flight = 0
        self.lag_s = 0.0
        self.standing_s = 0.0
        self._shortest_s = math.inf
        self._answered = 0
        self._reached = False
        self._streak = 0
        self._on_interval = on_interval  # e.g. to gauges
        self._sample_interval_s = sample_interval_s
        self._task: asyncio.Task[None] | None = None
        self._entered = 0  # requests that arrived in this interval
        self._woken: asyncio.Future[None] | None = None  # set while the sampler sleeps

    def enter(self) -> bool:
        self._entered += 1
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)  # the first request after a quiet spell
        if self.policy.enabled and self.in_flight >= self.limit:
            self._reached = True
            return False
        self.in_flight += 1
        return True

    def leave(self, server_s: float, answered: bool) -> None:
        """`answered`: a 200 whose server time counts toward the standing delay."""
        self.in_flight -= 1
        if answered:
            self._answered += 1
            self._shortest_s = min(self._shortest_s, server_s)

    def start(self) -> None:
        if self._task is None and self.policy.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="overload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def close_interval(self) -> None:
        self.standing_s = standing_delay_s(self._shortest_s, self._answered, self.policy)
        reached = self._reached or self.in_flight >= self.limit
        congestion = congestion_s(self.standing_s, self.lag_s)
        self._streak = self._streak + 1 if congestion > self.policy.target_s else 0
        self.limit = next_limit(self.limit, congestion, self._streak, reached, self.policy)
        self._shortest_s, self._answered, self._reached = math.inf, 0, False
        self._entered = 0
        if self._on_interval is not None:
            self._on_interval(self)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval_end = loop.time() + self.policy.interval_s
        while True:
            due = loop.time() + self._sample_interval_s
            await asyncio.sleep(self._sample_interval_s)
            now = loop.time()
            self.lag_s = smoothed_lag_s(self.lag_s, now - due, self.policy.lag_weight)
            if now >= interval_end:
                quiet = self._entered == 0 and self.in_flight == 0
                self.close_interval()
                if quiet and self.limit >= self.policy.initial_limit:
                    await self._sleep_until_a_request()
                    now = loop.time()
                interval_end = now + self.policy.interval_s

    async def _sleep_until_a_request(self) -> None:
        """A quiet server has no load to shed: stop waking the loop 50 times a second (1.6% of
        a core per front on the 2-core VM, idle) until `enter` sees a request. The lag average
        starts again from zero: a loop that had nothing to do was not late for anything."""
        self.lag_s = 0.0
        self._woken = asyncio.get_running_loop().create_future()
        try:
            await self._woken
        finally:
            self._woken = None
