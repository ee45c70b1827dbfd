"""A search's result: trials as records, the accuracy/latency Pareto front, `pick`, and the
table and plot of the front.

A trial is scored on two objectives: validation AUC (higher is better) and latency relative to
the teacher timed in the same rounds (lower is better). One trial dominates another when it is
no worse on both and better on one; the Pareto front is the trials nothing dominates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from recaccel.defaults import DEFAULT_RELATIVE_BUDGET
from recaccel.optimize.guard import judge
from recaccel.optimize.search_space import SearchSpace


@dataclass(frozen=True)
class TrialRecord:
    """One search trial. Metrics are None unless `state` is "complete"."""

    number: int
    state: str  # "complete", "pruned" (a config already trained), "fail", "running"
    model: str
    config: dict[str, Any]
    params: dict[str, Any]
    val_auc: float | None = None
    latency_ms: float | None = None  # student's median at the serving batch
    teacher_latency_ms: float | None = None  # teacher's median in the same rounds
    latency_ratio: float | None = None  # student / teacher: the latency objective
    # With reuse: the student on one request of 10× the serving batch, and that over
    # latency_ms (how its cost grows with candidates; ~10 for a model without reuse).
    large_latency_ms: float | None = None
    scaling: float | None = None
    seconds: float = 0.0  # training and measuring this trial
    best_epoch: int | None = None
    epochs_run: int | None = None  # the last one partial when stopped_at_deadline
    stopped_at_deadline: bool = False
    duplicate_of: int | None = None
    artifact: str | None = None  # where the student was saved (Pareto-front trials)

    @property
    def objectives(self) -> tuple[float, float]:
        """(validation AUC, latency ratio) of a complete trial."""
        if self.val_auc is None or self.latency_ratio is None:
            raise ValueError(f"trial {self.number} ({self.state}) has no objective values")
        return self.val_auc, self.latency_ratio

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dominates(a: TrialRecord, b: TrialRecord) -> bool:
    """Whether `a` is at least as accurate and as fast as `b`, and strictly better in one.

    >>> fast = TrialRecord(0, "complete", "m", {}, {}, val_auc=0.78, latency_ratio=0.1)
    >>> slow = TrialRecord(1, "complete", "m", {}, {}, val_auc=0.78, latency_ratio=0.3)
    >>> dominates(fast, slow), dominates(slow, fast), dominates(fast, fast)
    (True, False, False)
    """
    (auc_a, ratio_a), (auc_b, ratio_b) = a.objectives, b.objectives
    return auc_a >= auc_b and ratio_a <= ratio_b and (auc_a > auc_b or ratio_a < ratio_b)


def pareto_front(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The complete trials no other complete trial dominates, fastest first."""
    complete = [t for t in trials if t.state == "complete"]
    front = [t for t in complete if not any(dominates(o, t) for o in complete)]
    return sorted(front, key=lambda t: (t.objectives[1], -t.objectives[0]))


@dataclass(frozen=True)
class SearchResult:
    trials: tuple[TrialRecord, ...]
    # Trial numbers on the Pareto front (Optuna's best_trials), fastest first.
    front: tuple[int, ...]
    teacher: dict[str, Any]  # artifact id, model, path
    teacher_val_auc: float
    teacher_latency_ms: float | None  # median of the teacher's per-trial medians
    budget_seconds: float
    elapsed_seconds: float
    stop_reason: str  # "budget", "n_trials" or "space exhausted"
    sampler: str
    seed: int
    serving_batch: int
    threads: int
    space: SearchSpace
    reuse: bool = False  # students timed with request-level reuse (their split twin)
    latency_backend: str = "torch-eager"  # the runtime every latency was timed on

    @property
    def front_trials(self) -> list[TrialRecord]:
        by_number = {t.number: t for t in self.trials}
        return [by_number[n] for n in self.front]

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher": {
                **self.teacher,
                "val_auc": self.teacher_val_auc,
                "latency_ms": self.teacher_latency_ms,
            },
            "budget_seconds": self.budget_seconds,
            "elapsed_seconds": round(self.elapsed_seconds, 2),
            "stop_reason": self.stop_reason,
            "sampler": self.sampler,
            "seed": self.seed,
            "serving_batch": self.serving_batch,
            "threads": self.threads,
            "reuse": self.reuse,
            "latency_backend": self.latency_backend,
            "space": self.space.to_dict(),
            "front": list(self.front),
            "trials": [t.to_dict() for t in self.trials],
        }

    def markdown(self) -> str:
        timed = (
            f"Latency: model compute on {self.latency_backend}, {self.threads} thread(s), "
            f"{self.serving_batch} rows"
            + (", each student as its split twin on one rank request (reuse)" if self.reuse else "")
            + ".\n\n"
        )
        return timed + front_table(self.front_trials, self.teacher_val_auc, self.teacher_latency_ms)


def pick(
    result: SearchResult,
    original_val_auc: float,
    relative_budget: float = DEFAULT_RELATIVE_BUDGET,
) -> TrialRecord | None:
    """The fastest Pareto-front trial whose validation AUC the accuracy guard accepts.

    (No faster accepted trial can lie off the front: whatever dominates it is as fast and as
    accurate, so also accepted.) None when the guard rejects the whole front.
    """
    accepted = [
        t
        for t in result.front_trials
        if judge(original_val_auc, t.objectives[0], relative_budget).accepted
    ]
    return min(accepted, key=lambda t: (t.objectives[1], -t.objectives[0]), default=None)


def _describe(config: dict[str, Any]) -> str:
    """A config in a table cell: its sized fields, MLPs as 64-32."""
    parts = []
    for key, value in config.items():
        if key in ("dropout", "dropped_fields", "embedding_dims"):
            continue  # the search never sets these; they stay at their defaults
        if key == "mixed_dim_alpha" and not value:
            continue
        shown = "-".join(map(str, value)) if isinstance(value, list | tuple) else value
        parts.append(f"{key.removesuffix('_mlp')} {shown}")
    return ", ".join(parts)


def front_table(
    front: Sequence[TrialRecord], teacher_val_auc: float, teacher_latency_ms: float | None
) -> str:
    """The Pareto front as a markdown table, fastest first."""
    teacher_ms = f"{teacher_latency_ms:.3f}" if teacher_latency_ms is not None else "—"
    large = any(t.scaling is not None for t in front)  # timed at 10× too (reuse)
    extra = (" ms at 10× rows | 10× rows / 1× |", "---:|---:|", " | |") if large else ("",) * 3
    lines = [
        f"| trial | model | architecture | val AUC | Δ val AUC vs teacher | latency ms |"
        f"{extra[0]} × teacher | artifact |",
        f"|---:|---|---|---:|---:|---:|{extra[1]}---:|---|",
        f"| teacher | | | {teacher_val_auc:.4f} | | {teacher_ms} |{extra[2]} 1.000 | |",
    ]
    for t in front:
        auc, ratio = t.objectives
        cells = (
            f" {t.large_latency_ms:.3f} | {t.scaling:.2f} |"
            if t.large_latency_ms is not None and t.scaling is not None
            else (" | |" if large else "")
        )
        lines.append(
            f"| {t.number} | {t.model} | {_describe(t.config)} | {auc:.4f} "
            f"| {auc - teacher_val_auc:+.4f} | {t.latency_ms:.3f} |{cells} {ratio:.3f} "
            f"| {t.artifact or ''} |"
        )
    return "\n".join(lines) + "\n"


def plot_front(
    trials: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    teacher_val_auc: float,
    path: Path,
    title: str = "",
    relative_budget: float = DEFAULT_RELATIVE_BUDGET,
) -> None:
    """Validation AUC against latency (× teacher) of every complete trial, as a PNG.

    The front is drawn as a staircase, the teacher as a star at 1×, and the accuracy guard's
    floor as a dashed line, so the trials a recipe could accept are the front above it.
    """
    # A bare Figure renders with the Agg canvas: no pyplot, no global backend state.
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    complete = [t for t in trials if t.state == "complete"]
    for model in sorted({t.model for t in complete}):
        points = [t.objectives for t in complete if t.model == model]
        ax.scatter([p[1] for p in points], [p[0] for p in points], alpha=0.5, label=model)
    if front:
        ax.step(
            [t.objectives[1] for t in front],
            [t.objectives[0] for t in front],
            where="post",
            color="black",
            marker="o",
            markerfacecolor="none",
            label="Pareto front",
        )
    ax.scatter([1.0], [teacher_val_auc], marker="*", s=200, color="red", label="teacher")
    floor = teacher_val_auc * (1 - relative_budget)
    ax.axhline(floor, color="gray", linestyle="--", label=f"guard floor (−{relative_budget:.1%})")
    ax.set_xscale("log")
    ax.set_xlabel("model-compute latency / teacher's (same rounds)")
    ax.set_ylabel("validation AUC")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def write_outputs(result: SearchResult, out: Path) -> None:
    """`search.json`, `pareto.md` (the front) and `pareto.png` (every trial) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    title = (
        f"{len(result.trials)} trials; teacher {result.teacher['model']} "
        f"{result.teacher_latency_ms or float('nan'):.2f} ms at batch {result.serving_batch} "
        f"on {result.latency_backend}" + ("; students with reuse" if result.reuse else "")
    )
    plot_front(
        result.trials, result.front_trials, result.teacher_val_auc, out / "pareto.png", title
    )
    (out / "pareto.md").write_text(result.markdown())
    (out / "search.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
