"""The served configurations of `recaccel bench`: a pure plan from artifacts and a profile.

Each configuration is one `recaccel serve` process; the bench measures them all on the same
machine, under the same latency bound (the SLO), interleaved:

- **baseline**: the heavy FP32 model in PyTorch eager, in one server process with one thread,
  one request per batch (`batching.max_rows = 1`: a batch never splits a request, so a larger
  request runs alone), no deadlines (`slo.p99_ms` far out) and no limit on requests in flight
  (`admission.overload_target_ms = 0`): a plain first-in, first-out model server, the
  unoptimized deployment the seed papers start from. recaccel's admission control would
  refuse requests predicted to be late, and refusing is part of recaccel's system, not of the
  baseline; the bench's own SLO judges every configuration's latencies alike.
- **model-only**: the artifact recaccel selects, on exactly the baseline's deployment: what
  model-level optimization alone buys.
- **system-only**: the heavy artifact served as `recaccel serve --select` would serve it if it
  were the only artifact: the best runtime, precision, threads and workers the profile finds for
  it, with recaccel's batching, admission control and scaling: what the system alone buys.
- **recaccel**: `recaccel serve --profile P --select`: the selected artifact, runtime, batching
  and workers together.
- **recaccel-without-reuse** (or **recaccel-with-reuse**): recaccel's served choice with
  request-level reuse flipped, same artifact, runtime and layout (`with_reuse_ablation`): what
  reuse adds or costs end to end, in the same run. Added only when serving chose recaccel's
  configuration and its runtime can run the model's split twin.

Both selected configurations are launched with `--select` on a copy of the profile that holds
only the artifacts they may choose from, with each artifact's path resolved, so the server makes
the very choice `runtime.select.serving_choice` makes here (the plan records it) and a profile
written elsewhere still finds the artifacts. When the bench has chosen by serving
(bench/served.py), its served.json sits beside that copy and `--select` serves that choice
instead (`with_served`). `plan_bench` does no I/O: the runner writes `BenchPlan.profiles` to
`profile_dir` before starting the servers.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from recaccel.errors import ConfigError
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.profile import Profile
from recaccel.runtime.select import Judgement, Requirements, serving_choice
from recaccel.serve.choice import Candidate

BASELINE = "baseline"
MODEL_ONLY = "model-only"
SYSTEM_ONLY = "system-only"
RECACCEL = "recaccel"
CONFIG_NAMES = (BASELINE, MODEL_ONLY, SYSTEM_ONLY, RECACCEL)
WITH_REUSE, WITHOUT_REUSE = "recaccel-with-reuse", "recaccel-without-reuse"  # the ablation
MAX_SERVERS = len(CONFIG_NAMES) + 1
# The baseline has no deadlines: admission never refuses and every request is answered,
# however late (10 minutes is "never" for a benchmark run).
NO_DEADLINE_MS = 600_000
BASELINE_ENV = {
    "RECACCEL_BATCHING_MAX_ROWS": "1",  # one request per batch: no batching
    "RECACCEL_SLO_P99_MS": str(NO_DEADLINE_MS),
    "RECACCEL_SLO_MAX_QUEUE_DELAY_MS": "0",  # nothing to wait for with one request per batch
    # No limit on requests in flight either: its initial 64 refused 38 of model-only's requests
    # in a run whose p99 had passed 200 ms, which a plain FIFO server would have queued.
    "RECACCEL_ADMISSION_OVERLOAD_TARGET_MS": "0",
}


def baseline_flags(config: ExecutorConfig) -> tuple[str, ...]:
    """`recaccel serve` flags of the baseline's deployment: the profile's baseline runtime
    (PyTorch eager FP32, one thread; ONNX Runtime for an imported ONNX model) in one process."""
    return (
        "--backend", config.backend, "--precision", config.precision,
        "--threads", str(config.threads), "--processes", "1", "--execution", "in-process",
    )  # fmt: skip


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact as the bench knows it: where it is, what it is, what it scored when made."""

    path: Path  # resolved
    artifact_id: str
    model: str
    dataset: str
    test_auc: float | None  # recorded in its manifest at training/optimization time

    @property
    def name(self) -> str:
        """The served model's name: its directory's (`recaccel serve` names a PATH so)."""
        return self.path.name


@dataclass(frozen=True)
class ServerPlan:
    """One configuration: what it serves and the `recaccel serve` arguments that serve it."""

    name: str  # one of CONFIG_NAMES, or the reuse ablation's
    description: str
    artifact: ArtifactRef  # the artifact served
    runtime: str  # e.g. "torch-eager/cpu/fp32/t1 in 1 process, 1 request per batch"
    argv: tuple[str, ...]  # after `recaccel serve`, without --port (the runner adds it)
    env: Mapping[str, str]  # RECACCEL_* settings for the server's environment
    selection: Judgement | None = None  # the profile's row, for the selected configurations

    @property
    def model_name(self) -> str:
        return self.artifact.name

    def command(self, port: int | None = None) -> str:
        """The shell command that starts this server, for a report."""
        env = " ".join(f"{key}={value}" for key, value in sorted(self.env.items()))
        port_args = ("--port", str(port)) if port is not None else ()
        serve = shlex.join(("recaccel", "serve", *self.argv, *port_args))
        return f"{env} {serve}" if env else serve


@dataclass(frozen=True)
class BenchPlan:
    servers: tuple[ServerPlan, ...]  # in CONFIG_NAMES order, then the reuse ablation if any
    profiles: Mapping[str, Profile]  # file name in profile_dir -> profile to write there

    def server(self, name: str) -> ServerPlan:
        return next(s for s in self.servers if s.name == name)


def restrict_profile(profile: Profile, artifacts: Sequence[ArtifactRef]) -> Profile:
    """`profile` with only the entries of `artifacts`, each pointing at its resolved path."""
    paths = {a.artifact_id: str(a.path) for a in artifacts}
    entries = tuple(
        dataclasses.replace(e, artifact=paths[e.artifact_id])
        for e in profile.entries
        if e.artifact_id in paths
    )
    return dataclasses.replace(profile, entries=entries)


def check_coverage(profile: Profile, heavy: ArtifactRef, candidates: Sequence[ArtifactRef]) -> None:
    """The profile must have measured every artifact, with the heavy one as its baseline."""
    hint = "profile them together, heavy first: recaccel profile HEAVY CANDIDATE... --out DIR"
    measured = {e.artifact_id for e in profile.entries}
    missing = [str(a.path) for a in (heavy, *candidates) if a.artifact_id not in measured]
    if missing:
        raise ConfigError(f"the profile has no measurements of {', '.join(missing)}", hint)
    if profile.baseline_entry.artifact_id != heavy.artifact_id:
        raise ConfigError(
            f"the profile's baseline is {profile.baseline}, not the bench's baseline "
            f"{heavy.path} ({heavy.model}@{heavy.artifact_id[:8]}); accuracy is judged "
            "against the profile's baseline",
            hint,
        )
    others = [a for a in candidates if a.dataset != heavy.dataset]
    if others:
        raise ConfigError(
            f"{', '.join(str(a.path) for a in others)} not trained on {heavy.dataset!r} like "
            f"{heavy.path}",
            "bench artifacts of one dataset together",
        )


def _runtime(row: Judgement, batching: str) -> str:
    workers = "worker" if row.workers == 1 else "workers"
    return (
        f"{row.backend}/{row.device}/{row.precision}/t{row.threads} × up to {row.workers} "
        f"{workers}, {batching}"
    )


def plan_bench(
    heavy: ArtifactRef,
    candidates: Sequence[ArtifactRef],
    profile: Profile,
    slo_ms: float,
    relative_budget: float,
    cores: int,
    profile_dir: Path,
) -> BenchPlan:
    """The four configurations (module docstring) for `heavy`, the artifacts recaccel may
    select among (`candidates`, plus `heavy`), a profile covering them all, the SLO and the
    accuracy budget. `cores` must be what the servers' `--select` will see (os.cpu_count()).

    Raises:
        ConfigError: the profile misses an artifact or has another baseline, or nothing meets
            the SLO within the budget.
    """
    check_coverage(profile, heavy, candidates)
    pool = [heavy, *(c for c in candidates if c.artifact_id != heavy.artifact_id)]
    by_id = {a.artifact_id: a for a in pool}
    needs = Requirements(slo_ms, profile.serving_batch, relative_budget, cores)
    full = restrict_profile(profile, pool)
    heavy_only = restrict_profile(profile, [heavy])
    chosen = serving_choice(full, needs)
    chosen_artifact = by_id[full.entry(chosen.key).artifact_id]
    heavy_choice = serving_choice(heavy_only, needs)
    # Each in a directory of its own: a served selection (served.json) goes beside it.
    files = {RECACCEL: "recaccel/profile.json", SYSTEM_ONLY: "system-only/profile.json"}
    selected_args = ("--slo-ms", f"{slo_ms:g}", "--accuracy-budget", f"{relative_budget:g}")
    plain = "1 request per batch, no deadlines"
    baseline = profile.baseline_entry.config
    batched = "dynamic batching and admission control"

    def baseline_deployment(name: str, artifact: ArtifactRef, description: str) -> ServerPlan:
        return ServerPlan(
            name,
            description,
            artifact,
            f"{baseline.label()} in 1 process, {plain}",
            (f"{artifact.name}={artifact.path}", *baseline_flags(baseline)),
            dict(BASELINE_ENV),
        )

    def selected_deployment(
        name: str, artifact: ArtifactRef, row: Judgement, what: str
    ) -> ServerPlan:
        argv = ("--profile", str(profile_dir / files[name]), "--select", *selected_args)
        return ServerPlan(name, what, artifact, _runtime(row, batched), argv, {}, row)

    servers = (
        baseline_deployment(
            BASELINE, heavy, f"the baseline FP32 model on {baseline.backend}, one request at a time"
        ),
        baseline_deployment(
            MODEL_ONLY, chosen_artifact, "the selected model on the baseline's deployment"
        ),
        selected_deployment(
            SYSTEM_ONLY,
            heavy,
            heavy_choice,
            "the heavy model on the runtime, batching and workers selected for it",
        ),
        selected_deployment(
            RECACCEL, chosen_artifact, chosen, "the selected model, runtime, batching and workers"
        ),
    )
    return BenchPlan(servers, {files[RECACCEL]: full, files[SYSTEM_ONLY]: heavy_only})


def with_reuse_ablation(plan: BenchPlan, chosen: Candidate, slo_ms: float) -> BenchPlan:
    """`plan` with one more server: recaccel's served choice `chosen` with request-level reuse
    flipped, started with explicit flags (the very executor and layout `--select` applies)."""
    reuse = chosen.config.reuse
    flipped = dataclasses.replace(
        chosen, config=dataclasses.replace(chosen.config, reuse=not reuse)
    )
    ablation = ServerPlan(
        WITHOUT_REUSE if reuse else WITH_REUSE,
        f"recaccel's choice {'without' if reuse else 'with'} request-level reuse "
        "(docs/reuse.md): what reuse changes, same model, runtime and layout",
        plan.server(RECACCEL).artifact,
        f"{flipped.label}, batching and admission",
        (*flipped.serve_args(), "--slo-ms", f"{slo_ms:g}"),
        {},
    )
    return dataclasses.replace(plan, servers=(*plan.servers, ablation))


def with_served(plan: BenchPlan, name: str, chosen: str) -> BenchPlan:
    """`plan` with configuration `name`'s runtime described as the served choice `chosen`
    (a Candidate's label); its command is unchanged: `--select` finds served.json itself."""
    servers = tuple(
        dataclasses.replace(s, runtime=f"{chosen}, chosen by serving, batching and admission")
        if s.name == name
        else s
        for s in plan.servers
    )
    return dataclasses.replace(plan, servers=servers)
