"""How a model of the user's own takes recaccel's feature rows: the schema file.

recaccel hands every model the same three tensors (see data/schema.py): `dense` (B, n_dense)
float32, `categorical` (B, n_categorical) int64 and `multi_hot` (B, n_multi_hot, L) int64, in
the schema's feature order. A model trained elsewhere has inputs of its own names and layouts.
The schema file declares the features (as a `FeatureSchema`) and, for each of the model's
inputs, which features it takes, stacked in the order listed:

    [[features]]
    name = "user_id"
    kind = "categorical"        # dense | categorical | multi_hot
    cardinality = 1001          # rows of its table, index 0 included
    side = "request"            # request (the user's, one per rank request) | candidate

    [model]
    output = "logit"            # logit (default) | probability

    [[model.inputs]]
    name = "sparse_ids"         # the model's argument (PyTorch) or graph input (ONNX)
    features = ["user_id", "item_id"]   # (B, 2); one kind per input
    squeeze = false             # true: a single feature as (B,) (multi-hot: (B, max_len))
    dtype = "int64"             # PyTorch models; an ONNX graph's own input types win

The file may be TOML or YAML (by suffix). Categorical values reach the model as they are in the
rows: the ids the model's tables index, 0 to cardinality - 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from recaccel.data.schema import FeatureKind, FeatureSchema
from recaccel.data.spec_file import features_of, read_spec_file
from recaccel.errors import ConfigError

# dtypes an input may ask for, by kind: what a CTR model's inputs are in practice.
DTYPES: dict[FeatureKind, tuple[str, ...]] = {
    FeatureKind.DENSE: ("float32", "float16", "bfloat16", "float64"),
    FeatureKind.CATEGORICAL: ("int64", "int32"),
    FeatureKind.MULTI_HOT: ("int64", "int32"),
}
DEFAULT_DTYPE = {
    FeatureKind.DENSE: "float32",
    FeatureKind.CATEGORICAL: "int64",
    FeatureKind.MULTI_HOT: "int64",
}


class OutputKind(StrEnum):
    LOGIT = "logit"  # the score before the sigmoid, what recaccel's own models return
    PROBABILITY = "probability"  # the sigmoid's output: turned back into a logit on the way out


@dataclass(frozen=True)
class InputBinding:
    """One input of the model: the features it takes, stacked along axis 1 in this order."""

    name: str
    kind: FeatureKind
    columns: tuple[int, ...]  # each feature's column in the schema's tensor of `kind`
    features: tuple[str, ...]
    squeeze: bool = False
    dtype: str = ""  # "" = the kind's default

    @property
    def torch_dtype_name(self) -> str:
        return self.dtype or DEFAULT_DTYPE[self.kind]

    def shape(self, schema: FeatureSchema) -> tuple[str | int, ...]:
        """The input's shape, "batch" first, as this binding builds it."""
        width: tuple[int, ...] = () if self.squeeze else (len(self.columns),)
        if self.kind is FeatureKind.MULTI_HOT:
            return ("batch", *width, self.bag_len(schema))
        return ("batch", *width)

    def bag_len(self, schema: FeatureSchema) -> int:
        """Multi-hot only: ids per bag, the longest `max_len` of its features."""
        return max(schema[name].max_len for name in self.features)


@dataclass(frozen=True)
class ModelBinding:
    """Every input of the model, in the order its forward takes them, and what it returns."""

    inputs: tuple[InputBinding, ...]
    output: OutputKind = OutputKind.LOGIT

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output.value,
            "inputs": [
                {
                    "name": b.name,
                    "features": list(b.features),
                    "squeeze": b.squeeze,
                    "dtype": b.dtype,
                }
                for b in self.inputs
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], schema: FeatureSchema) -> ModelBinding:
        return _binding(data, schema)


def read_schema_file(path: Path) -> tuple[FeatureSchema, ModelBinding]:
    """The features and the model's inputs declared in a TOML or YAML schema file."""
    data = read_spec_file(path, "schema file")
    schema = features_of(data, path)
    model = data.get("model")
    if not isinstance(model, dict):
        raise ConfigError(f"{path} has no [model] table", "add [model] with its [[model.inputs]]")
    return schema, _binding(model, schema)


def _binding(data: Mapping[str, Any], schema: FeatureSchema) -> ModelBinding:
    output = data.get("output", OutputKind.LOGIT.value)
    if output not in [k.value for k in OutputKind]:
        raise ConfigError(
            f"model output {output!r} is neither logit nor probability",
            'output = "logit" for a score before the sigmoid, "probability" after it',
        )
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ConfigError(
            "the model declares no inputs",
            "add a [[model.inputs]] entry per model input: its name and the features it takes",
        )
    bindings = tuple(_input(entry, i, schema) for i, entry in enumerate(inputs))
    names = [b.name for b in bindings]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"model inputs named twice: {', '.join(repeated)}", "name each once")
    return ModelBinding(bindings, OutputKind(output))


def _input(entry: object, index: int, schema: FeatureSchema) -> InputBinding:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"model.inputs[{index}] needs a name", 'e.g. name = "dense_features"')
    name = entry["name"]
    features = entry.get("features")
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, str) for f in features)
    ):
        raise ConfigError(
            f"model input {name!r} lists no features",
            'features = ["a", "b"]: the schema\'s features it takes, in the order it takes them',
        )
    unknown = [f for f in features if f not in {x.name for x in schema.features}]
    if unknown:
        raise ConfigError(
            f"model input {name!r} takes features the schema does not declare: "
            f"{', '.join(unknown)}",
            f"declared: {', '.join(f.name for f in schema.features)}",
        )
    kinds = {schema[f].kind for f in features}
    if len(kinds) > 1:
        raise ConfigError(
            f"model input {name!r} mixes feature kinds ({', '.join(sorted(kinds))})",
            "one kind per input: dense features in one input, ids in another",
        )
    kind = kinds.pop()
    squeeze = bool(entry.get("squeeze", False))
    if squeeze and len(features) != 1:
        raise ConfigError(
            f"model input {name!r} squeezes {len(features)} features",
            "squeeze = true takes one feature as (batch,); drop it to stack several",
        )
    dtype = str(entry.get("dtype", ""))
    if dtype and dtype not in DTYPES[kind]:
        raise ConfigError(
            f"model input {name!r} asks for dtype {dtype!r}, which {kind} features cannot be",
            f"one of {', '.join(DTYPES[kind])}",
        )
    of_kind = [f.name for f in schema.of_kind(kind)]
    return InputBinding(
        name=name,
        kind=kind,
        columns=tuple(of_kind.index(f) for f in features),
        features=tuple(features),
        squeeze=squeeze,
        dtype=dtype,
    )


FLOAT_DTYPES = DTYPES[FeatureKind.DENSE]


def checked_input(
    binding: InputBinding,
    dtype: str,
    shape: Sequence[int | str],
    schema: FeatureSchema,
    form: str,
) -> InputBinding:
    """`binding` with the dtype a model graph declares for its input, after checking the
    graph's dtype and shape against what the binding builds.

    Args:
        dtype: the graph's dtype name ("" when it is none recaccel can feed).
        shape: the graph's shape; symbolic dims as strings.
        form: how to name the graph in errors ("ONNX", "torch.export").
    """
    if (binding.kind is FeatureKind.DENSE) != (dtype in FLOAT_DTYPES) or not dtype:
        raise ConfigError(
            f"{form} input {binding.name!r} is {dtype or 'of an unsupported type'}, but it is "
            f"bound to {binding.kind} features ({', '.join(binding.features)})",
            "bind dense features to float inputs and ids to int32/int64 inputs",
        )
    built = binding.shape(schema)
    wrong = len(shape) != len(built) or any(
        isinstance(have, int) and have > 0 and isinstance(want, int) and have != want
        for have, want in zip(shape[1:], built[1:], strict=False)
    )
    if wrong:
        raise ConfigError(
            f"{form} input {binding.name!r} has shape {tuple(shape)}; the schema file builds "
            f"{built} from its {len(binding.features)} feature(s)",
            "list the features it takes in its [[model.inputs]] entry (squeeze = true for a "
            "single feature taken as (batch,))",
        )
    return InputBinding(
        binding.name, binding.kind, binding.columns, binding.features, binding.squeeze, dtype
    )


def unbound_features(schema: FeatureSchema, binding: ModelBinding) -> Sequence[str]:
    """Features the schema declares that no model input takes (kept: serving may need them)."""
    taken = {f for b in binding.inputs for f in b.features}
    return [f.name for f in schema.features if f.name not in taken]
