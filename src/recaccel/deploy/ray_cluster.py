"""A one-node Ray cluster on loopback, started for a test or a benchmark and always stopped.

    with local_ray_cluster(num_cpus=2) as cluster:
        deploy_ray(artifact, config, RayOptions(address=cluster.address))
        ...

It is `ray start --head --block` in a session of its own. Every port its daemons open is
chosen free (GCS, client server, dashboard and its agents, metrics, object and node managers,
HAProxy's metrics and stats where Serve's HAProxy ingress is on), and its files are in a
temporary directory of its own (HAProxy's in /tmp/haproxy-serve/<node id>, where Serve puts
them), so two clusters on one machine never meet. Worker processes take ports from Ray's
default range (10002-19999), below the ephemeral ports; replicas serving HTTP themselves
(HAProxy ingress) take the next free port of 30000-31000.

Stopping it sends SIGTERM to every process in that session — Ray's daemons, Serve's controller,
proxy and replicas, the replicas' worker processes — waits, then SIGKILLs whatever is left, and
removes the directory. `ray stop` is not used: it stops every Ray on the machine, a
neighbour's too. Linux only (the session's processes are found in /proc).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from recaccel.errors import RecaccelError

# Ray 2.55+ can put HAProxy in front of replicas that take HTTP themselves, in place of Serve's
# Python proxy. Measured here (scripts/compare_ray.py, pruned DeepFM, 2 cores, p99 <= 50 ms):
# behind the Python proxy a deployment held the SLO up to 16-28 QPS, behind HAProxy 200-500
# (recaccel serve alone, same runs: 325-600). A replica it stops is held open
# RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S (30 s) so HAProxy can drop it first.
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0
OBJECT_STORE_BYTES = 128 << 20  # Serve's messages are small; Ray's default takes 30% of RAM
_STARTED = "Ray runtime started"
_PORT_FLAGS = (
    "--port",
    "--ray-client-server-port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
    "--runtime-env-agent-port",
)


class RayClusterError(RecaccelError):
    """The local Ray cluster did not start."""


@dataclass(frozen=True)
class LocalRayCluster:
    address: str  # host:port of the GCS, for ray.init(address=...)
    process: subprocess.Popen[bytes]
    temp_dir: Path
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` right now (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
    return ports


def session_pids(session: int) -> list[int]:
    """Live processes of session `session` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[3]) == session and fields[0] != "Z":  # state, ppid, pgrp, session
            pids.append(int(entry.name))  # zombies are dead already: their parent reaps them
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_session(session: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every process of `session`, then SIGKILL those still there after `grace_s`."""
    _signal_all(session_pids(session), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while session_pids(session) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_all(session_pids(session), signal.SIGKILL)


def _own_haproxy_ports() -> dict[str, str]:
    """Serve's HAProxy ingress keeps its files per node (its paths carry the node id), but serves
    its metrics and stats on fixed ports (9101, 8404) unless told otherwise; these give this
    cluster ports of its own."""
    metrics, stats = free_ports(2)
    return {
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
    }


def start_ray_head(
    num_cpus: int, env: Mapping[str, str] | None = None, timeout_s: float = START_TIMEOUT_S
) -> LocalRayCluster:
    """Start the head and return once it runs; see `local_ray_cluster`."""
    temp_dir = Path(tempfile.mkdtemp(prefix="recaccel-ray-"))  # short: Ray's socket paths
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    ray = Path(sys.executable).with_name("ray")
    command = [
        str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--num-cpus", str(num_cpus), "--include-dashboard", "false",
        "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats",
        "--temp-dir", str(temp_dir),
        *(str(x) for flag, port in ports.items() for x in (flag, port)),
    ]  # fmt: skip
    log = temp_dir / "ray-start.log"
    environ = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **_own_haproxy_ports(), **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=environ, start_new_session=True
        )
    cluster = LocalRayCluster(f"127.0.0.1:{ports['--port']}", process, temp_dir, log)
    deadline = time.monotonic() + timeout_s
    while _STARTED not in cluster.log_tail(1 << 16):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = cluster.log_tail()
            stop_ray_head(cluster)
            raise RayClusterError(
                f"`ray start --head` did not start within {timeout_s:.0f} s:\n{tail}",
                "is `ray[serve]` installed in this environment?",
            )
        time.sleep(0.2)
    return cluster


def stop_ray_head(cluster: LocalRayCluster, grace_s: float = STOP_GRACE_S) -> None:
    """Stop every process of the cluster's session and remove its files."""
    stop_session(cluster.process.pid, grace_s)
    with contextlib.suppress(subprocess.TimeoutExpired):
        cluster.process.wait(grace_s)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def local_ray_cluster(
    num_cpus: int, env: Mapping[str, str] | None = None
) -> Iterator[LocalRayCluster]:
    """A Ray head on 127.0.0.1 with `num_cpus` CPUs, stopped on exit, error or not.

    `env` adds environment variables for every Ray process (Serve reads its tuning from them).
    """
    cluster = start_ray_head(num_cpus, env)
    try:
        yield cluster
    finally:
        stop_ray_head(cluster)
