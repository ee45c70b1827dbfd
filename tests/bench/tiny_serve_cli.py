"""`recaccel serve` for the bench's end-to-end test: the real command line and server, except
that the feature store's dataset is the tiny fixture one, unpickled from the file that
$BENCH_TINY_DATASET names, where the real command would load (or download) MovieLens.

    BENCH_TINY_DATASET=dataset.pkl python tests/bench/tiny_serve_cli.py SERVE-ARGUMENTS...
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

import recaccel.artifact
from recaccel.cli import main

if __name__ == "__main__":
    dataset = pickle.loads(Path(os.environ["BENCH_TINY_DATASET"]).read_bytes())

    def tiny_dataset(*args: Any, **kwargs: Any) -> Any:
        return dataset

    # Where serve loads the dataset an artifact was trained on (artifact.trained_dataset).
    recaccel.artifact.load_dataset = tiny_dataset  # type: ignore[assignment]
    sys.exit(main(["serve", *sys.argv[1:]]))
