"""The OpenVINO executor: the artifact's ONNX form, compiled by OpenVINO for the CPU.

OpenVINO reads the very files the onnxruntime executor runs (`onnx_exec.cached_onnx`: the export
with plain gathers and a dynamic batch axis, checked against PyTorch when made, and ORT's
quantized forms), so each form is made and cached once per artifact, whichever backend asks
first. One compiled model serves every batch size: the batch axis stays dynamic.

Precisions, as measured on this project's 2-core AMD EPYC (AVX2; no AVX512, VNNI or AMX),
OpenVINO 2026.4.1, 1 thread, the MovieLens DLRM zoo presets: median ms of `Executor.run`,
executors of every backend loaded side by side and called in turn on the same test rows
(small preset; heavy in brackets, at batch 64):

                      batch 1   batch 64   batch 256
    torch-eager fp32   0.74      1.47       2.20       [8.3]
    onnxruntime fp32   0.24      0.50       0.97       [6.1]
    openvino fp32      0.40      0.77       1.42       [6.5]
    openvino int8-st   0.49      1.17       2.57       [8.8]   (onnxruntime's: [3.9])

    fp32         the float export, with INFERENCE_PRECISION_HINT f32 set explicitly: left to
                 itself the CPU plugin computes in bf16 on AVX512-BF16 and AMX CPUs, and fp32
                 must mean fp32. Probabilities within 1.2e-7 of PyTorch's.
    int8-static  ORT's QDQ file. OpenVINO folds each QuantizeLinear/DequantizeLinear pair
                 into a FakeQuantize and runs the Linears on int8 kernels (its runtime graph
                 has them as u8 FullyConnected), with ORT's scales: its probabilities equal
                 onnxruntime int8-static's to the last bit on 2,000 test rows. On this CPU it
                 is slower than openvino fp32: without VNNI, oneDNN's int8 path is the generic
                 jit_gemm_I8, no faster than fp32's brgemm kernels, and quantizing the
                 activations adds a sixth (PERF_COUNT on the heavy preset). VNNI and AMX CPUs
                 get int8 brgemm kernels (not measured here). Accepted, as onnxruntime's fp16
                 is on CPU: it computes correctly, and the profiler measures whether it pays
                 on the machine at hand.
    fp16         OpenVINO's own INFERENCE_PRECISION_HINT f16 on the float export (ORT's fp16
                 file would only add Casts around every op), and only where the CPU computes
                 fp16 natively (AVX512-FP16, AMX-FP16), decided as for PyTorch half precision
                 (`models.quant.half.natively_supports`). Refused elsewhere: on AVX2 the
                 plugin ignores the hint without a word and computes f32, fp32 under a wrong
                 name. Not measured (no such CPU here).

Refused: int8-dynamic. OpenVINO has no run-time activation quantization for ORT's
MatMulInteger/DynamicQuantizeLinear graph: it turns the int8 weights back into floats and runs
float FullyConnected layers plus the quantization arithmetic, on any CPU: int8's error at more
than fp32's cost (probabilities within 1.2e-7 of onnxruntime int8-dynamic's, in 1.5x openvino
fp32's time at batch 1, 1.25x on the heavy preset at 64). bf16 is not offered: no CPU here to
check it on.

Compiled-model settings, read back after compiling (OpenVINO adjusts what the machine cannot do
without a word, e.g. it caps INFERENCE_NUM_THREADS at the cores it sees), and a mismatch is an
error, not a silently different configuration:

    INFERENCE_NUM_THREADS  config.threads
    NUM_STREAMS            1: one request at a time; serving scales by worker processes
    PERFORMANCE_HINT       LATENCY
    ENABLE_CPU_PINNING     False: several workers share a machine, and pinned threads from
                           different processes would be pinned onto the same cores

Running: one InferRequest per executor, fed through tensors that share the input arrays'
memory (no copy), which measured 0.07-0.1 ms a call faster than `InferRequest.infer(dict)`. A
request runs one inference at a time, so an executor must not be called from several Python
threads at once (the serving layer runs one executor per worker process).

Telemetry: `import openvino` imports its model converter, which sends a usage event to Google
Analytics and writes a client id and a usage counter under ~/intel, unless the user has opted
out with `opt_in_out --opt_out` (its only environment switch is CI=true, meant for CI jobs). A
serving library should make no network calls and write nothing to the home directory when it
imports a runtime, so this module imports OpenVINO with `openvino_telemetry` hidden for the
duration of that import: the converter then falls back to its own no-op stub, as it does when
the package is missing. The user's consent file is neither read nor written. OpenVINO's own log
level stays at its default, none: loading and running print nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recaccel.artifact import Artifact
from recaccel.data.dataset import FeatureBatch
from recaccel.data.rows import Rows
from recaccel.extras import OPENVINO, require
from recaccel.models.quant.half import HALF_DTYPES, DeviceCaps, natively_supports, probe_device
from recaccel.runtime.executor import (
    Executor,
    ExecutorConfig,
    ExecutorError,
    probabilities,
    zeros_batch,
)
from recaccel.runtime.export import UnsupportedOnBackendError, onnx_feeds, unsupported_ops
from recaccel.runtime.onnx_exec import cached_onnx, form_file

BACKEND = "openvino"
DEVICE = "CPU"
WARMUP_ROWS = 8
# The ONNX form each accepted precision compiles, and the precision OpenVINO computes it in.
ONNX_FORM = {"fp32": "fp32", "int8-static": "int8-static", "fp16": "fp32"}
INFERENCE_PRECISION = {"fp32": "f32", "int8-static": "f32", "fp16": "f16"}
_TELEMETRY = "openvino_telemetry"


def import_openvino() -> Any:
    """OpenVINO (the `openvino` extra), imported on first use without its import-time
    telemetry (module docstring)."""
    loaded = sys.modules.get("openvino")
    if loaded is not None:
        return loaded
    hide = _TELEMETRY not in sys.modules
    if hide:
        sys.modules[_TELEMETRY] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        return require(OPENVINO, "openvino")
    finally:
        if hide:
            del sys.modules[_TELEMETRY]


def inference_precision(config: ExecutorConfig, caps: DeviceCaps) -> str:
    """OpenVINO's element type for `config.precision` on a CPU with `caps`, or an ExecutorError
    when this backend does not run that precision there."""
    if config.precision not in INFERENCE_PRECISION:
        raise ExecutorError(
            config,
            f"precision {config.precision} is not available",
            f"openvino takes {', '.join(INFERENCE_PRECISION)}",
        )
    if config.precision in HALF_DTYPES and not natively_supports(
        caps, HALF_DTYPES[config.precision]
    ):
        raise ExecutorError(
            config,
            f"{config.precision} is not native on this cpu {caps.cpu_capability}".strip(),
            "OpenVINO computes fp16 only on AVX512-FP16 or AMX-FP16 CPUs and would run fp32 "
            "here; use precision fp32 (or int8-static) on openvino",
        )
    return INFERENCE_PRECISION[config.precision]


def compile_settings(config: ExecutorConfig, precision: str) -> dict[str, Any]:
    """The CPU plugin properties for `config` (see the module docstring), as read back."""
    return {
        "INFERENCE_NUM_THREADS": config.threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": precision,
    }


def _plain(value: Any) -> Any:
    """A read-back property as `compile_settings` writes it (an element type as "f32")."""
    return value.get_type_name() if hasattr(value, "get_type_name") else value


def check_compiled(
    config: ExecutorConfig, wanted: Mapping[str, Any], got: Mapping[str, Any]
) -> None:
    """Raise an ExecutorError when the compiled model's settings `got` are not `wanted`."""
    threads = got.get("INFERENCE_NUM_THREADS")
    if threads != wanted["INFERENCE_NUM_THREADS"]:
        raise ExecutorError(
            config,
            f"OpenVINO runs {threads} threads, not the {config.threads} asked for",
            f"OpenVINO caps its threads at the cores it can use: use threads <= {threads}",
        )
    precision = got.get("INFERENCE_PRECISION_HINT")
    if precision != wanted["INFERENCE_PRECISION_HINT"]:
        raise ExecutorError(
            config,
            f"OpenVINO computes in {precision}, not {wanted['INFERENCE_PRECISION_HINT']}, on "
            "this CPU",
            "use precision fp32",
        )
    others = {k: (v, got.get(k)) for k, v in wanted.items() if got.get(k) != v}
    if others:
        raise ExecutorError(
            config,
            "OpenVINO changed its settings: "
            + ", ".join(f"{k} {v!r} -> {g!r}" for k, (v, g) in others.items()),
            "report it with the OpenVINO version; torch-eager or onnxruntime run the model",
        )


def _made_by(artifact: Artifact) -> str:
    made_by = [str(t.get("op")) for t in artifact.manifest.transforms]
    return f" (made by {', '.join(made_by)})" if made_by else ""


def _refusal(artifact: Artifact, op: str, part: str) -> UnsupportedOnBackendError:
    parent = artifact.manifest.parent
    return UnsupportedOnBackendError(
        op,
        BACKEND,
        f"artifact {artifact.path}{_made_by(artifact)} ({part})",
        "openvino runs the artifact's ONNX form, and PyTorch's quantized modules have none: "
        "serve this artifact on torch-eager (cpu), or its float parent"
        + (f" ({parent})" if parent else "")
        + " on openvino, with precision int8-static for OpenVINO's own int8",
    )


def form_path(
    artifact_path: Path,
    artifact_id: str,
    config: ExecutorConfig,
    calibration: FeatureBatch | None = None,
) -> Path:
    """The ONNX file an executor of `config` compiles, found without loading the artifact."""
    return form_file(artifact_path, artifact_id, ONNX_FORM[config.precision], calibration)


def onnx_form(artifact: Artifact, config: ExecutorConfig, calibration: FeatureBatch | None) -> Path:
    """The cached ONNX file OpenVINO compiles for `config`, made on first use.

    Raises:
        UnsupportedOnBackendError: the artifact holds quantized PyTorch modules; it names the
            op and backend openvino.
    """
    unsupported = unsupported_ops(artifact.model)
    if unsupported:
        (name, op), more = unsupported[0], len(unsupported) - 1
        raise _refusal(artifact, op, (name or "root") + (f" and {more} more" if more else ""))
    form = ONNX_FORM[config.precision]
    try:
        return cached_onnx(artifact, form, calibration if form == "int8-static" else None)
    except UnsupportedOnBackendError as exc:  # an op the ONNX exporter cannot translate
        raise _refusal(artifact, exc.op, "export") from exc


class OpenVinoExecutor(Executor):
    """The artifact's ONNX form compiled by OpenVINO for the CPU (see the module docstring).
    `loaded_here` is unused: the model is exported, never changed."""

    def __init__(
        self,
        artifact: Artifact,
        config: ExecutorConfig,
        *,
        calibration: FeatureBatch | None = None,
        loaded_here: bool = False,
    ) -> None:
        super().__init__(artifact, config)
        precision = inference_precision(config, probe_device("cpu"))
        if config.precision == "int8-static" and calibration is None:
            raise ExecutorError(
                config,
                "precision int8-static needs calibration rows",
                "pass calibration= a FeatureBatch of training rows (a few thousand), e.g. "
                "dataset.train.features(slice(0, 2048))",
            )
        self.onnx_path = onnx_form(artifact, config, calibration)
        ov = import_openvino()
        self._tensor = ov.Tensor
        self.version = ov.__version__
        settings = compile_settings(config, precision)
        try:
            self._compiled: Any = ov.Core().compile_model(str(self.onnx_path), DEVICE, settings)
        except RuntimeError as exc:  # an op OpenVINO's ONNX front end cannot convert
            failed = [line.strip() for line in str(exc).splitlines() if line.strip()][-1]
            raise ExecutorError(
                config,
                f"OpenVINO cannot convert the model's graph ({failed})",
                "serve it on onnxruntime; an imported model's ops are the exporter's choice",
            ) from None
        got = {name: _plain(self._compiled.get_property(name)) for name in settings}
        check_compiled(config, settings, got)
        self._request: Any = self._compiled.create_infer_request()
        self._run(zeros_batch(self.schema, WARMUP_ROWS))  # first-inference allocations

    def _run(self, batch: FeatureBatch | Rows) -> np.ndarray:
        if self._request is None:
            raise ExecutorError(self.config, "the executor is closed", "load a new one")
        for name, array in onnx_feeds(batch).items():
            # Shared, not copied: the array outlives the synchronous `infer` below.
            tensor = self._tensor(np.ascontiguousarray(array), shared_memory=True)
            self._request.set_tensor(name, tensor)
        self._request.infer()
        # A view of the request's output buffer; `probabilities` copies it out.
        return probabilities(self._request.get_output_tensor(0).data)

    def _details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"openvino": self.version, "onnx": str(self.onnx_path)}
        if self._compiled is None:
            return details
        read = self._compiled.get_property
        return {
            **details,
            "execution_devices": list(read("EXECUTION_DEVICES")),
            "inference_precision": _plain(read("INFERENCE_PRECISION_HINT")),
            "inference_threads": read("INFERENCE_NUM_THREADS"),
            "streams": read("NUM_STREAMS"),
        }

    def close(self) -> None:
        self._request, self._compiled = None, None
