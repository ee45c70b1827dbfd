"""The worked example (examples/bring_your_own_model) on small data: a model trained by a plain
PyTorch script, imported three ways, scored on the dataset, optimized where it can be."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from redis_process import RedisProcess
from starlette.testclient import TestClient

from recaccel.artifact import load_artifact
from recaccel.cli import main
from recaccel.data.dataset import Dataset, example_batch
from recaccel.optimize.pipeline import run_recipe
from recaccel.optimize.recipe import parse_recipe
from recaccel.serve.config import RankSection, load_serve_config
from recaccel.serve.features import FeatureStore
from recaccel.serve.redis_source import RedisSource
from recaccel.serve.server import build_app
from recaccel.serve.table_source import TableSource
from recaccel.train.imports import import_artifact
from recaccel.train.trainer import TrainConfig

EXAMPLE = Path(__file__).parents[2] / "examples" / "bring_your_own_model"


@pytest.fixture(scope="module")
def exported(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.py's output on the tiny dataset: state.pt, model.pt2, model.onnx, schema.toml."""
    sys.path.insert(0, str(EXAMPLE))
    from train import train  # type: ignore[import-not-found]

    out = tmp_path_factory.mktemp("my-ranker")
    init = train(tiny_dataset, out, epochs=1)
    (out / "init.json").write_text(json.dumps(init))
    return out


@pytest.fixture(scope="module")
def imported(
    exported: Path, tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imported")
    init = json.loads((exported / "init.json").read_text())
    sources = {
        "onnx": (str(exported / "model.onnx"), {}),
        "pt2": (str(exported / "model.pt2"), {}),
        "class": ("my_ranker:MyRanker", {"weights": exported / "state.pt", "init": init}),
    }
    return {
        form: import_artifact(
            source,
            exported / "schema.toml",
            root / form,
            dataset=tiny_dataset,
            **kwargs,  # type: ignore[arg-type]
        ).path
        for form, (source, kwargs) in sources.items()
    }


def test_the_three_imports_of_the_users_model_score_alike_and_carry_its_auc(
    imported: dict[str, Path],
) -> None:
    artifacts = {form: load_artifact(path) for form, path in imported.items()}
    batch = example_batch(artifacts["class"].schema, 64, seed=2)
    with torch.no_grad():
        scores = {form: a.model(*batch.as_tuple()) for form, a in artifacts.items()}
    torch.testing.assert_close(scores["onnx"], scores["class"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores["pt2"], scores["class"], atol=1e-5, rtol=1e-5)
    aucs = {form: a.manifest.metrics["test"]["auc"] for form, a in artifacts.items()}
    assert aucs["onnx"] == pytest.approx(aucs["class"], abs=1e-6)
    assert aucs["pt2"] == pytest.approx(aucs["class"], abs=1e-6)


def _recipe(steps: str) -> object:
    import tomllib

    return parse_recipe(tomllib.loads(steps), "test")


def test_an_imported_model_distils_into_a_zoo_student_and_refuses_pruning_as_not_applicable(
    imported: dict[str, Path], tiny_dataset: Dataset, tmp_path: Path
) -> None:
    recipe = _recipe(
        """
        [guard]
        relative_budget = 0.99
        [[step]]
        op = "prune"
        attempts = [{ keep_fraction = 0.5 }]
        [[step]]
        op = "distill"
        student = "deepfm"
        attempts = [{ preset = "small", max_epochs = 1 }]
        """
    )
    run = run_recipe(
        imported["onnx"],
        tiny_dataset,
        recipe,  # type: ignore[arg-type]
        tmp_path,
        TrainConfig(max_epochs=1),
        progress=False,
    )
    prune, distill = run.steps
    (refused,) = prune.attempts
    assert refused.candidate is None
    assert refused.reason.startswith("not applicable") and "imported" in refused.reason
    (student,) = distill.attempts
    assert student.candidate is not None
    child = load_artifact(student.candidate.path)
    assert child.manifest.model == "deepfm"
    assert child.manifest.parent == load_artifact(imported["onnx"]).manifest.artifact_id


@pytest.mark.parametrize(("form", "applies"), [("class", True), ("pt2", False)])
def test_table_quantization_applies_to_an_imported_class_and_not_to_an_exported_program(
    imported: dict[str, Path], tiny_dataset: Dataset, tmp_path: Path, form: str, applies: bool
) -> None:
    recipe = _recipe(
        """
        [guard]
        relative_budget = 0.99
        [[step]]
        op = "quantize_embeddings"
        attempts = [{ bits = 8 }]
        """
    )
    run = run_recipe(
        imported[form],
        tiny_dataset,
        recipe,  # type: ignore[arg-type]
        tmp_path,
        TrainConfig(max_epochs=1),
        progress=False,
    )
    (attempt,) = run.steps[0].attempts
    if not applies:
        assert attempt.candidate is None and attempt.reason.startswith("not applicable")
        return
    assert attempt.candidate is not None, attempt.reason
    child = load_artifact(attempt.candidate.path)  # the transform replays on the user's class
    parent = load_artifact(imported[form])
    assert child.imported and child.manifest.transforms
    assert child.manifest.weights_bytes < parent.manifest.weights_bytes
    batch = example_batch(parent.schema, 64, seed=3)
    with torch.no_grad():  # INT8 rows: the logits move by rounding, not by a changed model
        torch.testing.assert_close(
            child.model(*batch.as_tuple()), parent.model(*batch.as_tuple()), atol=0.05, rtol=0
        )


def test_the_examples_feature_tables_serve_the_imported_models_rows(
    exported: Path, imported: dict[str, Path], tiny_dataset: Dataset
) -> None:
    artifact = load_artifact(imported["onnx"])
    source = TableSource.from_files(
        artifact.schema, exported / "users.parquet", exported / "items.parquet"
    )
    store = FeatureStore.from_dataset(tiny_dataset)
    assert tiny_dataset.encoding is not None
    user = int(tiny_dataset.encoding.users.ids[0])
    got, _ = source.rows(user, store.catalogue[:7].tolist())
    want, _ = store.rows(user, store.catalogue[:7].tolist())
    for ours, theirs in zip(got.as_tuple(), want.as_tuple(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_the_examples_tables_pushed_to_redis_serve_the_same_rows(
    exported: Path, imported: dict[str, Path], tiny_dataset: Dataset, redis_server: RedisProcess
) -> None:
    tables = [
        "--users",
        str(exported / "users.parquet"),
        "--items",
        str(exported / "items.parquet"),
    ]
    assert (
        main(["features", "push", str(imported["onnx"]), *tables, "--redis", redis_server.url]) == 0
    )
    artifact = load_artifact(imported["onnx"])
    source = RedisSource(artifact.schema, RankSection(redis=redis_server.url))
    store = FeatureStore.from_dataset(tiny_dataset)
    assert tiny_dataset.encoding is not None
    np.testing.assert_array_equal(source.catalogue, store.catalogue)
    for user in tiny_dataset.encoding.users.ids[:3].tolist():
        candidates = store.catalogue[user : user + 9].tolist()
        got, _ = asyncio.run(source.fetch(user, candidates))
        want, _ = store.rows(user, candidates)
        for ours, theirs in zip(got.as_tuple(), want.as_tuple(), strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_the_example_serves_and_ranks_over_http_from_its_tables_and_from_redis(
    exported: Path, imported: dict[str, Path], tiny_dataset: Dataset, redis_server: RedisProcess
) -> None:
    """What the example's README runs with `recaccel serve` and curl, in process: the ONNX
    import served from users.parquet and items.parquet, then from Redis; both rankings are the
    model's own scores of the dataset's rows."""
    users, items = exported / "users.parquet", exported / "items.parquet"
    artifact = load_artifact(imported["onnx"])
    push = ["features", "push", str(imported["onnx"]), "--users", str(users)]
    assert main([*push, "--items", str(items), "--redis", redis_server.url]) == 0
    config = load_serve_config(None, {"workers": {"executors": [{"backend": "onnxruntime"}]}})
    sources = {
        "tables": TableSource.from_files(artifact.schema, users, items),
        "redis": RedisSource(artifact.schema, RankSection(redis=redis_server.url)),
    }
    store = FeatureStore.from_dataset(tiny_dataset)
    assert tiny_dataset.encoding is not None
    user = int(tiny_dataset.encoding.users.ids[1])
    candidates = store.catalogue[:12].tolist()
    rows, _ = store.rows(user, candidates)
    with torch.no_grad():
        logits = artifact.model(*(torch.from_numpy(a) for a in rows.as_tuple()))
    expected = dict(zip(candidates, torch.sigmoid(logits).tolist(), strict=True))
    best_first = sorted(expected, key=lambda item: -expected[item])
    for name, source in sources.items():
        app = build_app({"mine": imported["onnx"]}, config, features=source)
        with TestClient(app) as client:
            answer = client.post("/v1/rank", json={"user_id": user, "candidates": candidates})
            assert answer.status_code == 200, (name, answer.text)
            ranked = answer.json()["items"]
            assert [i["item_id"] for i in ranked] == best_first[:10], name
            for item in ranked:
                assert item["score"] == pytest.approx(expected[item["item_id"]], abs=1e-5)
            unknown = client.post("/v1/rank", json={"user_id": user, "candidates": [10**9]})
            assert unknown.status_code == 404, name
