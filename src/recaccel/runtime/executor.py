"""The Executor: one artifact, loaded on one backend and device, that scores feature batches.

Every served model runs behind this contract, whatever runs it underneath:

    executor = load_executor("artifacts/dlrm-small", ExecutorConfig("onnxruntime", threads=2))
    p = executor.run(batch)   # (B,) float32 click probabilities, sigmoid(logit) per row
    executor.close()

`run` returns probabilities, not the logits the models and the ONNX graph produce: the scores a
ranker sorts on and a client reads, the same on every backend. Backends (BACKENDS):

    torch-eager    PyTorch as the artifact loads: the baseline. CPU and CUDA.
    torch-compile  torch.compile (inductor), one graph for every batch size, compiled at load.
    torch-aot      AOTInductor: the same kernels compiled ahead of time into a native package,
                   cached beside the artifact, called without Python in between. CPU.
    onnxruntime    the artifact exported to ONNX (cached beside it), on ORT's CPU, CUDA or
                   TensorRT execution provider; int8 and fp16 forms made by ORT's tools.
    openvino       the same ONNX forms compiled by OpenVINO for the CPU: fp32, int8-static
                   (ORT's QDQ file, run on OpenVINO's int8 kernels), fp16 where native.

Precision says what the executor does to the artifact's float dense layers on top of what the
artifact already is: "fp32" runs it as saved (a quantized artifact stays quantized);
"fp16"/"bf16" cast its MLPs (PyTorch: only where the device computes that type natively);
"int8-dynamic"/"int8-static"/"fp16" are ORT's quantized forms of the exported graph.

Threads. Each executor runs its intra-op work on `config.threads` threads, set per backend:
ORT sessions own their pools (intra-op = threads, inter-op = 1), so ORT executors are
independent. PyTorch's count is one per process (`torch.set_num_threads` is global): a torch
executor sets it at load — before compiling, since inductor's CPU kernels bake the count in —
and re-asserts it at the start of each `run` when another executor has changed it (one cheap
comparison). Executors with different counts may therefore share a process when called one at a
time, as the profiler does; concurrent runs from several Python threads would fight over the
setting. The serving layer runs one executor per worker process, where the count is the
worker's own.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from recaccel.artifact import Artifact, load_artifact, read_manifest
from recaccel.data.dataset import FeatureBatch
from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema
from recaccel.errors import ConfigError, RecaccelError
from recaccel.extras import OPENVINO
from recaccel.imported.model import ImportedConfig
from recaccel.runtime.part_cache import (
    NO_COUNTS,
    CacheCounts,
    PartCache,
    PartCacheSettings,
    RequestRows,
)

PRECISIONS = ("fp32", "int8-dynamic", "int8-static", "fp16", "bf16")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class ExecutorConfig:
    """How to run an artifact.

    Args:
        backend: a key of `BACKENDS`.
        device: "cpu", "cuda" or "cuda:N".
        threads: intra-op threads. 1 by default: serving scales by worker processes, and
            several workers each spawning a thread per core oversubscribe the machine.
        precision: one of PRECISIONS (see the module docstring); each backend takes a subset.
        reuse: run the model's split twin (models/split, docs/reuse.md), which computes each
            rank request's user and context part once instead of once per candidate row.
    """

    backend: str
    device: str = "cpu"
    threads: int = 1
    precision: str = "fp32"
    reuse: bool = False

    def __post_init__(self) -> None:
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"unknown device {self.device!r}", "use cpu, cuda or cuda:N")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads must be an integer >= 1, not {self.threads!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}"
            )

    @property
    def device_type(self) -> str:
        """ "cpu" or "cuda", without the index."""
        return self.device.partition(":")[0]

    @property
    def device_index(self) -> int:
        return int(self.device.partition(":")[2] or 0)

    def label(self) -> str:
        """Short and unique per config, e.g. "onnxruntime/cpu/int8-dynamic/t2" (and "/reuse")."""
        label = f"{self.backend}/{self.device}/{self.precision}/t{self.threads}"
        return label + ("/reuse" if self.reuse else "")


class ExecutorError(RecaccelError):
    """A backend cannot run an artifact in the requested configuration."""

    def __init__(self, config: ExecutorConfig, problem: str, hint: str) -> None:
        super().__init__(f"backend {config.backend} on {config.device}: {problem}", hint)
        self.config = config


@dataclass(frozen=True)
class BackendSpec:
    """What a backend needs and accepts; the class itself is imported only when used."""

    name: str
    module: str  # defines `cls`; imported by `load_executor`
    cls: str
    packages: tuple[str, ...]  # import names beyond torch that must be installed
    devices: tuple[str, ...]  # device types
    precisions: tuple[str, ...]
    install: str  # how to get `packages`
    # Loading makes a form cached beside the artifact (an ONNX export, a compiled package):
    # worth making once before several processes load it (`prepare_form`). True: `module`
    # has `form_path(artifact_path, artifact_id, config, calibration)`, where the form is.
    caches_form: bool = False
    # Runs the model's ONNX graph, so it can serve a model imported as ONNX (which PyTorch
    # can only call through ONNX Runtime, not compile).
    runs_onnx: bool = False
    # Runs a zoo model's split twin (`ExecutorConfig.reuse`), at fp32.
    runs_split: bool = False
    # Runs the twin's two halves apart, so request parts can be kept across requests
    # (`Executor.use_part_cache`).
    caches_parts: bool = False

    def runs_reuse(self, precision: str) -> bool:
        """Whether this backend runs the split twin (request-level reuse) at `precision`."""
        return self.runs_split and precision == "fp32"


def part_cache_hint(backends: Mapping[str, BackendSpec] | None = None) -> str:
    """Where the request-part cache runs, for a refusal's hint."""
    caching = (b.name for b in (backends or BACKENDS).values() if b.caches_parts)
    return f"the request-part cache runs with reuse at fp32 on {', '.join(caching)}"


def reuse_hint(backends: Mapping[str, BackendSpec] | None = None) -> str:
    """Where reuse runs, for a refusal's hint."""
    split = (b.name for b in (backends or BACKENDS).values() if b.runs_split)
    return f"reuse runs at fp32 on {', '.join(split)}"


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "torch-eager",
            "recaccel.runtime.torch_exec",
            "TorchEagerExecutor",
            (),
            ("cpu", "cuda"),
            ("fp32", "fp16", "bf16"),
            "",
            runs_split=True,
            caches_parts=True,
        ),
        BackendSpec(
            "torch-compile",
            "recaccel.runtime.torch_exec",
            "TorchCompileExecutor",
            (),
            ("cpu", "cuda"),
            ("fp32", "fp16", "bf16"),
            "",
        ),
        BackendSpec(
            "torch-aot",
            "recaccel.runtime.aot_exec",
            "AotInductorExecutor",
            (),
            ("cpu",),
            ("fp32", "fp16", "bf16"),
            "",
            caches_form=True,
            runs_split=True,
        ),
        BackendSpec(
            "onnxruntime",
            "recaccel.runtime.onnx_exec",
            "OnnxRuntimeExecutor",
            ("onnxruntime", "onnx", "onnxscript"),
            ("cpu", "cuda"),
            ("fp32", "int8-dynamic", "int8-static", "fp16"),
            "pip install onnxruntime onnx onnxscript (onnxruntime-gpu for CUDA)",
            caches_form=True,
            runs_onnx=True,
            runs_split=True,
            caches_parts=True,
        ),
        BackendSpec(
            "openvino",
            "recaccel.runtime.openvino_exec",
            "OpenVinoExecutor",
            ("openvino", "onnx", "onnxscript", "onnxruntime"),
            ("cpu",),
            ("fp32", "int8-static", "fp16"),
            OPENVINO.install,  # the ONNX packages are core
            caches_form=True,
            runs_onnx=True,
        ),
    )
}


def check_config(
    config: ExecutorConfig,
    *,
    cuda_devices: int,
    missing_packages: tuple[str, ...] = (),
    backends: Mapping[str, BackendSpec] = BACKENDS,
) -> BackendSpec:
    """The backend for `config`, or an ExecutorError saying why it cannot run here.

    A pure decision on the facts `load_executor` gathers (visible GPUs, missing packages), so
    every refusal is testable on any machine. Backend-specific checks that need the backend
    itself (an ORT build without its CUDA provider, a quantized op on CUDA) come at load.
    """
    spec = backends.get(config.backend)
    if spec is None:
        raise ExecutorError(
            config, "unknown backend", f"choose one of: {', '.join(sorted(backends))}"
        )
    if config.device_type not in spec.devices:
        raise ExecutorError(
            config, "device not supported", f"{spec.name} runs on {', '.join(spec.devices)}"
        )
    if config.device_type == "cuda" and config.device_index >= cuda_devices:
        found = "no CUDA GPU is visible" if cuda_devices == 0 else f"{cuda_devices} GPU(s) seen"
        raise ExecutorError(
            config,
            f"{found} (torch {torch.__version__}, CUDA build {torch.version.cuda})",
            "use device='cpu', or run on a GPU machine with a CUDA build of torch"
            + (f" and a device index below {cuda_devices}" if cuda_devices else ""),
        )
    if missing_packages:
        raise ExecutorError(
            config, f"needs {', '.join(missing_packages)}, which is not installed", spec.install
        )
    if config.precision not in spec.precisions:
        raise ExecutorError(
            config,
            f"precision {config.precision} is not available",
            f"{spec.name} takes {', '.join(spec.precisions)}; "
            + ", ".join(
                f"{other.name} takes {config.precision}"
                for other in backends.values()
                if config.precision in other.precisions
            ),
        )
    if config.reuse and not spec.runs_reuse(config.precision):
        raise ExecutorError(
            config,
            f"request-level reuse does not run on {spec.name} at {config.precision}",
            f"{reuse_hint(backends)}; or serve without reuse",
        )
    return spec


def _missing_packages(spec: BackendSpec) -> tuple[str, ...]:
    return tuple(name for name in spec.packages if importlib.util.find_spec(name) is None)


def _cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def zeros_batch(schema: FeatureSchema, rows: int) -> FeatureBatch:
    """A valid batch of `rows` all-zero rows (id 0 is "unknown", or padding in a bag): what
    executors warm up on, needing no data."""
    return FeatureBatch(
        torch.zeros(rows, len(schema.dense)),
        torch.zeros(rows, len(schema.categorical), dtype=torch.int64),
        torch.zeros(rows, len(schema.multi_hot), schema.multi_hot_len, dtype=torch.int64),
    )


def check_batch(schema: FeatureSchema, batch: FeatureBatch | Rows) -> None:
    """Refuse a batch whose columns are not `schema`'s, before a backend fails obscurely."""
    expected = {
        "dense": (len(schema.dense),),
        "categorical": (len(schema.categorical),),
        "multi_hot": (len(schema.multi_hot), schema.multi_hot_len),
    }
    rows = len(batch)
    for name, tail in expected.items():
        shape = tuple(getattr(batch, name).shape)
        if shape != (rows, *tail):
            raise ConfigError(
                f"batch {name} has shape {shape}, the model's schema wants {(rows, *tail)}",
                "encode requests with the artifact's schema",
            )


def probabilities(logits: np.ndarray | torch.Tensor) -> np.ndarray:
    """(B,) float32 sigmoid(logits) in numpy: no torch op on the serving path for backends
    that return numpy. exp overflows to inf for logits below about -88, and 1 / (1 + inf) is
    the 0 that float32 rounds the true value to."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    x = np.asarray(logits, dtype=np.float32)
    with np.errstate(over="ignore"):
        return np.reciprocal(np.exp(-x) + np.float32(1.0))


def as_rows(batch: FeatureBatch | Rows) -> Rows:
    """A batch as numpy rows (serving's form) without copying numpy rows."""
    if isinstance(batch, Rows):
        return batch
    return Rows(*(t.detach().cpu().numpy() for t in batch.as_tuple()))


class Executor(ABC):
    """An artifact on one backend and device. Build it with `load_executor`.

    Subclasses take (artifact, config, calibration) and implement `_run`. An executor owns its
    model: an `Artifact` passed in is deep-copied where the backend changes the model (device
    moves, casts), so the caller's model is never modified.

    `concurrent_runs`: whether several threads may call `run` at once (an ONNX Runtime session
    may; an OpenVINO infer request and a compiled PyTorch module are not shared).
    """

    concurrent_runs = False
    _part_cache: PartCache | None = None

    def __init__(self, artifact: Artifact, config: ExecutorConfig) -> None:
        self.config = config
        self.schema = artifact.schema
        self.model_name = artifact.manifest.model
        self.artifact_id = artifact.manifest.artifact_id
        self.artifact_path = artifact.path

    @property
    def name(self) -> str:
        """E.g. "dlrm@3f2a9c1e torch-eager/cpu/fp32/t1"."""
        return f"{self.model_name}@{self.artifact_id[:8]} {self.config.label()}"

    def run(self, batch: FeatureBatch | Rows) -> np.ndarray:
        """Click probabilities sigmoid(logit), (B,) float32 on the host, for B rows: torch
        tensors (`FeatureBatch`) or numpy arrays (`Rows`, what serving sends)."""
        return self.run_counted(batch)[0]

    def run_counted(self, batch: FeatureBatch | Rows) -> tuple[np.ndarray, CacheCounts]:
        """`run`, and what the request-part cache did for it (nothing when it is off)."""
        check_batch(self.schema, batch)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32), NO_COUNTS
        if self._part_cache is None:
            return self._run(batch), NO_COUNTS
        rows = as_rows(batch)
        request, owner = rows.request_rows()
        parts, counts = self._part_cache.parts(request, self._request_parts)
        return probabilities(self._candidate_logits(parts, owner, rows)), counts

    @abstractmethod
    def _run(self, batch: FeatureBatch | Rows) -> np.ndarray:
        """`run` on a checked, non-empty batch."""

    def use_part_cache(self, settings: PartCacheSettings) -> None:
        """From now on, keep each request's part (the split twin's request half) for
        `settings.ttl_s` and reuse it for that request's columns (runtime/part_cache.py).

        Raises ExecutorError on an executor without reuse, or whose backend cannot run the
        twin's halves apart."""
        if not self.config.reuse:
            raise ExecutorError(
                self.config,
                "the request-part cache keeps the split twin's request parts; this executor "
                "runs the model unsplit",
                "turn reuse on for it (serve --reuse, or reuse = true in [workers.executors])",
            )
        self._run_halves_apart()
        one_request = as_rows(zeros_batch(self.schema, 1)).as_tuple()
        width = int(self._request_parts(one_request).shape[1])
        self._part_cache = PartCache(self.schema, settings, width)

    def _run_halves_apart(self) -> None:
        """Make the twin's halves runnable apart (`_request_parts`, `_candidate_logits`)."""
        raise ExecutorError(
            self.config,
            f"{self.config.backend} runs the split twin as one graph, so its request parts "
            "cannot be kept",
            part_cache_hint(),
        )

    def _request_parts(self, request: RequestRows) -> np.ndarray:
        """(R, K) float32 request parts of R request rows."""
        raise NotImplementedError  # only called once `_split_halves` has succeeded

    def _candidate_logits(
        self, parts: np.ndarray, owner: np.ndarray, rows: Rows
    ) -> np.ndarray | torch.Tensor:
        """(N,) logits of N candidate rows, row i of request `owner[i]` whose part is
        `parts[owner[i]]`."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the config, the artifact and what the backend actually runs."""
        cache = self._part_cache
        return {
            "name": self.name,
            "backend": self.config.backend,
            "device": self.config.device,
            "precision": self.config.precision,
            "threads": self.config.threads,
            "model": self.model_name,
            "artifact_id": self.artifact_id,
            "artifact": str(self.artifact_path),
            "reuse": self.config.reuse,
            "part_cache": None if cache is None else dataclasses.asdict(cache.settings),
            **self._details(),
        }

    def _details(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def close(self) -> None:
        """Release the model and the backend's resources (sessions, GPU memory); `run` then
        raises."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def imported_onnx(artifact: Artifact) -> bool:
    """Whether the artifact's model is an ONNX graph imported by `recaccel import`."""
    config = artifact.config
    return isinstance(config, ImportedConfig) and config.format == "onnx"


def owned_copy(artifact: Artifact, loaded_here: bool) -> Artifact:
    """`artifact` itself when this executor loaded it, else a copy with its own model."""
    if loaded_here:
        return artifact
    return Artifact(
        artifact.path,
        artifact.manifest,
        artifact.schema,
        artifact.config,
        copy.deepcopy(artifact.model),
    )


def load_executor(
    artifact: Artifact | Path | str,
    config: ExecutorConfig,
    calibration: FeatureBatch | None = None,
) -> Executor:
    """Load `artifact` (an Artifact or its directory) on `config`'s backend, warmed up.

    Args:
        artifact: what to run.
        config: backend, device, threads, precision.
        calibration: training rows, for precisions that calibrate (onnxruntime int8-static);
            never validation or test rows.

    Raises:
        ExecutorError: unknown backend, no GPU for a CUDA device, a missing package, a
            precision or an op the backend cannot run here; each names backend and device.
        UnsupportedOnBackendError: onnxruntime on an artifact with PyTorch-only quantized ops.
    """
    spec = BACKENDS.get(config.backend)
    missing = _missing_packages(spec) if spec is not None else ()
    spec = check_config(config, cuda_devices=_cuda_devices(), missing_packages=missing)
    loaded_here = not isinstance(artifact, Artifact)
    loaded = load_artifact(Path(artifact)) if not isinstance(artifact, Artifact) else artifact
    if imported_onnx(loaded) and not spec.runs_onnx:
        onnx_backends = ", ".join(b.name for b in BACKENDS.values() if b.runs_onnx)
        raise ExecutorError(
            config,
            "the model was imported as ONNX, which PyTorch's backends cannot compile",
            f"serve it on {onnx_backends}; or import the PyTorch model (.pt2 or its class)",
        )
    cls = getattr(importlib.import_module(spec.module), spec.cls)
    executor: Executor = cls(loaded, config, calibration=calibration, loaded_here=loaded_here)
    return executor


def prepare_form(
    artifact: Path, config: ExecutorConfig, calibration: FeatureBatch | None = None
) -> None:
    """Make, here and now, what loading `artifact` on `config` caches beside it, if anything.

    A server starting several processes calls this first, so they find the form made instead
    of each making it at once (a compile of tens of seconds, on cores they share). A form
    already made is found by its path alone: the artifact is not loaded. Raises what
    `load_executor` raises.
    """
    spec = BACKENDS.get(config.backend)
    if spec is None or not spec.caches_form:
        return
    form_path = importlib.import_module(spec.module).form_path
    if not form_path(artifact, read_manifest(artifact).artifact_id, config, calibration).is_file():
        load_executor(artifact, config, calibration).close()


def outermost_ops(
    model: nn.Module, op_of: Callable[[nn.Module], str | None]
) -> list[tuple[str, str]]:
    """(submodule name, op) for each outermost submodule `op_of` names an op for; the children
    of a module already found are not visited separately."""
    found: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{outer}.") for outer, _ in found):
            continue  # a quantized module's own children
        op = op_of(module)
        if op is not None:
            found.append((name, op))
    return found
