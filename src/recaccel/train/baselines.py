"""Reference points every model's AUC is read against: item popularity and logistic regression.

Both are fitted on the training split and tuned on the validation split, the same rows the deep
models see, so a deep model that cannot beat them has learned nothing worth its cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from recaccel.data.dataset import Dataset, Split
from recaccel.train.metrics import Metrics, evaluate

# Regularisation strengths tried for logistic regression, chosen by validation AUC.
LOGREG_C_GRID = (0.1, 0.3, 1.0, 3.0)
# Pseudo-counts for the smoothed popularity prior, chosen by validation AUC.
POPULARITY_PRIOR_GRID = (0.3, 1.0, 5.0, 20.0, 50.0)


@dataclass(frozen=True)
class BaselineResult:
    name: str
    setting: str  # the hyperparameter the validation split chose
    validation: Metrics
    test: Metrics
    test_scores: np.ndarray  # (N_test,) so models can be compared with it row by row


def item_popularity(dataset: Dataset, item_field: str = "item_id") -> BaselineResult:
    """Score = the item's smoothed training like-rate: (likes + m·p̄) / (ratings + m)."""
    column = [f.name for f in dataset.schema.categorical].index(item_field)
    cardinality = dataset.schema[item_field].cardinality
    train_items = dataset.train.categorical[:, column]
    likes = np.bincount(train_items, weights=dataset.train.label, minlength=cardinality)
    counts = np.bincount(train_items, minlength=cardinality)
    prior = float(dataset.train.label.mean())

    def scores(split: Split, m: float) -> np.ndarray:
        rate = (likes + m * prior) / (counts + m)
        scored: np.ndarray = rate[split.categorical[:, column]]
        return scored

    best = max(
        POPULARITY_PRIOR_GRID,
        key=lambda m: evaluate(dataset.validation.label, scores(dataset.validation, m)).auc,
    )
    test_scores = scores(dataset.test, best)
    return BaselineResult(
        "popularity",
        f"prior pseudo-count {best:g}",
        evaluate(dataset.validation.label, scores(dataset.validation, best)),
        evaluate(dataset.test.label, test_scores),
        test_scores,
    )


def one_hot(split: Split, dataset: Dataset) -> sp.csr_matrix:
    """Dense features as they are, every categorical id and multi-hot id as a one-hot column."""
    blocks: list[sp.spmatrix] = [sp.csr_matrix(split.dense)]
    n = len(split)
    for i, feature in enumerate(dataset.schema.categorical):
        ids = split.categorical[:, i]
        blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), ids)), (n, feature.cardinality)))
    for i, feature in enumerate(dataset.schema.multi_hot):
        bag = split.multi_hot[:, i, :]
        rows, slots = np.nonzero(bag)
        blocks.append(
            sp.csr_matrix((np.ones(len(rows)), (rows, bag[rows, slots])), (n, feature.cardinality))
        )
    return sp.hstack(blocks, format="csr")


def logistic_regression(dataset: Dataset, seed: int = 0) -> BaselineResult:
    """L2 logistic regression over one-hot ids and dense features (scikit-learn)."""
    x_train, x_val, x_test = (
        one_hot(s, dataset) for s in (dataset.train, dataset.validation, dataset.test)
    )
    fitted = {
        c: LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(
            x_train, dataset.train.label
        )
        for c in LOGREG_C_GRID
    }
    val = {
        c: evaluate(dataset.validation.label, m.predict_proba(x_val)[:, 1])
        for c, m in fitted.items()
    }
    best = max(val, key=lambda c: val[c].auc)
    test_scores = fitted[best].predict_proba(x_test)[:, 1]
    return BaselineResult(
        "logistic_regression",
        f"C={best:g}",
        val[best],
        evaluate(dataset.test.label, test_scores),
        test_scores,
    )
