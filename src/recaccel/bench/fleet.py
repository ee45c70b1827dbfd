"""The bench's servers: one `recaccel serve` process per configuration, started together,
waited on until ready, and always stopped.

    with ServerFleet(plan.servers, out / "servers") as fleet:
        fleet["baseline"].url, fleet["baseline"].pid

Stopping is SIGTERM to every server (each drains, stops its workers and exits), then SIGKILL
for any still running after `stop_timeout_s`; a killed server takes its workers with it
(serve/workers.py). It runs when the `with` block ends for any reason: an error, Ctrl-C, or a
SIGTERM to the bench, which the fleet turns into KeyboardInterrupt while it runs (the default
action would kill the bench and leave its servers behind). On Linux each server also asks the
kernel for SIGTERM when the bench dies (PR_SET_PDEATHSIG), which covers even SIGKILL.

A signal reaches Python's handler only between bytecodes of the main thread, so one that
arrives during a LoadGen run (native code) is handled when the run ends; a Ctrl-C from a
terminal also reaches the servers (same process group), which start draining at once and so
end the run early.

Each server's output goes to `log_dir/<name>.log`; a server that exits before it is ready is
reported with the end of its log.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from recaccel.bench.plan import ServerPlan
from recaccel.errors import ConfigError
from recaccel.serve.config import ENV_PREFIX, SECTIONS

SERVE_COMMAND = (sys.executable, "-m", "recaccel.cli", "serve")
READY_PATH = "/v2/health/ready"
READY_TIMEOUT_S = 300.0  # workers import torch, load and warm up; slow on a busy 2-core box
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 15
_PR_SET_PDEATHSIG = 1


@dataclass
class RunningServer:
    plan: ServerPlan
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def command(self) -> str:
        return self.plan.command(self.port)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports(count: int, base_port: int | None) -> list[int]:
    """`count` ports on loopback: base_port, base_port + 1, ... (each must be free), or free
    ones the kernel picks when `base_port` is None."""
    if base_port is not None:
        ports = list(range(base_port, base_port + count))
        if not (base_port > 0 and ports[-1] < 65536):
            raise ConfigError(f"ports {ports[0]}..{ports[-1]} are not all in 1..65535")
        taken = [p for p in ports if not port_is_free(p)]
        if taken:
            raise ConfigError(
                f"port(s) {', '.join(map(str, taken))} on 127.0.0.1 are in use",
                f"stop what listens there, pick another --base-port (the bench needs {count} "
                "in a row), or leave it out to use free ports",
            )
        return ports
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:  # held open together, so the kernel gives distinct ports
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def server_environment(plan: ServerPlan, environ: dict[str, str]) -> dict[str, str]:
    """The bench's environment without serving settings (RECACCEL_<SECTION>_<KEY> would change
    every configuration behind the plan's back), plus the plan's own."""
    prefixes = tuple(f"{ENV_PREFIX}{section.upper()}_" for section in SECTIONS)
    kept = {k: v for k, v in environ.items() if not k.startswith(prefixes)}
    return {**kept, **plan.env}


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the bench dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


class ServerFleet:
    """Start the planned servers, wait until each is ready, stop them all on exit."""

    def __init__(
        self,
        plans: Sequence[ServerPlan],
        log_dir: Path,
        *,
        command: Sequence[str] = SERVE_COMMAND,
        base_port: int | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self._plans = list(plans)
        self._log_dir = log_dir
        self._command = tuple(command)
        self._base_port = base_port
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self.servers: dict[str, RunningServer] = {}
        self._previous_sigterm: Any = None

    def __getitem__(self, name: str) -> RunningServer:
        return self.servers[name]

    def __iter__(self) -> Iterator[RunningServer]:
        return iter(self.servers.values())

    def __enter__(self) -> ServerFleet:
        self._trap_sigterm()
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            self._restore_sigterm()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self._restore_sigterm()

    def start(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        ports = choose_ports(len(self._plans), self._base_port)
        for plan, port in zip(self._plans, ports, strict=True):
            log = self._log_dir / f"{plan.name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [*self._command, *plan.argv, "--port", str(port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=server_environment(plan, dict(os.environ)),
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            self.servers[plan.name] = RunningServer(plan, port, process, log)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        waiting = dict(self.servers)
        while waiting:
            for name, server in list(waiting.items()):
                code = server.process.poll()
                if code is not None:
                    raise ConfigError(
                        f"the {name} server exited with code {code} before it was ready "
                        f"({server.command})",
                        f"its log, {server.log}, ends:\n{log_tail(server.log)}",
                    )
                if _ready(server.url):
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                raise ConfigError(
                    f"server(s) {', '.join(waiting)} not ready after {self._ready_timeout_s:.0f} s",
                    f"see their logs in {self._log_dir}",
                )
            if waiting:
                time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM every server still running, wait, then SIGKILL the ones that linger."""
        running = [s for s in self.servers.values() if s.process.poll() is None]
        for server in running:
            server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        for server in running:
            try:
                server.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(10)

    # --- SIGTERM to the bench -> KeyboardInterrupt, so `__exit__` runs -------------------------

    def _trap_sigterm(self) -> None:
        if _in_main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None and _in_main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
