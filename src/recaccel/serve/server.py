"""`recaccel serve`: build the repository, the feature store and the app, and run uvicorn.

    serve(["artifacts/best"], load_serve_config(Path("serve.toml")))

uvicorn runs with uvloop and httptools (its fastest event loop and HTTP parser) in this one
process, which decodes requests and forms batches; the models run in worker processes
(workers.py). On SIGTERM or SIGINT the server first stops admitting (503s, readiness fails)
for `server.drain_grace_s` while admitted work finishes (see `DrainingServer`); then uvicorn
stops accepting connections and waits for the requests in flight, and the app's lifespan
drains every model and stops the workers before the process exits.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from recaccel.artifact import read_manifest
from recaccel.data.dataset import Dataset
from recaccel.data.registry import DatasetOptions, load_dataset
from recaccel.errors import ConfigError, RecaccelError
from recaccel.runtime.profile import Profile, load_profile
from recaccel.runtime.select import Judgement, Requirements, select
from recaccel.serve.app import create_app
from recaccel.serve.config import ExecutorSection, ServeConfig
from recaccel.serve.features import FeatureStore
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.models import ModelRepository

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


def feature_store_for(
    artifact: Path, max_candidates: int, dataset: Dataset | None = None
) -> FeatureStore | None:
    """The feature store of the dataset `artifact` was trained on; None (and /v1/rank answers
    503) where that dataset has no users and items."""
    manifest = read_manifest(artifact)
    if dataset is None:
        name = manifest.dataset.get("name")
        if name is None:
            return None
        rows = manifest.dataset.get("config", {}).get("rows")
        dataset = load_dataset(name, DatasetOptions(progress=False, synthetic_rows=rows))
    try:
        return FeatureStore.from_dataset(dataset, max_candidates=max_candidates)
    except RecaccelError as error:
        log.warning("no feature store, /v1/rank is off: %s", error.message)
        return None


def build_app(
    models: dict[str, Path],
    config: ServeConfig,
    profile: Profile | None = None,
    features: FeatureStore | None = None,
) -> FastAPI:
    metrics = ServerMetrics()
    repository = ModelRepository(config, metrics, models, features=features, profile=profile)
    return create_app(repository, config, metrics)


def apply_selection(
    config: ServeConfig, profile: Profile, relative_budget: float, cores: int
) -> tuple[str, ServeConfig, Judgement]:
    """Serve what `recaccel profile --select` picks for this config's SLO: the selected
    artifact, on its backend, precision and threads, with up to its worker count.

    Returns the artifact spec, the config with `[workers]` set, and the selection's row.
    Raises ConfigError when nothing in the profile meets the SLO and the accuracy budget.
    """
    needs = Requirements(config.slo.p99_ms, profile.serving_batch, relative_budget, cores)
    choice = select(profile, needs)
    if choice.selected is None:
        raise ConfigError(
            f"no configuration in the profile meets p99 <= {config.slo.p99_ms:g} ms for "
            f"{profile.serving_batch} candidates within the accuracy budget",
            "see `recaccel profile --from PROFILE --select` for why, or loosen --slo-ms",
        )
    row = choice.selected
    entry = profile.entry(row.key)
    executor = ExecutorSection(row.backend, row.device, row.precision, row.threads)
    workers = dataclasses.replace(
        config.workers,
        min=min(config.workers.min, row.workers),
        max=row.workers,
        executors=(executor,),
    )
    return (
        f"{Path(entry.artifact).name}={entry.artifact}",
        dataclasses.replace(config, workers=workers),
        row,
    )


def serve(
    specs: Sequence[str],
    config: ServeConfig,
    profile_path: Path | None = None,
    dataset: Dataset | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain (see the module docstring). `dataset` feeds the
    feature store; None loads the one the first artifact was trained on."""
    models = parse_models(specs)
    profile = load_profile(profile_path) if profile_path is not None else None
    first = next(iter(models.values()))
    features = feature_store_for(first, config.rank.max_candidates, dataset)
    app = build_app(models, config, profile, features)
    settings = uvicorn.Config(
        app,
        host=config.server.host,
        port=config.server.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=DRAIN_TIMEOUT_S,
        # A last-resort cap on open connections (uvicorn answers 503 past it); admission
        # control refuses with 429 + Retry-After well before, per request.
        limit_concurrency=max(CONNECTION_FLOOR, 4 * config.admission.max_queue_requests),
    )
    DrainingServer(settings, app.state.repository, config.server.drain_grace_s).run()


class DrainingServer(uvicorn.Server):
    """uvicorn with a grace period between the shutdown signal and closing the listener.

    uvicorn alone closes its listening socket at once and then closes every connection that
    has no request in progress — including one whose request is still unread in its buffer,
    and the kernel resets those waiting to be accepted: requests that reached the machine and
    got no answer. Here the first SIGTERM/SIGINT only stops admission (readiness 503, requests
    503 at once, so a load balancer or client moves on) while admitted work finishes; after
    `grace_s` uvicorn's own graceful shutdown runs. A second signal skips the wait.
    """

    def __init__(self, config: uvicorn.Config, repository: ModelRepository, grace_s: float) -> None:
        super().__init__(config)
        self._repository = repository
        self._grace_s = grace_s
        self._stopping = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
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
