"""The models a server holds: names, versions, the default, loading, hot swap and unloading.

A name maps to its versions; requests without a version get the newest ready one. Loading a
new artifact under an existing name is a hot swap: the new version starts its workers while
the old one keeps serving, then new requests go to the new version and the old one drains
(every request it admitted is answered) before its workers stop. No request fails for a swap.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recaccel.artifact import read_manifest
from recaccel.data.dataset import FeatureBatch
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ArtifactError, ConfigError
from recaccel.runtime.profile import Profile
from recaccel.serve.config import ServeConfig
from recaccel.serve.deployment import Deployment, ModelVersion
from recaccel.serve.errors import DrainingError, NotFoundError, RequestError
from recaccel.serve.features import FeatureSource
from recaccel.serve.metrics import ServerMetrics
from recaccel.serve.workers import WorkerFailedError

log = logging.getLogger(__name__)


@dataclass
class ModelRepository:
    config: ServeConfig
    metrics: ServerMetrics
    initial: dict[str, Path]  # name -> artifact, started with the server
    features: FeatureSource | None = None
    profile: Profile | None = None
    calibration: FeatureBatch | None = None  # training rows, for int8-static executors
    initial_versions: dict[str, str] = field(default_factory=dict)  # absent: "1"
    default: str | None = None
    _models: dict[str, dict[str, Deployment]] = field(default_factory=dict)
    _draining: set[asyncio.Task[None]] = field(default_factory=set)
    _lock: asyncio.Lock | None = None
    admitting: bool = True  # False from the shutdown signal on: every request is answered 503

    def __post_init__(self) -> None:
        if not self.initial:
            raise ConfigError("no models to serve", "name at least one artifact directory")
        # Compared as schemas, not as dicts: which side serving computes a feature on is not
        # part of the contract (an artifact saved before sides existed has none).
        schemas = [
            FeatureSchema.from_dict(read_manifest(path).schema) for path in self.initial.values()
        ]
        if any(schema != schemas[0] for schema in schemas):
            raise ConfigError(
                "the artifacts were trained on different feature schemas",
                "serve models of one dataset together (the feature store is shared)",
            )
        store = self.features.schema if self.features is not None else None
        if store is not None and store != schemas[0]:
            raise ConfigError(
                "the feature store was built from a dataset whose feature schema differs "
                "from the models'",
                "serve models trained on the dataset the store is built from",
            )
        self.default = self.default or next(iter(self.initial))

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        for name, path in self.initial.items():
            await self._start(name, path, self.initial_versions.get(name, "1"))

    async def _start(self, name: str, artifact: Path, version: str) -> Deployment:
        deployment = Deployment(
            ModelVersion(name, version, artifact),
            self.config,
            self.metrics,
            self.profile,
            self.calibration,
        )
        await deployment.start()
        self._models.setdefault(name, {})[version] = deployment
        log.info("serving %s version %s from %s", name, version, artifact)
        return deployment

    @property
    def ready(self) -> bool:
        return (
            self.admitting
            and bool(self._models)
            and all(self._latest(name).ready for name in self._models if self._models[name])
        )

    def versions(self, name: str) -> list[str]:
        return sorted(self._versions(name), key=_version_key)

    def _versions(self, name: str) -> dict[str, Deployment]:
        versions = self._models.get(name)
        if not versions:
            raise NotFoundError(
                f"unknown model {name!r}", f"served models: {', '.join(sorted(self._models))}"
            )
        return versions

    def _latest(self, name: str) -> Deployment:
        versions = self._versions(name)
        live = [v for v in versions if not versions[v].draining] or list(versions)
        return versions[max(live, key=_version_key)]

    def hung_lane(self, now: float, timeout_s: float) -> str | None:
        """An in-process lane of any served version stuck on one batch (Deployment.hung_lane)."""
        for versions in self._models.values():
            for deployment in versions.values():
                if (lane := deployment.hung_lane(now, timeout_s)) is not None:
                    return lane
        return None

    def stop_admitting(self) -> None:
        """Shutdown has begun: readiness fails and new requests get 503 at once, so clients and
        load balancers go elsewhere while what was admitted finishes."""
        self.admitting = False

    def get(self, name: str | None, version: str | None) -> Deployment:
        if not self.admitting:
            raise DrainingError(
                "the server is shutting down and takes no new requests",
                "send it to another replica",
            )
        name = name or self.default
        assert name is not None
        if version is None:
            return self._latest(name)
        versions = self._versions(name)
        if version not in versions:
            raise NotFoundError(
                f"model {name!r} has no version {version!r}",
                f"versions: {', '.join(self.versions(name))}",
            )
        return versions[version]

    async def load(self, name: str, artifact: str, version: str | None) -> str:
        """Start `artifact` as a new version of `name`; older versions drain, then unload."""
        path = Path(artifact)
        try:
            manifest = read_manifest(path)
        except Exception as error:
            # Nothing loadable at that path: not found, as the model repository would say.
            raise NotFoundError(f"cannot load {artifact}: {error}") from None
        if self._models and FeatureSchema.from_dict(manifest.schema) != FeatureSchema.from_dict(
            self._any().manifest.schema
        ):
            raise RequestError(
                f"{artifact} was trained on another feature schema than the served models",
                "serve it from a server of its own",
                status=409,
            )
        assert self._lock is not None
        async with self._lock:
            existing = self._models.get(name, {})
            new_version = version or str(max((_version_key(v) for v in existing), default=0) + 1)
            if new_version in existing:
                raise RequestError(
                    f"model {name!r} already has version {new_version!r}",
                    "load it as another version, or leave the version out",
                    status=409,
                )
            try:
                await self._start(name, path, new_version)
            except (ArtifactError, WorkerFailedError) as error:
                # Corrupt, truncated, or not loadable on this server's executors: the request
                # named an artifact that cannot be served; the served versions go on.
                raise RequestError(
                    f"cannot load {artifact}: {error}", "the served version is unchanged"
                ) from None
            for old_version, old in list(existing.items()):
                if old_version != new_version:
                    self._retire(name, old_version, old)
        return new_version

    def _any(self) -> Deployment:
        return next(d for versions in self._models.values() for d in versions.values())

    def _retire(self, name: str, version: str, deployment: Deployment) -> None:
        async def drain() -> None:
            await deployment.drain()
            self._models.get(name, {}).pop(version, None)
            log.info("unloaded %s version %s", name, version)

        deployment.ready = False
        deployment.draining = True  # new requests go to the newest version from now on
        task = asyncio.ensure_future(drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def unload(self, name: str) -> None:
        versions = self._versions(name)
        if len(self._models) == 1:
            raise RequestError(
                f"{name!r} is the only model; the server would serve nothing",
                "load another model first",
                status=409,  # a well-formed request the server's state refuses
            )
        for deployment in list(versions.values()):
            await deployment.drain()
        self._models.pop(name, None)
        if self.default == name:
            self.default = next(iter(self._models))

    def index(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "version": version, "state": "READY" if d.ready else "UNAVAILABLE"}
            for name, versions in self._models.items()
            for version, d in versions.items()
        ]

    async def drain(self) -> None:
        """Answer everything admitted, then stop every worker (server shutdown)."""
        deployments = [d for versions in self._models.values() for d in versions.values()]
        await asyncio.gather(*(d.drain() for d in deployments), return_exceptions=True)
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)


def _version_key(version: str) -> int:
    return int(version) if version.isdigit() else 0
