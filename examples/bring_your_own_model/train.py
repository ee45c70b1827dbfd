"""Train `MyRanker` with a plain PyTorch loop, then export it the three ways recaccel imports.

This is the part of the example that stands for your own code: no recaccel trainer, no
recaccel model. Its rows come from recaccel's MovieLens-100K encoding only because the example
needs data to train on; your script reads your own.

    python examples/bring_your_own_model/train.py --out /tmp/my-ranker

writes to --out: `state.pt` (the state dict), `model.pt2` (torch.export), `model.onnx`,
`schema.toml`, the file that tells recaccel which features each model input takes, and
`users.parquet` and `items.parquet`, the encoded features `/v1/rank` can serve from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn
from torch.export import Dim

sys.path.insert(0, str(Path(__file__).parent))
from my_ranker import MyRanker

from recaccel.data.dataset import Dataset
from recaccel.data.movielens import feature_tables


def model_for(dataset: Dataset) -> tuple[MyRanker, dict[str, object]]:
    """The model sized for the dataset's features, and its constructor arguments."""
    schema = dataset.schema
    init: dict[str, object] = {
        "n_dense": len(schema.dense),
        "cardinalities": [f.cardinality for f in schema.categorical],
        "n_genres": schema.multi_hot[0].cardinality,
    }
    return MyRanker(**init), init  # type: ignore[arg-type]


def train(dataset: Dataset, out: Path, epochs: int = 3, seed: int = 0) -> dict[str, object]:
    """Fit on the training rows, export, and write the schema file; returns the init args."""
    torch.manual_seed(seed)
    model, init = model_for(dataset)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    rows = dataset.train
    shuffle = np.random.default_rng(seed)
    for _ in range(epochs):
        model.train()
        order = shuffle.permutation(len(rows))
        for start in range(0, len(rows), 512):
            index = order[start : start + 512]
            dense = torch.from_numpy(rows.dense[index])
            ids = torch.from_numpy(rows.categorical[index])
            genres = torch.from_numpy(rows.multi_hot[index, 0, :])
            loss = loss_fn(model(dense, ids, genres), torch.from_numpy(rows.label[index]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "state.pt")
    example = (
        torch.from_numpy(rows.dense[:4]),
        torch.from_numpy(rows.categorical[:4]),
        torch.from_numpy(rows.multi_hot[:4, 0, :]),
    )
    batch = Dim("batch", min=1)
    shapes = ({0: batch}, {0: batch}, {0: batch})
    torch.export.save(torch.export.export(model, example, dynamic_shapes=shapes), out / "model.pt2")
    torch.onnx.export(
        model,
        example,
        str(out / "model.onnx"),
        input_names=["dense", "ids", "genres"],
        output_names=["logit"],
        dynamic_shapes=shapes,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    write_schema(dataset, out / "schema.toml")
    write_feature_tables(dataset, out)
    return init


def write_feature_tables(dataset: Dataset, out: Path) -> None:
    """users.parquet and items.parquet: each user's and item's encoded features, the tables a
    feature pipeline of your own would write (here from recaccel's MovieLens encoding)."""
    assert dataset.encoding is not None
    users, items = feature_tables(dataset.encoding, dataset.schema)
    pq.write_table(users, out / "users.parquet")
    pq.write_table(items, out / "items.parquet")


def write_schema(dataset: Dataset, path: Path) -> None:
    """The schema file: each feature (kind, table size, side), then each model input's features.

    Written here from the dataset because the example's data is recaccel's; for your own model
    you write this file by hand, once.
    """
    lines = [f'name = "{dataset.name}"', f'label = "{dataset.schema.label}"', ""]
    for f in dataset.schema.features:
        lines += ["[[features]]", f'name = "{f.name}"', f'kind = "{f.kind}"', f'side = "{f.side}"']
        if f.cardinality:
            lines += [f"cardinality = {f.cardinality}", f"max_len = {f.max_len}"]
        lines.append("")
    lines += ["[model]", 'output = "logit"', ""]
    inputs = [
        ("dense", dataset.schema.dense, False),
        ("ids", dataset.schema.categorical, False),
        ("genres", dataset.schema.multi_hot, True),  # one bag, taken as (batch, max_len)
    ]
    for name, features, squeeze in inputs:
        listed = ", ".join(f'"{f.name}"' for f in features)
        lines += ["[[model.inputs]]", f'name = "{name}"', f"features = [{listed}]"]
        lines += [f"squeeze = {str(squeeze).lower()}", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    from recaccel.data.registry import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    init = train(load_dataset("movielens-100k"), args.out, args.epochs)
    import json

    (args.out / "init.json").write_text(json.dumps(init) + "\n")
    print(
        f"wrote {args.out}: state.pt, model.pt2, model.onnx, schema.toml, init.json, "
        "users.parquet, items.parquet"
    )


if __name__ == "__main__":
    main()
