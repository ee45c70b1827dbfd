"""A front's lifespan: start its models, publish its readiness, drain them at the end.

Alone, the server starts its models and drains them; as one of several front processes
(plane/front.py) it also answers the supervisor's commands (its share of a load or an unload),
publishes its readiness with a heartbeat, and exits with `FRONT_START_FAILED` when it cannot
load what it serves, so the supervisor ends the server instead of starting it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from recaccel.errors import RecaccelError
from recaccel.serve.config import ServeConfig
from recaccel.serve.errors import RequestError
from recaccel.serve.heap import freeze_long_lived_heap
from recaccel.serve.overload import OverloadGuard
from recaccel.serve.plane.control import Channel, Command
from recaccel.serve.plane.front_process import FRONT_START_FAILED, PUBLISH_INTERVAL_S, FrontLink
from recaccel.serve.repository import ModelRepository

log = logging.getLogger("recaccel.serve")


def front_lifespan(
    repository: ModelRepository,
    config: ServeConfig,
    overload: OverloadGuard,
    link: FrontLink | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan over `repository`; `link`: this app is one of several fronts."""

    async def on_command(command: Command) -> Any:
        """What the supervisor asks of this front: its share of a load or an unload."""
        if command.op == "load":
            return await repository.load(**command.args)
        if command.op == "unload":
            return await repository.unload(**command.args)
        raise RequestError(f"unknown control command {command.op!r}", status=500)

    async def publish_readiness(link: FrontLink) -> None:
        """Readiness, and a heartbeat: a loop that stops beating (stuck in a native call)
        or a lane that holds one batch too long has this front replaced (front.py)."""
        timeout_s = config.plane.hang_timeout_s
        while True:
            hung = repository.hung_lane(time.monotonic(), timeout_s)
            if hung is not None:
                log.error(
                    "lane %s has held one batch for %.0f s or more (plane.hang_timeout_s): "
                    "this front stops and is replaced", hung, timeout_s,
                )  # fmt: skip
                link.publish(False, hung=True)
                return
            link.publish(repository.ready)
            await asyncio.sleep(PUBLISH_INTERVAL_S)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if link is not None:
            link.channel = Channel(link.connection, on_command)
        try:
            await repository.start()
        except RecaccelError as error:
            if link is None:
                raise
            # A front that cannot load what it serves: its reason, plainly, for the log the
            # supervisor points to (not uvicorn's traceback), and the exit code it reads.
            log.error("front process %d cannot start: %s", link.index, error)
            os._exit(FRONT_START_FAILED)
        freeze_long_lived_heap()  # features, models, imports: off every full collection
        overload.start()
        publisher = None if link is None else asyncio.create_task(publish_readiness(link))
        try:
            yield
        finally:
            if publisher is not None and link is not None:
                publisher.cancel()
                link.publish(False)
            await overload.stop()
            await repository.drain()
            if link is not None and link.channel is not None:
                link.channel.close()
            log.warning("drained: every admitted request answered, workers stopped")

    return lifespan
