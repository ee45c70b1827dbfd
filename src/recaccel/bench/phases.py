"""The bench's phases on running servers: choosing by serving, then accuracy and warm-up,
Offline, the max-QPS search and the reference load (run.py's docstring, phases 3 to 6).

`run_bench` (run.py) plans, starts the fleet and writes the report; what each phase sends to
the servers and collects from them is here.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recaccel.bench.accuracy import ServedAccuracy, served_accuracy
from recaccel.bench.fleet import RunningServer, ServerFleet
from recaccel.bench.loadgen import run_offline_scenario, run_server_scenario
from recaccel.bench.plan import (
    BASELINE,
    RECACCEL,
    SYSTEM_ONLY,
    BenchPlan,
    with_reuse_ablation,
    with_served,
)
from recaccel.bench.results import RunSummary, reference_load
from recaccel.bench.scenario_result import ScenarioResult
from recaccel.bench.search import SearchResult, search_interleaved
from recaccel.bench.served import ServedOptions, has_split_twin_at, select_served
from recaccel.bench.workload import RankWorkload
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.paths import write_text
from recaccel.runtime.executor import BACKENDS
from recaccel.serve.choice import Candidate, save_served, served_table

if TYPE_CHECKING:
    from recaccel.bench.run import BenchOptions  # it imports this module


def _warm_up(server: RunningServer, bodies: Sequence[bytes]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        for body in bodies:
            connection.request("POST", "/v1/rank", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            text = answer.read()
            if answer.status != 200:
                raise ConfigError(
                    f"the {server.plan.name} server answered a rank request with HTTP "
                    f"{answer.status}: {text[:300]!r}",
                    f"its log: {server.log}",
                )
    finally:
        connection.close()


def _line(name: str, run: RunSummary) -> str:
    within = "within bound" if run.meets_bound else "not within bound"
    return (
        f"{name:>11} {run.scenario:7} {run.target_qps:8.1f} QPS: {run.verdict:7} {within:16} "
        f"completed {run.completed_qps:7.1f} (answered {run.ok_qps:7.1f}/s)  p50 "
        f"{run.p50_ms:7.2f}  p99 {run.p99_ms:8.2f} ms  rejected {run.rejected_with_reasons} "
        f"failed {run.failed}"
    )


def choose_by_serving(
    plan: BenchPlan,
    workload: RankWorkload,
    options: BenchOptions,
    cores: int,
    out: Path,
    server_command: Sequence[str],
    say: Callable[[str], None],
) -> BenchPlan:
    """Served selection for the two selected configurations; served.json beside each one's
    profile, so its `--select` serves what serving chose (plan.with_served)."""
    served_options = ServedOptions(
        slo_ms=options.slo_ms,
        relative_budget=options.relative_budget,
        cores=cores,
        budget_s=options.served_budget_s,
        duration_s=min(options.duration_s, ServedOptions.duration_s),
        min_query_count=options.min_query_count,
        warm_up_requests=10 * options.warmup_requests,
    )
    for name in (SYSTEM_ONLY, RECACCEL):
        profile_path = Path(plan.server(name).argv[1])  # --profile PATH
        say(f"choosing {name}'s configuration by serving ({options.served_budget_s:g} s)")
        selection = select_served(
            plan.profiles[str(profile_path.relative_to(out / "profiles"))],
            workload,
            served_options,
            out / "served" / name,
            progress=say,
            command=server_command,
        )
        table = served_table(selection)
        write_text(profile_path.parent / "served.md", table)  # beside what `--select` reads
        write_text(out / f"served-{name}.md", table)  # beside the report, which links it
        if selection.chosen is None:
            say(f"{name}: nothing served within the SLO; chosen by the compute profile")
            continue
        save_served(selection, profile_path.parent)
        plan = with_served(plan, name, selection.chosen.candidate.label)
        chosen = selection.chosen.candidate
        if name == RECACCEL and reuse_ablation_runs(chosen):
            plan = with_reuse_ablation(plan, chosen, options.slo_ms)
    return plan


def reuse_ablation_runs(chosen: Candidate) -> bool:
    """Whether the bench can serve `chosen` with reuse flipped: its backend runs the split twin
    at its precision, and its artifact has one."""
    spec = BACKENDS.get(chosen.config.backend)
    if spec is None or not spec.runs_reuse(chosen.config.precision):
        return False
    return chosen.config.reuse or has_split_twin_at(Path(chosen.artifact))


def best_qps(result: SearchResult[ScenarioResult]) -> float | None:
    """The highest target QPS the search found within the bound; None if none was."""
    return None if result.best is None else result.best[0]


Measured = tuple[
    dict[str, ServedAccuracy],
    dict[str, ScenarioResult],
    dict[str, SearchResult[ScenarioResult]],
    tuple[float, str],
    dict[str, ScenarioResult],
]


def measure_phases(
    plan: BenchPlan,
    fleet: ServerFleet,
    dataset: Dataset,
    workload: RankWorkload,
    options: BenchOptions,
    runs_dir: Path,
    say: Callable[[str], None],
) -> Measured:
    """Phases 3 to 6 of the module docstring, on running servers."""
    names = [s.name for s in plan.servers]
    warmup = workload.bodies[: options.warmup_requests]
    accuracy: dict[str, ServedAccuracy] = {}
    for server in plan.servers:
        running = fleet[server.name]
        accuracy[server.name] = served_accuracy(running.url, server.model_name, dataset.test)
        _warm_up(running, warmup)
        say(f"{server.name:>11} served test AUC {accuracy[server.name].auc:.4f}")

    offline: dict[str, ScenarioResult] = {}
    for name in names:
        offline[name] = run_offline_scenario(
            fleet[name].url,
            workload,
            expected_qps=1.0,  # with min_query_count: exactly offline_queries requests
            duration_s=0.001,
            min_query_count=options.offline_queries,
            out_dir=runs_dir / name / "offline",
            server_pid=fleet[name].pid,
            concurrency=options.offline_concurrency,
        )
        say(_line(name, RunSummary.of(offline[name])))

    counts = dict.fromkeys(names, 0)

    def server_run(name: str, target_qps: float, label: str) -> ScenarioResult:
        result = run_server_scenario(
            fleet[name].url,
            workload,
            target_qps,
            options.slo_ms,
            options.duration_s,
            options.min_query_count,
            runs_dir / name / f"{label}-{target_qps:.4g}qps",
            server_pid=fleet[name].pid,
            max_duration_s=options.max_run_s,
        )
        say(_line(name, RunSummary.of(result)))
        return result

    def search_run(name: str, target_qps: float) -> ScenarioResult:
        counts[name] += 1
        return server_run(name, target_qps, f"search-{counts[name]:02d}")

    policies = {name: options.policy(offline[name].ok_qps) for name in names}
    searches = search_interleaved(names, search_run, lambda r: r.meets_bound, policies)
    base = searches[BASELINE]
    reference = reference_load([RunSummary.of(r) for _, r, _ in base.runs], best_qps(base))
    say(f"reference load {reference[0]:.4g} QPS: {reference[1]}")
    at_reference = {name: server_run(name, reference[0], "reference") for name in names}
    return accuracy, offline, searches, reference, at_reference
