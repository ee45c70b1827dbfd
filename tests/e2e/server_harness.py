"""The real server on loopback: started as its own process, waited on until ready, stopped with
SIGTERM. Tests talk to it over HTTP only."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recaccel.serve.plane.front_process import PRELOAD_MODULE

SERVER_SCRIPT = Path(__file__).with_name("tiny_server.py")
READY_TIMEOUT_S = 180.0  # workers spawn, import torch and load: slow on a busy 2-core CI box
TOKEN = "e2e-secret-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return request(self.url + path)

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request(self.url + path, data, headers, timeout)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels`."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, value = line.rsplit(" ", 1)
            metric = series.split("{", 1)[0]
            if metric != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def stats(self, model: str) -> dict[str, Any]:
        _, body = self.get(f"/v2/models/{model}/stats")
        data: dict[str, Any] = json.loads(body)
        return data

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


Start = Callable[..., Server]  # the server_factory fixture: start(artifacts, sections, ...)


def request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data, headers or {}, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def start_server(
    tmp: Path,
    artifacts: list[str],
    sections: dict[str, dict[str, Any]],
    profile: Path | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    port = free_port()
    sections = {**sections, "server": {**sections.get("server", {}), "port": port}}
    config = write_config(tmp / f"serve-{port}.toml", sections)
    log = tmp / f"server-{port}.log"
    command = [sys.executable, str(SERVER_SCRIPT), "--config", str(config), *artifacts]
    if profile is not None:
        command += ["--profile", str(profile)]
    process = subprocess.Popen(
        command,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    server = Server(process, port, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if server.get("/v2/health/ready")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"server not ready in {READY_TIMEOUT_S} s:\n{log.read_text()}")


def assert_drained(server: Server) -> None:
    """SIGTERM, then: the server drained its models and exited on the signal (uvicorn re-raises
    it after a graceful shutdown, so the exit status is -SIGTERM, or 0)."""
    code = server.stop()
    log = server.log.read_text()
    assert code in (0, -signal.SIGTERM), log
    assert "drained" in log, log


def children(pid: int) -> dict[int, bytes]:
    """pid -> command line of each child of `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
    return found


def fronts(server: Server) -> list[int]:
    """The supervisor's front processes: the children of its forkserver, the one child that
    preloaded the server (front.py), so that its imports are shared by every front."""
    [forkserver] = [
        pid
        for pid, command in children(server.process.pid).items()
        if b"forkserver" in command and PRELOAD_MODULE.encode() in command
    ]
    return sorted(children(forkserver))


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def batches_held(server: Server, model: str, pid: int) -> int:
    """Batches the worker `pid` of `model` holds now (its stats' in_flight)."""
    return sum(w["in_flight"] for w in server.stats(model)["workers"] if w["pid"] == pid)


def wait_for_live_workers(server: Server, model: str, count: int, timeout_s: float = 120) -> None:
    """Until `model` has `count` live workers: a replacement started and loaded."""
    wait_for(
        lambda: sum(w["alive"] for w in server.stats(model)["workers"]) == count,
        timeout_s,
        f"{count} live workers",
    )


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds, or fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
