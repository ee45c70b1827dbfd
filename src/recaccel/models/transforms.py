"""Structural transforms an artifact records and re-applies on load.

A model is rebuilt from its config as a float model; an optimized one differs in structure
(quantized tables, INT8 or half-precision dense layers), so its manifest lists the transforms
that made it, and loading replays them, in order, before the saved weights go in. Each
transform is a name plus JSON parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from recaccel.errors import ConfigError
from recaccel.models.quant.dense import prepare_quantized_dense
from recaccel.models.quant.embedding import quantize_embeddings


def _quantize_embeddings(model: nn.Module, params: Mapping[str, Any]) -> nn.Module:
    # Artifacts made before fused lookups record no layout and hold one packed tensor per
    # table: the fused layout loads that state too (QuantizedSparseArch stacks it on load).
    layout = str(params.get("layout", "fused"))
    quantized, _ = quantize_embeddings(model, int(params["bits"]), inplace=True, layout=layout)
    return quantized


def quantize_embeddings_transform(bits: int, layout: str = "fused") -> dict[str, Any]:
    """The transform an artifact records for `quantize_embeddings(model, bits, layout=layout)`:
    the layout decides the module structure, and so the keys of the saved state."""
    return {"op": "quantize_embeddings", "bits": bits, "layout": layout}


def _quantize_dense(model: nn.Module, params: Mapping[str, Any]) -> nn.Module:
    # The structure only: calibrated scales and quantized weights come with the saved state.
    return prepare_quantized_dense(model, str(params["mode"]))


TRANSFORMS: dict[str, Callable[[nn.Module, Mapping[str, Any]], nn.Module]] = {
    "quantize_embeddings": _quantize_embeddings,
    "quantize_dense": _quantize_dense,
}


def apply_transforms(model: nn.Module, transforms: Sequence[Mapping[str, Any]]) -> nn.Module:
    """Replay `transforms` ({"op": name, **params}) on `model`, in order."""
    for spec in transforms:
        op = spec.get("op")
        if op not in TRANSFORMS:
            raise ConfigError(
                f"unknown model transform {op!r}",
                f"this recaccel knows {', '.join(TRANSFORMS)}; a newer one may know more",
            )
        try:
            model = TRANSFORMS[op](model, spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"transform {op!r} has bad parameters {dict(spec)}: {exc}") from None
    return model
