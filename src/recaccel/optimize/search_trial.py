"""One trial of the architecture search: suggest a student, distill it, time it, score it.

`TrialRunner` is the Optuna objective. It also keeps the search's state between trials: the
students already trained (a re-proposed one is pruned, not trained twice) and the trained
models still on the Pareto front (saved as artifacts once the search ends; the rest are
dropped as soon as they leave the front, so memory stays bounded).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from torch import nn
from tqdm import tqdm

from recaccel.data.dataset import Dataset, FeatureBatch
from recaccel.models.registry import ModelConfig, build_model, config_to_dict
from recaccel.optimize.latency import Scorer, measure_runs
from recaccel.optimize.pareto import TrialRecord
from recaccel.optimize.search_space import SearchSpace, student_from_params, suggest_student
from recaccel.optimize.trial_timing import ModelTimer, eager_scorer
from recaccel.train.trainer import TrainConfig, fit, seed_everything

log = logging.getLogger("recaccel.search")

# Timed calls of each scorer per trial: fewer than a benchmark's 200, because every trial pays
# them inside the budget; the median of 50 interleaved calls keeps a ratio within a few percent.
TRIAL_LATENCY_REPEATS = 50
TRIAL_LATENCY_WARMUP = 5
# Consecutive trials that only re-propose trained students before the search stops: by then
# the space, or the sampler's belief about it, is exhausted.
MAX_DUPLICATES_IN_A_ROW = 20
# With reuse, a student is also timed on one rank request this many times the serving batch:
# the bench's workload sends a median of 100 candidates and a p99 of about 1,000, and what
# reuse changes is how a request's cost grows with its candidates.
LARGE_REQUEST_FACTOR = 10


@dataclass
class TrialRunner:
    """Distill, time and score one student per trial; remember configs and the front's models."""

    teacher: Scorer  # the teacher as it is, on the timer's runtime
    soft: Dataset  # the training split's labels already blended with the teacher's scores
    space: SearchSpace
    config: TrainConfig
    batch: FeatureBatch  # the rows latency is timed on, at the serving batch size
    deadline: float  # time.monotonic() at which training stops
    repeats: int = TRIAL_LATENCY_REPEATS
    threads: int = 1
    progress: bool = True
    # Time each student as it would serve with request-level reuse (models/split): its split
    # twin on one rank request of the batch's rows, against the teacher as it is.
    reuse: bool = False
    # With reuse: rows of one large rank request (LARGE_REQUEST_FACTOR × the batch), timed
    # too; the latency objective is then a median request plus a large one, over the teacher's.
    large_batch: FeatureBatch | None = None
    # What a student is timed as (optimize/trial_timing.py): PyTorch eager unless told.
    timer: ModelTimer = eager_scorer
    seen: dict[tuple[str, ModelConfig], int] = field(default_factory=dict)  # -> first trial
    duplicates_in_a_row: int = 0
    exhausted: bool = False  # stopped because only duplicates came
    models: dict[int, nn.Module] = field(default_factory=dict)  # trained, on the current front

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        started = time.monotonic()
        name, config = suggest_student(trial, self.space)
        first = self.seen.setdefault((name, config), trial.number)
        if first != trial.number:
            self.duplicates_in_a_row += 1
            trial.set_user_attr("duplicate_of", first)
            raise optuna.TrialPruned(f"same student as trial {first}")
        self.duplicates_in_a_row = 0
        # Every student starts from the same seed, so trials differ by architecture, not luck.
        seed_everything(self.config.seed)
        model = build_model(name, self.soft.schema, config)
        fitted = fit(model, self.soft, self.config, progress=False, deadline=self.deadline)
        timed = self.timer(model, self.soft.schema, self.reuse, self.threads)
        medians = self._medians(timed)
        student_ms, teacher_ms = medians["student"], medians["teacher"]
        val_auc, ratio = fitted.best.validation.auc, student_ms / teacher_ms
        attrs: dict[str, Any] = {}
        if self.large_batch is not None:
            large_ms, teacher_large_ms = medians["student-large"], medians["teacher-large"]
            ratio = (student_ms + large_ms) / (teacher_ms + teacher_large_ms)
            attrs |= {"large_latency_ms": large_ms, "scaling": large_ms / student_ms}
        attrs |= {
            "latency_ms": student_ms,
            "teacher_latency_ms": teacher_ms,
            "seconds": time.monotonic() - started,
            "best_epoch": fitted.best_epoch,
            "epochs_run": len(fitted.history),
            "stopped_at_deadline": fitted.stopped_at_deadline,
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        self.models[trial.number] = model
        self._report(trial.number, name, val_auc, student_ms, ratio, attrs)
        return val_auc, ratio

    def _medians(self, student: Scorer) -> dict[str, float]:
        """Median ms of "student" and "teacher" on the batch and, with a large batch,
        "student-large" and "teacher-large" on it: all four in the same rounds."""
        runs = {"teacher": (self.teacher, self.batch), "student": (student, self.batch)}
        if self.large_batch is not None:
            runs |= {
                "teacher-large": (self.teacher, self.large_batch),
                "student-large": (student, self.large_batch),
            }
        stats = measure_runs(runs, self.repeats, TRIAL_LATENCY_WARMUP, self.threads)
        return {name: s.median_ms for name, s in stats.items()}

    def after_trial(self, study: optuna.Study, _trial: FrozenTrial) -> None:
        """Drop the models that left the front; stop once only duplicates come."""
        front = {t.number for t in study.best_trials}
        self.models = {n: m for n, m in self.models.items() if n in front}
        if self.duplicates_in_a_row >= MAX_DUPLICATES_IN_A_ROW:
            self.exhausted = True
            study.stop()

    def _report(
        self, number: int, name: str, auc: float, ms: float, ratio: float, attrs: dict[str, Any]
    ) -> None:
        cut = ", cut at the deadline" if attrs["stopped_at_deadline"] else ""
        large = f", {attrs['scaling']:.2f}× at 10× rows" if "scaling" in attrs else ""
        line = (
            f"trial {number}: {name} val AUC {auc:.4f}, {ms:.3f} ms{large} = {ratio:.3f}× teacher "
            f"[{attrs['seconds']:.1f}s, {attrs['epochs_run']} epochs{cut}]"
        )
        log.info(line)
        if self.progress:
            tqdm.write(line, file=sys.stderr)


def record_from_trial(trial: FrozenTrial) -> TrialRecord:
    """A finished Optuna trial as a record; the student is rebuilt from its params."""
    name, config = student_from_params(trial.params)
    attrs = trial.user_attrs
    values = trial.values if trial.state == TrialState.COMPLETE else None
    return TrialRecord(
        number=trial.number,
        state=trial.state.name.lower(),
        model=name,
        config=config_to_dict(config),
        params=dict(trial.params),
        val_auc=values[0] if values else None,
        latency_ms=attrs.get("latency_ms"),
        teacher_latency_ms=attrs.get("teacher_latency_ms"),
        latency_ratio=values[1] if values else None,
        large_latency_ms=attrs.get("large_latency_ms"),
        scaling=attrs.get("scaling"),
        seconds=attrs.get("seconds", 0.0),
        best_epoch=attrs.get("best_epoch"),
        epochs_run=attrs.get("epochs_run"),
        stopped_at_deadline=attrs.get("stopped_at_deadline", False),
        duplicate_of=attrs.get("duplicate_of"),
    )
