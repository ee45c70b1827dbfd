"""`recaccel deploy triton`: the repository Triton would load, checked against Triton's own schema
and run under exactly the signature the config declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from tritonclient.grpc import model_config_pb2 as pb2

from recaccel.artifact import load_artifact
from recaccel.data.dataset import Dataset, example_batch
from recaccel.deploy.triton import (
    CONFIG_FILE,
    onnx_signature,
    read_model_config,
    write_triton_model,
)
from recaccel.deploy.triton_plan import Measurement, TritonOptions, plan_triton
from recaccel.errors import ConfigError
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.export import onnx_feeds, onnx_session
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint
from recaccel.runtime.profile import Profile, ProfileEntry
from recaccel.serve.config import ServeConfig, load_serve_config

NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}
ROWS = 7
# Past 64 rows, p99 grows 1/128 ms per row (exact in binary, so no bound lands on a rounding).
POINTS = (
    LatencyPoint(1, 0.8, 1.0, 20),
    LatencyPoint(64, 1.2, 1.6, 20),
    LatencyPoint(1024, 6.0, 9.1, 20),
)


def _profile(artifact: Path, threads: int = 1) -> Profile:
    manifest = load_artifact(artifact).manifest
    entry = ProfileEntry(
        artifact=str(artifact),
        artifact_id=manifest.artifact_id,
        model=manifest.model,
        parameters=1,
        weights_bytes=1,
        config=ExecutorConfig("onnxruntime", threads=threads),
        status="ok",
        validation_auc=0.7,
        points=POINTS,
    )
    return Profile((1, 64, 1024), 64, (entry,), entry.key, machine={"cores": 4})


@pytest.fixture(scope="module")
def written(deploy_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo")
    options = TritonOptions(name="ranker", slo_ms=50)
    write_triton_model(deploy_artifact, out, options, ServeConfig(), _profile(deploy_artifact))
    return out / "ranker"


def test_the_repository_has_triton_s_layout(written: Path) -> None:
    assert sorted(p.relative_to(written).as_posix() for p in written.rglob("*")) == [
        "1",
        "1/model.onnx",
        CONFIG_FILE,
    ]


def test_the_config_parses_against_triton_s_schema_with_the_planned_numbers(
    written: Path,
) -> None:
    config = read_model_config(written)
    assert isinstance(config, pb2.ModelConfig)
    assert (config.name, config.platform) == ("ranker", "onnxruntime_onnx")
    assert config.max_batch_size == 1024  # fits 25 ms, capped at the largest measured
    batching = config.dynamic_batching
    assert batching.max_queue_delay_microseconds == 0  # the serving config's default
    policy = batching.default_queue_policy
    assert policy.timeout_action == pb2.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds == 50_000 - 9_100  # SLO − p99(full batch)
    assert policy.allow_timeout_override
    assert policy.max_queue_size == ServeConfig().admission.max_queue_requests
    [group] = config.instance_group
    assert (group.kind, group.count) == (pb2.ModelInstanceGroup.KIND_CPU, 4)  # 4 cores / 1
    accelerators = config.optimization.execution_accelerators
    assert [a.name for a in accelerators.cpu_execution_accelerator] == ["openvino"]
    assert not accelerators.gpu_execution_accelerator
    assert config.parameters["intra_op_thread_count"].string_value == "1"


def test_inputs_and_outputs_are_the_onnx_graph_s(written: Path) -> None:
    config = read_model_config(written)
    inputs, outputs = onnx_signature(written / "1" / "model.onnx")
    for declared, graph in ((config.input, inputs), (config.output, outputs)):
        assert [t.name for t in declared] == [g.name for g in graph]
        for tensor, spec in zip(declared, graph, strict=True):
            assert pb2.DataType.Name(tensor.data_type) == spec.data_type
            assert spec.shape[0] == -1  # the batch axis, which Triton leaves out
            shape = list(tensor.reshape.shape) if tensor.HasField("reshape") else tensor.dims
            assert list(shape) == list(spec.shape[1:])
    [score] = config.output
    assert (list(score.dims), score.HasField("reshape")) == ([1], True)  # (batch,) only


def test_the_model_runs_under_exactly_the_declared_signature(
    written: Path, deploy_artifact: Path
) -> None:
    """Feed ORT arrays built only from the config (names, dtypes, dims) and get PyTorch's
    scores for the same rows."""
    config = read_model_config(written)
    artifact = load_artifact(deploy_artifact)
    rows = example_batch(artifact.schema, ROWS, seed=3)
    values = {"dense": rows.dense, "categorical": rows.categorical, "multi_hot": rows.multi_hot}
    feeds: dict[str, np.ndarray] = {}
    for tensor in config.input:
        dtype = NUMPY_TYPES[pb2.DataType.Name(tensor.data_type)]
        shape = (ROWS, *(tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims))
        array = values[tensor.name].numpy()
        assert (array.dtype, array.shape) == (np.dtype(dtype), shape)
        feeds[tensor.name] = array
    [output] = config.output
    [got] = onnx_session(written / "1" / "model.onnx").run([output.name], feeds)
    with torch.no_grad():
        expected = artifact.model(*rows.as_tuple()).numpy()
    assert got.dtype == NUMPY_TYPES[pb2.DataType.Name(output.data_type)]
    assert got.shape == (ROWS,)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_an_int4_artifact_is_carried_with_its_tables_quantized(
    deploy_artifact: Path, tiny_dataset: Dataset, tmp_path: Path
) -> None:
    from recaccel.optimize.quantize import quantize_embeddings_step

    int4 = tmp_path / "int4"
    quantize_embeddings_step(load_artifact(deploy_artifact), tiny_dataset, 4, int4)
    artifact = load_artifact(int4)
    written = write_triton_model(int4, tmp_path / "repo", TritonOptions(), ServeConfig())
    graph = onnx.load(str(written.onnx_path)).graph
    assert any(t.data_type == onnx.TensorProto.UINT8 for t in graph.initializer)
    rows = tiny_dataset.test.features(slice(0, ROWS))
    [got] = onnx_session(written.onnx_path).run(None, onnx_feeds(rows))
    with torch.no_grad():
        expected = artifact.model(*rows.as_tuple()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_an_existing_model_is_replaced_only_when_asked(
    deploy_artifact: Path, tmp_path: Path
) -> None:
    options = TritonOptions(name="m")
    write_triton_model(deploy_artifact, tmp_path, options, ServeConfig())
    with pytest.raises(ConfigError, match="already exists"):
        write_triton_model(deploy_artifact, tmp_path, options, ServeConfig())
    write_triton_model(deploy_artifact, tmp_path, options, ServeConfig(), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging directory left


def test_a_profile_without_the_artifact_is_refused(deploy_artifact: Path, tmp_path: Path) -> None:
    profile = _profile(deploy_artifact)
    other = Profile(profile.batches, 64, (), profile.baseline)
    with pytest.raises(ConfigError, match="no onnxruntime/cpu/fp32 measurement"):
        write_triton_model(deploy_artifact, tmp_path, TritonOptions(), ServeConfig(), other)


# --- the plan: a pure function, against a table -----------------------------------------------

MEASURED = Measurement("m onnxruntime/cpu/fp32/t1", LatencyModel.from_points(POINTS), 1024, 1)
CONFIG = load_serve_config(environ={})


@pytest.mark.parametrize(
    ("options", "measured", "expected"),
    [
        # SLO 50: a full 1,024-row batch (p99 9.1 ms) fits 25 ms; 40.9 ms left to queue.
        (TritonOptions(), MEASURED, {"max_batch_size": 1024, "queue_timeout_us": 40_900,
                                     "instances": 2, "accelerator": "openvino"}),
        # SLO 10: 5 ms fits 64 + (5 − 1.6) × 128 = 499.2 rows; p99(499) = 4.998 ms.
        (TritonOptions(slo_ms=10), MEASURED, {"max_batch_size": 499, "queue_timeout_us": 5_002}),
        # No profile: batching.max_rows, half the SLO, workers.max instances.
        (TritonOptions(), None, {"max_batch_size": 2048, "queue_timeout_us": 25_000,
                                 "instances": 2, "threads": 1}),
        (TritonOptions(device="gpu"), None, {"instances": 1, "gpu": True,
                                             "accelerator": "tensorrt"}),
        (TritonOptions(accelerator="none", instances=3), MEASURED,
         {"accelerator": None, "instances": 3}),
        (TritonOptions(max_queue_delay_ms=0.5), MEASURED, {"max_queue_delay_us": 500}),
    ],
)  # fmt: skip
def test_plan(options: TritonOptions, measured: Measurement | None, expected: Any) -> None:
    plan = plan_triton(options, CONFIG, measured, cores=2)
    assert {key: getattr(plan, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (TritonOptions(slo_ms=1.5), "even a one-row batch"),  # p99(1) = 1 ms > 0.75 ms
        (TritonOptions(max_queue_delay_ms=35), "leaves no room"),  # slack 50 − 2 × 9.1
    ],
)
def test_plans_that_cannot_meet_the_slo_are_refused(options: TritonOptions, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        plan_triton(options, CONFIG, MEASURED, cores=2)


@pytest.mark.parametrize(
    "kwargs",
    [{"precision": "int8-static"}, {"device": "tpu"}, {"name": "../x"}, {"instances": 0}],
)
def test_bad_options_are_refused_up_front(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TritonOptions(**kwargs)
