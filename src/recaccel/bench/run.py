"""`recaccel bench`: baseline, ablations and recaccel served side by side and measured alike.

    result = run_bench(Path("artifacts/dlrm-heavy"), candidates, dataset, Path("results/bench"))

The run, in phases, every phase interleaved across the configurations (plan.py: four, and
recaccel's choice with reuse flipped where it can run either way; what the phases do on the
running servers is phases.py):

1. **Profile and plan.** The selection needs a profile of every artifact; without one, a
   reduced profile is measured first (`bench_profile_options`). The plan turns it into four
   `recaccel serve` commands.
2. **Start** the servers together (fleet.py); they stay up for the whole run, idle while
   another is measured, so every measurement shares the machine's state.
3. **Accuracy and warm-up.** Each server scores the whole test split (accuracy.py) and answers
   a few rank requests before anything is timed.
4. **Offline**, one run each: the most answered requests per second with no latency bound. It
   also seeds each search: the first target is half of it, so no configuration spends minutes
   at loads far below or above what it can take.
5. **Max-QPS search**, Server scenario, round robin (search.search_interleaved): one run per
   configuration per pass until every search converges or reaches its run cap.
6. **Reference load**: every configuration once more at the baseline's highest QPS within the
   SLO (results.reference_load when it has none): the p99 comparison and the latency CDFs.

Runs are capped at `max_run_s`; below `min_qps` a run cannot collect the queries LoadGen needs
for a p99 verdict in that time, so the search does not go there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recaccel.artifact import read_manifest
from recaccel.bench.accuracy import ServedAccuracy
from recaccel.bench.fleet import SERVE_COMMAND, ServerFleet
from recaccel.bench.loadgen import (
    DEFAULT_MIN_QUERY_COUNT,
)
from recaccel.bench.phases import best_qps, choose_by_serving, measure_phases
from recaccel.bench.plan import (
    BASELINE,
    ArtifactRef,
    plan_bench,
)
from recaccel.bench.results import (
    AucChange,
    BenchResult,
    ConfigResult,
    RunSummary,
    cdf_ms,
)
from recaccel.bench.search import SearchPolicy
from recaccel.bench.workload import RankWorkload
from recaccel.data.dataset import Dataset
from recaccel.defaults import DEFAULT_CANDIDATES, DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS
from recaccel.errors import ConfigError
from recaccel.machine import describe_machine
from recaccel.optimize.guard import BUDGET_HINT
from recaccel.runtime.profile import PROFILE_FILE, Profile, save_profile
from recaccel.runtime.profiler import (
    ProfileOptions,
    machine_facts,
    run_profile,
)
from recaccel.train.metrics import paired_bootstrap_auc_delta

DEFAULT_BASELINE = Path("artifacts/dlrm-heavy")
OPTIMIZE_REPORT = "report.json"


@dataclass(frozen=True)
class BenchOptions:
    slo_ms: float = DEFAULT_SLO_P99_MS  # p99 per rank request, for every configuration
    duration_s: float = 10.0  # each Server run lasts at least this long...
    min_query_count: int = DEFAULT_MIN_QUERY_COUNT  # ...and sends at least this many queries
    offline_queries: int = 1000
    offline_concurrency: int = 32  # enough to keep any server here busy, few refusals
    max_runs: int = 7  # Server runs per configuration's search
    growth: float = 1.5  # the search's step while runs pass
    rel_tol: float = 0.1  # ...and its precision
    start_fraction: float = 0.5  # the first target, as a fraction of the Offline throughput
    relative_budget: float = DEFAULT_RELATIVE_BUDGET  # validation-AUC loss the selection may accept
    n_samples: int = 20_000  # distinct rank requests
    median_candidates: float = DEFAULT_CANDIDATES
    p99_candidates: float = 1000
    seed: int = 0
    warmup_requests: int = 32
    # Selection by serving (bench/served.py) for system-only and recaccel, each within this
    # many seconds; 0: choose by the compute profile alone.
    served_budget_s: float = 150.0
    base_port: int | None = None
    quick: bool = False  # also profile with shorter timings, when a profile is measured

    def __post_init__(self) -> None:
        if not self.slo_ms > 0:
            raise ConfigError(
                f"SLO {self.slo_ms} ms must be positive", f"e.g. --slo-ms {DEFAULT_SLO_P99_MS:g}"
            )
        if not self.duration_s > 0:
            raise ConfigError(
                f"run duration {self.duration_s} s must be positive", "e.g. --duration-s 10"
            )
        if self.offline_queries < 1 or self.max_runs < 1 or self.warmup_requests < 0:
            raise ConfigError(
                "offline_queries and max_runs must be >= 1, warmup_requests >= 0",
                "the defaults are 1000, 7 and 32",
            )
        if not 0 <= self.relative_budget < 1:
            raise ConfigError(
                f"accuracy budget {self.relative_budget} is not a fraction in [0, 1)",
                BUDGET_HINT,
            )
        if not 0 < self.start_fraction <= 1:
            raise ConfigError(f"start_fraction={self.start_fraction} must be in (0, 1]", "e.g. 0.5")

    @classmethod
    def quick_settings(cls, **overrides: Any) -> BenchOptions:
        """A smoke check in a few minutes: short runs, few of them."""
        settings: dict[str, Any] = {
            "duration_s": 4.0,
            "offline_queries": 300,
            "max_runs": 3,
            "n_samples": 5000,
            "served_budget_s": 40.0,
            "quick": True,
            **overrides,
        }
        return cls(**settings)

    @property
    def max_run_s(self) -> float:
        return 3 * self.duration_s

    @property
    def min_qps(self) -> float:
        """Below this a run cannot send `min_query_count` Poisson arrivals within `max_run_s`
        (with a 25% margin: their count varies)."""
        return 1.25 * self.min_query_count / self.max_run_s

    def policy(self, offline_qps: float) -> SearchPolicy:
        """The search for a configuration whose Offline throughput was `offline_qps`."""
        start = max(self.start_fraction * offline_qps, self.min_qps)
        return SearchPolicy(start, self.growth, self.rel_tol, self.min_qps, self.max_runs)


def bench_profile_options(quick: bool = False) -> ProfileOptions:
    """The profile `recaccel bench` measures when given none: every installed backend and
    precision, one thread per worker (workers scale across cores; two threads per worker lost
    to two workers on the committed 2-core profile), few batch sizes and short timings."""
    return ProfileOptions(
        threads=(1,),
        batches=(1, 16, 256, 1024),
        repeats=20 if quick else 50,
        min_repeats=10,
        warmup=3,
        seconds_per_batch=2.0 if quick else 4.0,
    )


def artifact_ref(path: Path) -> ArtifactRef:
    manifest = read_manifest(path)  # ArtifactError: missing, incomplete
    test = manifest.metrics.get("test", {})
    return ArtifactRef(
        path=Path(path).resolve(),
        artifact_id=manifest.artifact_id,
        model=manifest.model,
        dataset=str(manifest.dataset.get("name", "")),
        test_auc=None if "auc" not in test else float(test["auc"]),
    )


def default_candidates(heavy: Path) -> list[Path]:
    """The artifacts `recaccel optimize HEAVY --out HEAVY-optimized` kept (`make demo`)."""
    report = heavy.parent / f"{heavy.name}-optimized" / OPTIMIZE_REPORT
    try:
        variants = json.loads(report.read_text())["variants"]
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(
            f"no candidate artifacts given, and no optimize report at {report} ({error})",
            f"name them (recaccel bench A B ...), or run `recaccel optimize {heavy} --out "
            f"{heavy}-optimized` first",
        ) from None
    paths = []
    for variant in variants:
        path = Path(variant["path"])
        beside = report.parent / path.name  # the report's paths are relative to where it ran
        if path.resolve() != heavy.resolve():
            paths.append(beside if beside.is_dir() else path)
    return paths


def measure_profile(
    artifacts: Sequence[Path], dataset: Dataset, path: Path, quick: bool, progress: bool
) -> Profile:
    """Profile `artifacts` with the bench's reduced settings and save it to the file `path`."""
    profile = run_profile(artifacts, dataset, bench_profile_options(quick), progress=progress)
    save_profile(profile, path)
    return profile


def _auc_change(dataset: Dataset, served: ServedAccuracy, base: ServedAccuracy) -> AucChange:
    delta = paired_bootstrap_auc_delta(dataset.test.label, served.scores, base.scores)
    return AucChange(delta.delta, delta.low, delta.high, served.auc / base.auc - 1)


def run_bench(
    heavy: Path,
    candidates: Sequence[Path],
    dataset: Dataset,
    out: Path,
    options: BenchOptions | None = None,
    profile: Profile | None = None,
    *,
    profile_source: str = "",
    command: str = "recaccel bench",
    server_command: Sequence[str] = SERVE_COMMAND,
    say: Callable[[str], None] = lambda text: None,
) -> BenchResult:
    """Measure the configurations (module docstring); writes logs under `out`.

    Args:
        heavy: the heavy FP32 artifact: the baseline's model and the accuracy reference.
        candidates: the artifacts recaccel may select among (the heavy one is added).
        dataset: the dataset they were trained on: test split for accuracy, users and items
            for the rank requests.
        profile: measurements of every artifact (`recaccel profile`); None measures one.
        server_command: what starts a server, before the plan's arguments (tests serve the
            tiny fixture dataset with their own).
        say: progress lines.
    """
    options = options or BenchOptions()
    start, started_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    heavy_ref = artifact_ref(heavy)
    refs = [artifact_ref(p) for p in candidates]
    cores = os.cpu_count() or 1
    if profile is None:
        say("profiling the artifacts (reduced settings; pass --profile to reuse one)")
        paths = [heavy_ref.path, *(r.path for r in refs)]
        saved = out / "profile" / PROFILE_FILE
        profile = measure_profile(paths, dataset, saved, options.quick, False)
        profile_source = f"measured in this run, {saved}"
    plan = plan_bench(
        heavy_ref, refs, profile, options.slo_ms, options.relative_budget, cores, out / "profiles"
    )
    for file, restricted in plan.profiles.items():
        (out / "profiles" / file).parent.mkdir(parents=True, exist_ok=True)
        save_profile(restricted, out / "profiles" / file)
    workload = RankWorkload.from_dataset(
        dataset, options.n_samples, options.seed, options.median_candidates, options.p99_candidates
    )
    if options.served_budget_s > 0:
        plan = choose_by_serving(plan, workload, options, cores, out, server_command, say)
    for server in plan.servers:
        say(f"{server.name}: {server.description}: {server.command()}")
    fleet = ServerFleet(
        plan.servers, out / "servers", command=server_command, base_port=options.base_port
    )
    with fleet:
        say("servers ready; scoring the test split through each")
        measured = measure_phases(plan, fleet, dataset, workload, options, out / "runs", say)
    accuracy, offline, searches, reference, ref_runs = measured
    base = accuracy[BASELINE]
    configs = tuple(
        ConfigResult(
            name=s.name,
            description=s.description,
            command=fleet[s.name].command,
            artifact=str(s.artifact.path),
            model=f"{s.artifact.model}@{s.artifact.artifact_id[:8]}",
            runtime=s.runtime,
            artifact_test_auc=s.artifact.test_auc,
            served_auc=accuracy[s.name].auc,
            auc_change=None if s.name == BASELINE else _auc_change(dataset, accuracy[s.name], base),
            offline=RunSummary.of(offline[s.name]),
            search=tuple(RunSummary.of(r) for _, r, _ in searches[s.name].runs),
            search_stopped=searches[s.name].stopped,
            max_qps=best_qps(searches[s.name]),
            at_reference=RunSummary.of(ref_runs[s.name]),
            reference_cdf_ms=cdf_ms(ref_runs[s.name].latencies_ms),
        )
        for s in plan.servers
    )
    settings = {
        **dataclasses.asdict(options),
        "max_run_s": options.max_run_s,
        "min_qps": options.min_qps,
    }
    return BenchResult(
        configs=configs,
        slo_ms=options.slo_ms,
        reference_qps=reference[0],
        reference_basis=reference[1],
        command=command,
        machine=describe_machine(machine_facts()),
        settings=settings,
        workload=dataclasses.asdict(workload.stats()),
        profile=profile_source or "given",
        test_rows=len(dataset.test),
        started_at=started_at,
        wall_s=time.monotonic() - start,
    )
