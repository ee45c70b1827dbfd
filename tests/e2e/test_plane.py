"""The serving plane across front processes, on loopback: every front serves alone, /metrics sums
them, a dead front is replaced while readiness says so, a hot swap reaches every front with the
new model's own scores, SIGTERM answers every admitted request, a front that cannot start stops
the server, and a killed supervisor takes its fronts with it.

Which front accepts a connection is the kernel's choice. To ask one front in particular, the
tests pause the others (SIGSTOP): a paused process cannot accept, so every new connection goes
to the one left running."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from load import CANDIDATES, Load, Report, Tally, matches, reference_scores
from server_harness import (
    TOKEN,
    Server,
    Start,
    assert_drained,
    fronts,
    request,
    running,
    wait_for,
    write_config,
)

from recaccel.artifact import WEIGHTS_FILE
from recaccel.data.dataset import Dataset

MODEL = "ranker"
TWO_FRONTS = {"plane": {"processes": 2}, "admission": {"overload_target_ms": 0}}


@contextlib.contextmanager
def only(front: int, every: list[int]) -> Iterator[None]:
    """Every front but `front` paused: each new connection goes to `front`."""
    others = [pid for pid in every if pid != front]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def _rank(server: Server, user: int = 3) -> tuple[int, dict[str, object]]:
    status, body = server.post("/v1/rank", {"user_id": user, "candidates": CANDIDATES, "k": 30})
    return status, json.loads(body)


def test_every_front_serves_alone_and_metrics_sum_them_all(
    server_factory: Start, served_artifact: Path
) -> None:
    server = server_factory([f"{MODEL}={served_artifact}"], TWO_FRONTS)
    every = fronts(server)
    assert len(every) == 2
    for front in every:
        with only(front, every):
            assert all(_rank(server, user)[0] == 200 for user in range(1, 11))
            lanes = json.loads(server.get(f"/v2/models/{MODEL}/stats")[1])["workers"]
            assert {lane["pid"] for lane in lanes} == {front}  # it ran them in itself
    # Each front counted its own ten; any front's /metrics adds up all twenty.
    answered = server.metric("recaccel_requests_total", endpoint="rank", status="200")
    assert answered == 20
    assert server.metric("recaccel_workers", model=MODEL) == 2  # one lane in each front
    assert_drained(server)


def _mapped_files(pid: int) -> set[str]:
    return {
        line.split(maxsplit=5)[5]
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if len(line.split(maxsplit=5)) == 6
    }


def test_every_front_maps_the_one_copy_of_the_weights_and_a_swap_unmaps_the_old(
    server_factory: Start, served_artifact: Path, second_artifact: Path
) -> None:
    """The fronts share the artifact's weights: each maps weights.safetensors (the model's
    parameters are views of it, artifact.py) rather than holding a copy of its own, and they
    are forked from one process that imported the server (`fronts` finds them under it). A hot
    swap maps the new version's file beside the old one's, and the old one's goes once it has
    drained."""
    config = {
        **TWO_FRONTS,
        "server": {"management": True},
        "workers": {"executors": [{"backend": "torch-eager"}]},
    }
    server = server_factory([f"{MODEL}={served_artifact}"], config, env={"RECACCEL_TOKEN": TOKEN})
    assert _rank(server)[0] == 200
    every = fronts(server)
    assert len(every) == 2
    old, new = (str((a / WEIGHTS_FILE).resolve()) for a in (served_artifact, second_artifact))
    assert all(old in _mapped_files(front) for front in every)
    status, body = server.post(
        f"/v2/repository/models/{MODEL}/load",
        {"parameters": {"artifact": str(second_artifact)}},
        {"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 200, body
    assert all(new in _mapped_files(front) for front in every)
    wait_for(
        lambda: not any(old in _mapped_files(front) for front in every),
        30,
        "the old version's weights to be unmapped after its drain",
    )


def test_a_killed_front_is_replaced_and_readiness_fails_until_it_is(
    server_factory: Start, served_artifact: Path, report_requests: Report
) -> None:
    """Under load, one front is killed (-9). The requests it held die with it: each of its
    clients' connections is reset, at most one request a client (a client or balancer retries
    those; no server can answer from a dead process). The other front keeps answering, and
    readiness fails until the replacement serves."""
    server = server_factory([f"{MODEL}={served_artifact}"], TWO_FRONTS)
    victim, survivor = fronts(server)
    threads = 4
    with Load(server, threads=threads) as load:
        wait_for(lambda: load.count() > 40, 30, "load to start")
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: server.get("/v2/health/ready")[0] == 503, 10, "readiness to fail")
        wait_for(lambda: server.get("/v2/health/ready")[0] == 200, 180, "the replacement front")
        ready = time.monotonic()
        wait_for(lambda: sum(o.sent_s > ready for o in load.outcomes) > 40, 30, "answers after")
    outcomes = load.outcomes
    report_requests("front killed under load", Tally.of(outcomes))
    lost = [o for o in outcomes if o.status is None]
    assert len(lost) <= threads and all(o.sent_s < killed for o in lost), lost
    assert {o.status for o in outcomes if o.status is not None} == {200}
    assert sum(killed < o.sent_s < ready and o.status == 200 for o in outcomes) > 0  # survivor
    replaced = fronts(server)
    assert survivor in replaced and victim not in replaced and len(replaced) == 2
    newcomer = next(pid for pid in replaced if pid != survivor)
    with only(newcomer, replaced):
        assert _rank(server)[0] == 200
    assert "replacing it" in server.log.read_text()
    assert_drained(server)


def test_a_hot_swap_reaches_every_front_with_the_new_models_scores(
    server_factory: Start, served_artifact: Path, second_artifact: Path, tiny_dataset: Dataset
) -> None:
    server = server_factory(
        [f"{MODEL}={served_artifact}"],
        {**TWO_FRONTS, "server": {"management": True}},
        env={"RECACCEL_TOKEN": TOKEN},
    )
    before, after = (reference_scores(a, tiny_dataset) for a in (served_artifact, second_artifact))
    assert max(abs(before[k] - after[k]) for k in before) > 1e-3  # the models are told apart
    with Load(server, threads=3) as load:
        status, body = server.post(
            f"/v2/repository/models/{MODEL}/load",
            {"parameters": {"artifact": str(second_artifact)}},
            {"Authorization": f"Bearer {TOKEN}"},
        )
    assert status == 200, body
    assert json.loads(body)["version"] == "2"
    statuses = {o.status for o in load.outcomes}
    assert load.outcomes and statuses == {200}  # nothing failed during the swap
    every = fronts(server)
    for front in every:
        with only(front, every):
            status, answer = _rank(server)
            assert status == 200 and answer["version"] == "2"
            assert matches(answer, after)
    assert_drained(server)


def test_sigterm_answers_every_admitted_request_on_every_front(
    server_factory: Start, served_artifact: Path
) -> None:
    """Requests wait 300 ms in their queue for a batch to fill; SIGTERM comes 100 ms after they
    were sent. Each must be answered 200: a drain that failed queued work with 503 fails."""
    server = server_factory(
        [f"{MODEL}={served_artifact}"],
        {
            **TWO_FRONTS,
            "slo": {"p99_ms": 10_000, "max_queue_delay_ms": 300},
            "server": {"drain_grace_s": 2.0},
        },
    )
    start = threading.Barrier(12)

    def rank(user: int) -> int:
        start.wait()
        return _rank(server, 1 + user)[0]

    with ThreadPoolExecutor(12) as pool:
        answers = [pool.submit(rank, user) for user in range(12)]
        time.sleep(0.1)
        server.process.send_signal(signal.SIGTERM)
        statuses = [answer.result(60) for answer in answers]
    assert statuses == [200] * 12
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    assert server.log.read_text().count("drained") == 2  # each front drained its own


def test_a_front_that_cannot_start_stops_the_server_with_its_error(
    served_artifact: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(served_artifact, broken)
    weights = broken / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated: its checksum fails
    # torch-eager: a backend with a cached form would have it made by the supervisor first
    # where it is missing (`prepare_form`), and the supervisor, not a front, would meet the
    # bad weights.
    eager = {"executors": [{"backend": "torch-eager"}]}
    config = write_config(tmp_path / "serve.toml", {"plane": {"processes": 2}, "workers": eager})
    script = Path(__file__).with_name("tiny_server.py")
    result = subprocess.run(
        [sys.executable, str(script), "--config", str(config), str(broken)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "exited with code 3 before it was ready" in result.stderr
    assert "cannot start" in result.stderr and "checksum" in result.stderr  # its own reason
    assert "Traceback" not in result.stderr


def test_fronts_drain_and_exit_when_the_supervisor_is_killed(
    server_factory: Start, served_artifact: Path
) -> None:
    server = server_factory([f"{MODEL}={served_artifact}"], TWO_FRONTS)
    every = fronts(server)
    server.process.kill()  # SIGKILL: the supervisor cannot relay anything
    server.process.wait(10)

    wait_for(lambda: not any(running(pid) for pid in every), 60, "the fronts to exit")
    with pytest.raises(OSError):
        request(server.url + "/v2/health/live", timeout=2)
