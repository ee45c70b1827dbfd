"""`recaccel bench` refuses bad input with a message and a hint, before it loads data or starts
a server."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from recaccel import cli
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.latency_model import LatencyPoint
from recaccel.runtime.profile import Profile, ProfileEntry, save_profile


def _stranger_profile(path: Path) -> Path:
    """A profile of some other artifact."""
    entry = ProfileEntry(
        artifact="artifacts/other", artifact_id="f" * 16, model="dlrm", parameters=1,
        weights_bytes=4, config=ExecutorConfig("torch-eager"), status="ok", validation_auc=0.7,
        points=(LatencyPoint(1, 1.0, 1.2, 10), LatencyPoint(100, 2.0, 2.4, 10)),
    )  # fmt: skip
    return save_profile(Profile((1, 100), 100, (entry,), entry.key), path)


@pytest.fixture
def cases(tmp_path: Path, bench_artifact: Path) -> dict[str, tuple[list[str], str]]:
    missing = str(tmp_path / "missing")
    heavy = str(bench_artifact)
    return {
        "no baseline": (["--baseline", missing], f"no artifact at {missing}"),
        "no candidates": (["--baseline", heavy], "no candidate artifacts given, and no optimize"),
        "a missing candidate": ([missing, "--baseline", heavy], f"no artifact at {missing}"),
        "a bad budget": (["--accuracy-budget", "1.5"], "accuracy budget 1.5 is not a fraction"),
        "a bad SLO": (["--slo-ms", "0"], "SLO 0.0 ms must be positive"),
        "no profile": (
            [heavy, "--baseline", heavy, "--profile", missing],
            f"no profile at {missing}",
        ),
        "a profile of other artifacts": (
            [heavy, "--baseline", heavy, "--profile", str(_stranger_profile(tmp_path / "p.json"))],
            f"the profile has no measurements of {bench_artifact.resolve()}",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["no baseline", "no candidates", "a missing candidate", "a bad budget", "a bad SLO",
     "no profile", "a profile of other artifacts"],
)  # fmt: skip
def test_bad_input_gets_a_message_and_a_hint(
    case: str, cases: dict[str, tuple[list[str], str]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv, message = cases[case]
    assert cli.main(["bench", *argv]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert message in err
    assert "Hint:" in err and "Traceback" not in err


def test_a_port_in_use_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        code = cli.main(["bench", "--base-port", str(port), "--baseline", str(tmp_path)])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    # (a neighbouring port may happen to be taken too)
    assert re.search(rf"port\(s\) [\d, ]*\b{port}\b[\d, ]* on 127.0.0.1 are in use", err), err


def test_bench_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0
    assert "--quick" in capsys.readouterr().out
