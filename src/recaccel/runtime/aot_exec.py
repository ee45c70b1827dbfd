"""The AOTInductor executor: the artifact compiled ahead of time into a native library.

PyTorch's deployment compiler (`torch.export`, then AOTInductor) turns the model into a shared
library of inductor's fused C++ kernels, packaged with its weights as a `.pt2` file, made on
first use and cached beside the artifact like the ONNX forms (runtime/cache.py):

    <artifact>/aoti/<artifact_id>-<precision>-cpu-t<threads>-v<format>/model.pt2

The package computes the click probabilities, the sigmoid compiled in (`ClickProbability`).

Why a backend of its own, when torch-compile runs the same kernels: torch-compile calls them
through dynamo's guards and inductor's Python wrapper, a few hundred µs a call whatever the
batch; the package calls them from C++, tens of µs a call. And ONNX Runtime runs the exported
graph node by node: an embedding model's many small Gather, ReduceSum and Mul nodes, unfused,
cost it several times inductor's time per row. A rank request is one call of a few hundred rows,
where both differences count (docs/serving-plane.md has the measured figures).

The batch axis is dynamic from 1 up (traced on `TRACE_ROWS` rows: torch.export specializes
sizes 0 and 1), so one package serves every request size. Inductor's CPU kernels bake the
thread count in, hence the key. Float artifacts only: the quantized ones call FBGEMM ops that
this path does not compile (torch-eager and torch-compile run them); fp16/bf16 cast the MLPs
first, where the CPU computes them natively, as on the other PyTorch backends. CPU only: the
CUDA form of the package is not built or tested here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from recaccel.data.dataset import FeatureBatch
from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema
from recaccel.models.split import SplitModel, split_example
from recaccel.runtime.cache import cache_dir, cached
from recaccel.runtime.executor import Executor, ExecutorConfig, ExecutorError, zeros_batch
from recaccel.runtime.torch_exec import (
    Scorer,
    TorchEagerExecutor,
    cpu_only_ops,
    described,
    quiet_inductor,
)

AOTI_DIR = "aoti"
PACKAGE_FILE = "model.pt2"
TRACE_ROWS = 4
# In each package's key: what it computes. 2: click probabilities (the sigmoid compiled in).
PACKAGE_FORMAT = 2


def form_path(
    artifact_path: Path,
    artifact_id: str,
    config: ExecutorConfig,
    calibration: FeatureBatch | None = None,
) -> Path:
    """Where the artifact's package for `config` is (or will be) cached (`calibration` unused:
    the same signature as the other backends' `form_path`)."""
    key = f"{artifact_id}-{config.precision}-{config.device_type}-t{config.threads}"
    key += f"{'-split' if config.reuse else ''}-v{PACKAGE_FORMAT}"
    return cache_dir(artifact_path, AOTI_DIR) / key / PACKAGE_FILE


class ClickProbability(nn.Module):
    """sigmoid(model(...)) in float32: compiled in, so the executor hands the output back as
    it comes (the other backends apply it in numpy, `probabilities`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, multi_hot: torch.Tensor
    ) -> torch.Tensor:
        return torch.sigmoid(self.model(dense, categorical, multi_hot).float())


class SplitClickProbability(nn.Module):
    """`ClickProbability` of a split twin: its seven inputs (runtime/reuse.py) in, (N,) out."""

    def __init__(self, twin: SplitModel) -> None:
        super().__init__()
        self.twin = twin

    def forward(
        self,
        request_dense: torch.Tensor,
        request_categorical: torch.Tensor,
        request_multi_hot: torch.Tensor,
        dense: torch.Tensor,
        categorical: torch.Tensor,
        multi_hot: torch.Tensor,
        owner: torch.Tensor,
    ) -> torch.Tensor:
        request = (request_dense, request_categorical, request_multi_hot)
        logits = self.twin(*request, dense, categorical, multi_hot, owner)
        return torch.sigmoid(logits.float())


def compile_package(model: nn.Module, schema: FeatureSchema, path: Path) -> None:
    """Export `model`'s click probabilities with a dynamic batch axis (a split twin: dynamic
    request and row axes) and compile them into the package `path`, with the process's
    current thread count."""
    if isinstance(model, SplitModel):
        example = split_example(schema, 2, TRACE_ROWS)
        requests, rows = Dim("requests", min=1), Dim("rows", min=1)
        axes: tuple[dict[int, Dim], ...] = ({0: requests},) * 3 + ({0: rows},) * 4
        wrapped: nn.Module = SplitClickProbability(model)
    else:
        example = zeros_batch(schema, TRACE_ROWS).as_tuple()
        batch = Dim("batch", min=1)
        axes = tuple({0: batch} for _ in example)
        wrapped = ClickProbability(model)
    with quiet_inductor():
        program = torch.export.export(wrapped, example, dynamic_shapes=axes)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))


class AotInductorExecutor(TorchEagerExecutor):
    """The artifact's AOTInductor package, compiled on first use (see the module docstring).
    Threads and closing are the PyTorch executors'."""

    package: Path | None = None  # set by `_build`

    def _build(self, model: nn.Module) -> Scorer:
        if ops := cpu_only_ops(model):
            (name, op), *_ = ops
            raise ExecutorError(
                self.config,
                f"artifact {self.artifact_path} uses {op} in {name}, which torch-aot does not "
                "compile",
                "serve it with torch-compile or torch-eager, or its float parent with torch-aot",
            )
        path = form_path(self.artifact_path, self.artifact_id, self.config)
        try:
            self.package = cached(path, lambda staged: compile_package(model, self.schema, staged))
        except Exception as exc:  # export and inductor fail in many types; all mean this
            raise ExecutorError(
                self.config,
                f"AOTInductor could not compile the model: {described(exc)}",
                "torch-aot needs a C++ compiler (g++); torch-eager runs the same model",
            ) from exc
        # `loader.run` takes the flat input list: the package's own `__call__` first flattens
        # and checks pytrees, a third of the call's cost on a small batch (torch 2.13).
        with quiet_inductor():
            loader = torch._inductor.aoti_load_package(str(self.package)).loader
        self.model = None  # the package holds its own weights: the module is not kept

        def score(*inputs: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = loader.run(list(inputs))[0]
            return out

        return score

    def _inputs(self, batch: FeatureBatch | Rows) -> tuple[torch.Tensor, ...]:
        # The kernels index by the traced layout; a size-1 axis's stride is never used, so
        # `is_contiguous` (which ignores it) is the check, not torch-compile's exact strides.
        return tuple(t if t.is_contiguous() else t.contiguous() for t in super()._inputs(batch))

    def _run(self, batch: FeatureBatch | Rows) -> np.ndarray:
        probabilities: np.ndarray = self._score(self._inputs(batch)).numpy()
        return probabilities

    def _warm_up(self) -> None:
        self._score(self._inputs(zeros_batch(self.schema, TRACE_ROWS)))

    def _run_halves_apart(self) -> None:
        Executor._run_halves_apart(self)  # one compiled graph: the halves do not run apart

    def _details(self) -> dict[str, Any]:
        return {"torch": torch.__version__, "compiler": "aotinductor", "package": str(self.package)}
