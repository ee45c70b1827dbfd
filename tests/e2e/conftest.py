"""Fixtures for the e2e tests: a served artifact and a factory of real servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from load import Report, Tally
from server_harness import Server, start_server


@pytest.fixture(scope="session")
def served_artifact(trained: Callable[[str, str, int], Path]) -> Path:
    """A DLRM (small preset) trained briefly on the tiny dataset."""
    return trained("dlrm", "small", 2)


@pytest.fixture(scope="session")
def second_artifact(trained: Callable[[str, str, int], Path]) -> Path:
    """Another model of the same schema (a DeepFM), whose scores differ from the DLRM's."""
    return trained("deepfm", "small", 2)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """start(artifacts, sections, ...) -> Server; every server started is stopped after."""
    started: list[Server] = []

    def start(*args: Any, **kwargs: Any) -> Server:
        server = start_server(tmp_path, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


REQUESTS_PROPERTY = "requests"


@pytest.fixture
def report_requests(request: pytest.FixtureRequest) -> Report:
    """report(event, tally): what a lifecycle test's clients saw, printed after the run
    (the reliability table's sent / answered / refused / lost columns come from there)."""

    def report(event: str, tally: Tally) -> None:
        request.node.user_properties.append((REQUESTS_PROPERTY, (event, tally.as_row())))

    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = [
        (report.nodeid, report.outcome, *value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == REQUESTS_PROPERTY
    ]
    if not rows:
        return
    terminalreporter.section("requests per lifecycle event")
    for nodeid, outcome, event, row in sorted(rows):
        refused = ", ".join(f"{n} {why}" for why, n in sorted(row["refused"].items())) or "0"
        other = f"; other {row['other']}" if row["other"] else ""
        terminalreporter.write_line(
            f"{nodeid.split('::', 1)[1]} [{outcome}] {event}: sent {row['sent']}, answered "
            f"{row['answered']}, refused {refused}{other}, lost {row['lost']}"
        )
