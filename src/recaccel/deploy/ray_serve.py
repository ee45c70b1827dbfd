"""`recaccel deploy ray`: an artifact as a Ray Serve application with `recaccel serve`'s HTTP API.

    url = deploy_ray(Path("artifacts/best"), config, RayOptions(address="127.0.0.1:6379"))

One deployment, `Replica`, is Serve's HTTP ingress. Each replica builds the very app
`recaccel serve` builds (serve/server.py's `build_app`: its routes, Open Inference Protocol
codec, /v1/rank and feature store, admission control and SLO-aware batcher) over one worker
process running recaccel's executor. Ray's proxy takes the HTTP request and hands it to a
replica, so the routes are not forked and a client cannot tell one machine from a cluster.

Ray does what is Ray's: the replica count is recaccel's worker count, scaled by Ray's
autoscaler, and Ray's queue in front of the replicas is bounded by recaccel's admission
settings (ray_settings.py has the mapping). Inside a replica recaccel's own autoscaler has
nothing to do (one worker, min = max = 1).

Why recaccel's batcher inside each replica rather than Serve's `@serve.batch`: measured with
scripts/compare_ray.py (pruned DeepFM, 2 cores, HAProxy ingress, p99 <= 50 ms), the same app
with an in-process executor batched by `@serve.batch` held the SLO to 400, 100 and 250 QPS
where this one held 500, 200 and 300 in the same runs. recaccel's batcher also batches by
rows, not by calls, dispatches by deadline, and refuses (429) what cannot meet its deadline.

Deploying ships the feature store (built once here from the artifact's dataset: 230 kB for
MovieLens-100K) and the profile to the replicas with the deployment. The artifact itself is
loaded by each replica from its path: on a cluster of several machines the path must be on
storage every node sees, and recaccel installed on each node.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from recaccel.artifact import read_manifest
from recaccel.data.dataset import Dataset
from recaccel.defaults import DEFAULT_RELATIVE_BUDGET
from recaccel.deploy.ray_cluster import HAPROXY_ENV, local_ray_cluster
from recaccel.deploy.ray_settings import Capacity, ray_serve_settings
from recaccel.extras import RAY, require
from recaccel.runtime.profile import Profile
from recaccel.runtime.select import Requirements, serving_choice
from recaccel.serve.config import ExecutorSection, ServeConfig
from recaccel.serve.features import FeatureSource
from recaccel.serve.server import build_app, feature_source_for, parse_models

log = logging.getLogger(__name__)

APP_NAME = "recaccel"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def import_serve() -> Any:
    """Ray Serve, imported on first use: the rest of recaccel never needs Ray (the `ray`
    extra)."""
    return require(RAY, "ray.serve")


def replica_config(config: ServeConfig) -> ServeConfig:
    """`config` for one replica: exactly one worker, since Ray scales replicas instead; and no
    in-flight limit of its own (serve/overload.py). Ray's autoscaler scales on the requests a
    replica holds, so a replica refusing them early would hide the demand that should add a
    replica (the Ray scaling test saw replicas started and stopped, never two running);
    overload is Ray's queue bound to refuse, `max_queued_requests` from [admission]."""
    return dataclasses.replace(
        config,
        workers=dataclasses.replace(config.workers, min=1, max=1),
        admission=dataclasses.replace(config.admission, overload_target_ms=0.0),
    )


class Replica:
    """One Ray Serve replica: `recaccel serve`'s app over one worker process.

    Serve calls `__serve_build_asgi_app__` after the constructor and then runs the app's
    lifespan, which starts the worker; `check_health` fails while the models cannot serve.
    """

    def __init__(
        self,
        models: dict[str, str],
        config: ServeConfig,
        features: FeatureSource | None,
        profile: Profile | None,
    ) -> None:
        paths = {name: Path(path) for name, path in models.items()}
        self._app = build_app(paths, replica_config(config), profile, features)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._app

    def check_health(self) -> None:
        if not self._app.state.repository.ready:
            raise RuntimeError("recaccel replica: a model is not ready to serve")


def selected_executor(
    config: ServeConfig, profile: Profile, artifact_id: str, cores: int, relative_budget: float
) -> tuple[ServeConfig, Capacity]:
    """The profile's best configuration of this artifact within the SLO and the accuracy
    budget (runtime/select.py's `serving_choice`), as the replicas' executor, and what one
    replica can do on it. ConfigError, saying why, when none of its configurations qualifies."""
    needs = Requirements(config.slo.p99_ms, profile.serving_batch, relative_budget, cores)
    row = serving_choice(profile, needs, artifact_id)
    entry = profile.entry(row.key)
    section = ExecutorSection(row.backend, row.device, row.precision, row.threads)
    workers = dataclasses.replace(config.workers, executors=(section,))
    capacity = Capacity(entry.latency_model(), entry.points[-1].batch, profile.serving_batch)
    return dataclasses.replace(config, workers=workers), capacity


def build_application(
    artifact: Path,
    config: ServeConfig,
    *,
    name: str | None = None,
    features: FeatureSource | None = None,
    profile: Profile | None = None,
    capacity: Capacity | None = None,
) -> Any:
    """The Serve application (`Deployment.bind(...)`) for `artifact`, not yet running."""
    serve = import_serve()
    [(model, path)] = parse_models([f"{name}={artifact}" if name else str(artifact)]).items()
    settings = ray_serve_settings(config, capacity)
    deployment = serve.deployment(
        serve.ingress()(Replica),
        name="Replica",
        logging_config={"enable_access_log": config.server.log_requests},
        **settings.deployment_options(),
    )
    log.info("Ray Serve settings for %s: %s", model, settings)
    return deployment.bind({model: str(path.resolve())}, config, features, profile)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # a running cluster; None: start one inside this process
    app_name: str = APP_NAME
    model_name: str | None = None  # None: the artifact directory's name
    relative_budget: float = DEFAULT_RELATIVE_BUDGET  # accuracy budget when choosing from a profile


def deploy_ray(
    artifact: Path,
    config: ServeConfig,
    options: RayOptions,
    *,
    profile: Profile | None = None,
    features: FeatureSource | None = None,
    dataset: Dataset | None = None,
    cores: int = 1,
) -> str:
    """Deploy `artifact` on Ray Serve and return its URL once every replica is ready.

    The HTTP proxy listens on `config.server` host and port (a Serve instance already
    running on the cluster keeps its own). `features`: the /v1/rank feature store; None
    builds it from `dataset`, or from the artifact's own dataset.
    """
    serve = import_serve()
    ray = require(RAY, "ray")
    capacity = None
    if profile is not None:
        artifact_id = read_manifest(artifact).artifact_id
        cores = int(profile.machine.get("cores", cores))
        config, capacity = selected_executor(
            config, profile, artifact_id, cores, options.relative_budget
        )
    if features is None:
        features = feature_source_for(artifact, config.rank, dataset)
    application = build_application(
        artifact,
        config,
        name=options.model_name,
        features=features,
        profile=profile,
        capacity=capacity,
    )
    if not ray.is_initialized():
        ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False)
    host, port = config.server.host, config.server.port
    serve.start(http_options={"host": host, "port": port})
    serve.run(application, name=options.app_name, route_prefix="/")
    return f"http://{host}:{port}"


def serve_locally(
    artifact: Path,
    config: ServeConfig,
    options: RayOptions,
    *,
    profile: Profile | None = None,
    cores: int = 1,
    on_ready: Callable[[str], None] = print,
) -> None:
    """`deploy ray` without a cluster: a one-node Ray on loopback with `cores` CPUs and the
    HAProxy ingress (ray_cluster.py says why), the application deployed on it, served until
    SIGINT or SIGTERM, then everything stopped."""
    import_serve()  # before a cluster starts: without Ray, say which extra to install
    ray = require(RAY, "ray")
    stop = threading.Event()

    def trap() -> dict[int, Any]:
        return {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}

    previous = trap()  # a signal while starting stops right after: nothing is left behind
    try:
        with local_ray_cluster(cores, HAPROXY_ENV) as cluster:
            try:
                ray.init(
                    address=cluster.address, logging_level=logging.WARNING, log_to_driver=False
                )
                trap()  # ray.init installs its own SIGTERM handler, which would skip cleanup
                local = dataclasses.replace(options, address=cluster.address)
                on_ready(deploy_ray(artifact, config, local, profile=profile, cores=cores))
                stop.wait()
            finally:
                ray.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
