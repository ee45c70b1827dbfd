"""Datasets by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recaccel.data.dataset import Dataset
from recaccel.errors import UnknownNameError


@dataclass(frozen=True)
class DatasetOptions:
    home: Path | None = None  # cache root; None = recaccel_home()
    progress: bool = True
    synthetic_rows: int | None = None  # criteo-synthetic only; None = its default


def _movielens_100k(options: DatasetOptions) -> Dataset:
    from recaccel.data.movielens import build_movielens_dataset
    from recaccel.data.movielens_source import load_movielens_100k

    return build_movielens_dataset(load_movielens_100k(options.home, progress=options.progress))


def _criteo_synthetic(options: DatasetOptions) -> Dataset:
    from recaccel.data.synthetic import SyntheticConfig, make_criteo_synthetic

    config = (
        SyntheticConfig()
        if options.synthetic_rows is None
        else SyntheticConfig(rows=options.synthetic_rows)
    )
    return make_criteo_synthetic(config, progress=options.progress)


DATASETS: dict[str, Callable[[DatasetOptions], Dataset]] = {
    "movielens-100k": _movielens_100k,
    "criteo-synthetic": _criteo_synthetic,
}


def load_dataset(name: str, options: DatasetOptions | None = None) -> Dataset:
    """Load (fetching and caching where needed) and encode the dataset called `name`, or the
    dataset of your own whose spec file `name` is (data/own.py)."""
    from recaccel.data.own import is_spec, load_own_dataset

    if is_spec(name):
        return load_own_dataset(Path(name))
    try:
        loader = DATASETS[name]
    except KeyError:
        raise UnknownNameError(
            "dataset", name, [*DATASETS, "a dataset spec file (.toml, .yaml)"]
        ) from None
    return loader(options or DatasetOptions())
