"""Ranking quality: AUC and logloss, computed by scikit-learn."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
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
    deltas: list[float] = []
    while len(deltas) < resamples:
        rows = rng.integers(0, n, n)
        sample = labels[rows]
        if sample.min() == sample.max():  # AUC needs both classes
            continue
        deltas.append(
            roc_auc_score(sample, candidate[rows]) - roc_auc_score(sample, reference[rows])
        )
    low, high = np.percentile(deltas, [2.5, 97.5])
    point = roc_auc_score(labels, candidate) - roc_auc_score(labels, reference)
    return AucDelta(float(point), float(low), float(high), resamples)
