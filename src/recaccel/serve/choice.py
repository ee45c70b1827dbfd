"""What serving chose by measurement: the configurations tried served, and the one to serve.

The measuring is bench/served.py's (`recaccel profile --select --served`); this module holds
what it writes (served.json) and what a server reads from it, so `recaccel serve --select`
serves the served choice without the load generator. Pure data and pure functions:

    todo = candidates(profile, Requirements(...))     # what to try, from the compute profile
    spec, config = apply_served(config, load_served(path))

See bench/served.py's docstring for how candidates are measured and chosen.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recaccel.errors import ConfigError
from recaccel.runtime.executor import BACKENDS, ExecutorConfig
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.runtime.select import Judgement, Requirements, no_choice_error, select
from recaccel.serve.config import (
    IN_PROCESS,
    WORKER_PROCESSES,
    BatchingSection,
    ExecutorSection,
    ServeConfig,
)

SERVED_FILE = "served.json"
SERVED_FORMAT = "recaccel.served/1"
CONFIRM_WITHIN = 0.10  # the choice, measured again, within this of the best QPS tried
# A model is heavy when the largest batch the server may run (`batching.max_rows` rows: a request
# of the workload's tail, or several batched), predicted from its profile, takes more than half
# the SLO on one lane: then a lane per core (query splitting) is tried first, and worker
# processes too.
HEAVY_SHARE_OF_SLO = 0.5


@dataclass(frozen=True)
class Layout:
    """How `recaccel serve` lays out its processes: `processes` fronts, each running `lanes`
    executors in itself (in-process) or `lanes` worker processes (workers)."""

    processes: int
    execution: str = IN_PROCESS
    lanes: int = 1

    def args(self) -> tuple[str, ...]:
        args = ("--processes", str(self.processes), "--execution", self.execution)
        if self.execution == IN_PROCESS:
            return (*args, "--lanes", str(self.lanes))
        return (*args, "--min-workers", str(self.lanes), "--max-workers", str(self.lanes))

    def describe(self) -> str:
        """E.g. "1 front × 2 lanes", "1 front × 2 worker processes"."""
        kind = "lane" if self.execution == IN_PROCESS else "worker process"
        return f"{_count(self.processes, 'front')} × {_count(self.lanes, kind)}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def layouts(cores: int, heavy: bool) -> list[Layout]:
    """The layouts worth trying on `cores` cores (module docstring), most likely first."""
    if cores == 1:
        return [Layout(1)]
    if heavy:  # a long batch on one lane holds up everything behind it: split it first
        split, workers = Layout(1, IN_PROCESS, cores), Layout(1, WORKER_PROCESSES, cores)
        return [split, Layout(1), Layout(cores), workers]
    return [Layout(1), Layout(cores)]


@dataclass(frozen=True)
class Candidate:
    """One configuration to serve: a profiled runtime on a layout."""

    key: str  # the profile entry's key
    artifact: str
    config: ExecutorConfig
    layout: Layout
    estimate_rps: float  # the compute profile's estimate, for the table

    def serve_args(self) -> tuple[str, ...]:
        """`recaccel serve` arguments that serve this configuration (port not included)."""
        c = self.config
        executor: tuple[str, ...] = ("--backend", c.backend, "--precision", c.precision)
        executor += ("--threads", str(c.threads), *(("--reuse",) if c.reuse else ()))
        return (f"{Path(self.artifact).name}={self.artifact}", *executor, *self.layout.args())

    @property
    def label(self) -> str:
        return f"{Path(self.artifact).name} {self.config.label()}, {self.layout.describe()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "artifact": self.artifact,
            "config": dataclasses.asdict(self.config),
            "layout": dataclasses.asdict(self.layout),
            "estimate_rps": self.estimate_rps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(
            data["key"],
            data["artifact"],
            ExecutorConfig(**data["config"]),
            Layout(**data["layout"]),
            float(data["estimate_rps"]),
        )


def _runtimes(table: Sequence[Judgement], profile: Profile, limit: int) -> list[Judgement]:
    """The best eligible row of each (artifact, backend, precision), one thread preferred."""
    chosen: dict[tuple[str, str, str], Judgement] = {}
    for row in table:
        if not row.eligible:
            continue
        entry = profile.entry(row.key)
        group = (entry.artifact_id, row.backend, row.precision)
        if group not in chosen or (chosen[group].threads != 1 and row.threads == 1):
            chosen[group] = row
    ordered = sorted(chosen.values(), key=lambda r: table.index(r))
    return ordered[:limit]


def candidates(
    profile: Profile,
    needs: Requirements,
    max_runtimes: int = 3,
    largest_batch: int = BatchingSection.max_rows,
    reuse: Callable[[ProfileEntry], bool] | None = None,
) -> list[Candidate]:
    """What to try, in order: each of the best runtimes on each of its layouts. A pure
    function of the profile (module docstring); `largest_batch`: the most rows the server
    batches. `reuse`: whether an entry's artifact has a split twin (models/split); for those
    on a backend that runs it, the runtime with reuse on its first layout comes next, so the
    selection measures whether computing the user once pays, on this model, here.
    ConfigError if nothing is eligible."""
    selection = select(profile, needs)
    runtimes = _runtimes(selection.table, profile, max_runtimes)
    if not runtimes:
        raise no_choice_error(selection.table, needs)
    found = []
    for row in runtimes:
        entry = profile.entry(row.key)
        largest = max(entry.points[-1].batch, largest_batch)  # past the profile: extrapolated
        heavy = entry.latency_model().predict_ms(largest) > HEAVY_SHARE_OF_SLO * needs.slo_p99_ms
        config = ExecutorConfig(row.backend, row.device, 1, row.precision)
        tried = layouts(needs.cores, heavy)
        for layout in tried:
            found.append(
                Candidate(row.key, entry.artifact, config, layout, row.requests_per_second)
            )
        split = dataclasses.replace(config, reuse=True)
        spec = BACKENDS.get(split.backend)
        if reuse is not None and reuse(entry) and spec and spec.runs_reuse(split.precision):
            found.append(
                Candidate(row.key, entry.artifact, split, tried[0], row.requests_per_second)
            )
    return found


@dataclass(frozen=True)
class Tried:
    """A candidate as measured served: its highest QPS within the SLO, if any."""

    candidate: Candidate
    max_qps: float | None
    p99_ms: float | None  # at max_qps
    cpu_ms_per_request: float | None  # the server's, at max_qps
    runs: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "candidate": self.candidate.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tried:
        return cls(**{**data, "candidate": Candidate.from_dict(data["candidate"])})


def rank_tried(tried: Tried) -> tuple[float, float]:
    """Sort key, best last: QPS within the SLO, then the lower CPU per request."""
    cpu = tried.cpu_ms_per_request if tried.cpu_ms_per_request is not None else float("inf")
    return (tried.max_qps or 0.0, -cpu)


@dataclass(frozen=True)
class ServedSelection:
    """The served selection's table and choice (module docstring); written as served.json."""

    slo_ms: float
    profile_created_at: str  # the profile it pruned with: serve uses it only with that one
    tried: tuple[Tried, ...]  # best first
    skipped: tuple[Candidate, ...]  # past the time budget, not tried
    confirmed_qps: float | None  # the choice, measured again
    budget_s: float
    spent_s: float
    machine: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    format: str = SERVED_FORMAT

    @property
    def chosen(self) -> Tried | None:
        best = self.tried[0] if self.tried else None
        return best if best is not None and best.max_qps is not None else None

    @property
    def confirmed_share(self) -> float | None:
        """The choice's second measurement over the best QPS tried."""
        if self.chosen is None or self.confirmed_qps is None or not self.chosen.max_qps:
            return None
        return self.confirmed_qps / self.chosen.max_qps

    @property
    def confirmed(self) -> bool:
        share = self.confirmed_share
        return share is not None and share >= 1 - CONFIRM_WITHIN

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created_at": self.created_at,
            "machine": self.machine,
            "slo_ms": self.slo_ms,
            "profile_created_at": self.profile_created_at,
            "budget_s": self.budget_s,
            "spent_s": self.spent_s,
            "chosen": None if self.chosen is None else self.chosen.candidate.to_dict(),
            "confirmed_qps": self.confirmed_qps,
            "confirmed_share": self.confirmed_share,
            "tried": [t.to_dict() for t in self.tried],
            "skipped": [c.to_dict() for c in self.skipped],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServedSelection:
        if data.get("format") != SERVED_FORMAT:
            raise ConfigError(
                f"not a recaccel served selection (format {data.get('format')!r})",
                "make one with `recaccel profile --select --served`",
            )
        return cls(
            slo_ms=float(data["slo_ms"]),
            profile_created_at=str(data["profile_created_at"]),
            tried=tuple(Tried.from_dict(t) for t in data["tried"]),
            skipped=tuple(Candidate.from_dict(c) for c in data["skipped"]),
            confirmed_qps=data["confirmed_qps"],
            budget_s=float(data["budget_s"]),
            spent_s=float(data["spent_s"]),
            machine=dict(data.get("machine", {})),
            created_at=str(data.get("created_at", "")),
        )


def save_served(selection: ServedSelection, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SERVED_FILE
    path.write_text(json.dumps(selection.to_dict(), indent=2) + "\n")
    return path


def load_served(path: Path) -> ServedSelection:
    try:
        return ServedSelection.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConfigError(f"cannot read the served selection {path}: {error}") from None


def served_table(selection: ServedSelection) -> str:
    """The explanation table, in Markdown: every configuration tried, best first."""
    lines = [
        f"Served selection: the most rank requests within p99 <= {selection.slo_ms:g} ms, "
        f"measured served on this machine ({selection.spent_s:.0f} s of a "
        f"{selection.budget_s:.0f} s budget).",
        "",
        "| configuration | compute estimate, req/s | max QPS within SLO | p99 ms there | "
        "server CPU-ms / request | runs | verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for i, t in enumerate(selection.tried):
        verdict = "**selected**" if i == 0 and selection.chosen is not None else ""
        if t.max_qps is None:
            verdict = "misses the SLO at every load tried"
        qps = "none" if t.max_qps is None else f"{t.max_qps:.0f}"
        p99 = "" if t.p99_ms is None else f"{t.p99_ms:.1f}"
        cpu = "" if t.cpu_ms_per_request is None else f"{t.cpu_ms_per_request:.2f}"
        lines.append(
            f"| {t.candidate.label} | {t.candidate.estimate_rps:,.0f} | {qps} | {p99} | {cpu} "
            f"| {t.runs} | {verdict} |"
        )
    for c in selection.skipped:
        lines.append(f"| {c.label} | {c.estimate_rps:,.0f} | | | | 0 | not tried: time budget |")
    if selection.chosen is not None:
        share = selection.confirmed_share
        again = "none" if selection.confirmed_qps is None else f"{selection.confirmed_qps:.0f}"
        held = "within" if selection.confirmed else "NOT within"
        shown = "" if share is None else f" ({share:.0%} of it)"
        lines += [
            "",
            f"The choice measured again: {again} QPS{shown}, {held} "
            f"{CONFIRM_WITHIN:.0%} of the best tried.",
        ]
    return "\n".join(lines) + "\n"


def apply_served(config: ServeConfig, selection: ServedSelection) -> tuple[str, ServeConfig]:
    """Serve the served selection's choice: the artifact spec, and `config` with its executor
    and layout set. ConfigError when it chose nothing."""
    chosen = selection.chosen
    if chosen is None:
        raise ConfigError(
            "the served selection found nothing within the SLO",
            "see its table (served.md), or loosen --slo-ms and select again",
        )
    candidate, layout = chosen.candidate, chosen.candidate.layout
    c = candidate.config
    lanes = layout.lanes if layout.execution == IN_PROCESS else None
    executor = ExecutorSection(
        c.backend, c.device, c.precision, c.threads, reuse=c.reuse, count=lanes
    )
    workers = dataclasses.replace(
        config.workers,
        min=layout.lanes if layout.execution == WORKER_PROCESSES else config.workers.min,
        max=layout.lanes if layout.execution == WORKER_PROCESSES else config.workers.max,
        executors=(executor,),
    )
    plane = dataclasses.replace(
        config.plane, processes=layout.processes, execution=layout.execution
    )
    spec = f"{Path(candidate.artifact).name}={candidate.artifact}"
    return spec, dataclasses.replace(config, workers=workers, plane=plane)


def served_selection_for(
    profile_path: Path, profile: Profile, slo_ms: float
) -> ServedSelection | None:
    """The served selection beside `profile_path` if it was made from this profile for this
    SLO; None when there is none. One made from another profile or SLO is a ConfigError: it
    would serve a choice measured for something else."""
    path = profile_path.parent / SERVED_FILE
    if not path.is_file():
        return None
    selection = load_served(path)
    if selection.profile_created_at != profile.created_at or selection.slo_ms != slo_ms:
        raise ConfigError(
            f"{path} was measured for another profile or SLO (p99 <= {selection.slo_ms:g} ms, "
            f"profile of {selection.profile_created_at})",
            "run `recaccel profile --from PROFILE --select --served` again, or remove it",
        )
    return selection
