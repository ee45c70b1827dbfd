"""Artifacts: save → load gives identical predictions; each kind of damage gets a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from recaccel.artifact import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    LineageStep,
    Manifest,
    load_artifact,
    new_manifest,
    read_manifest,
    require_trained_dataset,
    save_artifact,
    trained_dataset,
)
from recaccel.data.dataset import Dataset
from recaccel.errors import ArtifactError, ConfigError
from recaccel.models.registry import MODELS, build_model, preset_config


def _save(
    path: Path, dataset: Dataset, model_name: str = "dlrm", preset: str = "small"
) -> torch.nn.Module:
    torch.manual_seed(0)
    config = preset_config(model_name, preset)
    model = build_model(model_name, dataset.schema, config).eval()
    manifest = new_manifest(
        model_name,
        preset,
        config,
        dataset.schema,
        dataset={"name": dataset.name, "synthetic": False},
        metrics={"test": {"auc": 0.5, "logloss": 0.7, "rows": 10}},
        lineage=(LineageStep("train", {"dataset": dataset.name}),),
    )
    save_artifact(path, model, manifest)
    return model


@pytest.mark.parametrize("model_name", list(MODELS))
def test_save_then_load_gives_identical_predictions(
    tmp_path: Path, tiny_dataset: Dataset, model_name: str
) -> None:
    model = _save(tmp_path / "a", tiny_dataset, model_name)
    loaded = load_artifact(tmp_path / "a")
    batch = tiny_dataset.test.features()
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded.model(*batch.as_tuple()), model(*batch.as_tuple()), rtol=0, atol=0
        )
    assert loaded.schema == tiny_dataset.schema
    assert not loaded.model.training


def _mapped_ranges(file: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of `file` (/proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(file.resolve())):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
def test_loaded_weights_are_the_mapped_file_not_a_copy(
    tmp_path: Path, tiny_dataset: Dataset
) -> None:
    """Every process that loads an artifact shares one copy of its weights: the parameters
    are views of the weights file mapped into memory, not tensors the weights were copied
    into. A write to one (fine-tuning a loaded model) stays in this process."""
    _save(tmp_path / "a", tiny_dataset, "deepfm")
    loaded = load_artifact(tmp_path / "a")
    ranges = _mapped_ranges(tmp_path / "a" / WEIGHTS_FILE)
    assert ranges
    tensors = dict(loaded.model.state_dict())
    for name, tensor in tensors.items():
        address = tensor.data_ptr()
        assert any(start <= address < end for start, end in ranges), f"{name} is a copy"
    with torch.no_grad():
        next(loaded.model.parameters()).add_(1.0)
    assert load_artifact(tmp_path / "a").manifest.files  # the checksum still holds: file intact


def test_manifest_records_size_lineage_and_checksums(tmp_path: Path, tiny_dataset: Dataset) -> None:
    model = _save(tmp_path / "a", tiny_dataset)
    manifest = read_manifest(tmp_path / "a")
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.parameters == sum(p.numel() for p in model.parameters())
    assert manifest.weights_bytes == (tmp_path / "a" / WEIGHTS_FILE).stat().st_size
    assert manifest.resident_bytes >= 4 * manifest.parameters
    assert manifest.lineage[0].op == "train" and manifest.parent is None
    assert set(manifest.files) == {WEIGHTS_FILE} and len(manifest.artifact_id) == 16
    assert manifest.software["torch"] == torch.__version__


def test_loading_needs_nothing_but_the_artifact(tmp_path: Path, tiny_dataset: Dataset) -> None:
    _save(tmp_path / "a", tiny_dataset)
    shutil.move(tmp_path / "a", tmp_path / "moved")
    batch = tiny_dataset.test.features(slice(0, 4))
    assert load_artifact(tmp_path / "moved").model(*batch.as_tuple()).shape == (4,)


def test_saving_over_an_artifact_replaces_it_but_never_overwrites_other_files(
    tmp_path: Path, tiny_dataset: Dataset
) -> None:
    _save(tmp_path / "a", tiny_dataset)
    _save(tmp_path / "a", tiny_dataset, "deepfm")
    assert read_manifest(tmp_path / "a").model == "deepfm"
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a recaccel artifact"):
        _save(tmp_path / "precious", tiny_dataset)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no artifact at") as err:
        load_artifact(tmp_path / "nope")
    assert "recaccel train" in err.value.hint


@pytest.mark.parametrize("missing", [MANIFEST_FILE, WEIGHTS_FILE])
def test_missing_file_is_named(tmp_path: Path, tiny_dataset: Dataset, missing: str) -> None:
    _save(tmp_path / "a", tiny_dataset)
    (tmp_path / "a" / missing).unlink()
    with pytest.raises(ArtifactError, match=f"missing {missing}"):
        load_artifact(tmp_path / "a")


def test_truncated_weights_fail_the_checksum(tmp_path: Path, tiny_dataset: Dataset) -> None:
    _save(tmp_path / "a", tiny_dataset)
    weights = tmp_path / "a" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        load_artifact(tmp_path / "a")


def test_newer_format_version_is_refused(tmp_path: Path, tiny_dataset: Dataset) -> None:
    _save(tmp_path / "a", tiny_dataset)
    path = tmp_path / "a" / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=f"format version {FORMAT_VERSION + 1}") as err:
        load_artifact(tmp_path / "a")
    assert "upgrade recaccel" in err.value.hint


@pytest.mark.parametrize("text", ["{not json", '{"model": "dlrm"}', "[1, 2]"])
def test_malformed_manifest(tmp_path: Path, tiny_dataset: Dataset, text: str) -> None:
    _save(tmp_path / "a", tiny_dataset)
    (tmp_path / "a" / MANIFEST_FILE).write_text(text)
    with pytest.raises(ArtifactError):
        read_manifest(tmp_path / "a")


def test_manifest_with_unknown_model_is_refused_clearly(
    tmp_path: Path, tiny_dataset: Dataset
) -> None:
    _save(tmp_path / "a", tiny_dataset)
    path = tmp_path / "a" / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["model"] = "transformer-xl"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="cannot rebuild the model: unknown model"):
        load_artifact(tmp_path / "a")


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_artifact_round_trips(tmp_path: Path, tiny_dataset: Dataset, bits: int) -> None:
    from dataclasses import replace

    from recaccel.models.quant.embedding import QuantizedEmbeddingBag, quantize_embeddings

    _save(tmp_path / "float", tiny_dataset)
    parent = load_artifact(tmp_path / "float")
    quantized, _ = quantize_embeddings(parent.model, bits)
    transform = {"op": "quantize_embeddings", "bits": bits}
    manifest = replace(
        parent.manifest,
        parent=parent.manifest.artifact_id,
        transforms=(transform,),
        lineage=(*parent.manifest.lineage, LineageStep("quantize_embeddings", {"bits": bits})),
    )
    saved = save_artifact(tmp_path / "q", quantized, manifest)
    loaded = load_artifact(tmp_path / "q")
    assert any(isinstance(m, QuantizedEmbeddingBag) for m in loaded.model.modules())
    batch = tiny_dataset.test.features().as_tuple()
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(*batch), quantized(*batch), rtol=0, atol=0)
    assert saved.weights_bytes < parent.manifest.weights_bytes
    assert loaded.manifest.parent == parent.manifest.artifact_id
    assert [s.op for s in loaded.manifest.lineage] == ["train", "quantize_embeddings"]


def test_unknown_transform_is_refused_clearly(tmp_path: Path, tiny_dataset: Dataset) -> None:
    _save(tmp_path / "a", tiny_dataset)
    path = tmp_path / "a" / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["transforms"] = [{"op": "prune_heads"}]
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="unknown model transform 'prune_heads'") as err:
        load_artifact(tmp_path / "a")
    assert "newer" in err.value.hint


def _manifest_only(path: Path, model: str, dataset: dict[str, object]) -> Path:
    """An artifact directory with just a manifest: all that finding its dataset reads."""
    path.mkdir()
    manifest = Manifest(model, None, {}, {}, dataset, {}, format_version=FORMAT_VERSION)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict()))
    return path


def test_the_dataset_an_artifact_was_trained_on_is_loaded_as_its_manifest_records_it(
    tmp_path: Path,
) -> None:
    recorded = {"name": "criteo-synthetic", "config": {"rows": 3_000}}
    artifact = _manifest_only(tmp_path / "a", "dlrm", recorded)
    for dataset in (trained_dataset(artifact), require_trained_dataset(artifact)):
        assert dataset is not None and dataset.name == "criteo-synthetic"
        assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 3_000


@pytest.mark.parametrize(
    ("model", "hint"), [("imported", "import it with --dataset"), ("dlrm", "recaccel train")]
)
def test_an_artifact_that_names_no_dataset_has_none_or_says_how_to_record_one(
    tmp_path: Path, model: str, hint: str
) -> None:
    artifact = _manifest_only(tmp_path / "a", model, {})
    assert trained_dataset(artifact) is None
    with pytest.raises(ConfigError, match="does not name the dataset") as error:
        require_trained_dataset(artifact)
    assert hint in error.value.hint
