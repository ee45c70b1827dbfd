"""Run `recaccel serve` on the tiny fixture dataset: the e2e tests' real server process.

Everything is the production path (`recaccel.serve.server.serve`: uvicorn, worker processes,
signals) except where the feature store's data comes from: the tiny MovieLens-shaped tables of
tests/conftest.py instead of the real dataset, which the tests must not download.

    python tests/e2e/tiny_server.py --config serve.toml [--profile p.json] ARTIFACT...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest

from conftest import make_tables

from recaccel.data.movielens import build_movielens_dataset
from recaccel.serve.config import load_serve_config
from recaccel.serve.server import serve

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--config", required=True)
    parser.add_argument("--profile")
    args = parser.parse_args()
    config = load_serve_config(Path(args.config))
    dataset = build_movielens_dataset(make_tables())
    sys.exit(serve(args.artifacts, config, Path(args.profile) if args.profile else None, dataset))
