"""One front process: what it is started from, what it shares with the others, and its main.

The supervisor (front.py) starts `front_main` in each front process with a `FrontSpec`; the
fronts and the supervisor share one `FrontState` (readiness, heartbeats, whether the server
admits), and each front reaches the supervisor through its `FrontLink`. Fronts are forked from
a forkserver that preloaded what they all import (`front_context`, preload.py); the module
docstring of front.py says why.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, SpawnContext
from pathlib import Path
from typing import Any

from recaccel.data.dataset import FeatureBatch
from recaccel.runtime.executor import prepare_form
from recaccel.runtime.profile import Profile
from recaccel.serve.config import ServeConfig
from recaccel.serve.errors import DrainingError, RequestError
from recaccel.serve.features import FeatureSource
from recaccel.serve.plane.control import Channel, ChannelClosedError, Command

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client when it is imported
PUBLISH_INTERVAL_S = 0.1
LISTEN_BACKLOG = 2048
MANAGEMENT_TIMEOUT_S = 600.0  # a load may export, quantize or compile on a busy machine
STOP_TIMEOUT_S = 90.0  # drain grace + every admitted request + the executors' own stop
FRONT_START_FAILED = 3  # a front's exit code when it cannot load what it serves
PRELOAD_MODULE = "recaccel.serve.plane.preload"


def front_context() -> ForkServerContext | SpawnContext:
    """How fronts are started: forked from a server process that imported what every front
    needs (module docstring), or spawned where there is no forkserver (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([PRELOAD_MODULE])
    return context


@dataclass(frozen=True)
class FrontSpec:
    """What a front process builds its server from; pickled to each one it starts."""

    models: dict[str, Path]  # name -> artifact
    config: ServeConfig
    profile: Profile | None = None
    features: FeatureSource | None = None
    calibration: FeatureBatch | None = None  # training rows, for int8-static executors
    versions: dict[str, str] = field(default_factory=dict)  # name -> version; absent: "1"


class FrontState:
    """What the supervisor and the fronts share: each front's readiness, and whether the
    server admits requests at all. Plain shared memory, one writer per slot: a reader may see
    a slot a moment late, which readiness probes tolerate."""

    def __init__(self, processes: int) -> None:
        context = front_context()
        self.ready: Any = context.RawArray("b", processes)
        self.admitting: Any = context.RawValue("b", 1)
        self.beats: Any = context.RawArray("d", processes)  # each front's last, monotonic s
        self.hung: Any = context.RawArray("b", processes)  # a front's own verdict on itself

    def all_ready(self) -> bool:
        return bool(self.admitting.value) and all(self.ready)


@dataclass
class FrontLink:
    """A front's view of the others: its readiness slot and its channel to the supervisor."""

    index: int
    state: FrontState
    connection: Connection
    channel: Channel | None = None  # opened on the front's loop at start-up

    def publish(self, ready: bool, hung: bool = False) -> None:
        """Readiness and a heartbeat; `hung`: this front cannot serve again, replace it."""
        # The beat first: the supervisor judges a front by its beat once it reads it ready.
        self.state.beats[self.index] = time.monotonic()
        self.state.hung[self.index] = int(hung)
        self.state.ready[self.index] = int(ready)

    def all_ready(self) -> bool:
        return self.state.all_ready()

    async def ask(self, op: str, **args: Any) -> Any:
        """Have the supervisor run `op` on every front; its result, or its error raised."""
        if self.channel is None:
            raise RequestError("this front is not connected to its supervisor", status=503)
        try:
            reply = await self.channel.ask(Command(op, args), MANAGEMENT_TIMEOUT_S)
        except ChannelClosedError:
            raise DrainingError("the server is shutting down") from None
        return reply.result()


def prepare_forms(artifact: Path, config: ServeConfig, calibration: FeatureBatch | None) -> None:
    """Make what every executor `config` serves `artifact` with caches beside it (an ONNX
    export, a compile), here and now, so the fronts that load it next find it made rather than
    each making it at once on the cores they share (runtime/executor.py's `prepare_form`)."""
    for section in config.workers.executors:
        prepare_form(artifact, section.executor_config(), calibration)


def _drain_when_parent_ends() -> None:
    """A SIGTERM to this front (its drain) once the supervisor has ended however it ended; a
    hard exit if the drain has not finished `STOP_TIMEOUT_S` later."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_TIMEOUT_S)
        os._exit(1)

    threading.Thread(target=watch, name="drain-with-parent", daemon=True).start()


def front_is_hung(ever_ready: bool, says_hung: bool, beat_age_s: float, timeout_s: float) -> bool:
    """Whether the supervisor kills a front as hung: one that served, and says it is hung (a
    lane stuck on one batch) or has not beaten for `timeout_s` (its event loop stuck in a
    native call, or the process stopped). A front still starting is not judged: loading and
    compiling block its loop for longer than any batch."""
    return ever_ready and (says_hung or beat_age_s >= timeout_s)


def front_main(
    spec: FrontSpec, sock: socket.socket, index: int, state: FrontState, control: Connection
) -> None:
    """A front process: the whole server on the shared socket (see the module docstring)."""
    from recaccel.serve.server import build_app, run_front

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _drain_when_parent_ends()
    link = FrontLink(index, state, control)
    app = build_app(
        spec.models, spec.config, spec.profile, spec.features, spec.calibration, spec.versions, link
    )
    run_front(app, spec.config, sockets=[sock], relayed=True)
