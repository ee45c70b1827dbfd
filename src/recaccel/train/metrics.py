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
