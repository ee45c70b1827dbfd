"""`recaccel import`: a model trained elsewhere scores, after import, as it did before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from user_models import SCHEMA, UserModel, reference_logits

from recaccel.artifact import load_artifact
from recaccel.cli import main
from recaccel.data.dataset import Dataset, example_batch
from recaccel.deploy.triton import read_model_config, write_triton_model
from recaccel.deploy.triton_plan import TritonOptions
from recaccel.errors import ConfigError
from recaccel.imported.model import import_model
from recaccel.runtime.executor import ExecutorConfig, ExecutorError, load_executor
from recaccel.runtime.export import onnx_session
from recaccel.serve.config import ServeConfig
from recaccel.train.imports import import_artifact
from recaccel.train.metrics import evaluate
from recaccel.train.trainer import predict

FORMS = ("onnx", "pt2", "class")


def _import(user: UserModel, form: str, out: Path) -> Path:
    source, kwargs = user.source(form)
    return import_artifact(source, user.schema, out, **kwargs).path  # type: ignore[arg-type]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_scores_after_import_and_reload_as_the_users_model(
    user_model: UserModel, form: str, tmp_path: Path
) -> None:
    artifact = load_artifact(_import(user_model, form, tmp_path / form))
    batch = example_batch(artifact.schema, 33, seed=5)
    with torch.no_grad():
        got = artifact.model(*batch.as_tuple())
    expected = reference_logits(user_model.module, *batch.as_tuple())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert artifact.imported
    assert [f.name for f in artifact.schema.features if f.side == "request"] == ["user_id", "age"]


@pytest.mark.parametrize("form", FORMS)
def test_onnx_runtime_serves_every_form_with_the_binding_inside_the_graph(
    user_model: UserModel, form: str, tmp_path: Path
) -> None:
    """The ONNX form runs the binding as graph nodes: no Python between rows and model."""
    artifact = load_artifact(_import(user_model, form, tmp_path / form))
    batch = example_batch(artifact.schema, 17, seed=6)
    expected = torch.sigmoid(reference_logits(user_model.module, *batch.as_tuple())).numpy()
    with load_executor(artifact, ExecutorConfig(backend="onnxruntime")) as executor:
        np.testing.assert_allclose(executor.run(batch), expected, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_deploy_triton_writes_a_repository_whose_graph_scores_as_the_users_model(
    user_model: UserModel, form: str, tmp_path: Path
) -> None:
    """The Triton repository of an import: its ONNX file, fed the config's inputs by name,
    gives the user's model's logits (the binding travels inside the graph)."""
    artifact_path = _import(user_model, form, tmp_path / form)
    write_triton_model(artifact_path, tmp_path / "repo", TritonOptions(name="mine"), ServeConfig())
    config = read_model_config(tmp_path / "repo" / "mine")
    artifact = load_artifact(artifact_path)
    batch = example_batch(artifact.schema, 9, seed=8)
    arrays = dict(zip(("dense", "categorical", "multi_hot"), batch.as_tuple(), strict=True))
    feeds = {tensor.name: arrays[tensor.name].numpy() for tensor in config.input}
    [output] = config.output
    model_file = tmp_path / "repo" / "mine" / "1" / "model.onnx"
    [got] = onnx_session(model_file).run([output.name], feeds)
    expected = reference_logits(user_model.module, *batch.as_tuple()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch-eager", "torch-compile", "torch-aot"])
def test_an_imported_pytorch_class_runs_on_every_pytorch_backend(
    user_model: UserModel, backend: str, tmp_path: Path
) -> None:
    artifact = load_artifact(_import(user_model, "class", tmp_path / "class"))
    batch = example_batch(artifact.schema, 9, seed=7)
    expected = torch.sigmoid(reference_logits(user_model.module, *batch.as_tuple())).numpy()
    with load_executor(artifact, ExecutorConfig(backend=backend)) as executor:
        np.testing.assert_allclose(executor.run(batch), expected, atol=1e-5)


def test_an_imported_onnx_model_is_refused_by_pytorch_backends_naming_those_that_run_it(
    user_model: UserModel, tmp_path: Path
) -> None:
    artifact = load_artifact(_import(user_model, "onnx", tmp_path / "onnx"))
    with pytest.raises(ExecutorError, match="imported as ONNX") as caught:
        load_executor(artifact, ExecutorConfig(backend="torch-eager"))
    assert "onnxruntime" in caught.value.hint


@pytest.mark.parametrize("form", FORMS)
def test_a_probability_output_is_served_as_the_logit_it_came_from(
    probability_model: UserModel, form: str, tmp_path: Path
) -> None:
    artifact = load_artifact(_import(probability_model, form, tmp_path / form))
    batch = example_batch(artifact.schema, 11, seed=8)
    logits = reference_logits(probability_model.module, *batch.as_tuple())
    with torch.no_grad():
        torch.testing.assert_close(artifact.model(*batch.as_tuple()), logits, atol=1e-4, rtol=0)
    with load_executor(artifact, ExecutorConfig(backend="onnxruntime")) as executor:
        probabilities = executor.run(batch)
    np.testing.assert_allclose(probabilities, torch.sigmoid(logits).numpy(), atol=1e-6)


# --- what a wrong schema file or model file is told -------------------------------------------


def _schema(user: UserModel, tmp_path: Path, old: str, new: str) -> Path:
    text = SCHEMA.format(output="logit")
    assert old in text
    path = tmp_path / "schema.toml"
    path.write_text(text.replace(old, new, 1))
    return path


SCHEMA_MISTAKES = [
    # (what is changed in the schema file, what the error must say)
    ('name = "dense"\n', 'name = "dense_x"\n', "no input named 'dense_x'"),
    ('features = ["age", "price"]', 'features = ["age", "prise"]', "does not declare: prise"),
    ('features = ["age", "price"]', 'features = ["age", "user_id"]', "mixes feature kinds"),
    ('features = ["age", "price"]', 'features = ["age"]', "'dense'"),
    ('output = "logit"', 'output = "odds"', "neither logit nor probability"),
    ('kind = "dense"', 'kind = "float"', "kind 'float'"),
    ("squeeze = true", 'squeeze = "yes"\ndtype = "float32"', "cannot be"),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("old", "new", "says"), SCHEMA_MISTAKES)
def test_a_wrong_schema_file_is_refused_saying_what_is_wrong(
    user_model: UserModel, form: str, old: str, new: str, says: str, tmp_path: Path
) -> None:
    source, kwargs = user_model.source(form)
    with pytest.raises(ConfigError, match=None) as caught:
        import_model(source, _schema(user_model, tmp_path, old, new), **kwargs)  # type: ignore[arg-type]
    assert says in caught.value.message, caught.value.message
    assert caught.value.hint


def test_an_input_the_binding_leaves_out_is_named(user_model: UserModel, tmp_path: Path) -> None:
    text = SCHEMA.format(output="logit")
    cut = text[: text.index('[[model.inputs]]\nname = "tags"')]
    (tmp_path / "schema.toml").write_text(cut)
    for form in FORMS:
        source, kwargs = user_model.source(form)
        with pytest.raises(ConfigError, match=r"'tags'.*take no features"):
            import_model(source, tmp_path / "schema.toml", **kwargs)  # type: ignore[arg-type]


def test_an_onnx_input_of_another_type_than_its_features_is_refused(
    user_model: UserModel, tmp_path: Path
) -> None:
    # ids bound to dense features: the graph's int64 input cannot take floats.
    schema = _schema(user_model, tmp_path, 'name = "ids"', 'name = "ids_"')
    schema.write_text(
        schema.read_text()
        .replace('name = "dense"\n', 'name = "ids"\n')
        .replace(
            'name = "ids_"\nfeatures = ["user_id", "item_id"]',
            'name = "dense"\nfeatures = ["user_id", "item_id"]',
        )
    )
    with pytest.raises(ConfigError, match="ONNX input 'ids' is int64, but it is bound to dense"):
        import_model(str(user_model.onnx), schema)


ODD_MODELS = """
import torch
from torch import nn


class TwoScores(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, dense, ids, tags):
        return dense[:, :1] * self.w


class Logits(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, dense, ids, tags):
        return 3.0 + dense.abs() @ self.w  # > 1: a logit, never a probability
"""


@pytest.fixture
def odd_models(user_root: Path, tmp_path: Path) -> Path:
    """Write the odd models' module; return their weights (the same for both)."""
    (user_root / "byom_odd_models.py").write_text(ODD_MODELS)
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.ones(2)}, weights)
    return weights


def test_a_model_whose_output_is_not_one_score_per_row_is_refused(
    odd_models: Path, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA.format(output="logit"))
    with pytest.raises(ConfigError, match=r"returned \(8, 2\) for 8 rows"):
        import_model("byom_odd_models:TwoScores", schema, weights=odd_models)


def test_a_logit_declared_a_probability_is_refused(odd_models: Path, tmp_path: Path) -> None:
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA.format(output="probability"))
    with pytest.raises(ConfigError, match=r"outside \[0, 1\]") as caught:
        import_model("byom_odd_models:Logits", schema, weights=odd_models)
    assert 'output = "logit"' in caught.value.hint


@pytest.mark.parametrize("form", ["onnx", "pt2"])
def test_a_truncated_model_file_is_refused(
    user_model: UserModel, form: str, tmp_path: Path
) -> None:
    source = Path(user_model.source(form)[0])
    cut = tmp_path / source.name
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"export it again|torch\.export program") as caught:
        import_model(str(cut), user_model.schema)
    assert caught.value.hint


def test_weights_that_do_not_fit_the_class_are_refused_naming_the_keys(
    user_model: UserModel, tmp_path: Path
) -> None:
    state = torch.load(user_model.state, weights_only=True)
    del state["mlp.0.weight"]
    weights = tmp_path / "state.pt"
    torch.save(state, weights)
    with pytest.raises(ConfigError, match=r"do not fit byom_user_model:Ranker.*mlp\.0\.weight"):
        import_model("byom_user_model:Ranker", user_model.schema, weights=weights)


def test_a_class_without_weights_or_a_package_is_refused(user_model: UserModel) -> None:
    with pytest.raises(ConfigError, match="weights are needed"):
        import_model("byom_user_model:Ranker", user_model.schema)
    with pytest.raises(ConfigError, match="cannot import 'no_such_package'"):
        import_model("no_such_package:Model", user_model.schema, weights=user_model.state)
    with pytest.raises(ConfigError, match="cannot tell what kind of model"):
        import_model("model.bin", user_model.schema)


# --- with a dataset, and from the command line -----------------------------------------------

DATASET_MODULE = """
import torch
from torch import nn


class WholeRow(nn.Module):
    def __init__(self, n_dense, cardinalities, tags, dim=4):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(c, dim) for c in cardinalities)
        self.bag = nn.EmbeddingBag(tags, dim, mode="sum", padding_idx=0)
        self.out = nn.Linear(n_dense + dim * (len(cardinalities) + 1), 1)

    def forward(self, dense, ids, genres):
        vectors = [t(ids[:, i]) for i, t in enumerate(self.tables)] + [self.bag(genres)]
        return self.out(torch.cat([dense, *vectors], 1)).squeeze(1)
"""


def _dataset_schema_file(dataset: Dataset, path: Path) -> dict[str, Any]:
    lines = []
    for f in dataset.schema.features:
        lines += ["[[features]]", f'name = "{f.name}"', f'kind = "{f.kind}"', f'side = "{f.side}"']
        if f.cardinality:
            lines += [f"cardinality = {f.cardinality}", f"max_len = {f.max_len}"]
    lines += ["[model]"]
    for name, features, squeeze in [
        ("dense", dataset.schema.dense, False),
        ("ids", dataset.schema.categorical, False),
        ("genres", dataset.schema.multi_hot, True),
    ]:
        listed = ", ".join(f'"{f.name}"' for f in features)
        lines += ["[[model.inputs]]", f'name = "{name}"', f"features = [{listed}]"]
        lines += [f"squeeze = {'true' if squeeze else 'false'}"]
    path.write_text("\n".join(lines) + "\n")
    return {
        "n_dense": len(dataset.schema.dense),
        "cardinalities": [f.cardinality for f in dataset.schema.categorical],
        "tags": dataset.schema.multi_hot[0].cardinality,
    }


def test_imported_with_a_dataset_the_manifest_holds_its_auc_and_the_datasets_vocabularies(
    tiny_dataset: Dataset, user_root: Path, tmp_path: Path
) -> None:
    (user_root / "byom_whole_row.py").write_text(DATASET_MODULE)
    init = _dataset_schema_file(tiny_dataset, tmp_path / "schema.toml")
    from byom_whole_row import WholeRow  # type: ignore[import-not-found]

    torch.manual_seed(1)
    model = WholeRow(**init)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    report = import_artifact(
        "byom_whole_row:WholeRow",
        tmp_path / "schema.toml",
        tmp_path / "artifact",
        weights=tmp_path / "state.pt",
        init=init,
        dataset=tiny_dataset,
    )
    artifact = load_artifact(report.path)
    expected = evaluate(tiny_dataset.test.label, predict(artifact.model, tiny_dataset.test))
    assert report.manifest.metrics["test"]["auc"] == pytest.approx(expected.auc)
    assert report.manifest.dataset["name"] == tiny_dataset.name
    assert artifact.schema == tiny_dataset.schema  # vocabularies and all, from the dataset
    assert artifact.schema["genres"].vocabulary == tiny_dataset.schema["genres"].vocabulary


def test_a_schema_file_that_is_not_the_datasets_is_refused_listing_the_datasets_features(
    tiny_dataset: Dataset, user_model: UserModel, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not dataset") as caught:
        import_artifact(
            str(user_model.pt2), user_model.schema, tmp_path / "a", dataset=tiny_dataset
        )
    assert "user_id:categorical" in caught.value.hint


def test_the_import_verb_writes_an_artifact_and_refuses_a_bad_file_without_a_traceback(
    user_model: UserModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "artifact"
    code = main(
        ["import", str(user_model.onnx), "--schema", str(user_model.schema), "--out", str(out)]
    )
    assert code == 0
    assert load_artifact(out).imported
    schema = tmp_path / "bad.toml"
    schema.write_text("[[features]\n")
    capsys.readouterr()
    code = main(["import", str(user_model.onnx), "--schema", str(schema), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "not valid TOML" in err and "Traceback" not in err
