"""Automatic selection: the configuration that serves the most rank requests within an SLO.

A pure decision on a measured `Profile`. The user states what they need:

    choice = select(profile, Requirements(slo_p99_ms=50, candidates=100, relative_budget=0.001))

and every measured configuration is judged on two things, in this order:

1. **Accuracy.** Its validation AUC — computed from its own scores — must be at least
   (1 − budget) × the baseline's (the first artifact in PyTorch eager FP32), the same rule the
   optimizer's guard applies (optimize/guard.py).
2. **Latency and throughput.** A worker merges requests of N candidates into batches of k·N
   rows. A request may arrive just as a batch starts, wait for it, then run in the next one,
   so its worst case is two batch times: the largest k with 2 × p99(k·N) ≤ SLO, and k·N no
   more than the largest batch measured, is what the worker can batch (k = 0: even one
   request alone cannot meet the SLO). Its throughput is
   k / median(k·N) requests per second, and the machine runs ⌊cores / threads⌋ such workers
   (serving scales by processes; see executor.py on threads).

The winner has the highest estimated requests per second; ties go to the lower p99 of one
request — with one exception: a precision below FP32 (bf16, fp16, int8) must beat the best
eligible FP32 configuration's estimate by 25% (`LOWER_PRECISION_MARGIN`), or the FP32 one is
selected. A short profile on a shared machine is noisy (three runs of the bench's reduced
profile put one configuration at 21,674, 22,859 and 31,985 requests/s), and a near tie is no
reason to give up precision: once, such a tie selected torch-compile bf16, which then served
72 QPS within the SLO where FP32 served 207 in the next run of the same bench. The
throughput figure is a model built from single-executor measurements: it assumes
workers on separate cores do not slow each other, which shared caches and memory bandwidth
make optimistic. The serving benchmark measures the real figure; this picks the candidate.

`serving_choice(profile, needs)` is the selected row, or a ConfigError saying why each
configuration was judged out: what `recaccel serve --select`, the Ray deployment and the
bench's plan serve from a profile, so all three choose alike.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from recaccel.defaults import DEFAULT_CANDIDATES, DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS
from recaccel.errors import ConfigError
from recaccel.optimize.guard import judge
from recaccel.runtime.executor import BACKENDS
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.runtime.profiler import installed_backends

FULL_PRECISION = "fp32"
# A lower precision is selected only if its estimate beats the best FP32 one's by this factor.
LOWER_PRECISION_MARGIN = 1.25
NO_CHOICE_HINT = (
    "loosen --slo-ms or --accuracy-budget, or profile faster configurations "
    "(`recaccel profile --from PROFILE --select` shows the whole table)"
)


@dataclass(frozen=True)
class Requirements:
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    candidates: int = DEFAULT_CANDIDATES  # rows of one rank request
    relative_budget: float = DEFAULT_RELATIVE_BUDGET
    cores: int = 1  # CPU cores the workers may use

    def __post_init__(self) -> None:
        if self.slo_p99_ms <= 0:
            raise ConfigError(f"SLO {self.slo_p99_ms} ms must be positive")
        if self.candidates < 1:
            raise ConfigError(f"a request has at least one candidate, not {self.candidates}")
        if self.cores < 1:
            raise ConfigError(f"cores must be >= 1, not {self.cores}")


@dataclass(frozen=True)
class Judgement:
    """One row of the explanation table."""

    key: str
    model: str
    backend: str
    device: str
    precision: str
    threads: int
    validation_auc: float | None
    auc_change: float | None  # relative to the baseline; negative = a loss
    request_p99_ms: float | None  # one request of N rows, alone
    requests_per_batch: int  # k: the most requests a batch may merge within the SLO
    workers: int
    requests_per_second: float  # estimated for the whole machine
    eligible: bool
    verdict: str  # "selected", or why it was not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    requirements: Requirements
    baseline: str
    baseline_auc: float
    selected: Judgement | None  # None: nothing meets both the SLO and the accuracy budget
    table: tuple[Judgement, ...]  # every configuration, best first
    # The selected configuration against the baseline model in PyTorch eager FP32, both at
    # the serving batch (N rows) on the selected configuration's thread count.
    speedup_median: float | None
    speedup_p99: float | None
    compared_with: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requirements": asdict(self.requirements),
            "baseline": self.baseline,
            "baseline_auc": self.baseline_auc,
            "selected": None if self.selected is None else self.selected.to_dict(),
            "speedup_over_eager_fp32": {
                "median": self.speedup_median,
                "p99": self.speedup_p99,
                "compared_with": self.compared_with,
                "rows": self.requirements.candidates,
            },
            "table": [j.to_dict() for j in self.table],
        }


def _judgement(entry: ProfileEntry, verdict: str, **measured: Any) -> Judgement:
    """A table row for `entry`; `measured` fills the latency and throughput columns."""
    config = entry.config
    row: dict[str, Any] = {
        "auc_change": None,
        "request_p99_ms": None,
        "requests_per_batch": 0,
        "workers": 0,
        "requests_per_second": 0.0,
        "eligible": False,
        **measured,
    }
    return Judgement(
        key=entry.key,
        model=entry.model,
        backend=config.backend,
        device=config.device,
        precision=config.precision,
        threads=config.threads,
        validation_auc=entry.validation_auc,
        verdict=verdict,
        **row,
    )


def judge_entry(entry: ProfileEntry, baseline_auc: float, needs: Requirements) -> Judgement:
    """How `entry` fares against `needs` (see the module docstring); a pure function."""
    if not entry.ok:
        return _judgement(entry, f"{entry.status}: {entry.reason}")
    if entry.validation_auc is None:
        return _judgement(entry, "no validation AUC measured")
    config, latency = entry.config, entry.latency_model()
    accuracy = judge(baseline_auc, entry.validation_auc, needs.relative_budget)
    n = needs.candidates
    # Batches no larger than the profile measured: past it the model only extrapolates.
    largest = max(entry.points[-1].batch, n)
    per_batch = min(latency.max_rows_within(needs.slo_p99_ms / 2), largest) // n
    workers = max(1, needs.cores // config.threads)
    per_second = (
        workers * per_batch / (latency.predict_ms(per_batch * n, "median") / 1e3)
        if per_batch
        else 0.0
    )
    request_p99 = latency.predict_ms(n)
    if not accuracy.accepted:
        verdict = f"over the accuracy budget: {accuracy.reason}"
    elif per_batch == 0:
        verdict = (
            f"misses the SLO: 2 × p99 of one {n}-row request = {2 * request_p99:.2f} ms "
            f"> {needs.slo_p99_ms:g} ms"
        )
    else:
        verdict = "eligible"
    return _judgement(
        entry,
        verdict,
        auc_change=entry.validation_auc / baseline_auc - 1,
        request_p99_ms=request_p99,
        requests_per_batch=per_batch,
        workers=workers,
        requests_per_second=per_second,
        eligible=accuracy.accepted and per_batch > 0,
    )


def _rank(judgement: Judgement) -> tuple[bool, float, float]:
    p99 = judgement.request_p99_ms if judgement.request_p99_ms is not None else float("inf")
    return (judgement.eligible, judgement.requests_per_second, -p99)


def _prefer_full_precision(ranked: list[Judgement]) -> Judgement | None:
    """The best of `ranked` (best first), unless it is below FP32 and the best eligible FP32
    configuration comes within `LOWER_PRECISION_MARGIN` of it (module docstring)."""
    eligible = [j for j in ranked if j.eligible]
    if not eligible:
        return None
    best = eligible[0]
    full = next((j for j in eligible if j.precision == FULL_PRECISION), None)
    if full is None or best.precision == FULL_PRECISION:
        return best
    if best.requests_per_second < LOWER_PRECISION_MARGIN * full.requests_per_second:
        return full
    return best


def _eager_fp32_of_baseline(profile: Profile, threads: int) -> ProfileEntry | None:
    base = profile.baseline_entry
    matches = [
        e
        for e in profile.entries
        if e.ok
        and e.artifact_id == base.artifact_id
        and e.config.backend == "torch-eager"
        and e.config.precision == "fp32"
        and e.config.device == "cpu"
    ]
    same_threads = [e for e in matches if e.config.threads == threads]
    found = same_threads or matches
    return found[0] if found else None


def _not_installed(entry: ProfileEntry) -> Judgement:
    spec = BACKENDS.get(entry.config.backend)
    hint = f" ({spec.install})" if spec is not None else ""
    return _judgement(entry, f"{entry.config.backend} is not installed here{hint}")


def select(
    profile: Profile, needs: Requirements, installed: Collection[str] | None = None
) -> Selection:
    """Judge every configuration in `profile` and pick the best eligible one.

    `installed`: the backends this machine can load (default: `installed_backends()`). A
    profile measured elsewhere may hold others (openvino, an extra); they are judged "not
    installed here" rather than selected and then refused at load.
    """
    installed = installed_backends() if installed is None else installed
    baseline = profile.baseline_entry
    if not baseline.ok or baseline.validation_auc is None:
        raise ConfigError(
            f"the baseline {baseline.key} was not measured ({baseline.status}: {baseline.reason})",
            "profile with the torch-eager backend on the first artifact",
        )
    table = sorted(
        (
            judge_entry(e, baseline.validation_auc, needs)
            if e.config.backend in installed
            else _not_installed(e)
            for e in profile.entries
        ),
        key=_rank,
        reverse=True,
    )
    best = _prefer_full_precision(table)
    if best is not None:
        index = table.index(best)
        if index > 0:  # the faster-looking lower precision ranked first; say why it lost
            table[0] = replace(
                table[0],
                verdict=f"eligible, but less than {LOWER_PRECISION_MARGIN:g}× the best "
                f"{FULL_PRECISION} estimate: {FULL_PRECISION} kept",
            )
        best = replace(best, verdict="selected")
        table = [best, *table[:index], *table[index + 1 :]]
    speedup_median = speedup_p99 = None
    compared_with = None
    if best is not None:
        reference = _eager_fp32_of_baseline(profile, best.threads)
        chosen = profile.entry(best.key).latency_model()
        if reference is not None:
            base_model = reference.latency_model()
            n = needs.candidates
            speedup_median = base_model.predict_ms(n, "median") / chosen.predict_ms(n, "median")
            speedup_p99 = base_model.predict_ms(n) / chosen.predict_ms(n)
            compared_with = reference.key
    return Selection(
        needs,
        baseline.key,
        baseline.validation_auc,
        best,
        tuple(table),
        speedup_median,
        speedup_p99,
        compared_with,
    )


def serving_choice(
    profile: Profile, needs: Requirements, artifact_id: str | None = None
) -> Judgement:
    """The profile's row to serve for `needs`: what `recaccel serve --select` serves, what the
    Ray deployment runs its replicas on and what the bench's plan predicts they serve.

    Args:
        artifact_id: serve this artifact, on the best of its own configurations by the same
            rule (what `select` picks from a profile of that artifact alone); None: any.

    Raises:
        ConfigError: nothing qualifies; the message names the SLO, the request's candidates,
            the accuracy budget and why each configuration considered was judged out.
    """
    selection = select(profile, needs)
    if artifact_id is None:
        considered, chosen = list(selection.table), selection.selected
    else:
        considered = sorted(
            (r for r in selection.table if profile.entry(r.key).artifact_id == artifact_id),
            key=_rank,
            reverse=True,
        )
        chosen = _prefer_full_precision(considered)
    if chosen is None:
        raise no_choice_error(considered, needs, artifact_id)
    return replace(chosen, verdict="selected")


def no_choice_error(
    considered: Sequence[Judgement], needs: Requirements, artifact_id: str | None = None
) -> ConfigError:
    """The refusal when none of `considered` (rows of one `Selection`) can serve `needs`:
    every configuration with its verdict, so the user sees what to loosen without another
    command."""
    scope = "in the profile" if artifact_id is None else f"of artifact {artifact_id[:8]}"
    reasons = "".join(f"\n  {row.key}: {row.verdict}" for row in considered)
    return ConfigError(
        f"no configuration {scope} meets p99 <= {needs.slo_p99_ms:g} ms for "
        f"{needs.candidates} candidates within the accuracy budget "
        f"({needs.relative_budget:.2%} of the baseline's AUC); "
        + (f"each was judged out:{reasons}" if considered else "the profile measured none"),
        NO_CHOICE_HINT,
    )
