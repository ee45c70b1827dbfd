"""Serving configuration: one file (TOML or YAML), then environment variables, then CLI flags.

    [server]     host, port, max_body_bytes, management, log_requests, drain_grace_s,
                 fast_lane
    [plane]      processes, execution, inline_max_ms, hang_timeout_s
    [slo]        p99_ms, max_queue_delay_ms
    [batching]   max_rows
    [workers]    min, max, executors = [{backend, device, precision, threads, reuse, count}]
    [part_cache] ttl_s, max_entries
    [autoscaler] target_utilization, target_queue_delay_ms, upscale_delay_s, downscale_delay_s,
                 interval_s
    [admission]  max_queue_rows, max_queue_requests, overload_target_ms
    [rank]       default_k, max_candidates

Later sources override earlier ones key by key. An environment variable is
`RECACCEL_<SECTION>_<KEY>`, e.g. `RECACCEL_SLO_P99_MS=30`; the management token is read from
`RECACCEL_TOKEN` only, never from a file that might be committed. Everything is checked at
start, and an error names the bad key (`slo.p99_ms: must be > 0, got -1`), so a typo never
becomes a silently ignored setting.

Defaults: bind 127.0.0.1 (not reachable from other machines unless asked), management
endpoints off, 1 MiB bodies, p99 50 ms per rank request, one front process per usable core,
each running onnxruntime/cpu/fp32 on one thread inside itself (docs/serving-plane.md).

Over 400 lines because it is one thing: a typed section per table above, each key with its
comment, and the loading and checking that go with them. docs/serving.md's config reference is
generated from these dataclasses (serve/config_reference.py); split across modules, the
reference would have to gather them again.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recaccel.defaults import DEFAULT_SLO_P99_MS
from recaccel.errors import ConfigError
from recaccel.runtime.executor import BACKENDS, ExecutorConfig, part_cache_hint, reuse_hint
from recaccel.runtime.part_cache import PartCacheSettings
from recaccel.serve.autoscaler import AutoscalerConfig

ENV_PREFIX = "RECACCEL_"
TOKEN_ENV = "RECACCEL_TOKEN"
IN_PROCESS, WORKER_PROCESSES = "in-process", "workers"
EXECUTIONS = (IN_PROCESS, WORKER_PROCESSES)


@dataclass(frozen=True)
class ServerSection:
    host: str = "127.0.0.1"  # this machine only; "0.0.0.0" to be reachable from others
    port: int = 8000  # the one port every front process accepts on
    max_body_bytes: int = 1 << 20  # a larger request body is refused 413 before it is read
    management: bool = False  # load / unload / swap endpoints; need RECACCEL_TOKEN
    log_requests: bool = False  # one structured log line per request
    drain_grace_s: float = 1.0  # after SIGTERM: 503s (not resets) before the listener closes
    # POST /v1/rank answered below ASGI, from uvicorn's parser (plane/fast_http.py); off:
    # through the ASGI app like every other route (same answers, ~0.1 CPU-ms more a request).
    fast_lane: bool = True


@dataclass(frozen=True)
class PlaneSection:
    # Front processes accepting on one listening socket, each running the whole request path
    # (HTTP, features, batching, execution). 0: one per CPU this server may run on.
    processes: int = 0
    # Where executors run. "in-process": on threads of each front process, `count` lanes per
    # executor kind (default 1); no IPC, the right choice when the model's compute is small
    # next to the front's cost. "workers": in worker processes of each front process, between
    # workers.min and workers.max, autoscaled: heavy models, GPUs (docs/serving-plane.md).
    execution: str = IN_PROCESS
    # In-process: a batch predicted (p99) to take at most this long runs on the event loop's
    # own thread rather than its lane's; a hand-off to a thread and back costs about 0.1-0.2
    # ms of CPU on a VM (plane/inproc.py). 0: always on the lane's thread.
    inline_max_ms: float = 2.0
    # Hung, and killed and replaced: a worker process holding one batch this long (what it
    # held is retried once, workers.py), or a front whose event loop or in-process lane has
    # been stuck this long (its connections are reset: front.py). A native kernel stuck or a
    # deadlock; batches take milliseconds, so a few seconds already means something is wrong.
    hang_timeout_s: float = 10.0


@dataclass(frozen=True)
class SloSection:
    p99_ms: float = DEFAULT_SLO_P99_MS  # per rank request, unless the request has its own deadline
    # No request waits longer than this for its batch to fill. 0 (Triton's default too): a
    # batch goes as soon as a worker is free, and under load batches grow by themselves while
    # every worker is busy. Measured on the pruned DeepFM, one worker
    # (scripts/serve_max_qps.py --p99-ms 50 -- artifacts/dlrm-heavy-optimized/02-prune-1
    # --max-workers 1, env RECACCEL_SLO_MAX_QUEUE_DELAY_MS): 10 ms cost 7 ms of p50 at 150
    # QPS; 2 ms held p99 <= 50 ms up to 175 QPS (p50 7.8 ms); 0 up to 281 QPS (p50 2.8 ms at
    # 150). Waiting only pays where a worker's per-call cost dwarfs its per-row cost.
    max_queue_delay_ms: float = 0.0


@dataclass(frozen=True)
class BatchingSection:
    max_rows: int = 2048  # rows per batch sent to a worker


@dataclass(frozen=True)
class ExecutorSection:
    backend: str = "onnxruntime"  # torch-eager, torch-compile, torch-aot, onnxruntime, openvino
    device: str = "cpu"  # or "cuda" where the backend and the machine have it
    precision: str = "fp32"  # fp16, bf16, int8-dynamic, int8-static: as the backend runs them
    threads: int = 1  # intra-op threads per executor; scale with processes and lanes instead
    # Request-level reuse: the model's split twin, the user's part once per rank request
    # (docs/reuse.md). Off by default: it pays on some models and not others; measure it.
    reuse: bool = False
    # workers: a fixed number of worker processes of this kind (None: the autoscaler decides);
    # in-process: lanes of this kind in each front (None: 1).
    count: int | None = None

    def executor_config(self) -> ExecutorConfig:
        return ExecutorConfig(
            self.backend, self.device, self.threads, self.precision, reuse=self.reuse
        )


@dataclass(frozen=True)
class WorkersSection:
    # plane.execution = "workers": worker processes per front at least, and at most; the
    # autoscaler moves between them.
    min: int = 1
    max: int = 2  # also Ray Serve's max_replicas under `recaccel deploy ray`
    # The executor kinds that serve together; each batch goes to the free one predicted to
    # finish it first (router.py). The file only: flags set the first one.
    executors: tuple[ExecutorSection, ...] = (ExecutorSection(),)


@dataclass(frozen=True)
class PartCacheSection:
    # Keep each user's request part (the split twin's request half, computed from the
    # request-side columns) this many seconds and reuse it when the same columns come again
    # (runtime/part_cache.py, docs/reuse.md). 0: off. Needs reuse on every executor, on a
    # backend that runs the twin's halves apart (torch-eager, onnxruntime).
    ttl_s: float = 0.0
    max_entries: int = 100_000  # parts held per executor at most (oldest written go first)

    def settings(self) -> PartCacheSettings | None:
        """The executors' cache settings; None when the cache is off."""
        return PartCacheSettings(self.ttl_s, self.max_entries) if self.ttl_s > 0 else None


@dataclass(frozen=True)
class AutoscalerSection:
    """The policy's own defaults (autoscaler.AutoscalerConfig says why); its min and max are
    [workers]'s."""

    # the busy share of each worker aimed at (KServe's 70%): the rest is headroom for bursts
    target_utilization: float = AutoscalerConfig.target_utilization
    # queued requests waiting longer than this ask for one worker more
    target_queue_delay_ms: float = AutoscalerConfig.target_queue_delay_ms
    upscale_delay_s: float = AutoscalerConfig.upscale_delay_s  # load high this long: add
    downscale_delay_s: float = AutoscalerConfig.downscale_delay_s  # low this long: remove
    interval_s: float = 1.0  # how often the load is sampled


@dataclass(frozen=True)
class AdmissionSection:
    # Bounds on what waits for a batch; past them a request is refused 429, reason
    # queue_full (admission.py). An empty queue admits any one request however large.
    max_queue_rows: int = 50_000
    max_queue_requests: int = 2_000  # also Ray's max_queued_requests and Triton's queue size
    # The delay an adaptive limit on inference requests in flight aims under; past the limit
    # they are refused at once (serve/overload.py). None: a tenth of slo.p99_ms; 0: no limit.
    overload_target_ms: float | None = None


@dataclass(frozen=True)
class RankSection:
    default_k: int = 10  # items returned when a rank request gives no `k`
    max_candidates: int = 10_000  # a longer candidate list is refused 413
    # Parquet tables the rank rows come from (serve/table_source.py): users (user_id + the
    # request-side features) and items (item_id + the candidate-side ones). "" for both: the
    # feature store of the dataset the first artifact names in its manifest.
    users: str = ""
    items: str = ""  # the candidate side; given with users or not at all
    # A Redis online store the rank rows are read from per request instead (serve/
    # redis_source.py, docs/feature-sources.md): its URL, e.g. "redis://localhost:6379/0".
    redis: str = ""
    redis_namespace: str = "recaccel"  # keys are {namespace}:user:{id} and {namespace}:item:{id}
    redis_budget_ms: float = 20.0  # a request's reads past this: 503, reason feature_store
    redis_cache_ttl_s: float = 30.0  # rows kept in each front process this long (0: none)
    redis_cache_rows: int = 200_000  # and at most this many (least recently used go first)

    def __post_init__(self) -> None:
        if bool(self.users) != bool(self.items):
            raise ConfigError(
                "rank.users and rank.items go together",
                "give both tables (--users and --items), or neither",
            )
        if self.redis and self.users:
            raise ConfigError(
                "rank.redis and rank.users/items are two feature sources; a server has one",
                "give either --redis or --users and --items",
            )
        if self.redis_budget_ms <= 0 or self.redis_cache_ttl_s < 0 or self.redis_cache_rows < 0:
            raise ConfigError(
                "rank.redis_budget_ms must be > 0, redis_cache_ttl_s and redis_cache_rows >= 0",
                f"got {self.redis_budget_ms}, {self.redis_cache_ttl_s}, {self.redis_cache_rows}",
            )


@dataclass(frozen=True)
class ServeConfig:
    server: ServerSection = field(default_factory=ServerSection)
    plane: PlaneSection = field(default_factory=PlaneSection)
    slo: SloSection = field(default_factory=SloSection)
    batching: BatchingSection = field(default_factory=BatchingSection)
    workers: WorkersSection = field(default_factory=WorkersSection)
    part_cache: PartCacheSection = field(default_factory=PartCacheSection)
    autoscaler: AutoscalerSection = field(default_factory=AutoscalerSection)
    admission: AdmissionSection = field(default_factory=AdmissionSection)
    rank: RankSection = field(default_factory=RankSection)
    token: str | None = None  # from RECACCEL_TOKEN

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["token"] = "***" if self.token else None
        return data


SECTIONS: dict[str, type[Any]] = {
    name: kind
    for name, kind in typing.get_type_hints(ServeConfig).items()
    if isinstance(kind, type) and dataclasses.is_dataclass(kind)
}


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """`value` as `kind` (int, float, bool, str, optional of one), or a ConfigError on `key`."""
    if isinstance(kind, types.UnionType):  # X | None
        if value is None:
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                        "no", "off"):  # fmt: skip
            return value.lower() in ("1", "true", "yes", "on")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")


def _section(name: str, cls: type[Any], values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(f'{name}.{k}' for k in unknown)}",
            f"[{name}] takes {', '.join(hints)}",
        )
    fields: dict[str, Any] = {}
    for key, value in values.items():
        if cls is WorkersSection and key == "executors":
            if not isinstance(value, list) or not value:
                raise ConfigError("workers.executors: expected a non-empty list of tables")
            fields[key] = tuple(
                _section(f"workers.executors[{i}]", ExecutorSection, _table(item, name))
                for i, item in enumerate(value)
            )
        else:
            fields[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**fields)


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, got {value!r}")
    return value


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw settings in a .toml, .yaml or .yml file."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read the serving config {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {error}") from None
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{path}: the config must be a .toml, .yaml or .yml file")
    return dict(_table(data or {}, str(path)))


def env_settings(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """RECACCEL_<SECTION>_<KEY> variables as {section: {key: value}}."""
    found: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == TOKEN_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(f"{s}_")), None)
        if section is not None:
            found.setdefault(section, {})[rest[len(section) + 1 :]] = value
    return found


def _merge(*layers: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            if section == "token":
                raise ConfigError("the token is read from RECACCEL_TOKEN only, not from a file")
            if section not in SECTIONS:
                raise ConfigError(
                    f"unknown section [{section}]", f"sections: {', '.join(SECTIONS)}"
                )
            merged.setdefault(section, {}).update(_table(values, f"[{section}]"))
    return merged


def _check(config: ServeConfig) -> ServeConfig:
    rules: list[tuple[bool, str]] = [
        (0 < config.server.port < 65536, f"server.port: must be 1..65535: {config.server.port}"),
        (config.server.max_body_bytes >= 1024, "server.max_body_bytes: must be >= 1024"),
        (config.server.drain_grace_s >= 0, "server.drain_grace_s: must be >= 0"),
        (config.plane.processes >= 0,
         f"plane.processes: must be >= 0 (0: one per core), got {config.plane.processes}"),
        (config.plane.inline_max_ms >= 0, "plane.inline_max_ms: must be >= 0"),
        (config.plane.execution in EXECUTIONS,
         f"plane.execution: must be one of {', '.join(EXECUTIONS)}, "
         f"got {config.plane.execution!r}"),
        (config.slo.p99_ms > 0, f"slo.p99_ms: must be > 0, got {config.slo.p99_ms}"),
        (config.slo.max_queue_delay_ms >= 0, "slo.max_queue_delay_ms: must be >= 0"),
        (config.batching.max_rows >= 1, "batching.max_rows: must be >= 1"),
        (config.workers.min >= 1, f"workers.min: must be >= 1, got {config.workers.min}"),
        (config.plane.hang_timeout_s > 0,
         f"plane.hang_timeout_s: must be > 0, got {config.plane.hang_timeout_s}"),
        (config.workers.min <= config.workers.max,
         f"workers.max ({config.workers.max}) must be >= workers.min ({config.workers.min})"),
        (config.autoscaler.interval_s > 0, "autoscaler.interval_s: must be > 0"),
        (config.admission.max_queue_requests >= 1, "admission.max_queue_requests: must be >= 1"),
        (config.admission.max_queue_rows >= 1, "admission.max_queue_rows: must be >= 1"),
        (config.admission.overload_target_ms is None or config.admission.overload_target_ms >= 0,
         "admission.overload_target_ms: must be >= 0 (0 turns overload shedding off)"),
        (config.rank.default_k >= 1, "rank.default_k: must be >= 1"),
        (config.rank.max_candidates >= 1, "rank.max_candidates: must be >= 1"),
        (not config.server.management or bool(config.token),
         "server.management is on but RECACCEL_TOKEN is not set: the management endpoints "
         "would be open to anyone who can reach the port"),
    ]  # fmt: skip
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    # The policies' own checks (one place for each rule): the autoscaler's delays and targets.
    settings = config.autoscaler
    AutoscalerConfig(
        config.workers.min,
        config.workers.max,
        settings.target_utilization,
        settings.target_queue_delay_ms,
        settings.upscale_delay_s,
        settings.downscale_delay_s,
    )
    for i, executor in enumerate(config.workers.executors):
        try:
            executor.executor_config()
        except ConfigError as error:
            raise ConfigError(f"workers.executors[{i}]: {error.message}", error.hint) from None
        spec = BACKENDS.get(executor.backend)
        if spec is None:
            raise ConfigError(
                f"workers.executors[{i}].backend: unknown backend {executor.backend!r}",
                f"choose one of {', '.join(BACKENDS)}",
            )
        if executor.precision not in spec.precisions:
            raise ConfigError(
                f"workers.executors[{i}].precision: {executor.backend} does not run "
                f"{executor.precision}",
                f"it runs {', '.join(spec.precisions)}",
            )
        if executor.reuse and not spec.runs_reuse(executor.precision):
            raise ConfigError(
                f"workers.executors[{i}].reuse: {executor.backend} does not run reuse at "
                f"{executor.precision}",
                reuse_hint(),
            )
        if executor.count is not None and executor.count < 1:
            raise ConfigError(f"workers.executors[{i}].count: must be >= 1")
    _check_part_cache(config.part_cache, config.workers.executors)
    return config


def _check_part_cache(cache: PartCacheSection, executors: tuple[ExecutorSection, ...]) -> None:
    if cache.ttl_s < 0 or cache.max_entries < 1:
        raise ConfigError(
            "part_cache.ttl_s must be >= 0 (0: off) and part_cache.max_entries >= 1, got "
            f"{cache.ttl_s} and {cache.max_entries}"
        )
    if cache.ttl_s == 0:
        return
    for i, executor in enumerate(executors):
        if not executor.reuse:
            raise ConfigError(
                f"part_cache.ttl_s is set but workers.executors[{i}] runs without reuse: the "
                "cache keeps the split twin's request parts",
                "turn reuse on for every executor (--reuse), or the cache off (ttl_s = 0)",
            )
        if not BACKENDS[executor.backend].caches_parts:
            raise ConfigError(
                f"part_cache.ttl_s is set but workers.executors[{i}] runs {executor.backend}, "
                "which runs the split twin as one graph",
                part_cache_hint(),
            )


def load_serve_config(
    path: Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServeConfig:
    """File, then environment, then `overrides` (CLI flags as {section: {key: value}})."""
    environ = os.environ if environ is None else environ
    layers: list[Mapping[str, Any]] = []
    if path is not None:
        layers.append(read_config_file(path))
    layers.append(env_settings(environ))
    layers.append({s: v for s, v in (overrides or {}).items() if v})
    merged = _merge(*layers)
    sections = {name: _section(name, cls, merged.get(name, {})) for name, cls in SECTIONS.items()}
    return _check(ServeConfig(**sections, token=environ.get(TOKEN_ENV) or None))
