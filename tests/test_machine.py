"""The machine as every report states it: the same facts, from the counts it is given."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from recaccel.machine import describe_machine
from recaccel.runtime.profiler import MachineFacts


@dataclass(frozen=True)
class Counts:
    cores: int
    cuda_devices: int


def test_the_description_states_the_counts_it_is_given() -> None:
    facts = MachineFacts(7, 0, ("torch-eager",), {"cpu": ()})
    described = describe_machine(facts)
    assert described["cores"] == 7 and described["gpus"] == []
    assert describe_machine(Counts(3, 0))["cores"] == 3


def test_without_counts_it_describes_this_machine() -> None:
    described = describe_machine()
    assert described["cores"] == (os.cpu_count() or 1)
    assert len(described["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert described["versions"]["torch"] == torch.__version__
    assert described["cpu"] and described["python"] and described["platform"]
    assert described["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
