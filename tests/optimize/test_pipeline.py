"""Recipe runs: the guard rejects a planted destructive step, re-tunes, and every attempt and
the report land on disk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from recaccel.artifact import Artifact, LineageStep, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.machine import describe_machine
from recaccel.models.quant.embedding import quantize_embeddings
from recaccel.optimize import recipe as recipe_module
from recaccel.optimize import steps
from recaccel.optimize.pipeline import run_recipe
from recaccel.optimize.quantize import save_transformed
from recaccel.optimize.recipe import parse_recipe
from recaccel.optimize.report import REPORT_JSON, REPORT_MARKDOWN, build_report
from recaccel.optimize.steps import Candidate, StepContext
from recaccel.train.trainer import TrainConfig

FAST = TrainConfig(max_epochs=1, batch_size=128, learning_rate=3e-3)


def _scramble(ctx: StepContext, parent: Artifact, params: dict[str, Any], out: Path) -> Candidate:
    """A planted step: INT8 tables (smaller), then noise of strength params["noise"] added to
    every float weight (0: the tables' rounding is the only change)."""
    model, _ = quantize_embeddings(load_artifact(parent.path).model, 8, inplace=True)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(torch.randn(weight.shape, generator=generator) * params["noise"])
    transform = {"op": "quantize_embeddings", "bits": 8}
    step = LineageStep("scramble", params)
    manifest, validation, test = save_transformed(parent, model, ctx.dataset, out, transform, step)
    return Candidate(out, manifest, validation, test)


@pytest.fixture
def teacher(train_tiny: Callable[[str, str, Path], Artifact], tmp_path: Path) -> Artifact:
    return train_tiny("dlrm", "base", tmp_path / "teacher")


def _plant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(steps.STEP_RUNNERS, "scramble", _scramble)
    monkeypatch.setitem(recipe_module.STEP_PARAMETERS, "scramble", frozenset({"noise"}))


def test_the_guard_rejects_a_step_planted_to_destroy_accuracy(
    tiny_dataset: Dataset, teacher: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant(monkeypatch)
    recipe = parse_recipe({"step": [{"op": "scramble", "noise": 1.0}]}, "planted")
    run = run_recipe(teacher.path, tiny_dataset, recipe, tmp_path / "out", FAST, progress=False)
    (outcome,) = run.steps
    assert outcome.decision == "rejected"
    (attempt,) = outcome.attempts
    assert attempt.accuracy is not None and not attempt.accuracy.accepted
    assert attempt.candidate is not None and attempt.candidate.path.is_dir()  # kept on disk
    assert "< floor" in attempt.reason
    assert run.final == teacher.path  # the chain goes on from the original


def test_a_rejected_attempt_is_re_tuned_by_the_next_one(
    tiny_dataset: Dataset, teacher: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant(monkeypatch)
    recipe = parse_recipe(
        {
            # 1% absorbs INT8 rounding on a 120-row validation split; a slowdown bound this
            # loose leaves size alone to decide the cost check, so no timing sways the test.
            "guard": {"relative_budget": 0.01, "max_slowdown": 1000},
            "step": [{"op": "scramble", "attempts": [{"noise": 1.0}, {"noise": 0.0}]}],
        },
        "retune",
    )
    run = run_recipe(teacher.path, tiny_dataset, recipe, tmp_path / "out", FAST, progress=False)
    (outcome,) = run.steps
    assert [a.accepted for a in outcome.attempts] == [False, True]
    assert outcome.decision == "re-tuned"
    final = load_artifact(run.final)
    assert final.path == tmp_path / "out" / "01-scramble-2"
    assert final.manifest.parent == teacher.manifest.artifact_id
    assert [s.op for s in final.manifest.lineage] == ["train", "scramble"]


def test_a_recipe_run_writes_every_variant_and_a_report(
    tiny_dataset: Dataset, teacher: Artifact, tmp_path: Path
) -> None:
    recipe = parse_recipe(
        {
            # The tiny teacher is barely trained, so allow any loss: this is about the plumbing.
            "guard": {"relative_budget": 0.99, "max_slowdown": 1000},
            "measure": {"repeats": 5},
            "step": [
                {"op": "distill", "student": "deepfm", "preset": "small"},
                {"op": "quantize_embeddings", "attempts": [{"bits": 4}, {"bits": 8}]},
            ],
        },
        "small",
    )
    out = tmp_path / "out"
    run = run_recipe(teacher.path, tiny_dataset, recipe, out, FAST, progress=False)
    assert [s.decision for s in run.steps] == ["accepted", "accepted"]
    report = build_report(run, tiny_dataset)
    report.write(out)
    assert [v.name for v in report.variants] == [
        "original",
        "01-distill",
        "02-quantize_embeddings-1",
    ]
    student, quantized = report.variants[1:]
    assert quantized.weights_bytes < student.weights_bytes < report.variants[0].weights_bytes
    assert quantized.delta_vs_original is not None
    assert quantized.delta_vs_original.low <= quantized.delta_vs_original.delta
    data = json.loads((out / REPORT_JSON).read_text())
    assert data["final"] == str(out / "02-quantize_embeddings-1")
    assert {"latency_batch1", "latency_serving", "throughput_rows_per_second"} <= set(
        data["variants"][0]
    )
    markdown = (out / REPORT_MARKDOWN).read_text()
    assert "| original |" in markdown
    # The machine as every report states it (recaccel.machine), with the threads measured on.
    machine = data["machine"]
    assert machine == {**describe_machine(), "threads": recipe.measure.threads}
    assert f"{machine['threads']} thread(s) measured, torch {torch.__version__}" in markdown


def test_a_search_step_hands_on_the_fastest_accepted_student(
    tiny_dataset: Dataset, teacher: Artifact, tmp_path: Path
) -> None:
    recipe = parse_recipe(
        {
            "guard": {"relative_budget": 0.99, "max_slowdown": 1000},
            "measure": {"repeats": 3},
            "step": [{"op": "search", "budget_seconds": 4, "n_trials": 2, "max_epochs": 1}],
        },
        "search",
    )
    run = run_recipe(teacher.path, tiny_dataset, recipe, tmp_path / "out", FAST, progress=False)
    (outcome,) = run.steps
    (attempt,) = outcome.attempts
    assert attempt.candidate is not None, attempt.reason
    assert attempt.candidate.path.parent == tmp_path / "out" / "01-search" / "students"
    assert (tmp_path / "out" / "01-search" / "pareto.png").is_file()
    student = load_artifact(attempt.candidate.path)
    assert student.manifest.parent == teacher.manifest.artifact_id
