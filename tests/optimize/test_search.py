"""Architecture search: the space builds valid students, the budget holds, the front is
non-dominated, `pick` takes the fastest accepted trial, and the outputs are written."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.data.schema import FeatureSchema, Side
from recaccel.errors import ConfigError, RecaccelError
from recaccel.models.registry import build_model
from recaccel.models.split import OneRankRequest, SplitModel
from recaccel.optimize.pareto import SearchResult, TrialRecord, dominates, pareto_front, pick
from recaccel.optimize.search import search
from recaccel.optimize.search_space import SearchSpace, student_from_params, suggest_student
from recaccel.train.metrics import evaluate
from recaccel.train.pipeline import train_models
from recaccel.train.trainer import TrainConfig, predict

ONE_EPOCH = TrainConfig(max_epochs=1, batch_size=128, learning_rate=3e-3)
TINY_SPACE = SearchSpace(embedding_dims=(4, 8), mlp_depth=(1, 2), mlp_widths=(16, 32))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset) -> Artifact:
    out = tmp_path_factory.mktemp("teacher")
    train_models(tiny_dataset, [("dlrm", "small")], out, ONE_EPOCH, False, progress=False)
    return load_artifact(out)


# --- the space ---------------------------------------------------------------------------


def test_every_sampled_student_builds_and_keeps_the_space_rules(tiny_dataset: Dataset) -> None:
    space = SearchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    families = set()
    for _ in range(120):
        name, config = suggest_student(study.ask(), space)
        build_model(name, tiny_dataset.schema, config)
        families.add(name)
        assert config.embedding_dim in space.embedding_dims
        if name == "dlrm":
            mlps = [config.bottom_mlp[:-1], config.top_mlp[:-1]]
        elif name == "tower":  # a request tower, and a head as light as the space says
            mlps = [config.tower_mlp, config.head_mlp]
            assert set(config.head_mlp) <= set(space.head_widths)
            assert space.head_depth[0] <= len(config.head_mlp) <= space.head_depth[1]
        else:
            mlps = [config.deep_mlp]  # every other family's MLP over the embeddings
        for widths in mlps:
            assert list(widths) == sorted(widths, reverse=True)  # never widens
        if name == "dlrm":
            assert config.bottom_mlp[-1] == config.embedding_dim
    assert families == set(space.families)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"model": "dlrm", "embedding_dim": 32, "bottom_depth": 3, "bottom_w0": 16,
             "bottom_w1": 64, "top_depth": 1, "top_w0": 128},
            {"bottom_mlp": (64, 32, 32), "top_mlp": (128, 1)},
        ),
        (
            {"model": "dlrm", "embedding_dim": 8, "bottom_depth": 1, "top_depth": 2,
             "top_w0": 16, "top_w1": 256},
            {"bottom_mlp": (8,), "top_mlp": (256, 16, 1)},
        ),
        (
            {"model": "dcnv2", "embedding_dim": 4, "deep_depth": 1, "deep_w0": 64,
             "cross_layers": 2, "cross_rank": None},
            {"cross_layers": 2, "cross_rank": None, "deep_mlp": (64,)},
        ),
        (
            {"model": "wide_deep", "embedding_dim": 16, "deep_depth": 3, "deep_w0": 16,
             "deep_w1": 256, "deep_w2": 64},
            {"deep_mlp": (256, 64, 16)},
        ),
    ],
)  # fmt: skip
def test_params_decode_to_the_expected_student(
    params: dict[str, object], expected: dict[str, object], tiny_dataset: Dataset
) -> None:
    name, config = student_from_params(params)
    assert name == params["model"]
    for field, value in expected.items():
        assert getattr(config, field) == value
    # A fixed trial with the same params suggests the same student.
    fixed = optuna.trial.FixedTrial({"mixed_dim_alpha": 0.0, **params})
    assert suggest_student(fixed, SearchSpace()) == (name, config)
    build_model(name, tiny_dataset.schema, config)


def test_a_bad_space_is_refused() -> None:
    with pytest.raises(RecaccelError, match="unknown model"):
        SearchSpace(families=("dlrm", "transformer"))
    with pytest.raises(ConfigError, match="mlp_depth"):
        SearchSpace(mlp_depth=(0, 2))
    with pytest.raises(ConfigError, match="mlp_widths"):
        SearchSpace(mlp_widths=())


# --- the front and pick, on hand-written trials -------------------------------------------


def _trial(number: int, auc: float, ratio: float, state: str = "complete") -> TrialRecord:
    done = state == "complete"
    return TrialRecord(
        number,
        state,
        "deepfm",
        {},
        {},
        val_auc=auc if done else None,
        latency_ms=ratio * 2.0 if done else None,
        latency_ratio=ratio if done else None,
    )


TRIALS = (
    _trial(0, 0.800, 0.50),  # front: most accurate
    _trial(1, 0.799, 0.20),  # front
    _trial(2, 0.795, 0.10),  # front: fastest, but 0.6% below the teacher
    _trial(3, 0.790, 0.30),  # dominated by 1
    _trial(4, 0.799, 0.25),  # dominated by 1 (as accurate, slower)
    _trial(5, 0.0, 0.0, state="pruned"),
)


def _result(trials: tuple[TrialRecord, ...]) -> SearchResult:
    return SearchResult(
        trials=trials,
        front=tuple(t.number for t in pareto_front(trials)),
        teacher={"model": "dlrm"},
        teacher_val_auc=0.80,
        teacher_latency_ms=2.0,
        budget_seconds=3.0,
        elapsed_seconds=3.1,
        stop_reason="budget",
        sampler="tpe",
        seed=0,
        serving_batch=100,
        threads=1,
        space=SearchSpace(),
    )


def test_the_front_is_the_non_dominated_trials_fastest_first() -> None:
    assert [t.number for t in pareto_front(TRIALS)] == [2, 1, 0]
    assert dominates(TRIALS[1], TRIALS[3]) and dominates(TRIALS[1], TRIALS[4])
    assert not dominates(TRIALS[0], TRIALS[1]) and not dominates(TRIALS[1], TRIALS[0])


def test_pick_takes_the_fastest_front_trial_the_guard_accepts() -> None:
    result = _result(TRIALS)
    # 0.1% of 0.80 allows down to 0.7992: trial 1 (0.799 < 0.7992) fails, so only trial 0.
    assert pick(result, 0.80, relative_budget=0.001).number == 0
    assert pick(result, 0.80, relative_budget=0.002).number == 1
    assert pick(result, 0.80, relative_budget=0.01).number == 2
    assert pick(result, 0.90, relative_budget=0.001) is None  # nothing near 0.90
    assert pick(_result(()), 0.80) is None


# --- the search itself --------------------------------------------------------------------


def test_search_writes_its_outputs_and_saves_the_front_as_students(
    tmp_path: Path,
    tiny_dataset: Dataset,
    teacher: Artifact,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import recaccel.optimize.search as search_module

    blends = []
    real_blend = search_module.blended_targets

    def counted_blend(*args: Any) -> Any:
        blends.append(args)
        return real_blend(*args)

    monkeypatch.setattr(search_module, "blended_targets", counted_blend)
    result = search(
        teacher, tiny_dataset, tmp_path, 120, n_trials=4, train_config=ONE_EPOCH,
        space=TINY_SPACE, latency_repeats=5, progress=False,
    )  # fmt: skip
    assert len(blends) == 1  # the teacher's soft targets: once, not per trial
    complete = [t for t in result.trials if t.state == "complete"]
    assert len(complete) == 4 and result.stop_reason == "n_trials"
    # Optuna's front is exactly the non-dominated complete trials.
    assert set(result.front) == {t.number for t in pareto_front(result.trials)}
    for t in complete:
        assert t.latency_ratio == pytest.approx(t.latency_ms / t.teacher_latency_ms)
    assert json.loads((tmp_path / "search.json").read_text()) == json.loads(
        json.dumps(result.to_dict())
    )
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    caption, table = (tmp_path / "pareto.md").read_text().split("\n\n")
    assert caption.startswith("Latency: model compute on torch-eager, 1 thread(s), 100 rows")
    assert table.count("\n") == 3 + len(result.front)  # header, rule, teacher, one per trial
    for trial in result.front_trials:
        student = load_artifact(Path(trial.artifact))
        assert student.manifest.parent == teacher.manifest.artifact_id
        assert [s.op for s in student.manifest.lineage] == ["train", "distill"]
        val = evaluate(
            tiny_dataset.validation.label, predict(student.model, tiny_dataset.validation)
        )
        assert val.auc == pytest.approx(trial.val_auc)
    assert all(t.artifact is None for t in result.trials if t.number not in result.front)


def test_search_returns_within_its_budget(
    tmp_path: Path, tiny_dataset: Dataset, teacher: Artifact
) -> None:
    # Training alone would run for minutes: only the deadline passed into `fit` stops it.
    endless = TrainConfig(max_epochs=5000, patience=5000, batch_size=128, learning_rate=3e-3)
    budget = 3.0
    started = time.monotonic()
    result = search(
        teacher, tiny_dataset, tmp_path, budget, train_config=endless, space=TINY_SPACE,
        latency_repeats=5, progress=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    # Generous: the last trial's validation and timing, saving the front, a loaded machine.
    assert elapsed < budget + 6, elapsed
    assert result.stop_reason == "budget"
    assert result.trials[-1].stopped_at_deadline


def test_a_re_proposed_student_is_skipped_not_retrained(
    tmp_path: Path, tiny_dataset: Dataset, teacher: Artifact
) -> None:
    one_student = SearchSpace(
        families=("wide_deep",),
        embedding_dims=(4,),
        mlp_depth=(1, 1),
        mlp_widths=(16,),
        mixed_dim_alphas=(0.0,),
    )
    result = search(
        teacher, tiny_dataset, tmp_path, 120, train_config=ONE_EPOCH, space=one_student,
        latency_repeats=5, progress=False,
    )  # fmt: skip
    assert result.stop_reason == "space exhausted"
    assert [t.state for t in result.trials[:2]] == ["complete", "pruned"]
    assert {t.duplicate_of for t in result.trials[1:]} == {0}


def test_a_mixed_dimension_student_shrinks_its_big_tables(tiny_dataset: Dataset) -> None:
    params = {"model": "deepfm", "embedding_dim": 16, "deep_depth": 1, "deep_w0": 32}
    _, uniform = student_from_params(params)
    _, mixed = student_from_params({**params, "mixed_dim_alpha": 0.5})
    assert mixed.mixed_dim_alpha == 0.5 and uniform.mixed_dim_alpha == 0.0
    widths = build_model("deepfm", tiny_dataset.schema, mixed).sparse_arch.dims
    assert max(widths) == 16 and min(widths) < 16  # the largest table is the narrowest


def test_a_search_with_reuse_times_each_student_on_a_median_and_a_large_rank_request(
    tmp_path: Path,
    tiny_dataset: Dataset,
    teacher: Artifact,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its twin on one rank request of the serving batch and one of 10× as many rows, the
    teacher unsplit on the same rows; the objective is the two requests' time over the
    teacher's, and the record says how the student's cost grew with the rows."""
    import recaccel.optimize.search_trial as trial_module

    timed: list[tuple[dict[str, Any], dict[str, Any]]] = []
    real_measure = trial_module.measure_runs

    def recorded(runs: dict[str, Any], *args: Any) -> Any:
        stats = real_measure(runs, *args)
        timed.append((dict(runs), stats))
        return stats

    monkeypatch.setattr(trial_module, "measure_runs", recorded)
    result = search(
        teacher, tiny_dataset, tmp_path, 120, n_trials=2, train_config=ONE_EPOCH,
        space=TINY_SPACE, latency_repeats=5, progress=False, reuse=True, serving_batch=20,
    )  # fmt: skip
    assert result.reuse and json.loads((tmp_path / "search.json").read_text())["reuse"]
    for runs, _ in timed:  # both sizes in the same rounds, one measurement per trial
        rows = {name: len(batch) for name, (_, batch) in runs.items()}
        assert rows == {"teacher": 20, "student": 20, "teacher-large": 200, "student-large": 200}
        student = runs["student"][0]
        assert isinstance(student, OneRankRequest) and isinstance(student.twin, SplitModel)
        assert runs["student-large"][0] is student
        assert runs["teacher"][0] is teacher.model  # the teacher as it serves without reuse
    complete = [r for r in result.trials if r.state == "complete"]
    assert len(timed) == len(complete)
    for record, (_, stats) in zip(complete, timed, strict=True):
        s, t = (stats[k].median_ms for k in ("student", "teacher"))
        big_s, big_t = (stats[k].median_ms for k in ("student-large", "teacher-large"))
        assert record.large_latency_ms == big_s and record.scaling == pytest.approx(big_s / s)
        assert record.latency_ratio == pytest.approx((s + big_s) / (t + big_t))
    assert "10× rows / 1×" in (tmp_path / "pareto.md").read_text()


def test_a_search_with_reuse_needs_request_side_features(
    tmp_path: Path, tiny_dataset: Dataset, teacher: Artifact
) -> None:
    flat = FeatureSchema(
        tuple(dataclasses.replace(f, side=Side.CANDIDATE) for f in tiny_dataset.schema.features),
        tiny_dataset.schema.label,
        tiny_dataset.schema.name,
    )
    with pytest.raises(ConfigError, match="marks no feature request-side"):
        search(
            teacher, dataclasses.replace(tiny_dataset, schema=flat), tmp_path, 60,
            train_config=ONE_EPOCH, space=TINY_SPACE, progress=False, reuse=True,
        )  # fmt: skip
