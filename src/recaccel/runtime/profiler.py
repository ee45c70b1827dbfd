"""`recaccel profile`: measure every configuration of some artifacts, interleaved, in one run.

    profile = run_profile([Path("artifacts/dlrm-heavy"), Path("artifacts/best")], dataset)

A configuration is (artifact, backend, device, precision, threads). For each one this loads an
executor (timing the load: export, compile and warm-up, which a worker pays once at start),
scores the whole validation split with it to get the AUC of what that configuration actually
computes, then times it at every batch size. Timing is interleaved: at each batch size every
loaded executor of one thread count runs a block of calls per round, in a rotating order, on
the same validation rows, so machine drift falls on all configurations alike and their ratios
hold (see optimize/latency.py and `_time_batch`). Each batch size gets warm-up rounds, then up
to `repeats` timed calls per configuration, fewer — never below `min_repeats` — where that
would exceed `seconds_per_batch`; the samples actually taken are recorded with each figure,
since a p99 from 30 samples is nearly the max.

What runs where (`plan_configs`, a pure function): every installed backend on every device it
supports that is visible (openvino is an extra: a run without it says so once, with the
command that installs it); every precision the backend takes, except fp16/bf16 on PyTorch and
OpenVINO where the device would only emulate them (slower than fp32, and refused at load; see
models/quant/half.py); thread counts 1 and all cores. A configuration that cannot run (a
quantized PyTorch artifact on an ONNX backend, a missing GPU provider) becomes an
"unsupported" entry with the reason.

All executors stay loaded for the whole run, so dynamo's limit of 8 compiled graphs per model
class (torch_exec.py) bounds the torch-compile configurations of one model class per run.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset, FeatureBatch
from recaccel.defaults import DEFAULT_CANDIDATES
from recaccel.errors import ConfigError, RecaccelError

# Re-exported: the bench, the soak and the CLI state their machine through this module.
from recaccel.machine import describe_machine
from recaccel.models.quant.half import HALF_DTYPES, natively_supports, probe_device
from recaccel.optimize.latency import percentile, sample_rows, time_rounds
from recaccel.runtime.backends import cuda_device_count, packages_missing
from recaccel.runtime.executor import (
    BACKENDS,
    BackendSpec,
    Executor,
    ExecutorConfig,
    imported_onnx,
    load_executor,
)
from recaccel.runtime.latency_model import LatencyPoint
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.train.metrics import evaluate

log = logging.getLogger(__name__)

DEFAULT_BATCHES = (1, 16, 64, 256, 1024)
EVAL_CHUNK = 1024  # rows per call when scoring the validation split
BLOCK = 8  # calls per executor per round; the first untimed (see _time_batch)
# Backends that cast to fp16/bf16 only where the device computes them natively (they refuse an
# emulated type at load); planning those configurations elsewhere would only list refusals.
NATIVE_HALF_ONLY = ("torch-eager", "torch-compile", "torch-aot", "openvino")


@dataclass(frozen=True)
class ProfileOptions:
    backends: tuple[str, ...] | None = None  # None: every installed backend
    devices: tuple[str, ...] | None = None  # None: cpu, and cuda when a GPU is visible
    precisions: tuple[str, ...] | None = None  # None: all each backend takes (see plan_configs)
    threads: tuple[int, ...] | None = None  # None: 1 and every core
    batches: tuple[int, ...] = DEFAULT_BATCHES
    serving_batch: int = DEFAULT_CANDIDATES  # rows of a rank request; added to `batches`
    repeats: int = 200
    min_repeats: int = 30
    warmup: int = 10
    seconds_per_batch: float = 30.0
    calibration_rows: int = 2048  # training rows for int8-static
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"batch sizes {self.batches} must be >= 1")
        if self.serving_batch < 1:
            raise ConfigError(f"serving batch {self.serving_batch} must be >= 1")
        if self.repeats < 1 or self.min_repeats < 1 or self.warmup < 0:
            raise ConfigError("repeats and min_repeats must be >= 1, warmup >= 0")
        if self.threads is not None and (not self.threads or min(self.threads) < 1):
            raise ConfigError(f"thread counts {self.threads} must be >= 1")

    @property
    def all_batches(self) -> tuple[int, ...]:
        return tuple(sorted({*self.batches, self.serving_batch}))


def calibration_batch(dataset: Dataset, options: ProfileOptions | None = None) -> FeatureBatch:
    """The training rows int8-static forms are calibrated on. The server calibrates on these
    same rows, so it finds the form the profile measured (cached under their digest)."""
    options = options or ProfileOptions()
    return sample_rows(dataset.train, options.calibration_rows, options.seed)


@dataclass(frozen=True)
class MachineFacts:
    """What `plan_configs` needs to know about this machine; gathered by `machine_facts`."""

    cores: int
    cuda_devices: int
    installed_backends: tuple[str, ...]
    native_half: dict[str, tuple[str, ...]]  # device type -> precisions computed natively


def _native_half(device: str) -> tuple[str, ...]:
    caps = probe_device(device)
    return tuple(name for name, dtype in HALF_DTYPES.items() if natively_supports(caps, dtype))


def installed_backends() -> tuple[str, ...]:
    """The backends whose packages are installed here (openvino's is an extra)."""
    return tuple(name for name, spec in BACKENDS.items() if not packages_missing(spec))


def skipped_backends(facts: MachineFacts) -> list[str]:
    """One line for each backend not installed here, saying how to install it."""
    return [
        f"skipping {name}: not installed" + (f" ({spec.install})" if spec.install else "")
        for name, spec in BACKENDS.items()
        if name not in facts.installed_backends
    ]


def machine_facts() -> MachineFacts:
    cuda = cuda_device_count()
    return MachineFacts(
        cores=os.cpu_count() or 1,
        cuda_devices=cuda,
        installed_backends=installed_backends(),
        native_half={device: _native_half(device) for device in ("cpu", "cuda")[: 1 + bool(cuda)]},
    )


def _wanted_precisions(
    spec: BackendSpec, device_type: str, facts: MachineFacts, asked: tuple[str, ...] | None
) -> list[str]:
    precisions = [p for p in spec.precisions if asked is None or p in asked]
    if spec.name in NATIVE_HALF_ONLY:
        native = facts.native_half.get(device_type, ())
        precisions = [p for p in precisions if p not in HALF_DTYPES or p in native]
    return precisions


def plan_configs(options: ProfileOptions, facts: MachineFacts) -> list[ExecutorConfig]:
    """Every configuration to profile on a machine with `facts` (see the module docstring)."""
    backends = options.backends or facts.installed_backends
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ConfigError(
            f"unknown backend(s) {', '.join(unknown)}", f"choose from {', '.join(BACKENDS)}"
        )
    devices = options.devices or ("cpu", *(["cuda"] if facts.cuda_devices else []))
    threads = options.threads or tuple(sorted({1, facts.cores}))
    configs: list[ExecutorConfig] = []
    for name in backends:
        spec = BACKENDS[name]
        for device in devices:
            device_type = device.partition(":")[0]
            if device_type not in spec.devices:
                continue
            for precision in _wanted_precisions(spec, device_type, facts, options.precisions):
                # One CPU thread drives a GPU: thread counts are a CPU dimension.
                for count in threads if device_type == "cpu" else (1,):
                    configs.append(ExecutorConfig(name, device, count, precision))
    return configs


def baseline_config_for(artifact: Artifact) -> ExecutorConfig:
    """How the baseline artifact is run when nothing is optimized: PyTorch eager, one thread,
    FP32; an imported ONNX model, which PyTorch cannot run, on ONNX Runtime the same way."""
    backend = "onnxruntime" if imported_onnx(artifact) else "torch-eager"
    return ExecutorConfig(backend, "cpu", 1, "fp32")


def _validation_auc(executor: Executor, dataset: Dataset) -> float:
    split = dataset.validation
    scores = [
        executor.run(split.features(slice(start, start + EVAL_CHUNK)))
        for start in range(0, len(split), EVAL_CHUNK)
    ]
    return evaluate(split.label, np.concatenate(scores)).auc


def _entry(artifact: Artifact, config: ExecutorConfig, status: str, **fields: Any) -> ProfileEntry:
    manifest = artifact.manifest
    return ProfileEntry(
        artifact=str(artifact.path),
        artifact_id=manifest.artifact_id,
        model=manifest.model,
        parameters=manifest.parameters,
        weights_bytes=manifest.weights_bytes,
        config=config,
        status=status,
        **fields,
    )


def _load(
    artifact: Artifact,
    config: ExecutorConfig,
    dataset: Dataset,
    calibration: FeatureBatch,
    aucs: dict[tuple[str, str, str, str], float],
) -> tuple[ProfileEntry, Executor | None]:
    """Load one configuration and score the validation split with it; never raises for a
    configuration that cannot run, so one bad backend does not lose the whole profile."""
    try:
        start = time.perf_counter()
        executor = load_executor(artifact, config, calibration=calibration)
        load_s = time.perf_counter() - start
    except RecaccelError as error:  # the reason with what to do about it, if anything
        reason = f"{error.message} ({error.hint})" if error.hint else error.message
        return _entry(artifact, config, "unsupported", reason=reason), None
    except Exception as error:  # a backend's own failure: record it, profile the rest
        return _entry(artifact, config, "failed", reason=f"{type(error).__name__}: {error}"), None
    # Threads do not change what is computed: score once per (artifact, backend, device,
    # precision).
    numerics = (artifact.manifest.artifact_id, config.backend, config.device, config.precision)
    if numerics not in aucs:
        aucs[numerics] = _validation_auc(executor, dataset)
    entry = _entry(
        artifact,
        config,
        "ok",
        validation_auc=aucs[numerics],
        load_s=load_s,
        details=executor.describe(),
    )
    return entry, executor


def _time_batch(
    executors: dict[str, Executor], batch: FeatureBatch, options: ProfileOptions
) -> dict[str, LatencyPoint]:
    """Each executor's latency on `batch`, interleaved within each thread count.

    Configurations with different thread counts are timed in separate loops: torch's thread
    count is per process, and switching it between every call made both sides slower (seen
    here: heavy DLRM eager at 100 rows, 9 ms alone, 24 ms interleaved with 2-thread
    configurations). Within a loop each executor runs a block of BLOCK calls per round and the
    first is not timed (see `time_rounds`): multi-threaded runtimes leave their pools spinning
    for a while after a call, a cost that belongs to them, not to whoever runs next.
    """
    timed = BLOCK - 1
    rounds = math.ceil(options.repeats / timed)
    min_rounds = math.ceil(options.min_repeats / timed)
    points: dict[str, LatencyPoint] = {}
    for threads in sorted({e.config.threads for e in executors.values()}):
        calls: dict[str, Callable[[], object]] = {
            key: functools.partial(executor.run, batch)
            for key, executor in executors.items()
            if executor.config.threads == threads
        }
        with torch.inference_mode():
            samples = time_rounds(
                calls,
                rounds,
                options.warmup,
                max_seconds=options.seconds_per_batch / len(executors) * len(calls),
                min_repeats=min_rounds,
                block=BLOCK,
            )
        for key, times in samples.items():
            points[key] = LatencyPoint(
                len(batch), statistics.median(times), percentile(times, 99), len(times)
            )
    return points


def run_profile(
    artifact_paths: Sequence[Path],
    dataset: Dataset,
    options: ProfileOptions | None = None,
    facts: MachineFacts | None = None,
    progress: bool = True,
) -> Profile:
    """Measure every planned configuration of every artifact (see the module docstring).

    The first artifact in PyTorch eager FP32 (an imported ONNX model: ONNX Runtime FP32, the
    runtime it came for) is the baseline: the reference for accuracy and
    speedups. Artifacts must share `dataset`'s feature schema.

    Raises:
        ConfigError: no artifacts, an artifact trained on another schema, or no backend that
            can run the baseline.
    """
    options = options or ProfileOptions()
    facts = facts or machine_facts()
    if not artifact_paths:
        raise ConfigError("no artifacts to profile", "name one or more artifact directories")
    artifacts = [load_artifact(Path(p)) for p in artifact_paths]
    for artifact in artifacts:
        if artifact.schema != dataset.schema:
            raise ConfigError(
                f"{artifact.path} was trained on another feature schema than {dataset.name!r}",
                "profile artifacts of one dataset together",
            )
    configs = plan_configs(options, facts)
    if options.backends is None:  # asked for by name, a missing one is an "unsupported" entry
        for line in skipped_backends(facts):
            log.warning(line)
    baseline_config = baseline_config_for(artifacts[0])
    if baseline_config not in configs:
        configs.insert(0, baseline_config)  # the reference is always measured
    calibration = calibration_batch(dataset, options)
    entries: dict[str, ProfileEntry] = {}
    executors: dict[str, Executor] = {}
    aucs: dict[tuple[str, str, str, str], float] = {}
    plan = [(artifact, config) for artifact in artifacts for config in configs]
    try:
        for artifact, config in tqdm(plan, desc="load + score", disable=not progress):
            entry, executor = _load(artifact, config, dataset, calibration, aucs)
            entries[entry.key] = entry
            if executor is not None:
                executors[entry.key] = executor
        points: dict[str, list[LatencyPoint]] = {key: [] for key in executors}
        for rows in tqdm(options.all_batches, desc="time batches", disable=not progress):
            batch = sample_rows(dataset.validation, rows, options.seed + rows)
            for key, point in _time_batch(executors, batch, options).items():
                points[key].append(point)
    finally:
        for executor in executors.values():
            executor.close()
    for key, measured in points.items():
        entries[key] = replace(entries[key], points=tuple(measured))
    baseline = _entry(artifacts[0], baseline_config, "ok").key
    return Profile(
        batches=options.all_batches,
        serving_batch=options.serving_batch,
        entries=tuple(entries.values()),
        baseline=baseline,
        machine=describe_machine(facts),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        dataset=dataset.name + (" (synthetic)" if dataset.synthetic else ""),
        validation_rows=len(dataset.validation),
    )
