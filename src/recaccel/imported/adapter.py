"""A model of the user's own behind recaccel's model contract.

`BoundModel` takes the three schema tensors, builds each of the user's inputs as the schema
file binds it (columns gathered, bags cut to length, squeezed, cast), calls the user's model
positionally in its own argument order, and returns (B,) float32 logits, as every zoo model
does. So training, evaluation, distillation, the PyTorch executors and the ONNX export take an
imported model as they take their own: nothing downstream learns that it was imported.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence

import torch
from torch import nn

from recaccel.data.schema import FeatureKind, FeatureSchema
from recaccel.errors import ConfigError
from recaccel.imported.binding import InputBinding, ModelBinding, OutputKind

# A probability of exactly 0 or 1 has no finite logit; clamped this far inside, the logit is
# about ±16.6 in float32, past any score a CTR model ranks by.
PROBABILITY_EPS = 1e-7
_KIND_INDEX = {FeatureKind.DENSE: 0, FeatureKind.CATEGORICAL: 1, FeatureKind.MULTI_HOT: 2}


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name)
    assert isinstance(dtype, torch.dtype), name
    return dtype


def argument_order(
    names: Sequence[str], required: Sequence[str], binding: ModelBinding
) -> list[int]:
    """The index in `binding.inputs` of each argument the model is called with, in its order.

    Args:
        names: the model's argument names, in order.
        required: those of them without a default.
        binding: the schema file's inputs.

    Raises:
        ConfigError: a bound input the model has no argument for, or a required argument no
            input is bound to.
    """
    bound = [b.name for b in binding.inputs]
    unknown = [n for n in bound if n not in names]
    if unknown:
        raise ConfigError(
            f"the model has no input named {', '.join(map(repr, unknown))}",
            f"its inputs are ({', '.join(names)}): name each [[model.inputs]] after one",
        )
    missing = [n for n in required if n not in bound]
    if missing:
        raise ConfigError(
            f"the model's input(s) {', '.join(map(repr, missing))} take no features",
            "add a [[model.inputs]] entry for each, with the features it takes",
        )
    # Arguments past the last bound one keep their defaults; one in between cannot be skipped.
    last = max(names.index(n) for n in bound)
    skipped = [n for n in names[:last] if n not in bound]
    if skipped:
        raise ConfigError(
            f"the model's input(s) {', '.join(map(repr, skipped))} come before bound ones and "
            "take no features",
            "bind them too: recaccel calls the model with its inputs in order",
        )
    return [bound.index(n) for n in names[: last + 1]]


def forward_arguments(module: nn.Module) -> tuple[list[str], list[str]]:
    """The names of `module.forward`'s arguments, and those without a default."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return [], []
    plain = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    names = [p.name for p in plain]
    return names, [p.name for p in plain if p.default is inspect.Parameter.empty]


class BoundModel(nn.Module):
    """The user's `inner` model, called with the inputs `binding` builds from schema rows.

    Args:
        inner: the user's model (a module, an exported program's module, or an ONNX graph).
        schema: the features.
        binding: the model's inputs and output.
        order: the index in `binding.inputs` of each argument `inner` is called with, in its
            order (see `argument_order`).
    """

    def __init__(
        self, inner: nn.Module, schema: FeatureSchema, binding: ModelBinding, order: Sequence[int]
    ) -> None:
        super().__init__()
        self.inner = inner
        self.binding = binding
        self.order = tuple(order)
        self._specs = [self._spec(binding.inputs[i], schema) for i in self.order]
        for i, (_, columns, _, _, _) in enumerate(self._specs):
            # Not persistent: derived from the schema file, so it stays out of saved weights.
            self.register_buffer(f"columns_{i}", columns, persistent=False)

    @staticmethod
    def _spec(
        binding: InputBinding, schema: FeatureSchema
    ) -> tuple[int, torch.Tensor, int | None, bool, torch.dtype]:
        bag = binding.bag_len(schema) if binding.kind is FeatureKind.MULTI_HOT else None
        columns = torch.tensor(binding.columns, dtype=torch.long)
        dtype = _dtype(binding.torch_dtype_name)
        return _KIND_INDEX[binding.kind], columns, bag, binding.squeeze, dtype

    def model_inputs(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> list[torch.Tensor]:
        """The user model's arguments, in its order, for a batch of schema rows."""
        sources = (dense, categorical, multi_hot)
        out = []
        for i, (kind, _, bag, squeeze, dtype) in enumerate(self._specs):
            x = sources[kind].index_select(1, getattr(self, f"columns_{i}"))
            if bag is not None:
                x = x[:, :, :bag]
            if squeeze:
                x = x.squeeze(1)
            out.append(x.to(dtype))
        return out

    def train(self, mode: bool = True) -> BoundModel:
        """As `nn.Module.train`, but a torch.export program's module, which refuses to change
        mode (it was exported in one), is left as it is."""
        self.training = mode
        with contextlib.suppress(NotImplementedError):
            self.inner.train(mode)
        return self

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B,) float32 for dense (B, n_dense), categorical (B, n_cat), multi_hot."""
        out: torch.Tensor = self.inner(*self.model_inputs(dense, categorical, multi_hot))
        scores = out.reshape(dense.shape[0]).float()
        if self.binding.output is OutputKind.PROBABILITY:
            scores = torch.logit(scores.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS))
        return scores
