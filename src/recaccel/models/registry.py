"""The model zoo: names, config types and presets.

`heavy` is the unoptimized production-size model the seeds start from (for DLRM, MLPerf's
configuration); `base` and `small` are the smaller hand-made points that later optimization is
read against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError, UnknownNameError
from recaccel.models.dcn import DCNv2, DCNv2Config
from recaccel.models.deepfm import DeepFM, DeepFMConfig
from recaccel.models.dlrm import DLRM, DLRMConfig
from recaccel.models.tower import TowerConfig, TowerRanker
from recaccel.models.wide_deep import WideDeep, WideDeepConfig

ModelConfig = DLRMConfig | DCNv2Config | DeepFMConfig | WideDeepConfig | TowerConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    config_type: type[Any]
    build: Callable[[FeatureSchema, Any], nn.Module]
    presets: Mapping[str, ModelConfig]
    # Config field -> the MLP submodule it sizes, for passes that resize MLPs (pruning).
    mlp_fields: Mapping[str, str]
    # Whether an interaction pairs the field vectors (DLRM's dot, DeepFM's FM): then every
    # vector shares `embedding_dim`, and embedding-dim pruning removes a dim from all of them.
    # Otherwise vectors are concatenated and each table's width is its own.
    shared_embedding_dim: bool


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="dlrm",
            description="DLRM: bottom MLP, embeddings, pairwise dot interaction, top MLP",
            config_type=DLRMConfig,
            build=DLRM,
            presets={
                "heavy": DLRMConfig(),  # MLPerf DLRM: 128, 512-256-128, 1024-1024-512-256-1
                "base": DLRMConfig(64, (256, 64), (512, 256, 1)),
                "small": DLRMConfig(16, (64, 16), (64, 32, 1)),
            },
            mlp_fields={"bottom_mlp": "dense_arch", "top_mlp": "over_arch"},
            shared_embedding_dim=True,
        ),
        ModelSpec(
            name="dcnv2",
            description="DCNv2: cross network stacked with a deep MLP",
            config_type=DCNv2Config,
            build=DCNv2,
            presets={
                "heavy": DCNv2Config(128, 3, None, (1024, 1024, 512, 256)),
                "base": DCNv2Config(32, 2, 64, (256, 128)),
                "small": DCNv2Config(16, 2, 16, (64, 32)),
            },
            mlp_fields={"deep_mlp": "deep_arch"},
            shared_embedding_dim=False,
        ),
        ModelSpec(
            name="deepfm",
            description="DeepFM: factorization machine + deep MLP on shared embeddings",
            config_type=DeepFMConfig,
            build=DeepFM,
            presets={
                "heavy": DeepFMConfig(64, (1024, 1024, 512, 256)),
                "base": DeepFMConfig(32, (256, 128)),
                "small": DeepFMConfig(16, (64, 32)),
            },
            mlp_fields={"deep_mlp": "deep_arch"},
            shared_embedding_dim=True,
        ),
        ModelSpec(
            name="wide_deep",
            description="Wide & Deep: linear model over ids + deep MLP over embeddings",
            config_type=WideDeepConfig,
            build=WideDeep,
            presets={
                "heavy": WideDeepConfig(64, (1024, 1024, 512, 256)),
                "base": WideDeepConfig(32, (256, 128)),
                "small": WideDeepConfig(16, (64, 32)),
            },
            mlp_fields={"deep_mlp": "deep_arch"},
            shared_embedding_dim=False,
        ),
        ModelSpec(
            name="tower",
            description="Request tower + light head: the user's side deep, computed once per "
            "rank request with reuse (docs/reuse.md)",
            config_type=TowerConfig,
            build=TowerRanker,
            presets={
                "heavy": TowerConfig(64, (1024, 512, 256), (256, 128)),
                "base": TowerConfig(32, (256, 128), (64,)),
                "small": TowerConfig(16, (64, 32), (32,)),
            },
            mlp_fields={"tower_mlp": "request_tower", "head_mlp": "deep_arch"},
            shared_embedding_dim=False,
        ),
    )
}


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownNameError("model", name, list(MODELS)) from None


def preset_config(model: str, preset: str) -> ModelConfig:
    spec = model_spec(model)
    try:
        return spec.presets[preset]
    except KeyError:
        raise UnknownNameError(f"preset for {model}", preset, list(spec.presets)) from None


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(model: str, data: Mapping[str, Any]) -> ModelConfig:
    """Rebuild a model config, naming any key the config type does not have."""
    config_type = model_spec(model).config_type
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {model} config keys: {unknown}", f"valid keys: {', '.join(fields)}"
        )
    # JSON has no tuples; the configs are frozen and hashable, so convert lists back.
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return config_type(**values)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise ConfigError(f"invalid {model} config: {exc}") from None


def build_model(model: str, schema: FeatureSchema, config: ModelConfig) -> nn.Module:
    """Build a freshly initialised model. Plain `nn.Module`: no device moves, no optimizer."""
    spec = model_spec(model)
    if not isinstance(config, spec.config_type):
        raise ConfigError(f"{model} takes a {spec.config_type.__name__}, not {type(config)}")
    return spec.build(schema, config)


@runtime_checkable
class HoldsWeightsOutsideParameters(Protocol):
    """A module that keeps weights outside `nn.Parameter`s: quantized layers in integer
    buffers, an imported ONNX graph in its initializers."""

    def held_weight_count(self) -> int:
        """How many weights (of the float layer it stands for) it holds."""
        ...


def count_parameters(model: nn.Module) -> int:
    """The model's weights, those held outside parameters included: a quantized table still has
    rows × dim weights, though they live in buffers, so quantizing does not look like pruning."""
    held = sum(
        m.held_weight_count()
        for m in model.modules()
        if isinstance(m, HoldsWeightsOutsideParameters)
    )
    return held + sum(p.numel() for p in model.parameters())
