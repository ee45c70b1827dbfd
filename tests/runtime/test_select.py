"""Automatic selection, judged on hand-made profiles whose answers can be worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from recaccel.errors import ConfigError
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.latency_model import LatencyPoint
from recaccel.runtime.profile import Profile, ProfileEntry, load_profile, save_profile
from recaccel.runtime.select import Requirements, judge_entry, select, serving_choice

HEAVY, SMALL = "a" * 64, "b" * 64


def entry(
    artifact_id: str,
    backend: str,
    per_row_ms: float,
    auc: float | None = 0.80,
    threads: int = 1,
    precision: str = "fp32",
    status: str = "ok",
    overhead_ms: float = 1.0,
) -> ProfileEntry:
    """Latency = overhead + per_row × rows, p99 = 1.2 × median, at batches 1, 100, 1000."""
    points = tuple(
        LatencyPoint(b, overhead_ms + per_row_ms * b, 1.2 * (overhead_ms + per_row_ms * b), 100)
        for b in (1, 100, 1000)
    )
    return ProfileEntry(
        artifact=f"/art/{artifact_id[:4]}",
        artifact_id=artifact_id,
        model="dlrm" if artifact_id == HEAVY else "deepfm",
        parameters=10,
        weights_bytes=40,
        config=ExecutorConfig(backend, "cpu", threads, precision),
        status=status,
        reason="" if status == "ok" else "uses quantized::embedding_bag_4bit_rowwise_offsets",
        validation_auc=auc if status == "ok" else None,
        points=points if status == "ok" else (),
        load_s=0.5 if status == "ok" else None,
    )


BASELINE = entry(HEAVY, "torch-eager", per_row_ms=0.1)  # 11 ms at 100 rows


def profile(*entries: ProfileEntry) -> Profile:
    return Profile(
        batches=(1, 100, 1000),
        serving_batch=100,
        entries=(BASELINE, *entries),
        baseline=BASELINE.key,
    )


def test_the_fastest_accurate_configuration_wins_and_the_speedup_is_against_eager_fp32() -> None:
    fast = entry(SMALL, "onnxruntime", per_row_ms=0.01)  # 2 ms at 100 rows
    slower = entry(SMALL, "torch-eager", per_row_ms=0.02)
    choice = select(profile(slower, fast), Requirements(slo_p99_ms=50, candidates=100))
    assert choice.selected is not None and choice.selected.key == fast.key
    assert choice.table[0].verdict == "selected"
    assert choice.speedup_median == pytest.approx(11.0 / 2.0)
    assert choice.speedup_p99 == pytest.approx(11.0 / 2.0)
    assert choice.compared_with == BASELINE.key


def test_batching_within_the_slo_is_worked_out_from_the_p99_model() -> None:
    fast = entry(SMALL, "onnxruntime", per_row_ms=0.01)
    judged = judge_entry(fast, 0.80, Requirements(slo_p99_ms=50, candidates=100, cores=2))
    # 2 × 1.2 × (1 + 0.01 r) <= 50 allows r <= 1983 rows, but the profile measured batches up
    # to 1000 rows only: 10 requests of 100 per batch.
    assert judged.requests_per_batch == 10
    assert judged.workers == 2
    assert judged.requests_per_second == pytest.approx(2 * 10 / ((1 + 0.01 * 1000) / 1e3))
    tight = judge_entry(fast, 0.80, Requirements(slo_p99_ms=12, candidates=100))
    # 2 × 1.2 × (1 + 0.01 r) <= 12  →  r <= 400 rows → 4 requests.
    assert tight.requests_per_batch == 4


def test_more_threads_count_fewer_workers() -> None:
    two_threads = entry(SMALL, "onnxruntime", per_row_ms=0.01, threads=2)
    judged = judge_entry(two_threads, 0.80, Requirements(cores=2))
    assert judged.workers == 1


def test_a_less_accurate_configuration_is_refused_however_fast() -> None:
    lossy = entry(SMALL, "onnxruntime", per_row_ms=0.001, precision="int8-static", auc=0.79)
    ok = entry(SMALL, "onnxruntime", per_row_ms=0.01)
    choice = select(profile(lossy, ok), Requirements(relative_budget=0.001))
    assert choice.selected is not None and choice.selected.key == ok.key
    refused = next(j for j in choice.table if j.key == lossy.key)
    assert not refused.eligible and "over the accuracy budget" in refused.verdict
    assert refused.auc_change == pytest.approx(0.79 / 0.80 - 1)


def test_a_configuration_that_cannot_meet_the_slo_alone_is_refused() -> None:
    choice = select(profile(), Requirements(slo_p99_ms=20, candidates=100))  # 2 × 13.2 > 20
    assert choice.selected is None
    assert "misses the SLO" in choice.table[0].verdict
    assert choice.speedup_median is None


def test_unrunnable_configurations_are_listed_with_their_reason() -> None:
    quantized = entry(SMALL, "onnxruntime", per_row_ms=0.0, status="unsupported")
    choice = select(profile(quantized), Requirements())
    row = next(j for j in choice.table if j.key == quantized.key)
    assert not row.eligible and "embedding_bag_4bit" in row.verdict
    assert choice.selected is not None and choice.selected.key == BASELINE.key


def test_the_baseline_must_have_been_measured() -> None:
    broken = entry(HEAVY, "torch-eager", per_row_ms=0.1, status="failed")
    with pytest.raises(ConfigError, match="baseline"):
        select(Profile((1,), 1, (broken,), broken.key), Requirements())


@pytest.mark.parametrize(
    "kwargs", [{"slo_p99_ms": 0}, {"candidates": 0}, {"cores": 0}, {"relative_budget": 1.5}]
)
def test_bad_requirements_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        select(profile(), Requirements(**kwargs))  # type: ignore[arg-type]


def test_a_profile_survives_a_round_trip_through_json(tmp_path: Path) -> None:
    original = profile(entry(SMALL, "onnxruntime", per_row_ms=0.01, status="unsupported"))
    path = save_profile(original, tmp_path)
    assert load_profile(path) == original
    assert load_profile(tmp_path) == original


def test_a_file_that_is_not_a_profile_gets_a_message(tmp_path: Path) -> None:
    (tmp_path / "profile.json").write_text('{"format": "something else"}')
    with pytest.raises(ConfigError, match="not a recaccel profile"):
        load_profile(tmp_path)
    with pytest.raises(ConfigError, match="no profile"):
        load_profile(tmp_path / "missing.json")


def test_a_lower_precision_must_beat_fp32_clearly_to_be_selected() -> None:
    fp32 = entry(SMALL, "torch-compile", per_row_ms=0.010)
    bf16_near = entry(SMALL, "torch-compile", per_row_ms=0.009, precision="bf16")  # ~1.1×
    choice = select(profile(fp32, bf16_near), Requirements(slo_p99_ms=50, cores=2))
    assert choice.selected is not None and choice.selected.key == fp32.key
    passed_over = choice.table[1]
    assert passed_over.key == bf16_near.key and passed_over.eligible
    assert passed_over.requests_per_second > choice.selected.requests_per_second
    assert "fp32 kept" in passed_over.verdict

    bf16_clear = entry(SMALL, "torch-compile", per_row_ms=0.005, precision="bf16")  # ~1.8×
    choice = select(profile(fp32, bf16_clear), Requirements(slo_p99_ms=50, cores=2))
    assert choice.selected is not None and choice.selected.key == bf16_clear.key


def test_a_lower_precision_is_selected_when_no_fp32_configuration_is_eligible() -> None:
    bf16 = entry(SMALL, "torch-compile", per_row_ms=0.009, precision="bf16")
    choice = select(profile(bf16), Requirements(slo_p99_ms=20, candidates=100))  # baseline misses
    assert choice.selected is not None and choice.selected.key == bf16.key


def test_the_serving_choice_is_the_selected_row() -> None:
    fast = entry(SMALL, "onnxruntime", per_row_ms=0.01)
    slower = entry(SMALL, "torch-eager", per_row_ms=0.02)
    needs = Requirements(slo_p99_ms=50, candidates=100)
    row = serving_choice(profile(slower, fast), needs)
    assert row.key == fast.key
    assert row == select(profile(slower, fast), needs).selected


def test_the_serving_choice_of_one_artifact_is_its_best_by_the_same_rule() -> None:
    small = entry(SMALL, "onnxruntime", per_row_ms=0.001)  # the best of all
    heavy_fp32 = entry(HEAVY, "torch-compile", per_row_ms=0.010)
    heavy_bf16 = entry(HEAVY, "torch-compile", per_row_ms=0.009, precision="bf16")  # ~1.1×
    needs = Requirements(slo_p99_ms=50, cores=2)
    assert serving_choice(profile(small, heavy_fp32, heavy_bf16), needs).key == small.key
    row = serving_choice(profile(small, heavy_fp32, heavy_bf16), needs, HEAVY)
    # bf16 ranks first among the heavy artifact's rows but is within the FP32 margin: what
    # `select` keeps on a profile of the heavy artifact alone.
    assert row.key == heavy_fp32.key and row.verdict == "selected"
    assert row == select(profile(heavy_fp32, heavy_bf16), needs).selected


def test_the_refusal_names_the_slo_the_candidates_and_why_each_configuration_is_out() -> None:
    lossy = entry(SMALL, "onnxruntime", per_row_ms=0.001, precision="int8-static", auc=0.79)
    slow = entry(SMALL, "torch-eager", per_row_ms=0.2)
    with pytest.raises(ConfigError) as error:
        serving_choice(profile(lossy, slow), Requirements(slo_p99_ms=20, candidates=100))
    message = error.value.message
    assert "no configuration in the profile meets p99 <= 20 ms for 100 candidates" in message
    assert "within the accuracy budget (0.10% of the baseline's AUC)" in message
    for row, why in (
        (BASELINE, "misses the SLO: 2 × p99 of one 100-row request = 26.40 ms > 20 ms"),
        (slow, "misses the SLO"),
        (lossy, "over the accuracy budget"),
    ):
        assert f"\n  {row.key}: {why}" in message
    assert "--slo-ms" in error.value.hint


def test_an_artifact_with_nothing_eligible_is_refused_though_another_one_qualifies() -> None:
    fast = entry(SMALL, "onnxruntime", per_row_ms=0.01)
    with pytest.raises(ConfigError, match=f"no configuration of artifact {HEAVY[:8]} meets") as e:
        serving_choice(profile(fast), Requirements(slo_p99_ms=20), HEAVY)
    assert f"{BASELINE.key}: misses the SLO" in e.value.message
    assert fast.key not in e.value.message
    with pytest.raises(ConfigError, match="the profile measured none"):
        serving_choice(profile(fast), Requirements(slo_p99_ms=20), "c" * 64)


def test_a_backend_not_installed_here_is_judged_so_and_never_selected() -> None:
    """A profile measured where OpenVINO (an extra) was installed, read where it is not."""
    openvino = entry(SMALL, "openvino", per_row_ms=0.005)  # the fastest
    ort = entry(SMALL, "onnxruntime", per_row_ms=0.01)
    needs = Requirements(slo_p99_ms=50, candidates=100)
    where_measured = select(profile(openvino, ort), needs, installed=("openvino", "onnxruntime"))
    assert where_measured.selected is not None and where_measured.selected.key == openvino.key
    choice = select(profile(openvino, ort), needs, installed=("torch-eager", "onnxruntime"))
    assert choice.selected is not None and choice.selected.key == ort.key
    [judged] = [j for j in choice.table if j.backend == "openvino"]
    assert not judged.eligible
    assert judged.verdict == "openvino is not installed here (pip install 'recaccel[openvino]')"
