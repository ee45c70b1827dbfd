"""Front processes: several servers accepting on one listening socket, and their supervisor.

    Supervisor(FrontSpec(models, config, profile, features), processes=4).run()

Why: a Python process parses HTTP, builds feature rows and forms batches on one core, whatever
the machine has, and with a light model that per-request work, not the model, is what caps a
server (docs/serving-plane.md). So `recaccel serve` runs `plane.processes` front processes,
each the whole request path. The supervisor binds the listening socket once and hands it to
each front it starts; every front accepts from it, as `uvicorn --workers` and gunicorn's
pre-fork model do, and the kernel gives each new connection to a front waiting in accept.

Fronts are forked from a forkserver that imported torch, ONNX Runtime and the server once
(preload.py), as gunicorn's `--preload` does: those pages are shared by every front rather
than each front importing its own (about 270 MB a front), and the weights are shared through
the page cache (artifact.py, docs/weights-in-memory.md).

What stays one server across the processes, and how:
- Readiness: each front writes its own into a shared byte array (`FrontState`) every
  `PUBLISH_INTERVAL_S`; any front answers GET /v2/health/ready with all of them, so a load
  balancer sees the server ready only when every front is.
- Metrics: prometheus-client's multiprocess mode (a directory the supervisor makes, set in
  PROMETHEUS_MULTIPROC_DIR before the fronts start): any front's /metrics sums them all.
- Hot swap and unload: the front that receives the management request asks the supervisor,
  which asks every front to do it (control.py) and answers when all have; a front started
  later starts with the models served then, versions included (`ModelTable`).
- Drain: SIGTERM or SIGINT to the supervisor marks the server as not admitting (every front's
  readiness fails at once), then relays SIGTERM to each front, which drains as a lone server
  always has (server.DrainingServer), and waits for them. Fronts ignore SIGINT: a Ctrl-C
  reaches the whole process group, and the relayed SIGTERM is the one signal they act on.
- A front that dies is replaced; one that dies before it was ever ready ends the server (a
  bad artifact would only die again), with the front's own error in the log above.
- A supervisor killed outright (kill -9): each front notices its parent's end, drains and
  exits, and its worker processes with it.

This module is the supervisor; what runs in each front, and what the fronts share with it, is
front_process.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from recaccel.errors import RecaccelError
from recaccel.serve.errors import DrainingError, RequestError
from recaccel.serve.plane.control import Channel, Command, Reply
from recaccel.serve.plane.front_process import (
    LISTEN_BACKLOG,
    MANAGEMENT_TIMEOUT_S,
    METRICS_DIR_ENV,
    PUBLISH_INTERVAL_S,
    STOP_TIMEOUT_S,
    FrontLink,
    FrontSpec,
    FrontState,
    front_context,
    front_is_hung,
    front_main,
    prepare_forms,
)

log = logging.getLogger("recaccel.serve")

# FrontLink, FrontSpec and prepare_forms live with the front process (front_process.py); the
# server imports them from here, beside the Supervisor.
__all__ = [
    "FrontLink",
    "FrontSpec",
    "ModelTable",
    "Supervisor",
    "bind",
    "next_version",
    "prepare_forms",
]


def next_version(asked: str | None, known: set[str]) -> str:
    """`asked`, or one past the highest numeric version in `known` (ModelRepository's rule,
    decided by the supervisor once so every front gets the same number)."""
    if asked is not None:
        return asked
    numbers = [int(v) for v in known if v.isdigit()]
    return str(max(numbers, default=0) + 1)


@dataclass
class ModelTable:
    """The models every front serves: name -> (artifact, version). The supervisor's record,
    from which a replacement front starts."""

    models: dict[str, tuple[Path, str]]

    def spec(self, base: FrontSpec) -> FrontSpec:
        models = {name: path for name, (path, _) in self.models.items()}
        versions = {name: version for name, (_, version) in self.models.items()}
        return replace(base, models=models, versions=versions)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every front accepts on (IPv6 when `host` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as error:
        raise RecaccelError(
            f"cannot listen on {host}:{port}: {error.strerror}",
            "pick a free port with --port, or stop what is using this one",
        ) from None
    sock.set_inheritable(True)
    return sock


@dataclass
class _Front:
    index: int
    process: Any
    channel: Channel
    started_at: float
    ever_ready: bool = False
    killed: bool = False  # by the supervisor, as hung


class Supervisor:
    """Starts `processes` fronts on one socket and keeps them one server (module docstring)."""

    def __init__(self, spec: FrontSpec, processes: int) -> None:
        if processes < 1:
            raise RecaccelError(f"a server needs at least one front process, not {processes}")
        self.spec = spec
        self.processes = processes
        self.table = ModelTable(
            {name: (path, spec.versions.get(name, "1")) for name, path in spec.models.items()}
        )
        self.versions_seen = {name: {version} for name, (_, version) in self.table.models.items()}
        self._context = front_context()
        self._fronts: dict[int, _Front] = {}
        self._stopping = False
        self._failed: str | None = None
        self._done = asyncio.Event()
        self._lock = asyncio.Lock()  # one management operation at a time
        self._state: FrontState | None = None
        self._sock: socket.socket | None = None

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then drain; 0, or 1 if a front failed to start."""
        return asyncio.run(self._main())

    async def _main(self) -> int:
        config = self.spec.config.server
        self._sock = bind(config.host, config.port)
        metrics_dir = tempfile.mkdtemp(prefix="recaccel-metrics-")
        os.environ[METRICS_DIR_ENV] = metrics_dir
        self._state = FrontState(self.processes)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        try:
            for index in range(self.processes):
                self._start(index)
            watcher = asyncio.create_task(self._watch_readiness())
            await self._done.wait()
            watcher.cancel()
            await self._stop_fronts()
        finally:
            self._sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if self._failed is not None:
            log.error("%s", self._failed)
            return 1
        return 0

    def stop(self) -> None:
        """Begin the drain (module docstring); a second call changes nothing."""
        if self._stopping:
            return
        self._stopping = True
        if self._state is not None:
            self._state.admitting.value = 0
            starting = [f.index for f in self._fronts.values() if not self._ever_ready(f)]
            if starting:
                log.warning(
                    "stopped while starting: front process(es) %s had not served yet and stop "
                    "with what they had started", ", ".join(map(str, starting)),
                )  # fmt: skip
        self._done.set()

    def _ever_ready(self, front: _Front) -> bool:
        assert self._state is not None
        front.ever_ready = front.ever_ready or bool(self._state.ready[front.index])
        return front.ever_ready

    def _start(self, index: int) -> None:
        assert self._state is not None and self._sock is not None
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=front_main,
            args=(self.table.spec(self.spec), self._sock, index, self._state, theirs),
            name=f"recaccel-front-{index}",
        )
        process.start()
        theirs.close()
        channel = Channel(ours, self._handle)
        front = _Front(index, process, channel, time.monotonic())
        self._fronts[index] = front
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, front)

    def _exited(self, front: _Front) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(front.process.sentinel)
        front.process.join(5)  # reaped: its exit code is known
        front.channel.close()
        assert self._state is not None
        # Its last published readiness, read before it is cleared: a front killed between
        # becoming ready (clients saw it so) and `_watch_readiness`'s next look was taken for
        # one that never started, and its death stopped the whole server.
        front.ever_ready = front.ever_ready or bool(self._state.ready[front.index])
        self._state.ready[front.index] = 0
        self._state.hung[front.index] = 0
        _forget_metrics_of(front.process.pid)
        if self._fronts.get(front.index) is front:
            del self._fronts[front.index]
        if self._stopping:
            return
        code = front.process.exitcode
        if not front.ever_ready:
            self._failed = (
                f"front process {front.index} exited with code {code} before it was ready; "
                "the server stops (its error is in the log above)"
            )
            self.stop()
            return
        log.warning("front process %d (pid %s) died with code %s: replacing it", front.index,
                    front.process.pid, code)  # fmt: skip
        self._start(front.index)

    async def _watch_readiness(self) -> None:
        """Mark each front that has been ready once (a later death is then replaced), and
        kill one that is hung (`front_is_hung`): its death then replaces it."""
        state = self._state
        assert state is not None
        timeout_s = self.spec.config.plane.hang_timeout_s
        while True:
            now = time.monotonic()
            for front in list(self._fronts.values()):
                beat_age_s = now - state.beats[front.index]
                if (
                    not self._stopping
                    and not front.killed
                    and front_is_hung(
                        self._ever_ready(front),
                        bool(state.hung[front.index]),
                        beat_age_s,
                        timeout_s,
                    )
                ):
                    log.error(
                        "front process %d (pid %s) is hung (%s): killing it; its open "
                        "connections are reset and a new front replaces it", front.index,
                        front.process.pid,
                        "a lane stuck on one batch" if state.hung[front.index]
                        else f"no heartbeat for {beat_age_s:.1f} s",
                    )  # fmt: skip
                    front.killed = True
                    front.process.kill()
            await asyncio.sleep(PUBLISH_INTERVAL_S)

    async def _stop_fronts(self) -> None:
        """SIGTERM to every front (each drains), then wait; SIGKILL what outlasts the limit."""
        fronts = list(self._fronts.values())
        for front in fronts:
            with contextlib.suppress(ProcessLookupError):
                os.kill(front.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(f.process.is_alive() for f in fronts) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for front in fronts:
            if front.process.is_alive():
                log.error("front process %d did not stop in time: killed", front.index)
                front.process.kill()
            front.process.join(5)
            front.channel.close()

    # management, asked by one front, done by all -----------------------------------------------

    async def _handle(self, command: Command) -> Any:
        if self._stopping:
            raise DrainingError("the server is shutting down")
        async with self._lock:
            if command.op == "load":
                return await self._load(**command.args)
            if command.op == "unload":
                return await self._unload(**command.args)
        raise RequestError(f"unknown control command {command.op!r}", status=500)

    async def _everywhere(self, command: Command) -> list[Any]:
        """`command` on every front at once; the first failure is raised."""
        fronts = list(self._fronts.values())
        if len(fronts) < self.processes:
            raise RequestError(
                f"{self.processes - len(fronts)} front process(es) are restarting",
                "retry in a few seconds",
                status=503,
            )
        replies = await asyncio.gather(
            *(f.channel.ask(command, MANAGEMENT_TIMEOUT_S) for f in fronts),
            return_exceptions=True,
        )
        answered: list[Reply] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise RequestError(f"a front process did not answer: {reply}", status=503)
            answered.append(reply)
        return [reply.result() for reply in answered]

    async def _load(self, name: str, artifact: str, version: str | None) -> str:
        new_version = next_version(version, self.versions_seen.get(name, set()))
        args = {"name": name, "artifact": artifact, "version": new_version}
        # Made here, once, before the fronts load it: made in every front at once, an export
        # or compile took the cores and the fronts' interpreters from the requests being served
        # (refused past their deadline). A failure is left to the fronts' own loads, which
        # report it as the answer.
        with contextlib.suppress(Exception):
            await asyncio.to_thread(
                prepare_forms, Path(artifact), self.spec.config, self.spec.calibration
            )
        await self._everywhere(Command("load", args))
        self.table.models[name] = (Path(artifact), new_version)
        self.versions_seen.setdefault(name, set()).add(new_version)
        return new_version

    async def _unload(self, name: str) -> None:
        await self._everywhere(Command("unload", {"name": name}))
        self.table.models.pop(name, None)


def _forget_metrics_of(pid: int) -> None:
    """Drop a dead front's live gauges from the multiprocess metrics (its counters stay)."""
    directory = os.environ.get(METRICS_DIR_ENV)
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
