"""`recaccel bench`'s whole run against real servers on loopback: four `recaccel serve`
processes on the tiny fixture dataset (tiny_serve_cli.py), short LoadGen runs, the served
accuracy and the report. A correctness test at easy loads under a generous SLO: how fast
anything is belongs to the benchmark, never to an assertion here."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import recaccel.bench.run as run_module
from recaccel.bench.report import write_report
from recaccel.bench.run import BenchOptions, bench_profile_options, measure_profile, run_bench
from recaccel.data.dataset import Dataset
from recaccel.runtime.profile import Profile, load_profile
from recaccel.runtime.profiler import ProfileOptions, run_profile
from recaccel.serve.choice import load_served

TINY_SERVE = (sys.executable, str(Path(__file__).with_name("tiny_serve_cli.py")))
# PyTorch eager only: it starts fastest (no export, no compile).
TINY_PROFILE = ProfileOptions(
    backends=("torch-eager",), threads=(1,), batches=(1, 8), serving_batch=20,
    repeats=5, min_repeats=2, warmup=1, seconds_per_batch=0.5,
)  # fmt: skip


@pytest.fixture(scope="module")
def candidate(trained: Callable[[str, str, int], Path]) -> Path:
    """A smaller model than the baseline's, trained briefly on the tiny dataset."""
    return trained("deepfm", "small", 1)


def test_bench_runs_its_servers_and_reports(
    bench_artifact: Path,
    candidate: Path,
    tiny_dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profile = run_profile([bench_artifact, candidate], tiny_dataset, TINY_PROFILE, progress=False)
    pickled = tmp_path / "dataset.pkl"
    pickled.write_bytes(pickle.dumps(tiny_dataset))
    monkeypatch.setenv("BENCH_TINY_DATASET", str(pickled))
    monkeypatch.setenv("RECACCEL_BATCHING_MAX_ROWS", "3")  # must not reach the servers
    bench = BenchOptions(
        slo_ms=5000,  # a bound no request nears: nothing is refused
        duration_s=0.5,
        min_query_count=40,
        offline_queries=40,
        max_runs=1,
        relative_budget=0.99,  # the tiny models' AUCs are noise; any may be selected
        n_samples=100,
        median_candidates=20,  # the tiny catalogue has 60 items
        p99_candidates=50,
        warmup_requests=2,
        served_budget_s=0.001,  # one candidate each (and its second measurement), no more
    )
    out = tmp_path / "bench"
    lines: list[str] = []
    result = run_bench(
        bench_artifact, [candidate], tiny_dataset, out, bench, profile,
        server_command=TINY_SERVE, say=lines.append,
    )  # fmt: skip
    written = write_report(result, out)

    names = [c.name for c in result.configs]
    assert names[:4] == ["baseline", "model-only", "system-only", "recaccel"]
    # recaccel's choice (torch-eager fp32: it runs the split twin) with reuse flipped.
    assert names[4:] in (["recaccel-with-reuse"], ["recaccel-without-reuse"])
    for c in result.configs:
        runs = [c.offline, *c.search, c.at_reference]
        assert len(c.search) == 1 and c.search_stopped == "run cap"
        for run in runs:
            assert run is not None and run.consistent
            assert run.ok == run.samples and run.rejected == run.failed == 0, c.name
        # The served AUC is the artifact's recorded one: the same rows, the same computation.
        assert c.served_auc == pytest.approx(c.artifact_test_auc, abs=1e-6), c.name
        assert c.reference_cdf_ms and c.at_reference is not None
        assert c.at_reference.target_qps == result.reference_qps
        assert "drained" in (out / "servers" / f"{c.name}.log").read_text(), c.name
    baseline, model_only, system_only, recaccel, ablation = result.configs
    chosen = load_served(out / "profiles" / "recaccel" / "served.json").chosen
    assert chosen is not None
    assert ("--reuse" in ablation.command) is not chosen.candidate.config.reuse
    assert ablation.name == ("recaccel-without-reuse" if chosen.candidate.config.reuse
                             else "recaccel-with-reuse")  # fmt: skip
    assert ablation.artifact == recaccel.artifact
    assert ablation.served_auc == pytest.approx(recaccel.served_auc, abs=1e-5)  # reuse is exact
    # The plain FIFO deployment: no batching, no in-flight limit, as its command shows.
    assert baseline.command.startswith(
        "RECACCEL_ADMISSION_OVERLOAD_TARGET_MS=0 RECACCEL_BATCHING_MAX_ROWS=1 "
    )
    assert model_only.artifact == recaccel.artifact
    assert system_only.artifact == baseline.artifact == str(bench_artifact.resolve())
    assert recaccel.auc_change is not None and model_only.auc_change is not None
    assert recaccel.auc_change.relative == pytest.approx(model_only.auc_change.relative)
    assert any("reference load" in line for line in lines)
    # The selected configurations were chosen by serving: served.json beside each profile,
    # and each server served that choice.
    for selected in (system_only, recaccel):
        assert "chosen by serving" in selected.runtime
        served = load_served(out / "profiles" / selected.name / "served.json")
        assert served.chosen is not None and len(served.tried) == 1 and served.skipped
        assert served.confirmed_qps is not None
        table = (out / f"served-{selected.name}.md").read_text()  # the report's link
        assert served.chosen.candidate.label in table and "**selected**" in table
        log = (out / "servers" / f"{selected.name}.log").read_text()
        assert f"selected by serving: {served.chosen.candidate.label}" in log
    assert {p.name for p in written} >= {"report.md", "report.json", "latency_cdf.png"}
    data = json.loads((out / "report.json").read_text())
    assert len(data["headline"]["bars"]) == 3


def test_a_measured_profile_is_saved_where_the_report_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench_artifact: Path, tiny_dataset: Dataset
) -> None:
    made: list[ProfileOptions] = []

    def fake_profile(
        artifacts: object, dataset: object, options: ProfileOptions, **_: object
    ) -> Profile:
        made.append(options)
        return run_profile([bench_artifact], tiny_dataset, TINY_PROFILE, progress=False)

    monkeypatch.setattr(run_module, "run_profile", fake_profile)
    path = tmp_path / "bench" / "profile" / "profile.json"
    profile = measure_profile([bench_artifact], tiny_dataset, path, quick=True, progress=False)
    assert load_profile(path) == profile
    assert made == [bench_profile_options(quick=True)]
