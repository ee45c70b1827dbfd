"""Training: seeded, early-stopped on validation AUC, evaluated with scikit-learn."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recaccel.data.dataset import Dataset
from recaccel.models.registry import build_model, preset_config
from recaccel.train.metrics import evaluate
from recaccel.train.trainer import TrainConfig, fit, predict, seed_everything


def _fit(dataset: Dataset, **overrides: object) -> tuple[torch.nn.Module, object]:
    config = TrainConfig(**{"max_epochs": 4, "batch_size": 128, "learning_rate": 3e-3, **overrides})  # type: ignore[arg-type]
    seed_everything(config.seed)
    model = build_model("deepfm", dataset.schema, preset_config("deepfm", "small"))
    return model, fit(model, dataset, config, progress=False)


def test_training_learns_the_signal(tiny_dataset: Dataset) -> None:
    model, result = _fit(tiny_dataset, max_epochs=8, patience=8)
    assert result.history[0].train_loss > result.history[-1].train_loss
    assert (
        evaluate(tiny_dataset.validation.label, predict(model, tiny_dataset.validation)).auc > 0.6
    )


def test_same_seed_gives_the_same_model(tiny_dataset: Dataset) -> None:
    first, _ = _fit(tiny_dataset)
    second, _ = _fit(tiny_dataset)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_keeps_the_best_validation_epoch_and_stops_after_patience(tiny_dataset: Dataset) -> None:
    model, result = _fit(tiny_dataset, max_epochs=30, patience=1, learning_rate=3e-2)
    aucs = [e.validation.auc for e in result.history]
    assert result.best_epoch == int(np.argmax(aucs)) + 1
    assert len(result.history) <= result.best_epoch + 2  # stopped, not run to 30 epochs
    restored = evaluate(tiny_dataset.validation.label, predict(model, tiny_dataset.validation))
    assert restored.auc == pytest.approx(max(aucs))


def test_metrics_are_scikit_learns() -> None:
    labels = np.array([0, 1, 1, 0, 1], dtype=np.float32)
    probs = np.array([0.1, 0.8, 0.4, 0.3, 0.9])
    metrics = evaluate(labels, probs)
    assert metrics.auc == pytest.approx(roc_auc_score(labels, probs))
    assert metrics.logloss == pytest.approx(log_loss(labels, probs))
    assert metrics.rows == 5


def test_logloss_stays_finite_for_certain_misses() -> None:
    assert np.isfinite(evaluate(np.array([0.0, 1.0]), np.array([1.0, 0.0])).logloss)


def test_paired_bootstrap_separates_a_better_scorer_and_not_an_equal_one() -> None:
    from recaccel.train.metrics import paired_bootstrap_auc_delta

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000).astype(np.float32)
    signal = labels + rng.normal(scale=1.0, size=2000)
    better = signal + rng.normal(scale=0.2, size=2000)
    worse = signal + rng.normal(scale=2.0, size=2000)
    strong = paired_bootstrap_auc_delta(labels, better, worse, resamples=200)
    assert strong.delta == pytest.approx(
        roc_auc_score(labels, better) - roc_auc_score(labels, worse)
    )
    assert 0 < strong.low <= strong.delta <= strong.high
    same = paired_bootstrap_auc_delta(labels, better, better, resamples=50)
    assert same.delta == same.low == same.high == 0.0


def test_fine_tuning_keeps_the_starting_weights_when_training_only_hurts(
    tiny_dataset: Dataset,
) -> None:
    model, _ = _fit(tiny_dataset, max_epochs=6, patience=6)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    # A learning rate this large wrecks the model on the first step.
    result = fit(
        model,
        tiny_dataset,
        TrainConfig(max_epochs=2, patience=2, learning_rate=50.0),
        progress=False,
        score_start=True,
    )
    assert result.history[0].epoch == 0 and result.best_epoch == 0
    assert result.best.validation.auc == max(e.validation.auc for e in result.history)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=0, msg=name)


def test_vectorised_auc_matches_scikit_learn_including_ties() -> None:
    from recaccel.train.metrics import auc_per_row

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (5, 300)).astype(np.float64)
    scores = np.round(rng.random((5, 300)), 1)  # coarse scores: many ties
    expected = [roc_auc_score(labels[i], scores[i]) for i in range(5)]
    np.testing.assert_allclose(auc_per_row(labels, scores), expected, rtol=1e-12)


def test_a_passed_deadline_stops_after_one_batch_and_keeps_that_model(
    tiny_dataset: Dataset,
) -> None:
    seed_everything(0)
    model = build_model("deepfm", tiny_dataset.schema, preset_config("deepfm", "small"))
    training_calls = []
    model.register_forward_hook(
        lambda m, _args, _out: training_calls.append(1) if m.training else None
    )
    config = TrainConfig(max_epochs=50, patience=50, batch_size=16)
    result = fit(model, tiny_dataset, config, progress=False, deadline=time.monotonic() - 1)
    assert result.stopped_at_deadline
    assert len(training_calls) == 1  # checked between batches: one batch, not an epoch
    assert [e.epoch for e in result.history] == [1] and result.best_epoch == 1
    restored = evaluate(tiny_dataset.validation.label, predict(model, tiny_dataset.validation))
    assert restored.auc == pytest.approx(result.best.validation.auc)


def test_a_distant_deadline_changes_nothing(tiny_dataset: Dataset) -> None:
    config = TrainConfig(max_epochs=4, batch_size=128, learning_rate=3e-3)
    aucs = []
    for deadline in (None, time.monotonic() + 3600):
        seed_everything(0)
        model = build_model("deepfm", tiny_dataset.schema, preset_config("deepfm", "small"))
        result = fit(model, tiny_dataset, config, progress=False, deadline=deadline)
        assert not result.stopped_at_deadline
        aucs.append([e.validation.auc for e in result.history])
    assert aucs[0] == aucs[1]


def test_zero_epochs_keeps_the_initial_weights(tiny_dataset: Dataset) -> None:
    torch.manual_seed(0)
    model = build_model("dlrm", tiny_dataset.schema, preset_config("dlrm", "small"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, tiny_dataset, TrainConfig(max_epochs=0), progress=False)
    assert result.best_epoch == 0 and [e.epoch for e in result.history] == [0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
