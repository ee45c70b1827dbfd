"""`recaccel import`: a ranking model trained elsewhere, made a recaccel artifact.

Three sources, each with a schema file (binding.py) that maps its inputs to features:

- an ONNX graph (`model.onnx`);
- a `torch.export` program (`model.pt2`, from `torch.export.save`);
- a PyTorch class, `package.module:Class`, built with keyword arguments and given a state
  dict (safetensors, or a `.pt` read with `weights_only=True`). Loading the artifact imports
  that class again, so its package must be installed where the artifact is loaded.

The model is run on a probe batch built from the schema before anything is written: a wrong
input name, dtype or width, or an output of the wrong shape, is refused with what was expected.
The artifact holds the model file as given (or the state dict), the schema with the binding,
and its checksums, like any other.
"""

from __future__ import annotations

import importlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from safetensors.torch import load_file
from torch import nn

from recaccel.data.dataset import example_batch
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ArtifactError, ConfigError
from recaccel.imported.adapter import BoundModel, argument_order, forward_arguments
from recaccel.imported.binding import (
    ModelBinding,
    OutputKind,
    checked_input,
    read_schema_file,
)
from recaccel.imported.onnx_graph import OnnxGraph, check_graph, graph_inputs

IMPORTED = "imported"  # the manifest's `model` for every imported artifact
PROBE_ROWS = 8
FORMATS = ("onnx", "torch-export", "torch-module")
MODEL_FILES = {"onnx": "model.onnx", "torch-export": "model.pt2"}


@dataclass(frozen=True)
class ImportedConfig:
    """What rebuilds an imported model: its format, where it came from, its binding."""

    format: str
    binding: dict[str, Any]
    source: str = ""  # the file or class it was imported from, for people
    module: str = ""  # torch-module: "package.module:Class"
    init: dict[str, Any] = field(default_factory=dict)  # torch-module: constructor kwargs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportedConfig:
        try:
            config = cls(**data)
        except TypeError as exc:
            raise ArtifactError(f"malformed imported-model config: {exc}", "re-import it") from None
        if config.format not in FORMATS:
            raise ArtifactError(f"unknown imported-model format {config.format!r}", "re-import it")
        return config


def source_format(source: str) -> str:
    """onnx, torch-export or torch-module, from what the user passed."""
    if source.endswith(".onnx"):
        return "onnx"
    if source.endswith(".pt2"):
        return "torch-export"
    if ":" in source and not Path(source).exists():
        return "torch-module"
    raise ConfigError(
        f"cannot tell what kind of model {source!r} is",
        "pass an ONNX file (.onnx), a torch.export program (.pt2, from torch.export.save) or "
        "a PyTorch class as package.module:Class with --weights",
    )


def _import_class(path: str) -> type[nn.Module]:
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for model class {path!r}: {exc}",
            "install the package that defines the model, or add its directory to PYTHONPATH",
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(
            f"{module_name} has no nn.Module class {class_name!r}",
            "pass package.module:Class naming the model's class",
        )
    return cls


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"no weights file at {path}", "pass the model's state dict")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails in many ways
        raise ConfigError(
            f"cannot read weights from {path}: {exc}",
            "pass a state dict saved with torch.save(model.state_dict()) or safetensors",
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"{path} holds no state dict (name -> tensor)", "save model.state_dict(), not the model"
        )
    return state


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], what: str, cls: str) -> None:
    """Load `state` into `module`, strictly; ConfigError naming the keys that do not fit."""
    hint = "pass the state dict saved from this class built with these --init arguments"
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape than the class built
        sizes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise ConfigError(f"{what} do not fit {cls}: {'; '.join(sizes) or exc}", hint) from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:5])}")
    if result.unexpected_keys:
        problems.append(f"not in the class: {', '.join(result.unexpected_keys[:5])}")
    if problems:
        raise ConfigError(f"{what} do not fit {cls}: {'; '.join(problems)}", hint)


def _module_model(
    config: ImportedConfig, schema: FeatureSchema, binding: ModelBinding
) -> BoundModel:
    cls = _import_class(config.module)
    try:
        inner = cls(**config.init)
    except Exception as exc:
        raise ConfigError(
            f"{config.module}(**{config.init}) failed: {exc}",
            "pass the constructor's keyword arguments with --init '{\"name\": value}'",
        ) from None
    names, required = forward_arguments(inner)
    return BoundModel(inner, schema, binding, argument_order(names, required, binding))


def _export_model(data: bytes, schema: FeatureSchema, binding: ModelBinding) -> BoundModel:
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:
        raise ConfigError(
            f"not a torch.export program: {exc}",
            "save it with torch.export.save(torch.export.export(model, args), 'model.pt2')",
        ) from None
    names = list(program.graph_signature.user_inputs)
    order = argument_order(names, names, binding)
    # Each input's shape and dtype as exported (symbolic dims as their names).
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    checked = []
    for b in binding.inputs:
        value = values.get(b.name)
        if not isinstance(value, torch.Tensor):
            checked.append(b)
            continue
        shape = [d if isinstance(d, int) else str(d) for d in value.shape]
        dtype = str(value.dtype).removeprefix("torch.")
        checked.append(checked_input(b, dtype, shape, schema, "torch.export"))
    binding = ModelBinding(tuple(checked), binding.output)
    return BoundModel(program.module(), schema, binding, order)


def _onnx_model(data: bytes, schema: FeatureSchema, binding: ModelBinding) -> BoundModel:
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ConfigError(
            f"not a valid ONNX model: {exc}", "check the file is whole: export it again"
        ) from None
    binding = check_graph(proto, schema, binding)
    names = [i.name for i in graph_inputs(proto)]
    return BoundModel(OnnxGraph(data), schema, binding, argument_order(names, names, binding))


def _onnx_bytes(path: Path) -> bytes:
    """The graph with its weights inside: weights in external files beside it are read in."""
    try:
        proto = onnx.load(str(path))
        return bytes(proto.SerializeToString())
    except ValueError as exc:  # protobuf's 2 GiB limit
        raise ConfigError(
            f"{path} is too large to import as one file: {exc}",
            "importing ONNX models past 2 GiB is not supported yet: import the PyTorch model",
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"cannot read {path} as ONNX: {exc}", "check the file is whole: export it again"
        ) from None


def build_imported(
    config: ImportedConfig, schema: FeatureSchema, model_file: bytes | None
) -> BoundModel:
    """The model of an imported artifact (torch-module: before its weights are loaded)."""
    binding = ModelBinding.from_dict(config.binding, schema)
    if config.format == "torch-module":
        return _module_model(config, schema, binding)
    if model_file is None:
        raise ArtifactError(f"an imported {config.format} artifact needs its model file")
    if config.format == "onnx":
        return _onnx_model(model_file, schema, binding)
    return _export_model(model_file, schema, binding)


def probe(model: BoundModel, schema: FeatureSchema) -> None:
    """Run the model on valid random rows; ConfigError saying what to fix if it fails."""
    batch = example_batch(schema, PROBE_ROWS)
    shapes = ", ".join(
        f"{b.name!r} {tuple(b.shape(schema))} {b.torch_dtype_name}" for b in model.binding.inputs
    )
    try:
        with torch.no_grad():
            out = model.inner(*model.model_inputs(*batch.as_tuple()))
    except Exception as exc:
        raise ConfigError(
            f"the model failed on a probe batch built from the schema file ({shapes}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "check each [[model.inputs]] entry: its name, its features and their order, squeeze "
            "and dtype must be what the model's input expects",
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) not in (
        (PROBE_ROWS,),
        (PROBE_ROWS, 1),
    ):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"the model returned {got} for {PROBE_ROWS} rows; a ranking model returns one "
            f"score per row: ({PROBE_ROWS},) or ({PROBE_ROWS}, 1)",
            "import a model whose output is its score (wrap it to return that alone)",
        )
    if not out.dtype.is_floating_point or not bool(torch.isfinite(out).all()):
        raise ConfigError(
            f"the model's scores on the probe batch are not finite floats ({out.dtype})",
            "check the dense features' scale and the model's weights",
        )
    outside = out[(out < 0) | (out > 1)]
    if model.binding.output is OutputKind.PROBABILITY and len(outside):
        raise ConfigError(
            "the schema file says the output is a probability, but the model returned "
            f"scores outside [0, 1] (e.g. {float(outside[0]):.4g})",
            'set output = "logit" in [model]',
        )


def import_model(
    source: str,
    schema_file: Path,
    *,
    weights: Path | None = None,
    init: dict[str, Any] | None = None,
) -> tuple[BoundModel, FeatureSchema, ImportedConfig, bytes | None]:
    """Read, bind and probe a model; what `save_imported` writes as an artifact.

    Returns:
        the bound model (weights loaded), the schema, the config that rebuilds it, and the
        model file's bytes (None for a torch-module, whose weights are its state dict).
    """
    schema, binding = read_schema_file(schema_file)
    fmt = source_format(source)
    data: bytes | None = None
    if fmt == "torch-module":
        if weights is None:
            raise ConfigError(
                f"{source} is a class: its weights are needed too",
                "pass --weights STATE_DICT (.safetensors, or .pt saved with torch.save)",
            )
        config = ImportedConfig(fmt, binding.to_dict(), source, source, dict(init or {}))
        model = build_imported(config, schema, None)
        _load_weights(model.inner, _read_state(weights), f"the weights in {weights}", source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"no model file at {path}", "pass the path of the exported model")
        data = _onnx_bytes(path) if fmt == "onnx" else path.read_bytes()
        model = build_imported(ImportedConfig(fmt, binding.to_dict(), path.name), schema, data)
        if fmt == "onnx":  # the graph's own dtypes, as check_graph filled them in
            binding = model.binding
        config = ImportedConfig(fmt, binding.to_dict(), path.name)
    model.eval()
    probe(model, schema)
    return model, schema, config, data
