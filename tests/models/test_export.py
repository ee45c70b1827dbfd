"""Every zoo model exports whole (torch.export) with a dynamic batch axis, so the runtime layer
can hand it to ONNX Runtime, OpenVINO or inductor without rewriting the model."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim, export

from recaccel.data.dataset import Dataset
from recaccel.models.registry import MODELS, build_model, preset_config


@pytest.mark.parametrize("model_name", list(MODELS))
def test_exports_with_a_dynamic_batch_and_plain_lookups(
    tiny_dataset: Dataset, model_name: str
) -> None:
    model = build_model(model_name, tiny_dataset.schema, preset_config(model_name, "small")).eval()
    batch = Dim("batch", min=1, max=4096)
    program = export(
        model,
        tiny_dataset.train.features(slice(0, 8)).as_tuple(),
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
    )
    other_size = tiny_dataset.test.features(slice(0, 33)).as_tuple()
    torch.testing.assert_close(program.module()(*other_size), model(*other_size))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    # One plain gather per single-valued field, one bag per multi-hot field; no loops.
    assert targets.count("aten.embedding.default") >= len(tiny_dataset.schema.categorical)
    assert not any("while" in t or "scan" in t for t in targets)
