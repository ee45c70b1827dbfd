"""`recaccel serve --profile P --select`: the profile's choice becomes the workers' config."""

from __future__ import annotations

import pytest

from recaccel import cli
from recaccel.errors import ConfigError
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.latency_model import LatencyPoint
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.serve.config import ExecutorSection, ServeConfig, SloSection
from recaccel.serve.server import apply_selection


def _entry(artifact: str, backend: str, ms_per_row: float, threads: int = 1) -> ProfileEntry:
    points = tuple(
        LatencyPoint(b, 0.2 + ms_per_row * b, 0.3 + ms_per_row * b, 50) for b in (1, 100, 1000)
    )
    return ProfileEntry(
        f"/artifacts/{artifact}", artifact * 8, artifact, 1, 1,
        ExecutorConfig(backend, threads=threads), "ok",
        validation_auc=0.8, points=points, load_s=1.0,
    )  # fmt: skip


HEAVY = _entry("heavy", "torch-eager", 0.1)
PROFILE = Profile(
    (1, 100, 1000),
    100,
    (HEAVY, _entry("small", "onnxruntime", 0.001), _entry("small", "torch-eager", 0.01)),
    HEAVY.key,
)


def test_the_selected_artifact_and_executor_are_served() -> None:
    spec, config, row = apply_selection(ServeConfig(), PROFILE, 0.001, cores=2)
    assert spec == "small=/artifacts/small"
    assert config.workers.executors == (ExecutorSection("onnxruntime", "cpu", "fp32", 1),)
    assert (config.workers.min, config.workers.max) == (1, 2)
    assert row.backend == "onnxruntime"


def test_nothing_within_the_slo_is_a_clear_error() -> None:
    tight = ServeConfig(slo=SloSection(p99_ms=0.1))
    with pytest.raises(ConfigError, match="no configuration in the profile meets"):
        apply_selection(tight, PROFILE, 0.001, cores=2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--select"], "give --profile and no artifacts"),
        (["serve"], "no artifacts to serve"),
    ],
)
def test_serve_arguments_are_checked(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
