"""`recaccel serve`: build the repository, the feature store and the app, and run uvicorn.

    serve(["artifacts/best"], load_serve_config(Path("serve.toml")))

This process loads what every front needs once (the dataset's feature store, calibration
rows) and starts `plane.processes` front processes on one listening socket under a supervisor
(plane/front.py). Each front runs uvicorn with uvloop and httptools (its fastest event loop and
HTTP parser) and the whole request path: decoding, features, batching, and the executors, in
the front itself or in its worker processes (`plane.execution`). On SIGTERM or SIGINT a front
first stops admitting (503s, readiness fails) for `server.drain_grace_s` while admitted work
finishes (see `DrainingServer`); then uvicorn stops accepting connections and waits for the
requests in flight, and the app's lifespan drains every model and stops the executors before
the process exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from recaccel.artifact import read_manifest, trained_dataset
from recaccel.data.dataset import Dataset, FeatureBatch
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError, RecaccelError
from recaccel.runtime.profile import Profile, load_profile
from recaccel.runtime.profiler import calibration_batch
from recaccel.runtime.select import Judgement, Requirements, serving_choice
from recaccel.serve.app import create_app, fast_rank, lean_app
from recaccel.serve.config import IN_PROCESS, ExecutorSection, RankSection, ServeConfig
from recaccel.serve.features import FeatureSource, FeatureStore
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.plane.fast_http import fast_lane_protocol
from recaccel.serve.plane.front import FrontLink, FrontSpec, Supervisor, prepare_forms
from recaccel.serve.rank_route import RANK_PATH
from recaccel.serve.redis_source import RedisSource
from recaccel.serve.repository import ModelRepository
from recaccel.serve.table_source import TableSource

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 30
CONNECTION_FLOOR = 1024


def parse_models(specs: Sequence[str]) -> dict[str, Path]:
    """NAME=PATH or PATH (named after its directory) -> {name: path}; names must be unique."""
    models: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        artifact = Path(path)
        name = name or artifact.resolve().name
        if name in models:
            raise ConfigError(f"two models are named {name!r}", "name them: NAME=PATH")
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"model name {name!r} must be letters, digits, '-', '_' or '.'")
        models[name] = artifact
    return models


def feature_source_for(
    artifact: Path, rank: RankSection, dataset: Dataset | None = None
) -> FeatureSource | None:
    """The Redis store or the users and items tables `rank` names, or else the feature store
    of the dataset `artifact` was trained on; None (and /v1/rank answers 503) where it has no
    users and items."""
    schema = FeatureSchema.from_dict(read_manifest(artifact).schema)
    if rank.redis:
        return RedisSource(schema, rank)
    if rank.users:
        users, items = Path(rank.users), Path(rank.items)
        return TableSource.from_files(schema, users, items, max_candidates=rank.max_candidates)
    dataset = dataset if dataset is not None else trained_dataset(artifact)
    if dataset is None:
        return None
    try:
        return dataset_feature_source(dataset, rank.max_candidates, schema)
    except RecaccelError as error:
        log.warning("no feature source, /v1/rank is off: %s", error.message)
        return None


def feature_store_for(artifact: Path, max_candidates: int) -> FeatureStore | TableSource | None:
    """The in-memory features of the dataset `artifact` was trained on, as a server without
    a `[rank]` section serves them (what the comparison scripts score peers on); None for a
    dataset without users and items."""
    dataset = trained_dataset(Path(artifact))
    if dataset is None or (dataset.encoding is None and dataset.feature_tables is None):
        return None
    schema = FeatureSchema.from_dict(read_manifest(Path(artifact)).schema)
    return dataset_feature_source(dataset, max_candidates, schema)


def dataset_feature_source(
    dataset: Dataset, max_candidates: int, schema: FeatureSchema | None = None
) -> FeatureStore | TableSource:
    """Where a dataset's rank rows come from: its feature tables (a dataset of your own, the
    Criteo-shaped one) or its encoding (MovieLens); ConfigError for a dataset with neither.

    `schema`: the served model's, whose sides say which table a feature is read from; None
    takes the dataset's."""
    if dataset.feature_tables is not None:
        users, items = dataset.feature_tables
        source_schema = schema if schema is not None else dataset.schema
        return TableSource(source_schema, users, items, max_candidates=max_candidates)
    return FeatureStore.from_dataset(dataset, max_candidates=max_candidates)


def build_app(
    models: dict[str, Path],
    config: ServeConfig,
    profile: Profile | None = None,
    features: FeatureSource | None = None,
    calibration: FeatureBatch | None = None,
    versions: dict[str, str] | None = None,
    link: FrontLink | None = None,
) -> FastAPI:
    metrics = ServerMetrics()
    repository = ModelRepository(
        config,
        metrics,
        models,
        features=features,
        profile=profile,
        calibration=calibration,
        initial_versions=versions or {},
    )
    return create_app(repository, config, metrics, link)


def apply_selection(
    config: ServeConfig, profile: Profile, relative_budget: float, cores: int
) -> tuple[str, ServeConfig, Judgement]:
    """Serve what `recaccel profile --select` picks for this config's SLO: the selected
    artifact, on its backend, precision and threads, with up to its worker count.

    Returns the artifact spec, the config with `[workers]` set, and the selection's row.
    Raises ConfigError when nothing in the profile meets the SLO and the accuracy budget.
    """
    needs = Requirements(config.slo.p99_ms, profile.serving_batch, relative_budget, cores)
    row = serving_choice(profile, needs)
    entry = profile.entry(row.key)
    executor = ExecutorSection(row.backend, row.device, row.precision, row.threads)
    workers = dataclasses.replace(
        config.workers,
        min=min(config.workers.min, row.workers),
        max=row.workers,
        executors=(executor,),
    )
    plane = config.plane
    if plane.execution == IN_PROCESS and not plane.processes:
        # In-process, the selection's workers are front processes, each with one lane.
        plane = dataclasses.replace(plane, processes=row.workers)
    return (
        f"{Path(entry.artifact).name}={entry.artifact}",
        dataclasses.replace(config, workers=workers, plane=plane),
        row,
    )


def front_processes(config: ServeConfig) -> int:
    """`plane.processes`, or one per CPU this process may run on when it is 0."""
    return config.plane.processes or len(os.sched_getaffinity(0))


def needs_calibration(config: ServeConfig) -> bool:
    return any(e.precision == "int8-static" for e in config.workers.executors)


def serve(
    specs: Sequence[str],
    config: ServeConfig,
    profile_path: Path | None = None,
    dataset: Dataset | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then drain (see the module docstring); the exit code.
    `dataset` feeds the feature store; None loads the one the first artifact was trained on."""
    models = parse_models(specs)
    profile = load_profile(profile_path) if profile_path is not None else None
    first = next(iter(models.values()))
    dataset = dataset if dataset is not None else trained_dataset(first)
    features = (
        None
        if dataset is None and not (config.rank.users or config.rank.redis)
        else feature_source_for(first, config.rank, dataset)
    )
    calibration = None
    if needs_calibration(config) and dataset is not None:
        calibration = calibration_batch(dataset)  # the profile's rows: its cached int8 form
    for artifact in models.values():
        prepare_forms(artifact, config, calibration)
    spec = FrontSpec(models, config, profile, features, calibration)
    return Supervisor(spec, front_processes(config)).run()


def run_front(
    app: FastAPI, config: ServeConfig, sockets: list[socket.socket], relayed: bool
) -> None:
    """Run `app` on uvicorn over `sockets` until it is told to stop, then drain."""
    server = DrainingServer(
        uvicorn_config(app, config), app.state.repository, config.server.drain_grace_s, relayed
    )
    server.run(sockets=sockets)


def uvicorn_config(app: FastAPI, config: ServeConfig) -> uvicorn.Config:
    """How a front runs `app` on uvicorn: its fastest loop and parser, /v1/rank on the fast
    lane unless `server.fast_lane` is off."""
    http: type[asyncio.Protocol] | str = "httptools"
    if config.server.fast_lane:
        http = fast_lane_protocol(fast_rank(app), RANK_PATH, config.server.max_body_bytes)
    return uvicorn.Config(
        lean_app(app),
        loop="uvloop",
        http=http,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # nothing reads the client's address: no per-request rewrite
        timeout_graceful_shutdown=DRAIN_TIMEOUT_S,
        # A last-resort cap on open connections (uvicorn answers 503 past it); admission
        # control refuses with 429 + Retry-After well before, per request.
        limit_concurrency=max(CONNECTION_FLOOR, 4 * config.admission.max_queue_requests),
    )


class DrainingServer(uvicorn.Server):
    """uvicorn with a grace period between the shutdown signal and closing the listener.

    uvicorn alone closes its listening socket at once and then closes every connection that
    has no request in progress — including one whose request is still unread in its buffer,
    and the kernel resets those waiting to be accepted: requests that reached the machine and
    got no answer. Here the first SIGTERM/SIGINT only stops admission (readiness 503, requests
    503 at once, so a load balancer or client moves on) while admitted work finishes; after
    `grace_s` uvicorn's own graceful shutdown runs. A second signal skips the wait.

    `relayed`: this is a front process under a supervisor, which relays one SIGTERM to it;
    SIGINT (a Ctrl-C reaches the whole process group) is ignored.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        repository: ModelRepository,
        grace_s: float,
        relayed: bool = False,
    ) -> None:
        super().__init__(config)
        self._repository = repository
        self._grace_s = grace_s
        self._relayed = relayed
        self._stopping = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._relayed and sig == signal.SIGINT:
            return
        if self._stopping or self._grace_s <= 0:
            super().handle_exit(sig, frame)
            return
        self._stopping = True
        self._repository.stop_admitting()
        self._captured_signals.append(sig)  # re-raised by uvicorn after the shutdown, as usual
        timer = threading.Timer(self._grace_s, self._exit_now)
        timer.daemon = True
        timer.start()

    def _exit_now(self) -> None:
        self.should_exit = True
