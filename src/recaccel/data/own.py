"""A dataset of your own: labelled interactions plus users and items tables (Parquet or CSV),
named by a spec file.

The spec is a schema file's `[[features]]` (data/spec_file.py) with a `[data]` table naming
the tables, paths relative to the spec's directory:

    name = "my-shop"
    label = "clicked"            # the interactions' label column: 0 or 1
    [[features]]
    ...
    [data]
    interactions = "interactions.parquet"   # user_id, item_id, timestamp, the label, and any
                                            # feature of the interaction itself (below)
    users = "users.parquet"                 # user_id + request-side features
    items = "items.parquet"                 # item_id + candidate-side features

Each feature is read, already encoded (data/tables.py), from the interactions table when it
has a column of that name — a feature of the moment or of the pair, such as the user's tenure
when they rated, or the item's age then — and otherwise from its side's table. Rows are split
by time within each user, as MovieLens is (`per_user_time_split`: the last 10% of each user's
interactions for test, the 10% before for validation).

`/v1/rank` on a model trained on such a dataset takes its rows from the same users and items
tables (serve/table_source.py): a feature that only the interactions table holds has no
value at serving time, and the spec refuses it there, naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recaccel.data.dataset import Dataset, Split
from recaccel.data.movielens import TEST, TRAIN, VALIDATION, per_user_time_split
from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema, Side
from recaccel.data.spec_file import features_of, read_spec_file
from recaccel.data.tables import encoded, read_table, table_keys
from recaccel.errors import ConfigError

SPEC_SUFFIXES = (".toml", ".yaml", ".yml")
TABLES = ("interactions", "users", "items")


def is_spec(name: str) -> bool:
    """Whether a dataset name is a spec file's path rather than a built-in dataset's name."""
    return name.endswith(SPEC_SUFFIXES) and Path(name).is_file()


def _paths(data: dict[str, Any], spec: Path) -> dict[str, Path]:
    tables = data.get("data")
    if not isinstance(tables, dict) or any(not isinstance(tables.get(t), str) for t in TABLES):
        raise ConfigError(
            f"{spec} has no [data] table naming {', '.join(TABLES)}",
            'add [data] with interactions = "...", users = "...", items = "..." (Parquet)',
        )
    return {name: (spec.parent / tables[name]).resolve() for name in TABLES}


def _rows_of(ids: np.ndarray, keys: np.ndarray, what: str) -> np.ndarray:
    """Each of `ids`' row in `keys`; ConfigError naming ids the table lacks."""
    order = np.argsort(keys, kind="stable")
    at = np.minimum(np.searchsorted(keys[order], ids), len(keys) - 1)
    missing = keys[order][at] != ids
    if missing.any():
        shown = ", ".join(str(i) for i in np.unique(ids[missing])[:10].tolist())
        raise ConfigError(
            f"{int(missing.sum())} interaction(s) name a {what} the {what}s table lacks: {shown}",
            f"add a row for every {what} to the {what}s table",
        )
    rows: np.ndarray = order[at]
    return rows


def _labels(interactions: pa.Table, label: str, spec: Path) -> np.ndarray:
    if label not in interactions.column_names:
        raise ConfigError(
            f"the interactions table has no label column {label!r}",
            f'name the 0/1 column with label = "..." in {spec.name}',
        )
    values: np.ndarray = interactions.column(label).to_numpy(zero_copy_only=False)
    values = values.astype(np.float32)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ConfigError(f"label column {label!r} holds values other than 0 and 1")
    return values


def _serving_gaps(
    schema: FeatureSchema, interactions: pa.Table, users: pa.Table, items: pa.Table
) -> list[str]:
    """Features read from the interactions table that its side's table lacks, so that serving
    would have no value for them."""
    return [
        f.name
        for f in schema.features
        if f.name in interactions.column_names
        and f.name not in (users if f.side is Side.REQUEST else items).column_names
    ]


def load_own_dataset(spec: Path) -> Dataset:
    """The dataset a spec file describes (module docstring), split by time within each user."""
    spec = Path(spec).resolve()
    data = read_spec_file(spec, "dataset spec")
    schema = features_of(data, spec)
    paths = _paths(data, spec)
    interactions, users, items = (read_table(paths[t]) for t in TABLES)
    for column in ("user_id", "item_id", "timestamp"):
        if column not in interactions.column_names:
            raise ConfigError(
                f"the interactions table has no column {column!r}",
                "it needs user_id, item_id, timestamp and the label, one row per interaction",
            )
    gaps = _serving_gaps(schema, interactions, users, items)
    if gaps:
        raise ConfigError(
            f"feature(s) {', '.join(gaps)} come only from the interactions table, so /v1/rank "
            "would have no value for them",
            "add each to its side's table too (users or items) with its value at serving time",
        )
    user_ids = table_keys(interactions, Side.REQUEST, "interactions", unique=False)
    item_ids = table_keys(interactions, Side.CANDIDATE, "interactions", unique=False)
    user_rows = _rows_of(user_ids, table_keys(users, Side.REQUEST, "users"), "user")
    item_rows = _rows_of(item_ids, table_keys(items, Side.CANDIDATE, "items"), "item")
    own = [f for f in schema.features if f.name in interactions.column_names]
    rest = [f for f in schema.features if f.name not in interactions.column_names]
    from_users = encoded(schema, [f for f in rest if f.side is Side.REQUEST], users, "users")
    from_items = encoded(schema, [f for f in rest if f.side is Side.CANDIDATE], items, "items")
    from_interactions = encoded(schema, own, interactions, "interactions")
    rows = Rows(
        *(
            i.take(item_rows, axis=0) + u.take(user_rows, axis=0) + x
            for u, i, x in zip(
                from_users.as_tuple(), from_items.as_tuple(), from_interactions.as_tuple(),
                strict=True,
            )
        )
    )  # fmt: skip
    labels = _labels(interactions, schema.label, spec)
    timestamps = interactions.column("timestamp").to_numpy(zero_copy_only=False)
    split = per_user_time_split(
        pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "timestamp": timestamps})
    )

    def part(which: int) -> Split:
        mask = split == which
        return Split(rows.dense[mask], rows.categorical[mask], rows.multi_hot[mask], labels[mask])

    return Dataset(
        name=str(spec),
        schema=schema,
        train=part(TRAIN),
        validation=part(VALIDATION),
        test=part(TEST),
        info={"spec": str(spec), **{t: str(p) for t, p in paths.items()}},
        feature_tables=(users, items),
    )
