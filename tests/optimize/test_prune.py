"""Structured pruning: narrower layers, the right neurons removed, a loadable child artifact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.models.layers import MLP
from recaccel.models.registry import (
    MODELS,
    build_model,
    count_parameters,
    model_spec,
    preset_config,
)
from recaccel.optimize.prune import kept_width, neuron_importance, prune, prune_state
from recaccel.train.trainer import TrainConfig


@pytest.mark.parametrize(
    ("width", "fraction", "kept"),
    [(1024, 0.5, 512), (100, 0.3, 32), (6, 0.5, 6), (64, 1.0, 64), (256, 0.01, 8)],
)
def test_kept_width_rounds_up_to_a_multiple_of_8(width: int, fraction: float, kept: int) -> None:
    assert kept_width(width, fraction) == kept


def test_a_neuron_that_never_fires_ranks_below_every_firing_one_and_above_an_ignored_one() -> None:
    """Never firing on these rows, it may fire on others: pruned after every neuron the next
    layer ignores (no outgoing weight: useless whatever the input), before any that fires."""
    torch.manual_seed(0)
    mlp = MLP(4, (6, 3))
    with torch.no_grad():
        first, following = mlp.layers[0], mlp.layers[2]
        assert isinstance(first, nn.Linear) and isinstance(following, nn.Linear)
        first.weight[2].zero_()
        first.bias[2] = -1.0  # ReLU keeps it at 0 for every input
        following.weight[:, 4] = 0.0  # neuron 4 fires, and nothing listens
    (scores,) = neuron_importance(mlp, torch.randn(100, 4))
    assert scores.shape == (6,) and scores[4] == 0
    assert 0 < scores[2] < 1e-4 * scores[[0, 1, 3, 5]].min()


def _model(name: str, dataset: Dataset) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, dataset.schema, preset_config(name, "base")).eval()


@pytest.mark.parametrize("model_name", list(MODELS))
def test_keeping_everything_changes_nothing(tiny_dataset: Dataset, model_name: str) -> None:
    model = _model(model_name, tiny_dataset)
    config, state = prune_state(
        model, model_name, preset_config(model_name, "base"), tiny_dataset, 1.0
    )
    assert config == preset_config(model_name, "base")
    pruned = build_model(model_name, tiny_dataset.schema, config).eval()
    pruned.load_state_dict(state)
    batch = tiny_dataset.test.features().as_tuple()
    torch.testing.assert_close(pruned(*batch), model(*batch), rtol=0, atol=0)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_pruning_silent_neurons_leaves_the_output_unchanged(
    tiny_dataset: Dataset, model_name: str
) -> None:
    """Silence half the neurons of every hidden layer (no outgoing weight): those are exactly the
    ones pruning must pick, so the half-width model must compute the same function."""
    model = _model(model_name, tiny_dataset)
    with torch.no_grad():
        for module_path in model_spec(model_name).mlp_fields.values():
            mlp = model.get_submodule(module_path)
            assert isinstance(mlp, MLP)
            linears = [m for m in mlp.layers if isinstance(m, nn.Linear)]
            for following in linears[1:]:
                following.weight[:, 1::2] = 0.0  # odd neurons of the layer before: silent
    base = preset_config(model_name, "base")
    config, state = prune_state(model, model_name, base, tiny_dataset, 0.5)
    pruned = build_model(model_name, tiny_dataset.schema, config).eval()
    pruned.load_state_dict(state)
    assert count_parameters(pruned) < count_parameters(model)
    batch = tiny_dataset.test.features().as_tuple()
    # Narrower GEMMs sum in another order: float rounding, nothing more.
    torch.testing.assert_close(pruned(*batch), model(*batch), rtol=1e-4, atol=1e-5)


def test_prune_writes_a_smaller_child_artifact(
    tmp_path: Path, tiny_dataset: Dataset, train_tiny: Callable[[str, str, Path], Artifact]
) -> None:
    parent = train_tiny("dcnv2", "base", tmp_path / "parent")
    fast = TrainConfig(max_epochs=2, batch_size=128, learning_rate=3e-3)
    result = prune(parent, tiny_dataset, 0.25, tmp_path / "pruned", fast, progress=False)
    child = load_artifact(tmp_path / "pruned")
    assert child.manifest.parent == parent.manifest.artifact_id
    assert [s.op for s in child.manifest.lineage] == ["train", "prune"]
    assert child.manifest.parameters < parent.manifest.parameters
    assert child.config.deep_mlp == (64, 128)  # type: ignore[union-attr]  # 256 → 64; last kept
    assert "parent" in result.vs_baselines  # ΔAUC against the unpruned model, with a CI


def test_bad_keep_fraction(tiny_dataset: Dataset) -> None:
    model = _model("dlrm", tiny_dataset)
    with pytest.raises(ConfigError, match="keep fraction"):
        prune_state(model, "dlrm", preset_config("dlrm", "base"), tiny_dataset, 0.0)


def test_a_model_with_nothing_to_prune_is_refused(tiny_dataset: Dataset, tmp_path: Path) -> None:
    """DCNv2 with a one-layer deep MLP has no hidden neuron to remove: fine-tuning it and
    calling that pruning would let a recipe keep a step that changed nothing."""
    from recaccel.artifact import LineageStep
    from recaccel.models.dcn import DCNv2Config
    from recaccel.train.pipeline import TrainJob, train_one

    config = DCNv2Config(embedding_dim=8, cross_layers=1, cross_rank=None, deep_mlp=(32,))
    job = TrainJob("dcnv2", config, None, tmp_path / "flat", LineageStep("train"))
    train_one(tiny_dataset, job, TrainConfig(max_epochs=1), [], progress=False)
    artifact = load_artifact(tmp_path / "flat")
    with pytest.raises(ConfigError, match="nothing to prune"):
        prune(artifact, tiny_dataset, 0.25, tmp_path / "pruned", TrainConfig(), progress=False)
