"""The machine a figure was measured on, stated one way by every report that gives figures.

    describe_machine()  # {"cpu": "AMD EPYC 9R14", "cores": 2, "gpus": [], "versions": {...}, ...}

The profile, the bench, the soak and the optimize report all state their machine with this, so
their figures can be compared across reports and machines. Shared by every stage (like errors.py):
optimize measures latencies too, and sits below runtime, where the profiler gathers its facts.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import torch

# The runtimes whose versions move the figures: recorded when installed.
VERSIONED_PACKAGES = ("torch", "onnxruntime", "openvino")


class Hardware(Protocol):
    """The counts a description states; runtime/profiler.py's `MachineFacts` is one (a test's
    facts pretend other counts, and its profile states those)."""

    @property
    def cores(self) -> int: ...

    @property
    def cuda_devices(self) -> int: ...


def cpu_name() -> str:
    """The CPU's model name as Linux reports it, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(hardware: Hardware | None = None) -> dict[str, Any]:
    """The facts a reader needs to compare figures from different machines. `hardware`: the
    cores and GPUs to state; None counts this machine's."""
    if hardware is None:
        cores = os.cpu_count() or 1
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    else:
        cores, cuda_devices = hardware.cores, hardware.cuda_devices
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_name(),
        "cores": cores,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(cuda_devices)],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }
