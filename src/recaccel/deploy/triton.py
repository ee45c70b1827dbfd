"""`recaccel deploy triton`: an artifact as a Triton Inference Server model repository.

    model = write_triton_model(Path("artifacts/best"), Path("repo"), TritonOptions(slo_ms=50))

writes what Triton loads as it is:

    repo/<name>/config.pbtxt
    repo/<name>/1/model.onnx        (+ model.onnx.data where the weights pass 2 GiB)

The ONNX file is the artifact's export that `recaccel serve`'s onnxruntime workers run
(runtime/onnx_exec.py's cache: exported once, checked against PyTorch when made). The config
is a `ModelConfig` message of Triton's own schema, which tritonclient ships, written with
protobuf's text format: a misspelled field or a wrong enum cannot reach the file. Its inputs
and outputs are read back from the ONNX file, so their names, types and dims are the graph's
by construction; the batching, queueing and instance numbers are triton_plan.py's.

Shapes: the graph's first axis is the batch, which Triton leaves out of `dims` when
`max_batch_size` > 0. The score is (batch,): nothing is left, and Triton wants at least one
dim, so it is declared `dims: [1]` with `reshape: { shape: [] }`, Triton's form for a tensor
that has only the batch axis. A zero-length axis (a schema without multi-hot fields) is
declared -1, variable, since Triton refuses 0 in dims.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf import text_format

import recaccel
from recaccel.artifact import Artifact, load_artifact
from recaccel.deploy.triton_plan import (
    Measurement,
    TritonOptions,
    TritonPlan,
    measurement_for,
    plan_triton,
)
from recaccel.errors import ConfigError
from recaccel.extras import TRITON, MissingExtraError, require
from recaccel.runtime.export import UnsupportedOnBackendError, unsupported_ops
from recaccel.runtime.onnx_exec import cached_onnx
from recaccel.runtime.profile import Profile
from recaccel.serve.config import ServeConfig

CONFIG_FILE = "config.pbtxt"
VERSION = "1"
PLATFORM = "onnxruntime_onnx"

# ONNX element types and Triton's names for them.
_DATA_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.STRING: "TYPE_STRING",
}


def model_config_pb2() -> Any:
    """Triton's model-config schema, as tritonclient ships it (the `triton` extra)."""
    try:
        return require(TRITON, "tritonclient.grpc.model_config_pb2")
    except RuntimeError:  # tritonclient raises RuntimeError when grpcio is missing
        raise MissingExtraError(TRITON) from None


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, Triton data type and full shape (-1: symbolic)."""

    name: str
    data_type: str
    shape: tuple[int, ...]


def onnx_signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs, as Triton would name their types."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _DATA_TYPES:
            raise ConfigError(f"{path}: {value.name} has an ONNX type Triton does not take")
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(value.name, _DATA_TYPES[tensor.elem_type], shape)

    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in graph.output]


def batched_dims(spec: TensorSpec) -> tuple[list[int], list[int] | None]:
    """(dims, reshape) for a tensor of a batching model: the batch axis left out."""
    if not spec.shape or spec.shape[0] != -1:
        raise ConfigError(
            f"{spec.name} has shape {list(spec.shape)}, without a variable batch axis first",
            "export the model with a dynamic batch axis (runtime/export.py does)",
        )
    dims = [d if d > 0 else -1 for d in spec.shape[1:]]
    return (dims, None) if dims else ([1], [])


def model_config(
    name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], plan: TritonPlan
) -> Any:
    """The `ModelConfig` message for an ONNX model served as `plan` says."""
    schema = model_config_pb2()
    config = schema.ModelConfig(name=name, platform=PLATFORM, max_batch_size=plan.max_batch_size)
    for specs, field in ((inputs, config.input), (outputs, config.output)):
        for spec in specs:
            dims, reshape = batched_dims(spec)
            tensor = field.add(name=spec.name, data_type=spec.data_type, dims=dims)
            if reshape is not None:
                tensor.reshape.shape.extend(reshape)
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = plan.max_queue_delay_us
    policy = batching.default_queue_policy
    policy.timeout_action = schema.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = plan.queue_timeout_us
    policy.allow_timeout_override = True
    policy.max_queue_size = plan.max_queue_size
    kind = schema.ModelInstanceGroup.KIND_GPU if plan.gpu else schema.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=plan.instances, kind=kind)
    accelerators = config.optimization.execution_accelerators
    if plan.accelerator == "tensorrt":
        trt = accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = "FP16" if plan.precision == "fp16" else "FP32"
    elif plan.accelerator == "openvino":
        accelerators.cpu_execution_accelerator.add(name="openvino")
    # ORT backend settings: one session per instance with its own pool; no inter-op pool.
    config.parameters["intra_op_thread_count"].string_value = str(plan.threads)
    config.parameters["inter_op_thread_count"].string_value = "1"
    return config


@dataclass(frozen=True)
class TritonModel:
    """What `write_triton_model` wrote."""

    path: Path  # repo/<name>
    config: Any  # the ModelConfig message
    plan: TritonPlan

    @property
    def onnx_path(self) -> Path:
        return self.path / VERSION / "model.onnx"


def config_text(message: Any, plan: TritonPlan) -> str:
    """The config in text format, headed by comments saying where its numbers came from.

    Proto3 leaves fields at their default out of the text: a queue policy's timeout_action
    REJECT and a zero max_queue_delay_microseconds are there, only not printed; the header
    says so.
    """
    header = [
        f"# Written by recaccel {recaccel.__version__} (recaccel deploy triton).",
        *(f"# {reason}" for reason in plan.reasons),
        f"# max_queue_delay_microseconds: {plan.max_queue_delay_us}; the queue policy's "
        "timeout_action: REJECT (a default value is not printed below)",
    ]
    return "\n".join(header) + "\n" + text_format.MessageToString(message)


def read_model_config(path: Path) -> Any:
    """A config.pbtxt (or the model directory holding it) parsed against Triton's schema."""
    target = path / CONFIG_FILE if path.is_dir() else path
    return text_format.Parse(target.read_text(), model_config_pb2().ModelConfig())


def _exportable(artifact: Artifact) -> None:
    unsupported = unsupported_ops(artifact.model)
    if unsupported:
        where, op = unsupported[0]
        raise ConfigError(
            f"artifact {artifact.path} cannot be deployed to Triton: {where or 'the model'} "
            f"uses {op}, which has no ONNX form",
            "deploy its float parent (see `recaccel inspect` for the lineage) and quantize the "
            "ONNX file instead (--precision int8-dynamic), or serve it with `recaccel serve "
            "--backend torch-eager`",
        )


def write_triton_model(
    artifact_path: Path,
    out: Path,
    options: TritonOptions,
    config: ServeConfig,
    profile: Profile | None = None,
    cores: int = 1,
    overwrite: bool = False,
) -> TritonModel:
    """Write `out/<name>/` for `artifact_path`; see the module docstring.

    Raises:
        ConfigError: the artifact has ops ONNX cannot express (INT4/INT8 PyTorch kernels), the
            profile does not hold it, the SLO cannot be met, or `out/<name>` exists and
            `overwrite` is false.
        MissingExtraError: tritonclient is not installed (checked before the export).
    """
    model_config_pb2()
    artifact = load_artifact(artifact_path)
    _exportable(artifact)
    name = options.name or TritonOptions(name=artifact.path.resolve().name).name
    assert name is not None
    target = out / name
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists", "pass --force to replace it")
    measured: Measurement | None = None
    if profile is not None:
        artifact_id = artifact.manifest.artifact_id
        measured = measurement_for(profile, artifact_id, options.precision, options.device)
        cores = int(profile.machine.get("cores", cores))
    plan = plan_triton(options, config, measured, cores)
    try:
        exported = cached_onnx(artifact, options.precision)
    except UnsupportedOnBackendError as error:  # an op found only by the exporter itself
        raise ConfigError(f"cannot deploy to Triton: {error.message}", error.hint) from None
    inputs, outputs = onnx_signature(exported)
    message = model_config(name, inputs, outputs, plan)

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    try:
        # The cached form's directory: model.onnx and any external weight file beside it.
        shutil.copytree(exported.parent, staging / VERSION)
        (staging / CONFIG_FILE).write_text(config_text(message, plan))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TritonModel(target, message, plan)
