"""`recaccel deploy triton|ray`: the verbs' arguments and handlers, for the CLI to register.

    add_deploy_parser(verbs)     # verbs = parser.add_subparsers(...)

Each handler takes the parsed arguments and returns the exit code; a `RecaccelError` it raises
is printed by the CLI (cli/common.py) with its hint, as for every other verb.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recaccel.defaults import DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS

if TYPE_CHECKING:
    from recaccel.serve.config import ServeConfig


def _serve_config(path: str | None, slo_ms: float | None) -> ServeConfig:
    """The serving config the deployment takes its settings from (heavy imports stay lazy, so
    `recaccel --help` does not load torch)."""
    from recaccel.serve.config import load_serve_config

    overrides = {"slo": {"p99_ms": slo_ms}} if slo_ms is not None else {}
    return load_serve_config(None if path is None else Path(path), overrides)


def _cmd_triton(args: argparse.Namespace) -> int:
    from google.protobuf import text_format

    from recaccel.deploy.triton import write_triton_model
    from recaccel.deploy.triton_plan import TritonOptions
    from recaccel.runtime.profile import load_profile

    config = _serve_config(args.config, args.slo_ms)
    options = TritonOptions(
        name=args.name,
        slo_ms=config.slo.p99_ms,
        device=args.device,
        instances=args.instances,
        precision=args.precision,
        max_queue_delay_ms=args.max_queue_delay_ms,
        accelerator=args.accelerator,
    )
    profile = None if args.profile is None else load_profile(Path(args.profile))
    model = write_triton_model(
        Path(args.artifact),
        Path(args.out),
        options,
        config,
        profile,
        cores=os.cpu_count() or 1,
        overwrite=args.force,
    )
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(model.config, preserving_proto_field_name=True), indent=2))
        return 0
    for reason in model.plan.reasons:
        print(reason)
    print(text_format.MessageToString(model.config), end="")
    print(f"wrote {model.path} (tritonserver --model-repository {Path(args.out)})")
    return 0


def _add_triton(verbs: Any) -> None:
    triton = verbs.add_parser(
        "triton",
        help="write a Triton Inference Server model repository (ONNX + config.pbtxt)",
        description="Export ARTIFACT to ONNX and write REPO/NAME/1/model.onnx and "
        "REPO/NAME/config.pbtxt for Triton's ONNX Runtime backend: inputs and outputs read "
        "from the ONNX file, max_batch_size and the queue timeout from the profile and the "
        "SLO, dynamic batching, instance groups and the execution accelerator.",
    )
    triton.add_argument("artifact", help="artifact directory")
    triton.add_argument("--out", required=True, help="model repository directory (REPO)")
    triton.add_argument("--name", help="model name (default: the artifact directory's name)")
    triton.add_argument(
        "--profile",
        help="profile.json measuring this artifact on onnxruntime: sizes max_batch_size and "
        "the queue timeout (default: the serving config's batching.max_rows, half the SLO)",
    )
    triton.add_argument("--config", help="serving config (.toml, .yaml) to take settings from")
    triton.add_argument(
        "--slo-ms", type=float, help=f"p99 target per request (default {DEFAULT_SLO_P99_MS:g})"
    )
    triton.add_argument(
        "--instances",
        type=int,
        help="model instances (default: cores / threads with a profile, else workers.max; "
        "1 on GPU)",
    )
    triton.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    triton.add_argument(
        "--precision",
        choices=("fp32", "int8-dynamic", "fp16"),
        default="fp32",
        help="the ONNX form to ship (default: %(default)s)",
    )
    triton.add_argument(
        "--max-queue-delay-ms",
        type=float,
        help="dynamic batching delay (default: the serving config's slo.max_queue_delay_ms)",
    )
    triton.add_argument(
        "--accelerator",
        choices=("auto", "none"),
        default="auto",
        help="ONNX Runtime execution accelerator: auto = OpenVINO on CPU, TensorRT on GPU",
    )
    triton.add_argument("--force", action="store_true", help="replace REPO/NAME if it exists")
    triton.add_argument("--json", action="store_true", help="print the config as JSON")
    triton.set_defaults(run=_cmd_triton)


def _cmd_ray(args: argparse.Namespace) -> int:
    import sys

    from recaccel.deploy.ray_serve import RayOptions, deploy_ray, import_serve, serve_locally
    from recaccel.runtime.profile import load_profile
    from recaccel.serve.config import load_serve_config

    import_serve()  # without Ray, say which extra to install before printing anything
    overrides: dict[str, dict[str, Any]] = {
        "server": {"host": args.host, "port": args.port},
        "slo": {"p99_ms": args.slo_ms},
        "workers": {"min": args.min_replicas, "max": args.max_replicas},
    }
    overrides = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
    config = load_serve_config(None if args.config is None else Path(args.config), overrides)
    profile = None if args.profile is None else load_profile(Path(args.profile))
    options = RayOptions(
        address=args.address,
        app_name=args.app_name,
        model_name=args.name,
        relative_budget=args.accuracy_budget,
    )
    artifact, cores = Path(args.artifact), os.cpu_count() or 1

    def ready(url: str) -> None:
        print(f"Ray Serve application {options.app_name!r} serving {artifact} on {url}")
        sys.stdout.flush()

    if args.address is None:
        print("starting a one-node Ray cluster on 127.0.0.1 (Ctrl-C or SIGTERM stops it)")
        serve_locally(artifact, config, options, profile=profile, cores=cores, on_ready=ready)
        return 0
    ready(deploy_ray(artifact, config, options, profile=profile, cores=cores))
    print(f"it keeps running on the cluster; remove it with: serve delete {options.app_name}")
    return 0


def _add_ray(verbs: Any) -> None:
    ray = verbs.add_parser(
        "ray",
        help="deploy on Ray Serve, with the same HTTP API as `recaccel serve`",
        description="Deploy ARTIFACT as a Ray Serve application: replicas that each run "
        "`recaccel serve`'s app (Open Inference Protocol, /v1/rank, admission, batching) over "
        "one worker process, scaled by Ray's autoscaler from the [workers] and [autoscaler] "
        "settings, Ray's queue bounded by [admission]. With --address it deploys on that "
        "cluster and returns; without, it starts a one-node cluster on 127.0.0.1 and serves "
        "until stopped. Start your own clusters with RAY_SERVE_ENABLE_HA_PROXY=1 set: Serve's "
        "Python proxy measured ~10x lower throughput within the SLO here.",
    )
    ray.add_argument("artifact", help="artifact directory (every node must see this path)")
    ray.add_argument("--address", help="Ray cluster address, e.g. 10.0.0.5:6379")
    ray.add_argument("--config", help="serving config (.toml, .yaml), as for `recaccel serve`")
    ray.add_argument(
        "--profile",
        help="profile.json: deploy this artifact's best configuration within the SLO, and size "
        "each replica's share of requests from its latency",
    )
    ray.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    ray.add_argument("--port", type=int, help="HTTP port (default 8000)")
    ray.add_argument("--name", help="model name in the API (default: the artifact's directory)")
    ray.add_argument("--app-name", default="recaccel", help="Serve application name")
    ray.add_argument(
        "--slo-ms",
        type=float,
        help=f"p99 target per rank request (default {DEFAULT_SLO_P99_MS:g})",
    )
    ray.add_argument("--min-replicas", type=int, help="replicas at least (workers.min)")
    ray.add_argument("--max-replicas", type=int, help="replicas at most (workers.max)")
    ray.add_argument(
        "--accuracy-budget",
        type=float,
        default=DEFAULT_RELATIVE_BUDGET,
        help="with --profile: relative validation-AUC loss allowed (default: %(default)s)",
    )
    ray.set_defaults(run=_cmd_ray)


def add_deploy_parser(subparsers: Any) -> None:
    """Register `deploy triton ...` and `deploy ray ...` on the CLI's verb subparsers."""
    deploy = subparsers.add_parser(
        "deploy",
        help="scale out on existing engines: a Triton model repository, or Ray Serve",
        description="Deploy an artifact on an existing distributed engine: `deploy triton` "
        "writes a model repository for NVIDIA Triton; `deploy ray` runs it as a Ray Serve "
        "application with the same HTTP API as `recaccel serve`.",
    )
    targets = deploy.add_subparsers(dest="target", required=True, metavar="TARGET")
    _add_triton(targets)
    _add_ray(targets)
