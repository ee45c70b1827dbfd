"""Selection by serving: the configuration that serves the most rank requests within the SLO,
measured served on this machine, as Triton's Model Analyzer does with perf_analyzer.

    selection = select_served(profile, workload, ServedOptions(slo_ms=50), out_dir)
    save_served(selection, out_dir)    # served.json: `recaccel serve --select` serves its choice

The compute profile (runtime/select.py) only prunes. Its eligible rows (accuracy budget met, a
request within half the SLO), best estimate first, give the runtimes to try: at most
`max_runtimes` (artifact × backend × precision; one thread, the way served throughput scales
here). Each is tried on the plane layouts this machine can run (`layouts`): one front process,
and one per core; for a model whose largest batch (`batching.max_rows` rows, predicted from the
profile) would take over half the SLO, first one front with a lane per core (query splitting),
and last one with a worker process per core. Measuring served
is the point: compute alone sized workers as cores ÷ threads, and on a 2-core machine a second
worker process, which the load generator and the HTTP front then competed with, served 2.3×
less than one (the serving issue's table).

Each candidate in turn: start `recaccel serve` with it, warm it, run a short LoadGen max-QPS
search with the load generator on this machine (as in the bench, so its cores are taken as they
will be), stop. A run passes when its p99 held, the server kept up, and nothing was lost
(`ScenarioResult.meets_bound_briefly`): too short for LoadGen's early-stopping statistics,
which the bench's own long runs apply. The most QPS within the SLO wins; equal QPS, the lower
server CPU per request. Candidates that would start past `budget_s` are skipped and listed as
such. Then the winner is measured again, alone: the choice stands if that is within
`CONFIRM_WITHIN` (10%) of the best QPS the search saw, and the table says whether it did.
"""

from __future__ import annotations

import dataclasses
import http.client
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recaccel.artifact import read_manifest
from recaccel.bench.fleet import SERVE_COMMAND, ServerFleet
from recaccel.bench.loadgen import DEFAULT_MIN_QUERY_COUNT, find_max_qps
from recaccel.bench.plan import ArtifactRef, ServerPlan
from recaccel.bench.search import SearchPolicy
from recaccel.bench.sut import RANK_PATH
from recaccel.bench.workload import RankWorkload
from recaccel.data.schema import FeatureSchema
from recaccel.defaults import DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS
from recaccel.errors import RecaccelError
from recaccel.models.split import splits
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.runtime.select import Requirements
from recaccel.serve.choice import Candidate, ServedSelection, Tried, candidates, rank_tried

WARM_UP_CONNECTIONS = 8
FLOOR_OF_BEST = 0.5  # a candidate's search goes no lower than this share of the best so far
# A brief run's fewest queries: its p99 may then have one answer past the bound.
BRIEF_MIN_QUERIES = 100


@dataclass(frozen=True)
class ServedOptions:
    slo_ms: float = DEFAULT_SLO_P99_MS
    relative_budget: float = DEFAULT_RELATIVE_BUDGET
    cores: int = 1
    budget_s: float = 300.0  # for the search; the confirmation comes on top
    max_runtimes: int = 3
    duration_s: float = 6.0  # per LoadGen run
    # Sent one at a time before timing: first calls of each batch size allocate (ORT's
    # arenas, OpenVINO's shapes); untimed, a search's first run failed on them.
    warm_up_requests: int = 300
    min_query_count: int = DEFAULT_MIN_QUERY_COUNT
    # A run at a low rate waits for its queries; past this it takes fewer (`brief_queries`).
    max_run_s: float = 15.0
    # Short searches: 200, 400, 800, ... QPS, then halve the bracket to within 15%.
    search: SearchPolicy = field(
        default_factory=lambda: SearchPolicy(start_qps=200, growth=2, rel_tol=0.15, max_runs=6)
    )


def brief_queries(qps: float, options: ServedOptions) -> int:
    """A served run's minimum query count at `qps`: `min_query_count`, or what `max_run_s`
    holds at that rate if fewer, but not below BRIEF_MIN_QUERIES (nor above `min_query_count`).
    Without the cap a candidate failing at every load bisected down to a few QPS, where 600
    arrivals take minutes: one candidate took 207 s of a 150 s budget and no other was tried."""
    brief = max(BRIEF_MIN_QUERIES, int(qps * options.max_run_s))
    return min(options.min_query_count, brief)


def warm_up(port: int, bodies: Sequence[bytes], connections: int = WARM_UP_CONNECTIONS) -> None:
    """POST `bodies` to /v1/rank over `connections` keep-alive connections at once: one
    connection reaches one front process, and every front needs warming."""

    def send(share: Sequence[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for body in share:
                connection.request("POST", RANK_PATH, body, {"content-type": "application/json"})
                connection.getresponse().read()
        finally:
            connection.close()

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(send, [bodies[i::connections] for i in range(connections)]))


def measure_served(
    candidate: Candidate,
    artifact: ArtifactRef,
    workload: RankWorkload,
    options: ServedOptions,
    out_dir: Path,
    command: Sequence[str] = SERVE_COMMAND,
) -> Tried:
    """Start `recaccel serve` with `candidate`, search its highest QPS within the SLO, stop."""
    start = time.monotonic()
    plan = ServerPlan(
        name="candidate",
        description=candidate.label,
        artifact=artifact,
        runtime=candidate.label,
        argv=(*candidate.serve_args(), "--slo-ms", f"{options.slo_ms:g}"),
        env={},
    )
    with ServerFleet([plan], out_dir / "servers", command=command) as fleet:
        server = fleet["candidate"]
        warm_up(server.port, workload.bodies[: options.warm_up_requests])
        found = find_max_qps(
            server.url,
            workload,
            latency_p99_ms=options.slo_ms,
            duration_s=options.duration_s,
            out_dir=out_dir / "runs",
            policy=options.search,
            meets=lambda run: run.meets_bound_briefly,
            query_count=lambda qps: brief_queries(qps, options),
            server_pid=server.pid,
        )
    best = found.best
    run = None if best is None else best[1]
    return Tried(
        candidate,
        None if best is None else best[0],
        None if run is None else run.loadgen.latency.ms("99.00"),
        None if run is None or run.server_cpu_s_per_1k is None else run.server_cpu_s_per_1k,
        len(found.runs),
        time.monotonic() - start,
    )


def _search(options: ServedOptions, tried: Sequence[Tried]) -> SearchPolicy:
    """The search for the next candidate: down to half the best QPS found so far, no lower.
    Below it a candidate cannot win, and a failing search's runs there are the longest (they
    wait for `min_query_count` arrivals at a low rate): one took 206 s of a 150 s budget."""
    best = max((t.max_qps or 0.0 for t in tried), default=0.0)
    floor = max(options.search.min_qps, FLOOR_OF_BEST * best)
    return dataclasses.replace(options.search, min_qps=floor)


def has_split_twin(entry: ProfileEntry) -> bool:
    """Whether the entry's artifact has a split twin (its manifest read, not its weights)."""
    return has_split_twin_at(Path(entry.artifact))


def has_split_twin_at(artifact: Path) -> bool:
    """Whether the artifact at `artifact` has a split twin (its manifest read)."""
    try:
        manifest = read_manifest(artifact)
        return splits(manifest.model, FeatureSchema.from_dict(manifest.schema))
    except RecaccelError:
        return False  # the selection's own start of that artifact says what is wrong


def select_served(
    profile: Profile,
    workload: RankWorkload,
    options: ServedOptions,
    out_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
    measure: Callable[[Candidate, Path, SearchPolicy], Tried] | None = None,
    command: Sequence[str] = SERVE_COMMAND,
    clock: Callable[[], float] = time.monotonic,
    machine: dict[str, Any] | None = None,
) -> ServedSelection:
    """Try the candidates within the time budget, choose, measure the choice again."""
    needs = Requirements(
        options.slo_ms, profile.serving_batch, options.relative_budget, options.cores
    )
    todo = candidates(profile, needs, options.max_runtimes, reuse=has_split_twin)

    def served(candidate: Candidate, out: Path, search: SearchPolicy) -> Tried:
        entry = profile.entry(candidate.key)
        ref = ArtifactRef(
            Path(entry.artifact).resolve(), entry.artifact_id, entry.model, profile.dataset, None
        )
        each = dataclasses.replace(options, search=search)
        return measure_served(candidate, ref, workload, each, out, command)

    run = measure or served
    say = progress or (lambda _: None)
    start = clock()
    tried: list[Tried] = []
    skipped: list[Candidate] = []
    for index, candidate in enumerate(todo):
        elapsed = clock() - start
        typical = elapsed / len(tried) if tried else 0.0
        if tried and elapsed + typical > options.budget_s:
            skipped.append(candidate)
            continue
        say(f"[{index + 1}/{len(todo)}] {candidate.label}")
        result = run(candidate, out_dir / f"candidate-{index:02d}", _search(options, tried))
        say(
            f"    {'none' if result.max_qps is None else f'{result.max_qps:.0f}'} QPS within "
            f"p99 <= {options.slo_ms:g} ms ({result.runs} runs, {result.seconds:.0f} s)"
        )
        tried.append(result)
    spent = clock() - start
    ranked = tuple(sorted(tried, key=rank_tried, reverse=True))
    confirmed = None
    if ranked and ranked[0].max_qps is not None:
        say(f"measuring the choice again: {ranked[0].candidate.label}")
        again = run(ranked[0].candidate, out_dir / "confirm", options.search)
        confirmed = again.max_qps
    return ServedSelection(
        slo_ms=options.slo_ms,
        profile_created_at=profile.created_at,
        tried=ranked,
        skipped=tuple(skipped),
        confirmed_qps=confirmed,
        budget_s=options.budget_s,
        spent_s=spent,
        machine=machine or {},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
