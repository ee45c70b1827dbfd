"""The configurations `recaccel bench` serves: a pure plan from artifacts and a hand-made
profile whose selections can be worked out by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from recaccel.bench.plan import (
    BASELINE,
    CONFIG_NAMES,
    MODEL_ONLY,
    RECACCEL,
    SYSTEM_ONLY,
    ArtifactRef,
    BenchPlan,
    plan_bench,
    restrict_profile,
)
from recaccel.errors import ConfigError
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.latency_model import LatencyPoint
from recaccel.runtime.profile import Profile, ProfileEntry

HEAVY_ID, SMALL_ID, TINY_ID = "a" * 16, "b" * 16, "c" * 16
HEAVY = ArtifactRef(Path("/art/dlrm-heavy"), HEAVY_ID, "dlrm", "movielens-100k", 0.79)
SMALL = ArtifactRef(Path("/art/opt/02-prune-1"), SMALL_ID, "deepfm", "movielens-100k", 0.80)
TINY = ArtifactRef(Path("/art/opt/03-tiny"), TINY_ID, "deepfm", "movielens-100k", 0.70)
PROFILES = Path("/out/profiles")


def entry(
    artifact: ArtifactRef, backend: str, per_row_ms: float, auc: float, precision: str = "fp32"
) -> ProfileEntry:
    """Latency 1 ms + per_row × rows, p99 = 1.2 × median, at batches 1, 100 and 1000."""
    points = tuple(
        LatencyPoint(b, 1 + per_row_ms * b, 1.2 * (1 + per_row_ms * b), 100) for b in (1, 100, 1000)
    )
    return ProfileEntry(
        artifact=f"artifacts/{artifact.name}",  # relative, as `recaccel profile` records it
        artifact_id=artifact.artifact_id,
        model=artifact.model,
        parameters=10,
        weights_bytes=40,
        config=ExecutorConfig(backend, "cpu", 1, precision),
        status="ok",
        validation_auc=auc,
        points=points,
    )


HEAVY_EAGER = entry(HEAVY, "torch-eager", 0.1, 0.790)  # the profile's baseline
HEAVY_INT8 = entry(HEAVY, "onnxruntime", 0.04, 0.790, "int8-dynamic")  # fastest heavy form
HEAVY_LOSSY = entry(HEAVY, "onnxruntime", 0.01, 0.700, "int8-static")  # over the AUC budget
SMALL_COMPILED = entry(SMALL, "torch-compile", 0.01, 0.800)  # fastest accurate overall
TINY_EAGER = entry(TINY, "torch-eager", 0.001, 0.700)  # fastest, far over the budget


def profile(*entries: ProfileEntry) -> Profile:
    return Profile(
        batches=(1, 100, 1000),
        serving_batch=100,
        entries=(HEAVY_EAGER, *entries),
        baseline=HEAVY_EAGER.key,
    )


FULL = profile(HEAVY_INT8, HEAVY_LOSSY, SMALL_COMPILED, TINY_EAGER)


def plan(
    candidates: list[ArtifactRef], measured: Profile = FULL, slo_ms: float = 50.0
) -> BenchPlan:
    return plan_bench(HEAVY, candidates, measured, slo_ms, 0.001, 2, PROFILES)


def test_four_configurations_in_order_with_what_each_serves() -> None:
    servers = plan([SMALL, TINY]).servers
    assert [s.name for s in servers] == list(CONFIG_NAMES)
    served = {s.name: (s.artifact.name, s.selection and s.selection.key) for s in servers}
    assert served == {
        BASELINE: ("dlrm-heavy", None),
        MODEL_ONLY: ("02-prune-1", None),
        SYSTEM_ONLY: ("dlrm-heavy", HEAVY_INT8.key),
        RECACCEL: ("02-prune-1", SMALL_COMPILED.key),
    }


@pytest.mark.parametrize(
    ("name", "argv", "env"),
    [
        (
            BASELINE,
            ("dlrm-heavy=/art/dlrm-heavy", "--backend", "torch-eager", "--precision", "fp32",
             "--threads", "1", "--processes", "1", "--execution", "in-process"),
            {"RECACCEL_BATCHING_MAX_ROWS": "1", "RECACCEL_SLO_P99_MS": "600000",
             "RECACCEL_SLO_MAX_QUEUE_DELAY_MS": "0", "RECACCEL_ADMISSION_OVERLOAD_TARGET_MS": "0"},
        ),
        (
            MODEL_ONLY,
            ("02-prune-1=/art/opt/02-prune-1", "--backend", "torch-eager", "--precision",
             "fp32", "--threads", "1", "--processes", "1", "--execution", "in-process"),
            {"RECACCEL_BATCHING_MAX_ROWS": "1", "RECACCEL_SLO_P99_MS": "600000",
             "RECACCEL_SLO_MAX_QUEUE_DELAY_MS": "0", "RECACCEL_ADMISSION_OVERLOAD_TARGET_MS": "0"},
        ),
        (
            SYSTEM_ONLY,
            ("--profile", "/out/profiles/system-only/profile.json", "--select", "--slo-ms", "50",
             "--accuracy-budget", "0.001"),
            {},
        ),
        (
            RECACCEL,
            ("--profile", "/out/profiles/recaccel/profile.json", "--select", "--slo-ms", "50",
             "--accuracy-budget", "0.001"),
            {},
        ),
    ],
)  # fmt: skip
def test_serve_arguments_and_environment(
    name: str, argv: tuple[str, ...], env: dict[str, str]
) -> None:
    server = plan([SMALL, TINY]).server(name)
    assert server.argv == argv
    assert dict(server.env) == env


def test_each_selected_configuration_chooses_from_its_own_profile_with_resolved_paths() -> None:
    profiles = plan([SMALL, TINY]).profiles
    system = profiles["system-only/profile.json"]
    assert {e.artifact_id for e in system.entries} == {HEAVY_ID}
    assert {e.artifact for e in system.entries} == {"/art/dlrm-heavy"}
    full = profiles["recaccel/profile.json"]
    assert {e.artifact for e in full.entries} == {
        "/art/dlrm-heavy", "/art/opt/02-prune-1", "/art/opt/03-tiny"
    }  # fmt: skip
    assert full.baseline == system.baseline == HEAVY_EAGER.key


def test_artifacts_not_named_are_left_out_of_the_selection() -> None:
    # The profile measured SMALL, but the bench was given only TINY (over the budget): the
    # heavy model on its best runtime is what recaccel selects.
    only_tiny = plan([TINY])
    assert only_tiny.server(RECACCEL).selection.key == HEAVY_INT8.key  # type: ignore[union-attr]
    assert {e.artifact_id for e in only_tiny.profiles["recaccel/profile.json"].entries} == {
        HEAVY_ID, TINY_ID
    }  # fmt: skip
    assert restrict_profile(FULL, [SMALL]).entries == (
        dataclasses.replace(SMALL_COMPILED, artifact="/art/opt/02-prune-1"),
    )


def test_the_command_shows_environment_and_port() -> None:
    server = plan([SMALL]).server(BASELINE)
    assert server.command(8101) == (
        "RECACCEL_ADMISSION_OVERLOAD_TARGET_MS=0 RECACCEL_BATCHING_MAX_ROWS=1 "
        "RECACCEL_SLO_MAX_QUEUE_DELAY_MS=0 RECACCEL_SLO_P99_MS=600000 recaccel serve "
        "dlrm-heavy=/art/dlrm-heavy --backend torch-eager --precision fp32 --threads 1 "
        "--processes 1 --execution in-process --port 8101"
    )
    assert "--select" in plan([SMALL]).server(RECACCEL).command()


@pytest.mark.parametrize(
    ("candidates", "measured", "slo_ms", "message"),
    [
        ([SMALL], profile(HEAVY_INT8), 50.0, "no measurements of /art/opt/02-prune-1"),
        (
            [SMALL],
            Profile((1, 100, 1000), 100, (SMALL_COMPILED, HEAVY_EAGER), SMALL_COMPILED.key),
            50.0,
            "the profile's baseline is deepfm@bbbbbbbb",
        ),
        ([SMALL], FULL, 1.0, "no configuration in the profile meets p99 <= 1 ms"),
        (
            [ArtifactRef(Path("/art/criteo"), SMALL_ID, "deepfm", "criteo-synthetic", None)],
            FULL,
            50.0,
            "not trained on 'movielens-100k'",
        ),
    ],
)
def test_bad_inputs_are_refused_with_what_to_do(
    candidates: list[ArtifactRef], measured: Profile, slo_ms: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        plan(candidates, measured, slo_ms)
    assert error.value.hint


@pytest.mark.parametrize("reuse", [True, False])
def test_the_reuse_ablation_serves_recaccels_choice_with_reuse_flipped(reuse: bool) -> None:
    from recaccel.bench.plan import WITH_REUSE, WITHOUT_REUSE, with_reuse_ablation
    from recaccel.serve.choice import Candidate, Layout

    chosen = Candidate(
        "key", "/art/opt/02-prune-1", ExecutorConfig("onnxruntime", reuse=reuse), Layout(2), 900.0
    )
    before = plan([SMALL, TINY])
    after = with_reuse_ablation(before, chosen, 50.0)
    assert after.servers[:4] == before.servers  # the four untouched
    (ablation,) = after.servers[4:]
    assert ablation.name == (WITHOUT_REUSE if reuse else WITH_REUSE)
    flipped = dataclasses.replace(chosen, config=ExecutorConfig("onnxruntime", reuse=not reuse))
    assert ablation.argv == (*flipped.serve_args(), "--slo-ms", "50")
    assert ("--reuse" in ablation.argv) is not reuse
    assert ablation.artifact == before.server(RECACCEL).artifact and ablation.env == {}
