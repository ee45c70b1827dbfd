"""Which backend runs an executor configuration, and whether it can run here.

`ExecutorConfig` says how to run an artifact; `BACKENDS` says what each backend needs (packages,
devices, precisions) and what it can do (ONNX graphs, the split twin, the request-part cache);
`check_config` is the pure decision between the two, so every refusal is testable on any
machine. The executors themselves and their loading are in executor.py, which re-exports these
names.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from recaccel.errors import ConfigError, RecaccelError
from recaccel.extras import OPENVINO

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


def packages_missing(spec: BackendSpec) -> tuple[str, ...]:
    """The import names `spec` needs that are not installed."""
    return tuple(name for name in spec.packages if not _installed(name))


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent package that cannot be imported
        return False


def cuda_device_count() -> int:
    """How many CUDA GPUs torch sees (0 without a CUDA build)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
