"""Selection by serving, on hand-made profiles and a fake measurement: what is tried and in
which order, the time budget, the choice and its second measurement, served.json, and what a
server makes of the choice."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from recaccel.bench.search import SearchPolicy
from recaccel.bench.served import BRIEF_MIN_QUERIES, ServedOptions, brief_queries, select_served
from recaccel.errors import ConfigError
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.latency_model import LatencyPoint
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.runtime.select import Requirements
from recaccel.serve.choice import (
    Candidate,
    Layout,
    ServedSelection,
    Tried,
    apply_served,
    candidates,
    layouts,
    load_served,
    save_served,
    served_selection_for,
    served_table,
)
from recaccel.serve.config import load_serve_config

HEAVY, SMALL = "a" * 64, "b" * 64
floors: list[float] = []  # each search's lowest QPS, as the fake measurement was asked


def entry(
    artifact_id: str,
    backend: str,
    per_row_ms: float,
    threads: int = 1,
    precision: str = "fp32",
    auc: float = 0.80,
) -> ProfileEntry:
    """Latency = 1 + per_row × rows ms (p99 1.2× that) at batches 1, 100, 1000."""
    points = tuple(
        LatencyPoint(b, 1 + per_row_ms * b, 1.2 * (1 + per_row_ms * b), 100) for b in (1, 100, 1000)
    )
    return ProfileEntry(
        f"/art/{artifact_id[:4]}", artifact_id, "dlrm" if artifact_id == HEAVY else "deepfm",
        10, 40, ExecutorConfig(backend, "cpu", threads, precision), "ok", validation_auc=auc,
        points=points, load_s=0.5,
    )  # fmt: skip


BASELINE = entry(HEAVY, "torch-eager", per_row_ms=0.1)  # 12 ms p99 at 100 rows: heavy
PROFILE = Profile(
    batches=(1, 100, 1000),
    serving_batch=100,
    entries=(
        BASELINE,
        entry(HEAVY, "onnxruntime", per_row_ms=0.05),
        entry(SMALL, "onnxruntime", per_row_ms=0.001),  # 1.3 ms p99 at 100 rows: light
        entry(SMALL, "onnxruntime", per_row_ms=0.0008, threads=2),
        entry(SMALL, "openvino", per_row_ms=0.002),
        entry(SMALL, "torch-compile", per_row_ms=0.003),
        entry(SMALL, "torch-eager", per_row_ms=0.01, auc=0.70),  # over the accuracy budget
    ),
    baseline=BASELINE.key,
    created_at="2026-12-03T12:00:00+00:00",
)
NEEDS = Requirements(slo_p99_ms=50, candidates=100, relative_budget=0.001, cores=2)


@pytest.mark.parametrize(
    ("cores", "heavy", "expected"),
    [
        (1, False, [Layout(1)]),
        (1, True, [Layout(1)]),
        (2, False, [Layout(1), Layout(2)]),
        (4, True, [Layout(1, "in-process", 4), Layout(1), Layout(4), Layout(1, "workers", 4)]),
    ],
)
def test_the_layouts_tried_follow_the_cores_and_the_models_weight(
    cores: int, heavy: bool, expected: list[Layout]
) -> None:
    assert layouts(cores, heavy) == expected


def test_the_best_runtimes_are_tried_on_each_layout_one_thread_each() -> None:
    todo = candidates(PROFILE, NEEDS, max_runtimes=3)
    runtimes = [(c.artifact, c.config.backend, c.config.threads) for c in todo]
    # ORT's 2-thread row estimates more, but a runtime is tried once, on one thread; the
    # model over the accuracy budget is never tried; light models get two layouts each.
    assert runtimes == [
        ("/art/bbbb", "onnxruntime", 1), ("/art/bbbb", "onnxruntime", 1),
        ("/art/bbbb", "openvino", 1), ("/art/bbbb", "openvino", 1),
        ("/art/bbbb", "torch-compile", 1), ("/art/bbbb", "torch-compile", 1),
    ]  # fmt: skip
    assert [c.layout for c in todo[:2]] == [Layout(1), Layout(2)]
    heavy = [c for c in candidates(PROFILE, NEEDS, max_runtimes=10) if c.artifact == "/art/aaaa"]
    assert [c.layout for c in heavy if c.config.backend == "onnxruntime"] == layouts(2, True)


def test_a_runtime_that_runs_the_split_is_tried_with_reuse_once_more() -> None:
    """After its layouts, on the first of them; never on a backend without the split."""
    todo = candidates(PROFILE, NEEDS, max_runtimes=3, reuse=lambda e: e.model == "deepfm")
    tried = [(c.config.backend, c.config.reuse, c.layout) for c in todo]
    assert tried[:3] == [
        ("onnxruntime", False, Layout(1)),
        ("onnxruntime", False, Layout(2)),
        ("onnxruntime", True, Layout(1)),
    ]
    assert [c for c in todo if c.config.reuse and c.config.backend != "onnxruntime"] == []
    assert "--reuse" in todo[2].serve_args() and "--reuse" not in todo[0].serve_args()
    assert todo[2].label.endswith("/reuse, 1 front × 1 lane")
    assert not any(c.config.reuse for c in candidates(PROFILE, NEEDS, reuse=lambda e: False))


def test_a_model_is_heavy_by_the_largest_batch_the_server_may_run_not_the_profiled_one() -> None:
    # p99 19.2 ms at 1,000 rows, the largest profiled; 38 ms at 2,048, the default batch cap.
    middling = entry(SMALL, "onnxruntime", per_row_ms=0.015)
    profile = Profile(
        batches=(1, 100, 1000), serving_batch=100, entries=(middling,),
        baseline=middling.key, created_at="2026-12-03T12:00:00+00:00",
    )  # fmt: skip
    assert [c.layout for c in candidates(profile, NEEDS)] == layouts(2, True)
    assert [c.layout for c in candidates(profile, NEEDS, largest_batch=1000)] == layouts(2, False)


def test_nothing_eligible_is_a_clear_error() -> None:
    strict = Requirements(slo_p99_ms=0.5, candidates=100, relative_budget=0.001, cores=2)
    with pytest.raises(ConfigError, match="no configuration in the profile meets p99"):
        candidates(PROFILE, strict)


def test_a_candidate_is_served_with_the_arguments_of_its_layout() -> None:
    config = ExecutorConfig("onnxruntime", "cpu", 1, "fp32")
    inproc = Candidate("k", "/art/small", config, Layout(2, "in-process", 1), 1.0)
    assert inproc.serve_args() == (
        "small=/art/small", "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1",
        "--processes", "2", "--execution", "in-process", "--lanes", "1",
    )  # fmt: skip
    workers = Candidate("k", "/art/small", config, Layout(1, "workers", 3), 1.0)
    assert workers.serve_args()[-6:] == (
        "--execution", "workers", "--min-workers", "3", "--max-workers", "3",
    )  # fmt: skip
    assert workers.label == "small onnxruntime/cpu/fp32/t1, 1 front × 3 worker processes"


def _fake(qps: dict[tuple[str, int], list[float | None]]) -> object:
    """A measurement: each (backend, processes)'s next QPS from its list; CPU 1 ms."""
    left = {key: iter(values) for key, values in qps.items()}
    floors.clear()

    def measure(candidate: Candidate, out: Path, search: SearchPolicy) -> Tried:
        key = (candidate.config.backend, candidate.layout.processes)
        floors.append(search.min_qps)
        return Tried(candidate, next(left[key]), 30.0, 1.0, 5, 10.0)

    return measure


def test_the_most_qps_served_wins_and_is_measured_again() -> None:
    measure = _fake({("onnxruntime", 1): [800.0, 780.0], ("onnxruntime", 2): [600.0],
                     ("openvino", 1): [None], ("openvino", 2): [700.0],
                     ("torch-compile", 1): [500.0], ("torch-compile", 2): [400.0]})  # fmt: skip
    options = ServedOptions(slo_ms=50, cores=2, budget_s=1e9)
    got = select_served(PROFILE, None, options, Path("/unused"), measure=measure)  # type: ignore[arg-type]
    assert got.chosen is not None and got.chosen.candidate.config.backend == "onnxruntime"
    assert got.chosen.candidate.layout == Layout(1)
    assert [t.max_qps for t in got.tried] == [800.0, 700.0, 600.0, 500.0, 400.0, None]
    assert got.confirmed_qps == 780.0 and got.confirmed  # 97.5% of 800
    # Each search stops at half the best found before it; the second measurement does not.
    assert floors == [1.0, 400.0, 400.0, 400.0, 400.0, 400.0, 1.0]
    assert "**selected**" in served_table(got) and "within 10%" in served_table(got)


def test_a_second_measurement_far_below_the_first_is_reported() -> None:
    measure = _fake({("onnxruntime", 1): [800.0, 600.0], ("onnxruntime", 2): [100.0],
                     ("openvino", 1): [100.0], ("openvino", 2): [100.0],
                     ("torch-compile", 1): [100.0], ("torch-compile", 2): [100.0]})  # fmt: skip
    options = ServedOptions(slo_ms=50, cores=2, budget_s=1e9)
    got = select_served(PROFILE, None, options, Path("/unused"), measure=measure)  # type: ignore[arg-type]
    assert got.confirmed_share == pytest.approx(0.75) and not got.confirmed
    assert "NOT within 10%" in served_table(got)


def test_a_brief_run_at_a_low_rate_takes_fewer_queries_but_never_too_few() -> None:
    options = ServedOptions(min_query_count=600, max_run_s=15.0)
    assert brief_queries(400.0, options) == 600  # the full count fits in 15 s
    assert brief_queries(20.0, options) == 300  # 15 s of arrivals
    assert brief_queries(3.0, options) == BRIEF_MIN_QUERIES  # never a p99 of a handful
    few = ServedOptions(min_query_count=40)  # nor more than the caller asked for
    assert brief_queries(3.0, few) == brief_queries(400.0, few) == 40


def test_candidates_past_the_time_budget_are_skipped_and_listed() -> None:
    clock = itertools.count(0.0, 100.0)  # each look at the clock: 100 s later
    measure = _fake({(b, p): [500.0, 500.0] for b in ("onnxruntime", "openvino",
                     "torch-compile") for p in (1, 2)})  # fmt: skip
    options = ServedOptions(slo_ms=50, cores=2, budget_s=250)
    got = select_served(
        PROFILE,
        None,
        options,
        Path("/unused"),
        measure=measure,
        clock=lambda: next(clock),  # type: ignore[arg-type]
    )
    assert len(got.tried) + len(got.skipped) == 6
    assert 0 < len(got.tried) < 6
    assert "not tried: time budget" in served_table(got)


def test_the_selection_round_trips_through_served_json_and_is_served(tmp_path: Path) -> None:
    measure = _fake({(b, p): [300.0 * p, 300.0 * p] for b in ("onnxruntime", "openvino",
                     "torch-compile") for p in (1, 2)})  # fmt: skip
    options = ServedOptions(slo_ms=50, cores=2, budget_s=1e9)
    got = select_served(PROFILE, None, options, tmp_path, measure=measure)  # type: ignore[arg-type]
    save_served(got, tmp_path)
    assert load_served(tmp_path / "served.json") == got
    (tmp_path / "profile.json").write_text("{}")
    found = served_selection_for(tmp_path / "profile.json", PROFILE, 50)
    assert found == got
    spec, config = apply_served(load_serve_config(None, environ={}), got)
    assert spec == "bbbb=/art/bbbb"
    assert (config.plane.processes, config.plane.execution) == (2, "in-process")
    [executor] = config.workers.executors
    assert (executor.backend, executor.threads, executor.count) == ("onnxruntime", 1, 1)
    with pytest.raises(ConfigError, match="another profile or SLO"):
        served_selection_for(tmp_path / "profile.json", PROFILE, 20)


def test_a_worker_layout_is_served_with_that_many_workers() -> None:
    candidate = Candidate(
        "k", "/art/x", ExecutorConfig("onnxruntime"), Layout(1, "workers", 2), 1.0
    )
    chosen = ServedSelection(50, "", (Tried(candidate, 100.0, 20.0, 1.0, 3, 9.0),), (), 100.0,
                             1.0, 1.0)  # fmt: skip
    _, config = apply_served(load_serve_config(None, environ={}), chosen)
    assert (config.plane.processes, config.plane.execution) == (1, "workers")
    assert (config.workers.min, config.workers.max) == (2, 2)
    assert config.workers.executors[0].count is None  # the autoscaler's kind, fixed by min=max
    assert not config.workers.executors[0].reuse


def test_a_choice_with_reuse_is_served_with_reuse() -> None:
    split = ExecutorConfig("onnxruntime", reuse=True)
    candidate = Candidate("k", "/art/x", split, Layout(1), 1.0)
    chosen = ServedSelection(50, "", (Tried(candidate, 100.0, 20.0, 1.0, 3, 9.0),), (), 100.0,
                             1.0, 1.0)  # fmt: skip
    _, config = apply_served(load_serve_config(None, environ={}), chosen)
    assert config.workers.executors[0].executor_config() == split


def test_a_selection_that_found_nothing_cannot_be_served() -> None:
    candidate = Candidate("k", "/art/x", ExecutorConfig("onnxruntime"), Layout(1), 1.0)
    nothing = ServedSelection(50, "", (Tried(candidate, None, None, None, 3, 9.0),), (), None,
                              1.0, 1.0)  # fmt: skip
    with pytest.raises(ConfigError, match="found nothing within the SLO"):
        apply_served(load_serve_config(None, environ={}), nothing)
