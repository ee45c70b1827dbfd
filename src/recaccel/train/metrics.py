"""Ranking quality: AUC and logloss, computed by scikit-learn."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import log_loss, roc_auc_score

# Clip probabilities away from 0 and 1 so one confident miss cannot make logloss infinite.
PROBABILITY_EPS = 1e-7


@dataclass(frozen=True)
class Metrics:
    auc: float
    logloss: float
    rows: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> Metrics:
    """AUC and logloss of predicted click probabilities against 0/1 labels."""
    p = np.clip(probabilities.astype(np.float64), PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return Metrics(
        auc=float(roc_auc_score(labels, p)),
        logloss=float(log_loss(labels, p, labels=[0, 1])),
        rows=len(labels),
    )


@dataclass(frozen=True)
class AucDelta:
    """AUC(candidate) − AUC(reference) on the same rows, with a 95% bootstrap interval."""

    delta: float
    low: float
    high: float
    resamples: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.delta:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


# Resamples scored at once: bounds the (chunk, N) rank matrices to ~80 MB at N = 10k rows.
BOOTSTRAP_CHUNK = 100


def auc_per_row(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of (R, N) labels and scores, by the Mann–Whitney rank formula.

    Written out because the bootstrap needs thousands of AUCs: scikit-learn's `roc_auc_score`
    spends milliseconds a call validating its input, which made a 1,000-resample interval cost
    seconds per model; ranking all resamples in one call is the same statistic (ties get
    average ranks, as in scikit-learn), and a test checks the two agree.
    """
    ranks = rankdata(scores, axis=1)  # (R, N), ties averaged
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    rank_sum = (ranks * labels).sum(axis=1)
    auc: np.ndarray = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return auc


def paired_bootstrap_auc_delta(
    labels: np.ndarray,
    candidate: np.ndarray,
    reference: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
) -> AucDelta:
    """ΔAUC between two scorers of the same rows, with a paired percentile bootstrap 95% CI.

    Each resample draws rows with replacement and scores *both* models on the same draw, so the
    interval reflects the difference between the models, not the noise of the test set that
    they share (a MovieLens-100K test AUC alone has a standard error near 0.005).
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    deltas: list[np.ndarray] = []
    drawn = 0
    while drawn < resamples:
        rows = rng.integers(0, n, (min(BOOTSTRAP_CHUNK, resamples - drawn), n))
        sample = labels[rows]
        both_classes = sample.min(axis=1) != sample.max(axis=1)  # AUC needs both
        rows, sample = rows[both_classes], sample[both_classes]
        deltas.append(auc_per_row(sample, candidate[rows]) - auc_per_row(sample, reference[rows]))
        drawn += len(rows)
    low, high = np.percentile(np.concatenate(deltas)[:resamples], [2.5, 97.5])
    point = roc_auc_score(labels, candidate) - roc_auc_score(labels, reference)
    return AucDelta(float(point), float(low), float(high), resamples)
