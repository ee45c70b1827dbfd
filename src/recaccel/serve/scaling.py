"""The autoscaler's loop: sample a deployment's load, ask the policy, scale its workers.

    task = asyncio.create_task(scaling_loop(deployment))   # deployment.py starts it

Every `autoscaler.interval_s` it measures the elastic kind's utilization (busy time over wall
time, averaged over its workers) and the queue, asks `autoscaler.decide` (a pure function), and
starts or stops worker processes to reach the decision's target; each change is logged and
counted in /metrics. Only worker processes with no fixed count scale: in-process lanes are a
fixed number per front process, and the fronts' number is the server's (`plane.processes`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from recaccel.serve import autoscaler

if TYPE_CHECKING:
    from recaccel.serve.deployment import Deployment

log = logging.getLogger(__name__)


def policy_of(deployment: Deployment) -> autoscaler.AutoscalerConfig:
    settings, workers = deployment.config.autoscaler, deployment.config.workers
    return autoscaler.AutoscalerConfig(
        min_workers=workers.min,
        max_workers=workers.max,
        target_utilization=settings.target_utilization,
        target_queue_delay_ms=settings.target_queue_delay_ms,
        upscale_delay_s=settings.upscale_delay_s,
        downscale_delay_s=settings.downscale_delay_s,
    )


async def scaling_loop(deployment: Deployment) -> None:
    """Scale `deployment`'s elastic kind until cancelled; returns at once without one."""
    kind = deployment.elastic_kind
    if kind is None:
        return  # every kind has a fixed count
    policy, name = policy_of(deployment), deployment.model.name
    metrics = deployment.metrics
    state = autoscaler.AutoscalerState.initial(len(kind.workers), time.monotonic())

    def busy_s() -> float:
        return sum(w.stats.busy_s for w in kind.workers)

    last_at, last_busy = time.monotonic(), busy_s()
    while True:
        await asyncio.sleep(deployment.config.autoscaler.interval_s)
        now, busy = time.monotonic(), busy_s()
        workers = max(1, len(kind.workers))
        utilization = min(1.0, (busy - last_busy) / ((now - last_at) * workers))
        last_at, last_busy = now, busy
        queued, oldest_wait_s = deployment.queue_load(now)
        sample = autoscaler.LoadSample(
            at=now,
            workers=len(kind.workers),
            utilization=utilization,
            queue_delay_ms=oldest_wait_s * 1e3,
            queued_requests=queued,
            in_flight=sum(w.in_flight for w in kind.workers),
        )
        decision, state = autoscaler.decide(policy, state, sample, now)
        metrics.autoscaler_target.labels(name).set(decision.target_workers)
        if decision.changed:
            direction = "up" if decision.target_workers > len(kind.workers) else "down"
            metrics.autoscaler_decisions.labels(name, direction).inc()
            log.info(
                "autoscaler %s: %d -> %d workers: %s",
                name,
                len(kind.workers),
                decision.target_workers,
                decision.reason,
            )
            await deployment.scale_to(kind, decision.target_workers)
