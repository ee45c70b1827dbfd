"""Model artifacts: what passes between stages.

An artifact is a directory:

    manifest.json          versioned description: model, config, schema, metrics, size, lineage
    weights.safetensors    the state dict (safetensors: no pickle, so loading runs no code)

Loading needs nothing but the artifact and this package: the schema and config inside the
manifest rebuild the model, and the weights' checksum is verified before they are read.

Loaded weights are the file itself, memory-mapped read-only (copy on write): every process that
loads the same artifact shares one copy in the page cache, and a table's rows are read from disk
only when looked up. docs/weights-in-memory.md says what that saves and where it stops.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

import recaccel
from recaccel.data.dataset import Dataset
from recaccel.data.registry import DatasetOptions, load_dataset
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ArtifactError, ConfigError, RecaccelError
from recaccel.imported.model import IMPORTED, MODEL_FILES, ImportedConfig, build_imported
from recaccel.models.registry import (
    ModelConfig,
    build_model,
    config_from_dict,
    config_to_dict,
    count_parameters,
)
from recaccel.models.transforms import apply_transforms

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class LineageStep:
    """One transformation that produced this artifact from its parent."""

    op: str  # e.g. "train", "distill", "prune", "quantize"
    params: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class Manifest:
    model: str
    preset: str | None
    model_config: dict[str, Any]
    schema: dict[str, Any]
    dataset: dict[str, Any]
    metrics: dict[str, dict[str, Any]]  # split name -> {"auc", "logloss", "rows"}
    references: dict[str, dict[str, Any]] = field(default_factory=dict)  # baseline metrics
    training: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None  # parent artifact's id; None for a freshly trained model
    lineage: tuple[LineageStep, ...] = ()
    # Structural transforms replayed on load, after building from model_config and before the
    # weights go in (see models/transforms.py), e.g. {"op": "quantize_embeddings", "bits": 8}.
    transforms: tuple[dict[str, Any], ...] = ()
    # Filled in by `save_artifact`:
    format_version: int = FORMAT_VERSION
    artifact_id: str = ""
    parameters: int = 0
    weights_bytes: int = 0  # on disk
    resident_bytes: int = 0  # parameters and buffers in memory
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    created_at: str = ""
    software: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        fields = dict(data)
        fields["lineage"] = tuple(LineageStep(**s) for s in data.get("lineage", ()))
        fields["transforms"] = tuple(data.get("transforms", ()))
        return cls(**fields)


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: Manifest
    schema: FeatureSchema
    config: ModelConfig | ImportedConfig  # a zoo model's config, or how an import rebuilds
    model: nn.Module

    @property
    def imported(self) -> bool:
        """Whether the model came from `recaccel import` rather than the zoo."""
        return isinstance(self.config, ImportedConfig)

    def zoo_config(self, needed_by: str) -> ModelConfig:
        """The zoo config, for passes that rebuild the model from it (pruning); ConfigError
        for an imported model, whose structure is its author's code."""
        if isinstance(self.config, ImportedConfig):
            raise ConfigError(
                f"{needed_by} reshapes a zoo model, and {self.path} was imported "
                f"({self.config.format}): recaccel does not know its structure",
                "distil it into a zoo student first (the distill step), then prune that",
            )
        return self.config

    def module_weights(self, needed_by: str) -> None:
        """ConfigError unless the model's weights are PyTorch modules recaccel may replace
        (quantization): an imported ONNX or torch.export model keeps them in its own file."""
        if isinstance(self.config, ImportedConfig) and self.config.format != "torch-module":
            raise ConfigError(
                f"{needed_by} replaces PyTorch modules, and {self.path} is an imported "
                f"{self.config.format} model whose weights are in its own file",
                "import the PyTorch class (package.module:Class) to quantize it here, or serve "
                "the ONNX form at int8 precision on onnxruntime",
            )


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _resident_bytes(model: nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def save_artifact(
    path: Path,
    model: nn.Module,
    manifest: Manifest,
    *,
    files: Mapping[str, bytes] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> Manifest:
    """Write `model` and `manifest` to `path` atomically; return the completed manifest.

    An existing artifact at `path` is replaced; a non-empty directory that is not an artifact is
    refused, so a mistyped `--out` cannot wipe unrelated files.

    Args:
        files: more files of the artifact (an imported model's own file), checksummed too.
        state: the weights to save; None = `model.state_dict()`. An imported ONNX or
            torch.export model keeps its weights in its own file, and saves none here.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not (path / MANIFEST_FILE).exists():
        raise ArtifactError(
            f"{path} exists and is not a recaccel artifact",
            "choose an empty or new directory for --out",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        weights = model.state_dict() if state is None else state
        save_file(
            {k: v.detach().contiguous() for k, v in weights.items()}, str(staging / WEIGHTS_FILE)
        )
        weights_sha = _sha256(staging / WEIGHTS_FILE)
        for name, data in (files or {}).items():
            (staging / name).write_bytes(data)
        # The id names the model: an import's weights live in its own file.
        model_sha = (
            hashlib.sha256(
                "".join(_sha256(staging / n) for n in [WEIGHTS_FILE, *sorted(files or {})]).encode()
            ).hexdigest()
            if files
            else weights_sha
        )
        completed = replace(
            manifest,
            format_version=FORMAT_VERSION,
            artifact_id=model_sha[:16],
            parameters=count_parameters(model),
            weights_bytes=sum((staging / n).stat().st_size for n in [WEIGHTS_FILE, *(files or {})]),
            resident_bytes=_resident_bytes(model),
            files={WEIGHTS_FILE: weights_sha, **{n: _sha256(staging / n) for n in files or {}}},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            software={
                "recaccel": recaccel.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        )
        (staging / MANIFEST_FILE).write_text(json.dumps(completed.to_dict(), indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return completed


def read_manifest(path: Path) -> Manifest:
    """Read and check an artifact's manifest without loading its weights."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(
            f"no artifact at {path}",
            "pass a directory written by `recaccel train --out DIR`",
        )
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{path} is missing {MANIFEST_FILE}",
            "the artifact is incomplete; re-create it with `recaccel train --out`",
        )
    try:
        data = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({exc})", "re-create it") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if not isinstance(version, int):
        raise ArtifactError(f"{manifest_path} has no integer format_version", "re-create it")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has artifact format version {version}; this recaccel "
            f"({recaccel.__version__}) reads versions up to {FORMAT_VERSION}",
            "upgrade recaccel to load it",
        )
    try:
        return Manifest.from_dict(data)
    except TypeError as exc:
        raise ArtifactError(f"{manifest_path} is malformed: {exc}", "re-create it") from None


def trained_dataset(path: Path, progress: bool = False) -> Dataset | None:
    """The dataset the artifact at `path` was trained on, loaded as its manifest records it
    (the name, and the Criteo-shaped one's rows); None when the manifest names none (a model
    imported without --dataset)."""
    recorded = read_manifest(path).dataset
    name = recorded.get("name")
    if name is None:
        return None
    rows = recorded.get("config", {}).get("rows")
    return load_dataset(name, DatasetOptions(progress=progress, synthetic_rows=rows))


def require_trained_dataset(path: Path, progress: bool = False) -> Dataset:
    """`trained_dataset`, for a verb that cannot go on without it: ConfigError, saying how to
    record the dataset, when the manifest names none."""
    dataset = trained_dataset(path, progress)
    if dataset is None:
        raise ConfigError(
            f"{path}'s manifest does not name the dataset it was trained on",
            "import it with --dataset NAME (the dataset whose rows it scores)"
            if read_manifest(path).model == IMPORTED
            else "re-create it with `recaccel train`",
        )
    return dataset


def load_artifact(path: Path) -> Artifact:
    """Rebuild the model in `path` with its weights, ready for inference (eval mode)."""
    path = Path(path)
    manifest = read_manifest(path)
    _check_files(path, manifest)
    config: ModelConfig | ImportedConfig
    try:
        schema = FeatureSchema.from_dict(manifest.schema)
        if manifest.model == IMPORTED:
            config = ImportedConfig.from_dict(manifest.model_config)
            name = MODEL_FILES.get(config.format)
            model_file = (path / name).read_bytes() if name is not None else None
            model: nn.Module = build_imported(config, schema, model_file)
            model = apply_transforms(model, manifest.transforms)  # a class's quantized tables
        else:
            config = config_from_dict(manifest.model, manifest.model_config)
            model = build_model(manifest.model, schema, config)
            model = apply_transforms(model, manifest.transforms)
    except RecaccelError as exc:
        raise ArtifactError(f"{path}: cannot rebuild the model: {exc.message}", exc.hint) from None
    if not isinstance(config, ImportedConfig) or config.format == "torch-module":
        try:
            model.load_state_dict(mapped_weights(path / WEIGHTS_FILE), strict=True, assign=True)
        except (SafetensorError, RuntimeError) as exc:
            raise ArtifactError(
                f"{path}: weights do not fit the model: {exc}", "re-create it"
            ) from None
    model.eval()
    return Artifact(path=path, manifest=manifest, schema=schema, config=config, model=model)


def mapped_weights(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as views of the file memory-mapped copy-on-write
    (safetensors maps it with `UntypedStorage.from_file(shared=False)`): nothing is read until
    used, and processes mapping the same file share its pages. Loaded into a model with
    `assign=True`, they become its parameters, where a plain load would copy them into the
    model's own (private) memory. A write to one (fine-tuning) makes a private copy of the page
    it touches and never reaches the file."""
    with safe_open(str(file), framework="pt") as weights:
        return {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118 (not a dict)


def _check_files(path: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is there and matches its checksum."""
    if WEIGHTS_FILE not in manifest.files:
        raise ArtifactError(f"{path}/{MANIFEST_FILE} lists no {WEIGHTS_FILE}", "re-create it")
    for name, expected in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{path} is missing {name}", "re-create the artifact")
        if _sha256(file) != expected:
            raise ArtifactError(
                f"{file} does not match its checksum in the manifest: corrupt or truncated",
                "re-create the artifact, or copy it again from its source",
            )


def new_manifest(
    model: str, preset: str | None, config: ModelConfig, schema: FeatureSchema, **fields: Any
) -> Manifest:
    """A manifest for a model built from the zoo; `save_artifact` fills in the measured parts."""
    return Manifest(
        model=model,
        preset=preset,
        model_config=config_to_dict(config),
        schema=schema.to_dict(),
        **fields,
    )
