"""The `recaccel` command line: parses, calls the Python API, prints.

One module per verb, each with `add_parser(verbs)` (its flags) and `handle(args)` (what it
does, returning the exit code):

    data.py      recaccel data        fetch, cache and summarise a dataset
    train.py     recaccel train       train zoo models, save artifacts
    import_.py   recaccel import      a model trained elsewhere as an artifact
    features.py  recaccel features    write feature tables to an online store
    inspect.py   recaccel inspect     an artifact's manifest
    optimize.py  recaccel optimize    distil, search, prune, quantize under the accuracy guard
    profile.py   recaccel profile     time every configuration; select one for the SLO
    serve.py     recaccel serve       serve artifacts over HTTP
    bench.py     recaccel bench       the baseline, the ablations and recaccel under LoadGen
    deploy/commands.py  recaccel deploy  Triton model repository, Ray Serve

common.py holds what they share: the consoles, exit codes and error printing. Handlers import
the heavy stages (torch, ONNX Runtime) inside themselves, so `recaccel --help` stays fast.

Errors a user can fix (`RecaccelError`) are printed with their hint and exit code 2; no
traceback reaches the terminal for them.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import recaccel
from recaccel.cli import bench, data, features, import_, inspect, optimize, profile, serve, train
from recaccel.cli.common import run_verb
from recaccel.deploy.commands import add_deploy_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recaccel",
        description="Make recommendation models fast enough for real-time serving, and serve them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--version", action="version", version=f"recaccel {recaccel.__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    # In this order in `recaccel --help`: the pipeline's, data to deployment.
    for verb in (data, train, import_, features, inspect, optimize, profile, serve, bench):
        verb.add_parser(verbs)
    add_deploy_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run_verb(args)
