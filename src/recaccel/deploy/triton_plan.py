"""What a Triton deployment of an artifact should be configured with: a pure decision.

    plan = plan_triton(TritonOptions(slo_ms=50), serve_config, measurement, cores=2)

The numbers come from the same places `recaccel serve` takes them, so the two deployments keep
one SLO with one model of the machine:

    max_batch_size   with a profile: the largest batch whose p99 fits half the SLO, no larger
                     than the largest batch measured (a request may wait for one batch and run
                     in the next, so two batch times must fit: runtime/select.py's rule).
                     E.g. SLO 50 ms, p99(1,024 rows) = 4.1 ms measured, up to 1,024 measured:
                     1,024. Without a profile: `batching.max_rows`.
    queue delay      `slo.max_queue_delay_ms` (0 by default: work-conserving; serve/config.py
                     has the measurement), and never past the slack the SLO leaves after two
                     full batches.
    queue timeout    a request still queued after SLO − p99(full batch) cannot finish in time:
                     Triton rejects it (REJECT, not DELAY) rather than answer late. Without a
                     profile: half the SLO. Clients may set their own (allow_timeout_override),
                     as they may with `recaccel serve`.
    max_queue_size   `admission.max_queue_requests`.
    instances        --instances; else ⌊cores / threads⌋ CPU instances with a profile (the
                     selector's worker count, on the profiled machine's cores), `workers.max`
                     without one; one per GPU.
    threads          the profiled configuration's intra-op threads (ORT's own default, a thread
                     per core in every instance, oversubscribes as soon as two instances share
                     the CPU); `workers.executors[0].threads` without a profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recaccel.defaults import DEFAULT_SLO_P99_MS
from recaccel.errors import ConfigError
from recaccel.runtime.latency_model import LatencyModel
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.serve.config import ServeConfig

DEVICES = ("cpu", "gpu")
# The ONNX forms `cached_onnx` makes without calibration rows.
PRECISIONS = ("fp32", "int8-dynamic", "fp16")
ACCELERATORS = ("auto", "none")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonOptions:
    """What the user asks for; None means "derive it" (see the module docstring)."""

    name: str | None = None  # None: the artifact directory's name
    slo_ms: float = DEFAULT_SLO_P99_MS
    device: str = "cpu"
    instances: int | None = None
    precision: str = "fp32"
    max_queue_delay_ms: float | None = None  # None: the serving config's
    accelerator: str = "auto"  # auto: OpenVINO on CPU, TensorRT on GPU; none: plain ORT

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ConfigError(f"the SLO must be > 0 ms, not {self.slo_ms:g}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}", "use cpu or gpu")
        if self.instances is not None and self.instances < 1:
            raise ConfigError(f"instances must be >= 1, not {self.instances}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision {self.precision!r} cannot be exported for Triton",
                f"use one of {', '.join(PRECISIONS)} (int8-static needs calibration rows: "
                "quantize the ONNX file with recaccel.runtime.onnx_quantize yourself)",
            )
        if self.max_queue_delay_ms is not None and self.max_queue_delay_ms < 0:
            raise ConfigError(f"the max queue delay must be >= 0, not {self.max_queue_delay_ms}")
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(
                f"unknown accelerator {self.accelerator!r}", f"use {' or '.join(ACCELERATORS)}"
            )
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"model name {self.name!r} is not a Triton model name",
                "use letters, digits, '_', '.' and '-', starting with a letter or digit",
            )


@dataclass(frozen=True)
class Measurement:
    """The profiled configuration a Triton instance stands for."""

    key: str
    latency: LatencyModel
    largest_batch: int
    threads: int

    @classmethod
    def of(cls, entry: ProfileEntry) -> Measurement:
        return cls(entry.key, entry.latency_model(), entry.points[-1].batch, entry.config.threads)


@dataclass(frozen=True)
class TritonPlan:
    max_batch_size: int
    max_queue_delay_us: int
    queue_timeout_us: int
    max_queue_size: int
    instances: int
    gpu: bool
    threads: int
    accelerator: str | None  # "openvino", "tensorrt" or None
    precision: str
    reasons: tuple[str, ...]  # where each number came from, for the user


def measurement_for(profile: Profile, artifact_id: str, precision: str, device: str) -> Measurement:
    """The profile's ONNX Runtime measurement of this artifact on `device`, fewest threads first
    (a Triton instance is one session); a ConfigError naming what the profile does hold."""
    device_type = "cpu" if device == "cpu" else "cuda"
    found = [
        e
        for e in profile.entries
        if e.ok
        and e.artifact_id == artifact_id
        and e.config.backend == "onnxruntime"
        and e.config.precision == precision
        and e.config.device_type == device_type
    ]
    if not found:
        held = sorted(
            e.config.label()
            for e in profile.entries
            if e.ok and e.artifact_id == artifact_id and e.config.backend == "onnxruntime"
        )
        raise ConfigError(
            f"the profile has no onnxruntime/{device_type}/{precision} measurement of artifact "
            f"{artifact_id[:8]}" + (f" (it has: {', '.join(held)})" if held else ""),
            "profile the artifact on onnxruntime (`recaccel profile ARTIFACT --out DIR`), or "
            "leave out --profile to size batches from the serving config",
        )
    return Measurement.of(min(found, key=lambda e: e.config.threads))


def _ms_to_us(ms: float) -> int:
    return round(ms * 1e3)


def plan_triton(
    options: TritonOptions,
    config: ServeConfig,
    measured: Measurement | None,
    cores: int,
) -> TritonPlan:
    """The Triton settings for `options` (see the module docstring for each rule)."""
    slo = options.slo_ms
    reasons: list[str] = []
    if measured is not None:
        budget = slo / 2
        fits = measured.latency.max_rows_within(budget)
        max_batch = min(fits, measured.largest_batch)
        if max_batch == 0:
            raise ConfigError(
                f"{measured.key}: even a one-row batch has p99 "
                f"{measured.latency.predict_ms(1):.2f} ms, over half the {slo:g} ms SLO",
                "loosen --slo-ms, or deploy a faster artifact",
            )
        full_ms = measured.latency.predict_ms(max_batch)
        timeout_ms = slo - full_ms
        slack_ms = slo - 2 * full_ms
        threads = measured.threads
        reasons.append(
            f"max_batch_size {max_batch}: p99 {full_ms:.2f} ms fits half the {slo:g} ms SLO "
            f"({measured.key}; largest measured batch {measured.largest_batch})"
        )
        reasons.append(f"queue timeout {timeout_ms:.2f} ms: the SLO minus the p99 of a full batch")
    else:
        max_batch = config.batching.max_rows
        timeout_ms = slack_ms = slo / 2
        threads = config.workers.executors[0].threads
        reasons.append(f"max_batch_size {max_batch}: batching.max_rows (no profile)")
        reasons.append(f"queue timeout {timeout_ms:.2f} ms: half the SLO (no profile)")
    delay_ms = (
        config.slo.max_queue_delay_ms
        if options.max_queue_delay_ms is None
        else options.max_queue_delay_ms
    )
    if delay_ms > slack_ms:
        raise ConfigError(
            f"a max queue delay of {delay_ms:g} ms leaves no room in the {slo:g} ms SLO "
            f"(at most {slack_ms:.2f} ms after two full batches)",
            "lower the queue delay, or loosen --slo-ms",
        )
    gpu = options.device == "gpu"
    if options.instances is not None:
        instances = options.instances
    elif gpu:
        instances = 1
    elif measured is not None:
        instances = max(1, cores // threads)
    else:
        instances = config.workers.max
    reasons.append(
        f"{instances} {'GPU' if gpu else 'CPU'} instance(s) of {threads} intra-op thread(s)"
    )
    accelerator = None
    if options.accelerator == "auto":
        accelerator = "tensorrt" if gpu else "openvino"
    return TritonPlan(
        max_batch_size=max_batch,
        max_queue_delay_us=_ms_to_us(delay_ms),
        queue_timeout_us=_ms_to_us(timeout_ms),
        max_queue_size=config.admission.max_queue_requests,
        instances=instances,
        gpu=gpu,
        threads=threads,
        accelerator=accelerator,
        precision=options.precision,
        reasons=tuple(reasons),
    )
