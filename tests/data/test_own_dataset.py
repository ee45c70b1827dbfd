"""A dataset of your own: interactions, users and items tables named by a spec file
(data/own.py), trained on and served from."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recaccel.artifact import load_artifact, read_manifest
from recaccel.cli import main
from recaccel.data.own import load_own_dataset
from recaccel.data.registry import load_dataset
from recaccel.errors import ConfigError
from recaccel.serve.config import RankSection
from recaccel.serve.server import feature_source_for
from recaccel.serve.table_source import TableSource
from recaccel.train.imports import import_artifact

SPEC = textwrap.dedent(
    """
    name = "shop"
    label = "clicked"

    [[features]]
    name = "age"
    kind = "dense"
    side = "request"
    [[features]]
    name = "hour"
    kind = "dense"
    side = "request"
    [[features]]
    name = "price"
    kind = "dense"
    [[features]]
    name = "gender"
    kind = "categorical"
    cardinality = 3
    side = "request"
    [[features]]
    name = "category"
    kind = "categorical"
    cardinality = 5
    [[features]]
    name = "tags"
    kind = "multi_hot"
    cardinality = 7
    max_len = 2

    [data]
    interactions = "interactions.parquet"
    users = "users.parquet"
    items = "items.parquet"
    """
)
N_USERS, N_ITEMS, PER_USER = 20, 30, 10


def write_tables(directory: Path, interactions: dict[str, object] | None = None) -> Path:
    """The shop's tables and spec in `directory`; `interactions` replaces columns."""
    rng = np.random.default_rng(0)
    users = {
        "user_id": np.arange(100, 100 + N_USERS),
        "age": rng.normal(size=N_USERS).astype(np.float32),
        "hour": np.zeros(N_USERS, dtype=np.float32),  # at serving time: a value of "now"
        "gender": rng.integers(0, 3, N_USERS),
    }
    items = {
        "item_id": np.arange(1, N_ITEMS + 1),
        "price": rng.normal(size=N_ITEMS).astype(np.float32),
        "category": rng.integers(0, 5, N_ITEMS),
        "tags": [
            [int(t) for t in rng.choice(np.arange(1, 7), 2, replace=False)] for _ in range(N_ITEMS)
        ],
    }
    user_col = np.repeat(users["user_id"], PER_USER)
    columns: dict[str, object] = {
        "user_id": user_col,
        "item_id": np.concatenate(
            [rng.choice(items["item_id"], PER_USER, replace=False) for _ in range(N_USERS)]
        ),
        "timestamp": rng.permutation(len(user_col)) + 1_000,
        "clicked": rng.integers(0, 2, len(user_col)),
        "hour": rng.uniform(0, 1, len(user_col)).astype(np.float32),  # of the interaction
        **(interactions or {}),
    }
    pq.write_table(pa.table(users), directory / "users.parquet")
    pq.write_table(pa.table(items), directory / "items.parquet")
    pq.write_table(pa.table(columns), directory / "interactions.parquet")
    spec = directory / "shop.toml"
    spec.write_text(SPEC)
    return spec


def test_each_row_is_its_users_its_items_and_its_own_features(tmp_path: Path) -> None:
    spec = write_tables(tmp_path)
    dataset = load_own_dataset(spec)
    interactions = pq.read_table(tmp_path / "interactions.parquet").to_pydict()
    users = pq.read_table(tmp_path / "users.parquet").to_pydict()
    items = pq.read_table(tmp_path / "items.parquet").to_pydict()
    assert sum(len(s) for s in (dataset.train, dataset.validation, dataset.test)) == 200
    # Find interaction 0 among the splits by its (dense) fingerprint, and check every column.
    u = users["user_id"].index(interactions["user_id"][0])
    i = items["item_id"].index(interactions["item_id"][0])
    want_dense = [users["age"][u], interactions["hour"][0], items["price"][i]]
    want_categorical = [users["gender"][u], items["category"][i]]
    found = 0
    for split in (dataset.train, dataset.validation, dataset.test):
        for row in range(len(split)):
            if np.allclose(split.dense[row], want_dense):
                found += 1
                assert list(split.categorical[row]) == want_categorical
                assert list(split.multi_hot[row, 0]) == items["tags"][i]
                assert split.label[row] == interactions["clicked"][0]
    assert found == 1


def test_each_users_latest_interactions_are_the_test_split(tmp_path: Path) -> None:
    spec = write_tables(tmp_path)
    dataset = load_own_dataset(spec)
    interactions = pq.read_table(tmp_path / "interactions.parquet").to_pandas()
    first = interactions[interactions.user_id == 100].sort_values("timestamp")
    latest_hour = np.float32(first.iloc[-1].hour)
    earliest_hour = np.float32(first.iloc[0].hour)
    assert (dataset.test.dense[:, 1] == latest_hour).any()
    assert (dataset.train.dense[:, 1] == earliest_hour).any()
    assert len(dataset.test) == N_USERS and len(dataset.validation) == N_USERS  # 10% of 10 each


SPEC_MISTAKES = [
    (
        {"user_id": np.repeat(np.arange(100, 120), 10) + (np.arange(200) == 7) * 1000},
        "a user the users table lacks: 1100",
    ),
    ({"clicked": np.full(200, 2)}, "other than 0 and 1"),
    ({"timestamp": None}, "no column 'timestamp'"),
]


@pytest.mark.parametrize(("columns", "says"), SPEC_MISTAKES)
def test_tables_that_do_not_fit_the_spec_are_refused_naming_the_problem(
    tmp_path: Path, columns: dict[str, object], says: str
) -> None:
    spec = write_tables(tmp_path, {k: v for k, v in columns.items() if v is not None})
    if any(v is None for v in columns.values()):
        table = pq.read_table(tmp_path / "interactions.parquet")
        pq.write_table(
            table.drop_columns([k for k, v in columns.items() if v is None]),
            tmp_path / "interactions.parquet",
        )
    with pytest.raises(ConfigError) as caught:
        load_own_dataset(spec)
    assert says in caught.value.message, caught.value.message


def test_a_feature_only_the_interactions_hold_is_refused_for_serving(tmp_path: Path) -> None:
    spec = write_tables(tmp_path)
    users = pq.read_table(tmp_path / "users.parquet").drop_columns(["hour"])
    pq.write_table(users, tmp_path / "users.parquet")
    with pytest.raises(ConfigError, match="hour come only from the interactions table"):
        load_own_dataset(spec)


def test_a_spec_without_tables_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "shop.toml"
    spec.write_text(SPEC[: SPEC.index("[data]")])
    with pytest.raises(ConfigError, match=r"no \[data\] table"):
        load_own_dataset(spec)


def test_trained_on_your_own_data_then_ranked_from_its_tables(tmp_path: Path) -> None:
    spec = write_tables(tmp_path)
    assert load_dataset(str(spec)).name == str(spec.resolve())
    out = tmp_path / "artifact"
    args = ["train", "--dataset", str(spec), "--model", "deepfm", "--preset", "small"]
    assert main([*args, "--epochs", "1", "--no-baselines", "--out", str(out)]) == 0
    assert read_manifest(out).dataset["spec"] == str(spec.resolve())
    source = feature_source_for(out, RankSection())
    assert isinstance(source, TableSource)
    rows, ids = source.rows(105, [3, 17])
    np.testing.assert_array_equal(ids, [3, 17])
    items = pq.read_table(tmp_path / "items.parquet").to_pydict()
    np.testing.assert_allclose(rows.dense[:, 2], [items["price"][2], items["price"][16]])
    assert main(["data", "--dataset", str(spec)]) == 0


MODEL_INPUTS = """
[model]
[[model.inputs]]
name = "dense"
features = ["age", "hour", "price"]
[[model.inputs]]
name = "ids"
features = ["gender", "category"]
[[model.inputs]]
name = "tags"
features = ["tags"]
squeeze = true
"""


class ShopModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ids = torch.nn.Embedding(5, 4)
        self.tags = torch.nn.EmbeddingBag(7, 4, mode="sum", padding_idx=0)
        self.out = torch.nn.Linear(3 + 4, 1)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        pooled = self.ids(ids).sum(dim=1) + self.tags(tags)
        return self.out(torch.cat([dense, pooled], dim=1))


def test_a_model_of_your_own_imported_on_your_own_data_is_scored_and_ranked(
    tmp_path: Path,
) -> None:
    spec = write_tables(tmp_path)
    dataset = load_dataset(str(spec))
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1)
    example = (torch.randn(4, 3), torch.randint(0, 3, (4, 2)), torch.randint(0, 7, (4, 2)))
    program = torch.export.export(
        ShopModel().eval(), example, dynamic_shapes=({0: batch}, {0: batch}, {0: batch})
    )
    torch.export.save(program, tmp_path / "model.pt2")
    schema_file = tmp_path / "schema.toml"
    schema_file.write_text(SPEC[: SPEC.index("[data]")] + MODEL_INPUTS)
    out = tmp_path / "imported"
    report = import_artifact(str(tmp_path / "model.pt2"), schema_file, out, dataset=dataset)
    assert set(report.manifest.metrics) == {"validation", "test"}
    assert report.manifest.dataset["spec"] == str(spec.resolve())
    source = feature_source_for(out, RankSection())  # the spec's own users and items tables
    assert isinstance(source, TableSource)
    rows, _ = source.rows(105, [3, 17])
    assert load_artifact(out).model(*(torch.from_numpy(a) for a in rows.as_tuple())).shape == (2,)
