"""PyTorch executors: eager (the baseline) and torch.compile (inductor), on CPU or CUDA.

Eager runs the artifact's module as loaded, moved to the device. Compile wraps the same module
in `torch.compile` and compiles it at load, on a warm-up batch whose batch axis is marked
*unbacked*: the compiler then makes no assumption about its size, not even the 0/1
specialization it gives ordinary dynamic sizes, so one graph serves every batch size from 1 up
and no request ever waits for a compile. (Measured on the small DLRM, 1 CPU thread: the unbacked
graph ran as fast as the backed dynamic one at batch 1, 64 and 256, and compiled once instead of
twice.)

Quantized artifacts run here as they do in eager PyTorch, on CPU only: their INT8 embedding and
dense modules call FBGEMM's x86 kernels. On CUDA they would fall back to plain-torch emulation
(dequantize the weights on every call), as slow as the float model or slower, so CUDA refuses
them; the float parent in fp16/bf16 is the GPU form. Under torch.compile the INT8 dense layers run
their plain-torch path (see models/quant/dense.py); the embedding lookups stay on FBGEMM.

Dynamo keeps compiled graphs per model class, up to `torch._dynamo.config.recompile_limit`
(8) per class; models of one class and one shape share a graph. A process that compiles more
distinct variants of one class than that falls back to eager for the rest, so the profiler
should compile a handful per process.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from recaccel.artifact import Artifact
from recaccel.data.dataset import FeatureBatch
from recaccel.data.rows import Rows
from recaccel.errors import ConfigError
from recaccel.models.quant.dense import quantize_dense
from recaccel.models.quant.embedding import QuantizedEmbeddingBag
from recaccel.models.quant.half import HALF_DTYPES
from recaccel.models.quant.int8 import Int8DynamicLinear, Int8StaticMLP
from recaccel.models.split import SplitModel
from recaccel.runtime.executor import (
    Executor,
    ExecutorConfig,
    ExecutorError,
    outermost_ops,
    owned_copy,
    probabilities,
    zeros_batch,
)
from recaccel.runtime.part_cache import RequestRows
from recaccel.runtime.reuse import split_inputs, split_twin

# Rows of the warm-up batch: any size works for the unbacked graph; >1 so that eager warm-up
# also exercises the batched kernels (FBGEMM packs weights on first use).
WARMUP_ROWS = 8

# Three tensors (dense, categorical, multi-hot), or the split twin's seven (runtime/reuse.py).
Scorer = Callable[..., torch.Tensor]


def _cpu_only_op(module: nn.Module) -> str | None:
    if isinstance(module, QuantizedEmbeddingBag):
        return f"quantized::embedding_bag_{'byte' if module.bits == 8 else '4bit'}_rowwise_offsets"
    if isinstance(module, Int8DynamicLinear):
        return "quantized::linear_dynamic"
    if isinstance(module, Int8StaticMLP):
        return "quantized::linear_relu"
    if type(module).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized")):
        return f"quantized::{type(module).__name__.lower()}"
    return None


def cpu_only_ops(model: nn.Module) -> list[tuple[str, str]]:
    """(submodule name, op) for each part of `model` whose kernels run on CPU only."""
    return outermost_ops(model, _cpu_only_op)


def _prepare(artifact: Artifact, config: ExecutorConfig) -> nn.Module:
    """The artifact's model in `config`'s precision, on its device (modified in place)."""
    model = artifact.model
    made_by = [str(t.get("op")) for t in artifact.manifest.transforms]
    if config.device_type == "cuda" and (ops := cpu_only_ops(model)):
        (name, op), how = ops[0], f" (made by {', '.join(made_by)})" if made_by else ""
        raise ExecutorError(
            config,
            f"artifact {artifact.path}{how} uses {op} in {name}, an FBGEMM kernel that runs "
            "on CPU only",
            "run it with device='cpu', or serve its float parent on CUDA "
            f"(parent {artifact.manifest.parent}), with precision fp16 or bf16 for speed",
        )
    if config.precision in HALF_DTYPES:
        if "quantize_dense" in made_by:
            raise ExecutorError(
                config,
                f"artifact {artifact.path} already has quantized dense layers ({made_by})",
                "use precision fp32 with it, or cast its float parent",
            )
        try:
            model, _ = quantize_dense(model, config.precision, inplace=True, device=config.device)
        except ConfigError as exc:  # fp16/bf16 not native here: slower than fp32, refused
            raise ExecutorError(config, exc.message, exc.hint) from None
    return model.to(config.device).eval()


def _kernel_paths(model: nn.Module) -> dict[str, str]:
    """Module class -> the kernel path it reports ("fbgemm", "torch-dequantize", ...)."""
    paths: dict[str, str] = {}
    for module in model.modules():
        report = getattr(module, "kernel_path", None) or getattr(module, "lookup_path", None)
        if callable(report):
            paths[type(module).__name__] = str(report())
    return paths


class TorchEagerExecutor(Executor):
    """The artifact's `nn.Module` in eager mode: the baseline every other backend is read
    against. `calibration` is unused: PyTorch INT8 models are artifacts of their own,
    calibrated when made (optimize/quantize.py)."""

    def __init__(
        self,
        artifact: Artifact,
        config: ExecutorConfig,
        *,
        calibration: FeatureBatch | None = None,
        loaded_here: bool = False,
    ) -> None:
        super().__init__(artifact, config)
        self.device = torch.device(config.device)
        torch.set_num_threads(config.threads)  # before any compile: inductor bakes it in
        model = _prepare(owned_copy(artifact, loaded_here), config)
        if config.reuse:
            model = split_twin(model, self.schema, config)
        self.model: nn.Module | None = model
        self._forward: Scorer | None = self._build(self.model)
        self._warm_up()

    def _build(self, model: nn.Module) -> Scorer:
        return model

    def _inputs(self, batch: FeatureBatch | Rows) -> tuple[torch.Tensor, ...]:
        if self.config.reuse:
            tensors = _tensors(split_inputs(batch))
        else:
            tensors = (
                batch.as_tuple() if isinstance(batch, FeatureBatch) else _tensors(batch.as_tuple())
            )
        return tuple(t.to(self.device) for t in tensors)  # no copy on CPU

    def _score(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self._forward is None:
            raise ExecutorError(self.config, "the executor is closed", "load a new one")
        self._own_threads()
        with torch.inference_mode():
            return self._forward(*inputs)

    def _own_threads(self) -> None:
        if torch.get_num_threads() != self.config.threads:  # another executor changed it
            torch.set_num_threads(self.config.threads)

    def _warm_up(self) -> None:
        """One untimed batch: FBGEMM packs its weights and the allocator fills on first use."""
        self._score(self._inputs(zeros_batch(self.schema, WARMUP_ROWS)))

    def _run(self, batch: FeatureBatch | Rows) -> np.ndarray:
        return probabilities(self._score(self._inputs(batch)))

    def _run_halves_apart(self) -> None:
        self._twin()  # the twin's methods are its halves: nothing to build

    def _twin(self) -> SplitModel:
        """The split twin, with this executor's thread count set (the halves' calls)."""
        if not isinstance(self.model, SplitModel):
            raise ExecutorError(self.config, "the executor is closed", "load a new one")
        self._own_threads()
        return self.model

    def _request_parts(self, request: RequestRows) -> np.ndarray:
        twin = self._twin()
        tensors = (t.to(self.device) for t in _tensors(request))
        with torch.inference_mode():
            return twin.request(*tensors).float().cpu().numpy()

    def _candidate_logits(self, parts: np.ndarray, owner: np.ndarray, rows: Rows) -> torch.Tensor:
        twin = self._twin()
        part, owned, *tensors = (
            t.to(self.device) for t in _tensors((parts, owner, *rows.as_tuple()))
        )
        with torch.inference_mode():
            return twin.candidates(part, owned, *tensors)

    def _details(self) -> dict[str, Any]:
        kernels = _kernel_paths(self.model) if self.model is not None else {}
        return {"torch": torch.__version__, "kernels": kernels}

    def close(self) -> None:
        self.model, self._forward = None, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _tensors(arrays: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
    """Numpy arrays as tensors over the same memory (a read-only array is copied: torch
    tensors are writable)."""
    return tuple(torch.from_numpy(a if a.flags.writeable else a.copy()) for a in arrays)


def _row_major_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _row_major(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` with the strides a fresh tensor of its shape has, copied only if needed.

    The compiled graph guards on input strides: a column sliced out of a wider array, or a
    size-1 axis with an arbitrary stride (numpy gives those), would recompile it mid-request.
    """
    if tensor.stride() == _row_major_strides(tensor.shape):
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def described(exc: Exception) -> str:
    """An exception's type and first line: a compiler's errors run to pages of generated code."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


@contextlib.contextmanager
def quiet_inductor() -> Iterator[None]:
    """Mute inductor warnings that ask nothing of a recaccel user: torch.utils.mkldnn's
    "torch.jit is deprecated" (torch's own code), the advice to enable TF32 on CUDA (fp32
    precision stays fp32 on purpose; fp16 and bf16 are the fast forms), and a deprecation
    inside torch.export."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*torch.jit.script_method", DeprecationWarning)
        warnings.filterwarnings("ignore", "TensorFloat32 tensor cores", UserWarning)
        # torch.export's own pytree code, copying a tree spec (torch 2.13).
        warnings.filterwarnings("ignore", ".*LeafSpec", FutureWarning)
        yield


class TorchCompileExecutor(TorchEagerExecutor):
    """The artifact compiled by `torch.compile` (inductor): one graph for every batch size,
    compiled during load (see the module docstring)."""

    def _inputs(self, batch: FeatureBatch | Rows) -> tuple[torch.Tensor, ...]:
        return tuple(_row_major(t) for t in super()._inputs(batch))

    def _build(self, model: nn.Module) -> Scorer:
        with quiet_inductor():
            compiled: Scorer = torch.compile(model, backend="inductor")
        return compiled

    def _warm_up(self) -> None:
        # Dynamo guards on whether inputs are inference tensors (made under
        # torch.inference_mode) or not; callers make both, so compile both graphs now rather
        # than mid-request (seen: a first request of 1,682 rows took 0.9-5 s to recompile).
        normal = self._inputs(zeros_batch(self.schema, WARMUP_ROWS))
        with torch.inference_mode():
            inference = self._inputs(zeros_batch(self.schema, WARMUP_ROWS))
        try:
            for inputs in (normal, inference):
                for tensor in inputs:
                    torch._dynamo.decorators.mark_unbacked(tensor, 0)
                with quiet_inductor():
                    self._score(inputs)
        except Exception as exc:  # inductor fails in many types; all mean the same here
            raise ExecutorError(
                self.config,
                f"torch.compile failed: {described(exc)}",
                "torch-compile needs a C++ compiler (g++) for CPU and Triton for CUDA; "
                "torch-eager runs the same model without compiling",
            ) from exc

    def _details(self) -> dict[str, Any]:
        details = super()._details()
        for name in ("Int8DynamicLinear", "Int8StaticMLP"):  # they skip FBGEMM when compiled
            if name in details["kernels"]:
                details["kernels"][name] = "inductor (plain-torch int8)"
        return {**details, "compiler": "inductor", "dynamic_batch": "unbacked"}
