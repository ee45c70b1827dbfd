"""A user's own ranking model, written as a user would, exported in each form recaccel imports."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.export import Dim

# The user's package: a module recaccel has never seen, imported by name as `package.module:Class`.
USER_MODULE = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class Ranker(nn.Module):
        """Dense features, a stack of ids and a bag of tags; one logit per row."""

        def __init__(self, n_dense=2, cardinalities=(11, 21), tags=6, dim=4, probability=False):
            super().__init__()
            self.tables = nn.ModuleList(nn.Embedding(c, dim) for c in cardinalities)
            self.bag = nn.EmbeddingBag(tags, dim, mode="sum", padding_idx=0)
            width = n_dense + dim * (len(cardinalities) + 1)
            self.mlp = nn.Sequential(nn.Linear(width, 8), nn.ReLU(), nn.Linear(8, 1))
            self.probability = probability

        def forward(self, dense, ids, tags):
            vectors = [t(ids[:, i]) for i, t in enumerate(self.tables)] + [self.bag(tags)]
            out = self.mlp(torch.cat([dense, *vectors], 1))
            return torch.sigmoid(out) if self.probability else out
    '''
)

SCHEMA = textwrap.dedent(
    """
    name = "toy"
    [[features]]
    name = "price"
    kind = "dense"
    [[features]]
    name = "user_id"
    kind = "categorical"
    cardinality = 11
    side = "request"
    [[features]]
    name = "age"
    kind = "dense"
    side = "request"
    [[features]]
    name = "item_id"
    kind = "categorical"
    cardinality = 21
    [[features]]
    name = "tags"
    kind = "multi_hot"
    cardinality = 6
    max_len = 3

    [model]
    output = "{output}"
    [[model.inputs]]
    name = "dense"
    features = ["age", "price"]
    [[model.inputs]]
    name = "ids"
    features = ["user_id", "item_id"]
    [[model.inputs]]
    name = "tags"
    features = ["tags"]
    squeeze = true
    """
)


@dataclass(frozen=True)
class UserModel:
    """One user model in every form, and the schema file that binds it."""

    module: torch.nn.Module  # the reference: what every imported form must score as
    directory: Path
    schema: Path
    state: Path
    pt2: Path
    onnx: Path

    def source(self, form: str) -> tuple[str, dict[str, object]]:
        """What `import_model` takes for `form`: the source and its keyword arguments."""
        if form == "class":
            init = {"probability": self.module.probability}
            return "byom_user_model:Ranker", {"weights": self.state, "init": init}
        return str(self.pt2 if form == "pt2" else self.onnx), {}


def reference_logits(model: torch.nn.Module, dense, categorical, multi_hot) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The user model called directly, as the schema file above binds it."""
    with torch.no_grad():
        out = model(dense[:, [1, 0]], categorical[:, [0, 1]], multi_hot[:, 0, :3]).reshape(-1)
    return torch.logit(out.clamp(1e-7, 1 - 1e-7)) if model.probability else out


def make_user_model(directory: Path, probability: bool) -> UserModel:
    directory.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(directory.parent))
    from byom_user_model import Ranker  # type: ignore[import-not-found]

    torch.manual_seed(0)
    model = Ranker(probability=probability).eval()
    state = directory / "state.pt"
    torch.save(model.state_dict(), state)
    args = (torch.randn(4, 2), torch.randint(0, 11, (4, 2)), torch.randint(0, 6, (4, 3)))
    batch = Dim("batch", min=1)
    shapes = ({0: batch}, {0: batch}, {0: batch})
    program = torch.export.export(model, args, dynamic_shapes=shapes)
    torch.export.save(program, directory / "model.pt2")
    torch.onnx.export(
        model,
        args,
        str(directory / "model.onnx"),
        input_names=["dense", "ids", "tags"],
        output_names=["score"],  # recaccel's own output name: the binding must rename it
        dynamic_shapes=shapes,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    schema = directory / "schema.toml"
    schema.write_text(SCHEMA.format(output="probability" if probability else "logit"))
    return UserModel(
        model, directory, schema, state, directory / "model.pt2", directory / "model.onnx"
    )
