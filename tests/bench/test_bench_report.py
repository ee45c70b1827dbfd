"""The bench's headline and report, from canned results: which load the configurations are
compared at, the three claims against their bars, and the files a reader gets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from recaccel.bench.report import method_link, render_markdown, write_report
from recaccel.bench.results import (
    AucChange,
    Bar,
    BenchResult,
    ConfigResult,
    RunSummary,
    headline,
    reference_load,
)


def run(
    target: float,
    p99_ms: float,
    meets: bool,
    completed: float | None = None,
    rejected: int = 0,
    scenario: str = "Server",
    refusals: dict[str, int] | None = None,
) -> RunSummary:
    return RunSummary(
        scenario=scenario,
        target_qps=target,
        valid=meets,
        meets_bound=meets and rejected == 0,
        reasons=() if meets else ("latency constraint not met",),
        scheduled_qps=target if scenario == "Server" else None,
        completed_qps=target if completed is None else completed,
        ok_qps=target if completed is None else completed,
        samples=600,
        p50_ms=p99_ms / 4,
        p90_ms=p99_ms / 2,
        p99_ms=p99_ms,
        p999_ms=p99_ms * 1.5,
        ok=600 - rejected,
        rejected=rejected,
        failed=0,
        consistent=True,
        server_cpu_s_per_1k=2.5,
        client_cpu_s_per_1k=0.4,
        client_loop_lag_p99_ms=0.2,
        wall_s=10.0,
        log_dir="runs/x",
        rejected_by_reason=refusals or {},
    )


def config(
    name: str,
    search: tuple[RunSummary, ...],
    reference: RunSummary,
    auc: float = 0.79,
    offline_qps: float = 40.0,
) -> ConfigResult:
    passing = [r.target_qps for r in search if r.meets_bound]
    return ConfigResult(
        name=name,
        description=f"the {name} configuration",
        command=f"recaccel serve {name} --port 8000",
        artifact=f"/art/{name}",
        model="dlrm@aaaaaaaa",
        runtime="torch-eager/cpu/fp32/t1 in 1 process, 1 request per batch",
        artifact_test_auc=0.791,
        served_auc=auc,
        auc_change=None
        if name == "baseline"
        else AucChange(auc - 0.79, -0.01, 0.02, auc / 0.79 - 1),
        offline=run(offline_qps, 900.0, False, scenario="Offline"),
        search=search,
        search_stopped="converged",
        max_qps=max(passing, default=None),
        at_reference=reference,
        reference_cdf_ms=tuple(float(i) for i in range(201)),
    )


BASELINE_RUNS = (run(20, 45, True), run(30, 48, True), run(45, 300, False), run(37.5, 60, False))
BASELINE = config("baseline", BASELINE_RUNS, run(30, 47.0, True))
RECACCEL = config(
    "recaccel",
    (
        run(200, 8, True),
        run(300, 9, True),
        run(450, 80, False, rejected=3, refusals={"deadline": 2, "server_overloaded": 1}),
        run(375, 10, True),
    ),
    run(30, 4.0, True),
    auc=0.7905,
)


def result(baseline: ConfigResult = BASELINE, recaccel: ConfigResult = RECACCEL) -> BenchResult:
    reference = reference_load(baseline.search, baseline.max_qps)
    middle = [
        dataclasses.replace(recaccel, name=name, command=f"recaccel serve {name} --port 8000")
        for name in ("model-only", "system-only")
    ]
    return BenchResult(
        configs=(baseline, *middle, recaccel),
        slo_ms=50.0,
        reference_qps=reference[0],
        reference_basis=reference[1],
        command="recaccel bench --quick",
        machine={"cpu": "AMD EPYC", "cores": 2, "gpus": []},
        settings={"duration_s": 10.0},
        workload={
            "n_samples": 20000,
            "target_median": 100,
            "target_p99": 1000,
            "median": 100.0,
            "p99": 1003.0,
            "max": 1682,
        },
        profile="given",
        test_rows=9988,
        started_at="2026-01-01T00:00:00+00:00",
        wall_s=600.0,
    )


@pytest.mark.parametrize(
    ("runs", "max_qps", "expected_qps", "basis"),
    [
        (BASELINE_RUNS, 30.0, 30.0, "highest QPS within the SLO"),
        # nothing within the SLO: the highest load it kept up with
        ((run(30, 90, False), run(20, 85, False)), None, 30.0, "kept up with"),
        ((run(30, 900, False, completed=20), run(20, 85, False)), None, 20.0, "kept up with"),
        ((run(30, 90, False, rejected=2), run(20, 85, False)), None, 20.0, "kept up with"),
        # kept up with none: the lowest load tried
        ((run(30, 900, False, completed=10), run(20, 800, False, completed=5)), None, 20.0,
         "lowest load tried"),
    ],
)  # fmt: skip
def test_the_reference_load(
    runs: tuple[RunSummary, ...], max_qps: float | None, expected_qps: float, basis: str
) -> None:
    qps, why = reference_load(runs, max_qps)
    assert qps == expected_qps
    assert basis in why


def test_the_three_claims_against_the_papers_bars_and_our_aims() -> None:
    head = result().headline
    p99, qps, auc = head.bars
    assert p99.value == pytest.approx(4.0 / 47.0)  # 8.5%: within 30%, not within 10%
    assert (p99.meets_paper, p99.meets_aim) == (True, True)
    assert qps.value == pytest.approx(375 / 30)  # 12.5×
    assert (qps.meets_paper, qps.meets_aim) == (True, False)
    assert auc.value == pytest.approx(0.7905 / 0.79 - 1)  # a gain passes
    assert (auc.meets_paper, auc.meets_aim) == (True, True)
    assert head.recaccel_verdict == head.baseline_verdict == "VALID"


def test_without_a_baseline_qps_within_the_slo_the_ratio_is_over_its_offline_throughput() -> None:
    slow = config("baseline", (run(20, 90, False),), run(20, 90.0, False), offline_qps=25.0)
    head = headline(slow, RECACCEL, 20.0, "no load meets it")
    qps = head.bars[1]
    assert qps.value == pytest.approx(375 / 25)
    assert "Offline throughput" in qps.basis
    assert head.baseline_max_qps is None and head.baseline_verdict == "INVALID"


def test_a_bar_without_a_value_is_not_judged() -> None:
    bar = Bar("x", None, 2.0, 30.0, higher_is_better=True)
    assert bar.meets_paper is None and bar.meets_aim is None
    assert Bar("y", -0.002, -0.001, -0.001, higher_is_better=True).meets_paper is False


def test_the_markdown_report_states_the_headline_machine_command_and_verdicts() -> None:
    text = render_markdown(result())
    assert "Machine: AMD EPYC, 2 cores" in text
    assert "Command: `recaccel bench --quick`" in text
    assert "| p99 at the reference load, recaccel / baseline | 8.5% (4.00 ms VALID vs 47.00 ms" in (
        text
    )
    assert "| 12.5× (375.0 QPS vs 30.0 QPS) | ≥ 2× | yes | ≥ 30× | **no** |" in text
    assert "Reference load: 30 QPS, the baseline's highest QPS within the SLO" in text
    for name in ("baseline", "model-only", "system-only", "recaccel"):
        assert f"| **{name}** |" in text
        assert f"### {name} (stopped: converged)" in text
        assert f"`recaccel serve {name} --port 8000`" in text
    # Refusals are named by the rule that refused them, where the server said.
    row = "| 450.0 | 450.0 | 20.00 | 80.00 | 120.00 | INVALID | no "
    assert f"{row}| 3 (deadline 2, server_overloaded 1) / 0 |" in text


def test_the_report_links_to_the_method_and_lists_the_runs_settings(tmp_path: Path) -> None:
    text = render_markdown(result())
    assert "[docs/benchmark.md](../../docs/benchmark.md). This run's settings:" in text
    assert "| `duration_s` | 10.0 |" in text
    assert "Max-QPS search: LoadGen" not in text  # the method is the page's, not restated
    # Written anywhere in the checkout, the link still reaches the page.
    page = tmp_path / "docs" / "benchmark.md"
    page.parent.mkdir()
    page.write_text("# method\n")
    assert method_link(tmp_path / "results" / "bench", page) == "../../docs/benchmark.md"
    assert method_link(tmp_path / "elsewhere", page) == "../docs/benchmark.md"
    assert method_link(tmp_path, tmp_path / "none.md") == ""
    assert "docs/benchmark.md in recaccel's repository" in render_markdown(result(), "")


def test_the_report_files(tmp_path: Path) -> None:
    canned = result()
    written = write_report(canned, tmp_path)
    assert {p.name for p in written} == {
        "report.md", "report.json", "latency_cdf.png", "p99_vs_qps.png", "ablation.png"
    }  # fmt: skip
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["headline"]["bars"][1]["value"] == pytest.approx(12.5)
    assert data["headline"]["bars"][1]["meets_aim"] is False
    assert [c["name"] for c in data["configs"]] == [c.name for c in canned.configs]
    assert data["configs"][0]["search"][2]["p99_ms"] == 300


def test_paths_under_the_directory_the_bench_ran_in_are_written_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report committed from one machine names the checkout's files, not that machine's."""
    checkout = tmp_path / "clone"
    artifact = checkout / "artifacts" / "dlrm-heavy"
    elsewhere = "/data/models/other"
    ran = dataclasses.replace(
        result(),
        configs=tuple(
            dataclasses.replace(
                c,
                artifact=str(artifact if c.name == "baseline" else elsewhere),
                command=f"recaccel serve m={artifact} --port 8000",
            )
            for c in result().configs
        ),
    )
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    write_report(ran, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["configs"][0]["artifact"] == "artifacts/dlrm-heavy"
    assert data["configs"][1]["artifact"] == elsewhere  # outside it: as it was
    assert all(
        c["command"] == "recaccel serve m=artifacts/dlrm-heavy --port 8000" for c in data["configs"]
    )
    text = (tmp_path / "out" / "report.md").read_text()
    assert str(checkout) not in text and "`artifacts/dlrm-heavy`" in text
