"""Fit a CTR model with early stopping on validation AUC, and predict with it."""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from recaccel.data.dataset import Dataset, Split
from recaccel.errors import ConfigError
from recaccel.train.metrics import Metrics, evaluate

log = logging.getLogger("recaccel.train")


@dataclass(frozen=True)
class TrainConfig:
    # Heavy models on MovieLens-100K peak within a few epochs, then overfit; early stopping
    # on validation AUC, not the epoch cap, decides when to stop.
    max_epochs: int = 20
    # Epochs without a validation-AUC gain before stopping; the best epoch's weights are kept.
    patience: int = 2
    batch_size: int = 512
    learning_rate: float = 1e-3
    # Decoupled (AdamW) weight decay; it also shrinks the embeddings of rare ids toward 0.
    weight_decay: float = 0.0
    seed: int = 0
    eval_batch_size: int = 8192

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train config: {name} must be >= 1")
        if self.max_epochs < 0:
            raise ConfigError("train config: max_epochs must be >= 0 (0 keeps the initial weights)")
        if self.patience < 0 or self.learning_rate <= 0 or self.weight_decay < 0:
            raise ConfigError("train config: patience >= 0, learning_rate > 0, weight_decay >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    validation: Metrics
    seconds: float


@dataclass
class FitResult:
    best_epoch: int  # 0: the starting weights (see `fit`'s score_start)
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0
    # True when `fit`'s deadline, not early stopping or the epoch cap, ended training; the
    # last epoch in `history` may then be partial.
    stopped_at_deadline: bool = False

    @property
    def best(self) -> EpochLog:
        return next(e for e in self.history if e.epoch == self.best_epoch)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


@torch.inference_mode()
def predict(model: nn.Module, split: Split, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities (N,) for every row of `split`, in order."""
    model.eval()
    out = [
        torch.sigmoid(model(*features.as_tuple())).numpy()
        for features, _ in split.batches(batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def train_epoch(
    model: nn.Module,
    split: Split,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    rng: np.random.Generator,
    desc: str = "",
    progress: bool = False,
    *,
    deadline: float | None = None,
) -> float:
    """One pass over `split` in shuffled minibatches; returns the mean training loss.

    With a `deadline` (a `time.monotonic()` value) the pass ends after the batch during which
    it passes: at least one batch always runs, so a late start still makes progress.
    """
    model.train()
    loss_fn = nn.BCEWithLogitsLoss()
    total, seen = 0.0, 0
    batches = split.batches(batch_size, rng)
    steps = -(-len(split) // batch_size)
    # disable=None: a bar on a terminal, none in logs and pipes (where it would be debris).
    bar = tqdm(
        batches,
        total=steps,
        desc=desc,
        disable=None if progress else True,
        leave=False,
        file=sys.stderr,
    )
    for features, labels in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(*features.as_tuple()), labels)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(labels)
        seen += len(labels)
        # Checked per batch, not per epoch: one epoch of a wide model on a real split can take
        # longer than a whole search budget's slack.
        if deadline is not None and time.monotonic() >= deadline:
            break
    bar.close()
    return total / max(seen, 1)


def fit(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    progress: bool = True,
    score_start: bool = False,
    *,
    deadline: float | None = None,
) -> FitResult:
    """Train `model` in place on the train split; keep the weights of the best validation AUC.

    Shuffling and initialisation are seeded from `config.seed`, so a rerun on the same machine
    and thread count gives the same model. With `score_start` (fine-tuning weights that already
    mean something, such as a pruned model), the starting weights are scored as epoch 0 and
    kept if no epoch of training beats them. `max_epochs=0` keeps the initial weights as they
    are: a randomly initialised model for size and speed studies.

    With a `deadline` (a `time.monotonic()` value, e.g. an architecture search's budget),
    training stops after the batch during which it passes; that partial epoch is validated like
    any other, and the best epoch so far is kept. The overrun is one batch and one validation.
    """
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    result = FitResult(best_epoch=0)
    best_auc, best_state = -1.0, copy.deepcopy(model.state_dict())
    started = time.perf_counter()

    def validate() -> Metrics:
        scores = predict(model, dataset.validation, config.eval_batch_size)
        return evaluate(dataset.validation.label, scores)

    if score_start or config.max_epochs == 0:
        start = validate()
        result.history.append(EpochLog(0, float("nan"), start, 0.0))
        best_auc = start.auc
        _report(result.history[0], True, progress)
    for epoch in range(1, config.max_epochs + 1):
        epoch_start = time.perf_counter()
        desc = f"epoch {epoch}/{config.max_epochs}"
        loss = train_epoch(
            model,
            dataset.train,
            optimizer,
            config.batch_size,
            rng,
            desc,
            progress,
            deadline=deadline,
        )
        val = validate()
        entry = EpochLog(epoch, loss, val, time.perf_counter() - epoch_start)
        result.history.append(entry)
        improved = val.auc > best_auc
        if improved:
            best_auc, result.best_epoch = val.auc, epoch
            best_state = copy.deepcopy(model.state_dict())
        _report(entry, improved, progress)
        if epoch - result.best_epoch > config.patience:
            break
        if deadline is not None and time.monotonic() >= deadline:
            result.stopped_at_deadline = True
            log.info("deadline reached in epoch %d; keeping epoch %d", epoch, result.best_epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


def _report(entry: EpochLog, improved: bool, progress: bool) -> None:
    trained = f"epoch {entry.epoch}: train loss {entry.train_loss:.4f}"
    line = (
        f"{trained if entry.epoch else 'before training'}, "
        f"val AUC {entry.validation.auc:.4f}, val logloss {entry.validation.logloss:.4f}"
        f"{' (best)' if improved else ''} [{entry.seconds:.0f}s]"
    )
    log.info(line)
    if progress:
        tqdm.write(line, file=sys.stderr)
