"""The search's timers on ONNX Runtime: they run the graph the student serves as (its split twin
with reuse), the search uses the one its step names, and a name its caller did not give fails
before anything is trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from recaccel.artifact import Artifact
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.models.registry import build_model, preset_config
from recaccel.models.split import OneRankRequest, from_model
from recaccel.optimize.latency import sample_rows
from recaccel.optimize.pipeline import run_recipe
from recaccel.optimize.recipe import parse_recipe
from recaccel.optimize.search import search
from recaccel.optimize.search_space import SearchSpace
from recaccel.runtime.trial_timing import SEARCH_TIMERS, OnnxScorer, onnx_scorer
from recaccel.train.trainer import TrainConfig

ONE_EPOCH = TrainConfig(max_epochs=1, batch_size=128, learning_rate=3e-3)
TINY_SPACE = SearchSpace(
    families=("deepfm", "tower"), embedding_dims=(4,), mlp_depth=(1, 1), mlp_widths=(16,)
)


def test_the_onnx_timer_runs_the_model_and_with_reuse_its_twin(tiny_dataset: Dataset) -> None:
    schema = tiny_dataset.schema
    torch.manual_seed(0)
    model = build_model("tower", schema, preset_config("tower", "small")).eval()
    rows = sample_rows(tiny_dataset.validation, 64, seed=3).as_tuple()
    with torch.inference_mode():
        unsplit = model(*rows).numpy()
        as_one_request = OneRankRequest(from_model(model, schema))(*rows).numpy()
    plain = onnx_scorer(model, schema, False, 1)
    np.testing.assert_allclose(plain(*rows).numpy(), unsplit, atol=1e-5)
    split = onnx_scorer(model, schema, True, 1)
    assert isinstance(split, OnnxScorer) and split.one_request
    np.testing.assert_allclose(split(*rows).numpy(), as_one_request, atol=1e-5)
    # The rows hold several users: scored as one request (the first row's), they differ.
    assert not np.allclose(as_one_request, unsplit, atol=1e-4)


def test_a_search_times_teacher_and_students_on_the_backend_it_names(
    tmp_path: Path,
    tiny_dataset: Dataset,
    trained: dict[str, Artifact],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import recaccel.optimize.search_trial as trial_module

    timed: list[dict[str, Any]] = []
    real_measure = trial_module.measure_runs

    def recorded(runs: dict[str, Any], *args: Any) -> Any:
        timed.append({name: scorer for name, (scorer, _) in runs.items()})
        return real_measure(runs, *args)

    monkeypatch.setattr(trial_module, "measure_runs", recorded)
    result = search(
        trained["dlrm"], tiny_dataset, tmp_path, 120, n_trials=1, train_config=ONE_EPOCH,
        space=TINY_SPACE, latency_repeats=3, progress=False, reuse=True, serving_batch=20,
        latency_backend="onnxruntime", timers=SEARCH_TIMERS,
    )  # fmt: skip
    (scorers,) = timed  # one trial: the serving batch and 10× as many rows, timed together
    for size in ("", "-large"):
        student, teacher_scorer = scorers[f"student{size}"], scorers[f"teacher{size}"]
        assert isinstance(student, OnnxScorer) and student.one_request
        assert isinstance(teacher_scorer, OnnxScorer) and not teacher_scorer.one_request
    assert result.latency_backend == "onnxruntime"
    assert json.loads((tmp_path / "search.json").read_text())["latency_backend"] == "onnxruntime"
    assert "on onnxruntime" in (tmp_path / "pareto.md").read_text()


def test_a_latency_backend_the_caller_did_not_give_fails_before_training(
    tmp_path: Path, tiny_dataset: Dataset
) -> None:
    recipe = parse_recipe(
        {"step": [{"op": "search", "reuse": True, "latency_backend": "onnxruntime"}]}, "t"
    )
    # The artifact path does not exist: the refusal comes before anything is loaded.
    with pytest.raises(ConfigError, match="'onnxruntime' is not one this search can time on"):
        run_recipe(tmp_path / "absent", tiny_dataset, recipe, tmp_path / "out", ONE_EPOCH)
    with pytest.raises(ConfigError, match="'tensorrt'"):
        run_recipe(
            tmp_path / "absent",
            tiny_dataset,
            parse_recipe({"step": [{"op": "search", "latency_backend": "tensorrt"}]}, "t"),
            tmp_path / "out",
            ONE_EPOCH,
            timers=SEARCH_TIMERS,
        )
