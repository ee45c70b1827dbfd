"""The ONNX Runtime executor: the artifact exported once, cached beside it, run by ORT.

Forms, cached under `<artifact>/onnx/<key>/model.onnx`, each made on first use:

    <artifact_id>-fp32                    export_onnx, checked against PyTorch when made
    <artifact_id>-int8-dynamic            quantize_onnx of the fp32 file (no calibration)
    <artifact_id>-int8-static-<rows>      ... calibrated on the given training rows, `<rows>` a
                                          digest of them: other rows make another file
    <artifact_id>-fp16                    ... float16 weights and arithmetic
    <artifact_id>-fp32-split              the split twin's graph (reuse; runtime/split_export.py)
    <artifact_id>-fp32-split-halves       ... as two graphs, model.onnx and request.onnx (reuse
                                          with the request-part cache)

Keys start with the artifact id; forms are staged and renamed into place (runtime/cache.py), so
worker processes that load the same artifact at once never read a half-written file.

Execution providers: CPU for device cpu. For cuda, ORT's CUDA provider, preceded by TensorRT
when the installed build lists it, and followed by CPU for any op the GPU providers lack. ORT
quietly falls back to CPU when a GPU provider cannot start (missing CUDA or cuDNN libraries),
so the session's actual providers are checked, and that case is an error, not a slow success.
Graph optimizations: ORT_ENABLE_ALL (constant folding, Gemm and activation fusions, and the
QDQ-to-integer-kernel fusions int8-static relies on).

Threads: each session has its own pool, intra-op = config.threads, and no inter-op pool (the
graph's nodes run in sequence), so ORT executors never disturb one another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import FeatureBatch
from recaccel.data.rows import Rows
from recaccel.data.schema import OUTPUT_NAME, FeatureSchema
from recaccel.errors import RecaccelError
from recaccel.models.split import SplitModel
from recaccel.runtime.cache import cache_dir, cached
from recaccel.runtime.executor import (
    Executor,
    ExecutorConfig,
    ExecutorError,
    probabilities,
    zeros_batch,
)
from recaccel.runtime.export import export_onnx, import_onnxruntime, onnx_feeds
from recaccel.runtime.onnx_quantize import quantize_onnx
from recaccel.runtime.part_cache import RequestRows
from recaccel.runtime.reuse import split_inputs, split_twin
from recaccel.runtime.split_export import (
    PART_INPUT_NAMES,
    PART_NAME,
    REQUEST_INPUT_NAMES,
    export_split_halves,
    export_split_onnx,
    request_half_file,
    split_feeds,
)

ONNX_DIR = "onnx"
MODEL_FILE = "model.onnx"
WARMUP_ROWS = 8
# TensorRT builds one engine for a range of input shapes; requests past `max` would rebuild it.
TRT_BATCH = {"min": 1, "opt": 64, "max": 4096}

ProviderList = list[tuple[str, dict[str, Any]]]


def calibration_digest(batch: FeatureBatch) -> str:
    """12 hex digits naming the calibration rows (their shapes and bytes)."""
    digest = hashlib.sha256()
    for tensor in batch.as_tuple():
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:12]


def cache_path(artifact: Artifact, precision: str, calibration: FeatureBatch | None = None) -> Path:
    """Where the artifact's ONNX form in `precision` is (or will be) cached."""
    return form_file(artifact.path, artifact.manifest.artifact_id, precision, calibration)


def form_file(
    artifact_path: Path, artifact_id: str, precision: str, calibration: FeatureBatch | None
) -> Path:
    """Where the ONNX form in `precision` of the artifact at `artifact_path` is cached."""
    key = f"{artifact_id}-{precision}"
    if precision == "int8-static" and calibration is not None:
        key += f"-{calibration_digest(calibration)}"
    return cache_dir(artifact_path, ONNX_DIR) / key / MODEL_FILE


def form_path(
    artifact_path: Path,
    artifact_id: str,
    config: ExecutorConfig,
    calibration: FeatureBatch | None = None,
) -> Path:
    """The file an executor of `config` loads, found without loading the artifact."""
    if config.reuse:
        return split_form_file(artifact_path, artifact_id)
    return form_file(artifact_path, artifact_id, config.precision, calibration)


def split_form_file(artifact_path: Path, artifact_id: str) -> Path:
    return cache_dir(artifact_path, ONNX_DIR) / f"{artifact_id}-fp32-split" / MODEL_FILE


def cached_split_onnx(artifact: Artifact, config: ExecutorConfig) -> Path:
    """The graph of the artifact's split twin (fp32), exported (the twin built) on first use."""
    file = split_form_file(artifact.path, artifact.manifest.artifact_id)
    return _cached_twin(artifact, config, file, export_split_onnx)


def split_halves_file(artifact_path: Path, artifact_id: str) -> Path:
    """The candidate half's graph; the request half's is beside it (request_half_file)."""
    return cache_dir(artifact_path, ONNX_DIR) / f"{artifact_id}-fp32-split-halves" / MODEL_FILE


def cached_split_halves(artifact: Artifact, config: ExecutorConfig) -> Path:
    """The split twin's two graphs (part cache), exported on first use."""
    file = split_halves_file(artifact.path, artifact.manifest.artifact_id)
    return _cached_twin(artifact, config, file, export_split_halves)


def _cached_twin(
    artifact: Artifact,
    config: ExecutorConfig,
    file: Path,
    export: Callable[[SplitModel, FeatureSchema, Path], Path],
) -> Path:
    """`file`, exported from the artifact's split twin by `export` on first use."""
    schema = artifact.schema
    return cached(
        file, lambda path: export(split_twin(artifact.model, schema, config), schema, path)
    )


def cached_onnx(
    artifact: Artifact, precision: str, calibration: FeatureBatch | None = None
) -> Path:
    """The artifact's ONNX file in `precision`, exported and quantized on first use.

    Raises:
        UnsupportedOnBackendError: the artifact holds quantized PyTorch modules.
        ConfigError: int8-static without calibration rows, or an unknown precision.
    """
    fp32 = cached(cache_path(artifact, "fp32"), lambda path: export_onnx(artifact, None, path))
    if precision == "fp32":
        return fp32
    return cached(
        cache_path(artifact, precision, calibration),
        lambda path: _converted(fp32, path, precision, calibration),
    )


def _converted(fp32: Path, path: Path, precision: str, calibration: FeatureBatch | None) -> Path:
    """`quantize_onnx`, its failures on a graph it does not know said as such."""
    try:
        return quantize_onnx(fp32, path, precision, calibration)  # type: ignore[arg-type]
    except RecaccelError:
        raise
    except Exception as exc:  # ORT's tools fail on graphs they do not know in many ways
        detail = str(exc).splitlines()[0] if str(exc) else "no message"
        raise RecaccelError(
            f"ONNX Runtime's {precision} conversion failed on this graph "
            f"({type(exc).__name__}: {detail})",
            "serve it at fp32; control flow in the graph (Loop, If: torch.onnx exports an "
            "nn.EmbeddingBag as a Loop) is the usual cause",
        ) from None


def _trt_shapes(schema: FeatureSchema, rows: int) -> str:
    n_dense, n_cat = len(schema.dense), len(schema.categorical)
    n_multi, length = len(schema.multi_hot), schema.multi_hot_len
    return f"dense:{rows}x{n_dense},categorical:{rows}x{n_cat},multi_hot:{rows}x{n_multi}x{length}"


def choose_providers(
    config: ExecutorConfig, available: Sequence[str], schema: FeatureSchema, cache: Path
) -> ProviderList:
    """ORT execution providers, with options, in priority order for `config`'s device."""
    if config.device_type == "cpu":
        return [("CPUExecutionProvider", {})]
    if "CUDAExecutionProvider" not in available:
        raise ExecutorError(
            config,
            f"this ONNX Runtime build has no CUDA execution provider (it has "
            f"{', '.join(available)})",
            "install onnxruntime-gpu in place of onnxruntime, or use device='cpu', or "
            "backend torch-eager on cuda",
        )
    device = {"device_id": config.device_index}
    providers: ProviderList = []
    if "TensorrtExecutionProvider" in available:
        # Not measured here (no TensorRT on these machines); options from ORT's TensorRT docs.
        providers.append(
            (
                "TensorrtExecutionProvider",
                {
                    **device,
                    "trt_fp16_enable": config.precision == "fp16",
                    "trt_int8_enable": config.precision == "int8-static",  # QDQ: explicit scales
                    "trt_engine_cache_enable": True,  # engines take minutes to build
                    "trt_engine_cache_path": str(cache / "tensorrt"),
                    **{
                        f"trt_profile_{name}_shapes": _trt_shapes(schema, rows)
                        for name, rows in TRT_BATCH.items()
                    },
                },
            )
        )
    # use_tf32=0: ORT's CUDA provider rounds fp32 matmul inputs to TF32 (10-bit mantissa) on
    # Ampere and newer by default; precision "fp32" means fp32, and fp16 is the fast form.
    providers.append(("CUDAExecutionProvider", {**device, "use_tf32": 0}))
    providers.append(("CPUExecutionProvider", {}))  # ops neither GPU provider implements
    return providers


class OnnxRuntimeExecutor(Executor):
    """The artifact's ONNX form in an ORT session (see the module docstring)."""

    concurrent_runs = True  # InferenceSession.run is thread-safe (ORT's API docs)

    def __init__(
        self,
        artifact: Artifact,
        config: ExecutorConfig,
        *,
        calibration: FeatureBatch | None = None,
        loaded_here: bool = False,
    ) -> None:
        super().__init__(artifact, config)
        ort = import_onnxruntime()
        if config.precision == "int8-static" and calibration is None:
            raise ExecutorError(
                config,
                "precision int8-static needs calibration rows",
                "pass calibration= a FeatureBatch of training rows (a few thousand), e.g. "
                "dataset.train.features(slice(0, 2048))",
            )
        self.onnx_path = (
            cached_split_onnx(artifact, config)
            if config.reuse
            else cached_onnx(artifact, config.precision, calibration)
        )
        self._session: Any = self._new_session(self.onnx_path)
        self._request_session: Any = None  # the split twin's request half, with a part cache
        self.version = ort.__version__
        started = self._session.get_providers()
        if config.device_type == "cuda" and "CUDAExecutionProvider" not in started:
            raise ExecutorError(
                config,
                f"ONNX Runtime could not start its CUDA provider (running {started})",
                "check that the CUDA and cuDNN libraries onnxruntime-gpu was built for are "
                "installed (ORT logs the missing library at log level 3 and below)",
            )
        self._run(zeros_batch(self.schema, WARMUP_ROWS))  # arenas, TensorRT engine build

    def _new_session(self, path: Path) -> Any:
        ort = import_onnxruntime()
        wanted = choose_providers(
            self.config, ort.get_available_providers(), self.schema, path.parent.parent
        )
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; ORT warns about benign graph rewrites
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=[name for name, _ in wanted],
            provider_options=[opts for _, opts in wanted],
        )

    def _run(self, batch: FeatureBatch | Rows) -> np.ndarray:
        if self._session is None:
            raise ExecutorError(self.config, "the executor is closed", "load a new one")
        feeds = split_feeds(split_inputs(batch)) if self.config.reuse else onnx_feeds(batch)
        logits: np.ndarray = self._session.run([OUTPUT_NAME], feeds)[0]
        return probabilities(logits)

    def _run_halves_apart(self) -> None:
        """The twin's two graphs in place of its one (exported on first use, from the artifact
        read again: the executor keeps no model)."""
        path = split_halves_file(self.artifact_path, self.artifact_id)
        if not path.is_file():
            artifact = load_artifact(self.artifact_path)
            path = cached_split_halves(artifact, self.config)
        self._request_session = self._new_session(request_half_file(path))
        self._session = self._new_session(path)  # the candidate half; the whole graph goes
        self.onnx_path = path

    def _request_parts(self, request: RequestRows) -> np.ndarray:
        if self._request_session is None:
            raise ExecutorError(self.config, "the executor is closed", "load a new one")
        feeds = dict(zip(REQUEST_INPUT_NAMES, request, strict=True))
        parts: np.ndarray = self._request_session.run([PART_NAME], feeds)[0]
        return parts

    def _candidate_logits(self, parts: np.ndarray, owner: np.ndarray, rows: Rows) -> np.ndarray:
        if self._session is None:
            raise ExecutorError(self.config, "the executor is closed", "load a new one")
        feeds = dict(zip(PART_INPUT_NAMES, (parts, owner, *rows.as_tuple()), strict=True))
        logits: np.ndarray = self._session.run([OUTPUT_NAME], feeds)[0]
        return logits

    def _details(self) -> dict[str, Any]:
        providers = self._session.get_providers() if self._session is not None else []
        return {
            "onnxruntime": self.version,
            "providers": providers,
            "onnx": str(self.onnx_path),
            "graph_optimization": "ORT_ENABLE_ALL",
        }

    def close(self) -> None:
        self._session = self._request_session = None
