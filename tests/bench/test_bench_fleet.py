"""The bench's servers are always stopped: at the end, on an error, on a server that will not
start, on one that ignores SIGTERM, and on SIGTERM to the bench. Fake servers stand in for
`recaccel serve` (tests/bench/fake_serve.py), so these run in a second or two."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from recaccel.bench.fleet import ServerFleet, choose_ports, server_environment
from recaccel.bench.plan import ArtifactRef, ServerPlan
from recaccel.errors import ConfigError

FAKE = (sys.executable, str(Path(__file__).with_name("fake_serve.py")))
ARTIFACT = ArtifactRef(Path("/art/m"), "a" * 16, "dlrm", "movielens-100k", None)


def plan(name: str, *argv: str, env: dict[str, str] | None = None) -> ServerPlan:
    return ServerPlan(name, "a fake", ARTIFACT, "none", argv, env or {})


def test_servers_run_while_the_fleet_does_and_are_stopped_after(tmp_path: Path) -> None:
    with ServerFleet([plan("a"), plan("b")], tmp_path, command=FAKE) as fleet:
        servers = list(fleet)
        assert [s.plan.name for s in servers] == ["a", "b"]
        assert len({s.port for s in servers}) == 2
        assert all(s.process.poll() is None for s in servers)
        assert fleet["a"].url == f"http://127.0.0.1:{fleet['a'].port}"
    assert all(s.process.returncode == 0 for s in servers)
    assert "ready" in (tmp_path / "a.log").read_text()


def test_a_server_that_exits_before_it_is_ready_is_reported_and_the_rest_stopped(
    tmp_path: Path,
) -> None:
    fleet = ServerFleet([plan("good"), plan("bad", "--exit-code", "3")], tmp_path, command=FAKE)
    with pytest.raises(ConfigError, match="the bad server exited with code 3") as error, fleet:
        pytest.fail("the fleet must not start")
    assert "cannot start, as asked" in error.value.hint
    assert fleet["good"].process.poll() is not None


def test_a_server_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    stubborn = plan("stubborn", "--on-sigterm", "ignore")
    with ServerFleet([stubborn], tmp_path, command=FAKE, stop_timeout_s=0.5) as fleet:
        server = fleet["stubborn"]
    assert server.process.returncode == -signal.SIGKILL


def test_an_error_inside_stops_the_servers(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ServerFleet([plan("a")], tmp_path, command=FAKE) as fleet:
        raise RuntimeError("a measurement failed")
    assert fleet["a"].process.poll() is not None


def test_sigterm_to_the_bench_stops_the_servers(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with (
        pytest.raises(KeyboardInterrupt),
        ServerFleet([plan("a")], tmp_path, command=FAKE) as fleet,
    ):
        os.kill(os.getpid(), signal.SIGTERM)
    assert fleet["a"].process.poll() is not None
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_port_in_use_is_refused_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        # (the neighbouring port may happen to be taken too)
        in_use = rf"port\(s\) {port}\b[\d, ]* on 127.0.0.1 are in use"
        with pytest.raises(ConfigError, match=in_use) as error:
            choose_ports(2, port)
    assert "--base-port" in error.value.hint
    assert len(set(choose_ports(4, None))) == 4


def test_serving_settings_in_the_benchs_environment_do_not_reach_the_servers() -> None:
    environ = {"RECACCEL_HOME": "/cache", "RECACCEL_BATCHING_MAX_ROWS": "7", "PATH": "/bin",
               "RECACCEL_SLO_P99_MS": "1"}  # fmt: skip
    env = server_environment(plan("a", env={"RECACCEL_SLO_P99_MS": "600000"}), environ)
    assert env == {"RECACCEL_HOME": "/cache", "PATH": "/bin", "RECACCEL_SLO_P99_MS": "600000"}
