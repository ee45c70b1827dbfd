"""`recaccel serve`: serve artifacts over HTTP (Open Inference Protocol, /v1/rank, /metrics), or
with --select the configuration a profile selects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from recaccel.cli.common import errors
from recaccel.defaults import DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS
from recaccel.errors import ConfigError


def handle(args: argparse.Namespace) -> int:
    import os

    from recaccel.runtime.profile import load_profile
    from recaccel.serve.choice import apply_served, served_selection_for
    from recaccel.serve.config import load_serve_config
    from recaccel.serve.server import apply_selection, serve

    overrides: dict[str, dict[str, Any]] = {
        "server": {"host": args.host, "port": args.port},
        "slo": {"p99_ms": args.slo_ms},
        "workers": {"min": args.min_workers, "max": args.max_workers},
        "plane": {"processes": args.processes, "execution": args.execution},
        "rank": {"users": args.users, "items": args.items, "redis": args.redis},
        "part_cache": {"ttl_s": args.part_cache_ttl_s},
    }
    if args.backend or args.precision or args.threads or args.lanes or args.reuse:
        overrides["workers"]["executors"] = [
            {
                "backend": args.backend or "onnxruntime",
                "precision": args.precision or "fp32",
                "threads": args.threads or 1,
                "reuse": args.reuse,
                **({"count": args.lanes} if args.lanes else {}),
            }
        ]
    overrides = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
    config = load_serve_config(None if args.config is None else Path(args.config), overrides)
    artifacts = list(args.artifacts)
    if args.select:
        if args.profile is None or artifacts:
            raise ConfigError(
                "--select serves what a profile selects: give --profile and no artifacts",
                "recaccel serve --profile results/profile-movielens/profile.json --select",
            )
        profile = load_profile(Path(args.profile))
        served = served_selection_for(Path(args.profile), profile, config.slo.p99_ms)
        if served is not None:
            spec, config = apply_served(config, served)
            chosen = served.chosen
            assert chosen is not None  # apply_served refuses a selection without one
            errors.print(f"selected by serving: {chosen.candidate.label}", highlight=False)
        else:
            spec, config, row = apply_selection(
                config, profile, args.accuracy_budget, os.cpu_count() or 1
            )
            errors.print(
                f"selected by compute (no served.json beside the profile): {row.key}, "
                f"{config.plane.processes} process(es)",
                highlight=False,
            )
        artifacts = [spec]
    elif not artifacts:
        raise ConfigError("no artifacts to serve", "name artifact directories, or --select")
    errors.print(
        f"recaccel serving {', '.join(artifacts)} on http://{config.server.host}:"
        f"{config.server.port} (Ctrl-C or SIGTERM drains and stops)",
        highlight=False,
    )
    return serve(artifacts, config, None if args.profile is None else Path(args.profile))


def add_parser(verbs: Any) -> None:
    serve = verbs.add_parser(
        "serve",
        help="serve artifacts over HTTP: Open Inference Protocol, /v1/rank, /metrics",
        description="Serve artifacts with SLO-aware dynamic batching in worker processes, "
        "load-aware routing, autoscaling and admission control. Settings: --config FILE (TOML "
        "or YAML), then RECACCEL_<SECTION>_<KEY> environment variables, then these flags.",
    )
    serve.add_argument("artifacts", nargs="*", help="artifact directories, each PATH or NAME=PATH")
    serve.add_argument("--config", help="serving config file (.toml, .yaml)")
    serve.add_argument("--profile", help="profile.json from `recaccel profile`: latency models")
    serve.add_argument("--host", help="bind address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--slo-ms",
        type=float,
        help=f"p99 target per rank request (default {DEFAULT_SLO_P99_MS:g})",
    )
    serve.add_argument(
        "--processes",
        type=int,
        help="front processes on the one port (default 0: one per core; docs/serving-plane.md)",
    )
    serve.add_argument(
        "--execution",
        choices=["in-process", "workers"],
        help="run executors in each front process (default) or in worker processes",
    )
    serve.add_argument(
        "--lanes",
        type=int,
        help="in-process: executors of the model in each front (default 1; 2+ split requests)",
    )
    serve.add_argument(
        "--users",
        help="table (.parquet, .csv): user_id + request-side features (docs/importing.md)",
    )
    serve.add_argument("--items", help="table (.parquet, .csv): item_id + candidate-side features")
    serve.add_argument(
        "--redis",
        help="read each request's features from Redis at this URL instead, e.g. "
        "redis://localhost:6379/0 (docs/feature-sources.md; write them: recaccel features push)",
    )
    serve.add_argument("--min-workers", type=int, help="worker processes at least (default 1)")
    serve.add_argument("--max-workers", type=int, help="worker processes at most (default 2)")
    serve.add_argument("--backend", help="executor backend for the workers (default onnxruntime)")
    serve.add_argument("--precision", help="executor precision (default fp32)")
    serve.add_argument("--threads", type=int, help="threads per worker (default 1)")
    serve.add_argument(
        "--reuse",
        action="store_true",
        help="compute each rank request's user part once, not per candidate (fp32 on "
        "torch-eager, torch-aot, onnxruntime; docs/reuse.md)",
    )
    serve.add_argument(
        "--part-cache-ttl-s",
        type=float,
        help="with --reuse: keep each user's request part this many seconds and reuse it "
        "across requests (torch-eager, onnxruntime; default 0: off; docs/reuse.md)",
    )
    serve.add_argument(
        "--select",
        action="store_true",
        help="serve the configuration `recaccel profile --select` picks from --profile for "
        "--slo-ms (artifact, backend, precision, threads, workers)",
    )
    serve.add_argument(
        "--accuracy-budget",
        type=float,
        default=DEFAULT_RELATIVE_BUDGET,
        help="with --select: relative validation-AUC loss allowed (default: %(default)s)",
    )
    serve.set_defaults(run=handle)
