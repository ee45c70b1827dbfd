"""Request-level reuse: a zoo model cut into the part computed once per rank request (the
user's and the context's features) and the part computed per candidate (docs/reuse.md)."""

from __future__ import annotations

import torch
from torch import nn

from recaccel.data.dataset import example_batch
from recaccel.data.schema import FeatureSchema, Side
from recaccel.errors import ConfigError
from recaccel.models.dcn import DCNv2
from recaccel.models.deepfm import DeepFM
from recaccel.models.dlrm import DLRM
from recaccel.models.split.contract import SplitModel
from recaccel.models.split.families import (
    SplitDCNv2,
    SplitDeepFM,
    SplitDLRM,
    SplitTower,
    SplitWideDeep,
)
from recaccel.models.tower import TowerRanker
from recaccel.models.wide_deep import WideDeep

__all__ = [
    "OneRankRequest",
    "SplitModel",
    "from_model",
    "joined_rows",
    "split_example",
    "splits",
]

_TWINS: dict[type[nn.Module], type[SplitModel]] = {
    DLRM: SplitDLRM,
    DeepFM: SplitDeepFM,
    DCNv2: SplitDCNv2,
    WideDeep: SplitWideDeep,
    TowerRanker: SplitTower,
}
_FAMILIES = ("dlrm", "deepfm", "dcnv2", "wide_deep", "tower")  # the zoo's names of those classes


def splits(model_name: str, schema: FeatureSchema) -> bool:
    """Whether a model of the zoo family `model_name` on `schema` has a split twin: a zoo
    family, and a schema that marks some feature request-side. What serving selection asks
    before it offers reuse as a candidate (reading a manifest, not loading weights)."""
    return model_name in _FAMILIES and bool(schema.on_side(Side.REQUEST))


def from_model(model: nn.Module, schema: FeatureSchema) -> SplitModel:
    """The split twin of a zoo model: the same logits, the request part computed once.

    The twin shares the model's tables and layers (it copies only the first layers' weights it
    cuts), is in eval mode, and takes its sides from `schema` (the dataset's: an artifact saved
    before sides existed has none). ConfigError for a model that is not one of the zoo's
    families (an imported graph: its inside is not ours to cut) or that has nothing to split.
    """
    twin_type = _TWINS.get(type(model))
    if twin_type is None:
        raise ConfigError(
            f"no request/candidate split for a {type(model).__name__}",
            f"reuse splits the zoo's families ({', '.join(t.__name__ for t in _TWINS)}); "
            "serve this model without it",
        )
    if not schema.on_side(Side.REQUEST):
        raise ConfigError(
            f"schema {schema.name!r} marks no feature request-side, so nothing is computed once",
            "mark the user's and the context's features side = \"request\" in the schema",
        )
    try:
        twin = twin_type(model, schema)
    except (ValueError, KeyError) as error:
        raise ConfigError(
            f"cannot split this {type(model).__name__}: {error}",
            "serve it without reuse",
        ) from None
    return twin.eval()


def joined_rows(
    schema: FeatureSchema,
    request: tuple[torch.Tensor, ...],
    candidates: tuple[torch.Tensor, ...],
    owner: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The unsplit model's rows for the twin's inputs: each candidate row (copied) with its
    request's request-side columns, so `model(*joined_rows(...))` is what the twin scores."""
    rows = tuple(t.clone() for t in candidates)
    for columns, full, part in zip(
        schema.columns_on_side(Side.REQUEST), rows, request, strict=True
    ):
        full[:, list(columns)] = part[owner][:, list(columns)]
    return rows


def split_example(
    schema: FeatureSchema, requests: int, rows: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random valid inputs of the split graph: `requests` request rows, `rows` candidate
    rows dealt round-robin among them."""
    request = example_batch(schema, requests, seed=seed)
    candidates = example_batch(schema, rows, seed=seed + 1)
    owner = torch.arange(rows, dtype=torch.long) % requests
    return (*request.as_tuple(), *candidates.as_tuple(), owner)


class OneRankRequest(nn.Module):
    """A twin called as a model: (dense, categorical, multi_hot) of B rows, scored as one rank
    request whose request row is the first. What the search times a student as when it
    serves with reuse (its cost per request is the same whichever user the rows hold)."""

    def __init__(self, twin: SplitModel) -> None:
        super().__init__()
        self.twin = twin

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        owner = torch.zeros(dense.shape[0], dtype=torch.long, device=dense.device)
        request = (dense[:1], categorical[:1], multi_hot[:1])
        logits: torch.Tensor = self.twin(*request, dense, categorical, multi_hot, owner)
        return logits
