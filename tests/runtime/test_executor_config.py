"""The executor's boundary: config validation and every refusal, each naming backend, device and
what to do. `check_config` and `choose_providers` are pure, so a CPU machine tests the GPU cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recaccel.artifact import Artifact
from recaccel.errors import ConfigError
from recaccel.runtime import executor as executor_module
from recaccel.runtime.executor import (
    BACKENDS,
    ExecutorConfig,
    ExecutorError,
    check_config,
    load_executor,
)


@pytest.mark.parametrize(
    "fields",
    [{"device": "gpu"}, {"device": "cuda:x"}, {"threads": 0}, {"precision": "int4"}],
)
def test_a_malformed_config_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ExecutorConfig("torch-eager", **fields)  # type: ignore[arg-type]


def test_config_parts_and_label() -> None:
    config = ExecutorConfig("onnxruntime", "cuda:1", threads=4, precision="int8-dynamic")
    assert (config.device_type, config.device_index) == ("cuda", 1)
    assert config.label() == "onnxruntime/cuda:1/int8-dynamic/t4"
    assert ExecutorConfig("torch-eager").device_index == 0


@pytest.mark.parametrize(
    ("config", "cuda_devices", "missing", "says", "hint"),
    [
        (ExecutorConfig("tensorflow"), 0, (), "unknown backend", "onnxruntime"),
        (ExecutorConfig("torch-eager", "cuda"), 0, (), "no CUDA GPU is visible", "device='cpu'"),
        (ExecutorConfig("torch-eager", "cuda:1"), 1, (), "1 GPU(s) seen", "index below 1"),
        (ExecutorConfig("onnxruntime"), 0, ("onnxruntime",), "onnxruntime", "pip install"),
        (
            ExecutorConfig("torch-eager", precision="int8-dynamic"),
            0,
            (),
            "precision int8-dynamic",
            "onnxruntime takes int8-dynamic",
        ),
        (
            ExecutorConfig("onnxruntime", precision="bf16"),
            0,
            (),
            "precision bf16",
            "torch-eager takes bf16",
        ),
    ],
)
def test_check_config_refusals(
    config: ExecutorConfig, cuda_devices: int, missing: tuple[str, ...], says: str, hint: str
) -> None:
    with pytest.raises(ExecutorError) as caught:
        check_config(config, cuda_devices=cuda_devices, missing_packages=missing)
    error = caught.value
    assert f"backend {config.backend} on {config.device}" in error.message
    assert says in error.message and hint in error.hint
    assert error.config is config


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_check_config_accepts_each_backend_on_cpu_and_on_a_present_gpu(backend: str) -> None:
    assert check_config(ExecutorConfig(backend), cuda_devices=0).name == backend
    if "cuda" not in BACKENDS[backend].devices:  # a CPU-only backend says so
        with pytest.raises(ExecutorError, match="device not supported"):
            check_config(ExecutorConfig(backend, "cuda:0"), cuda_devices=1)
        return
    assert check_config(ExecutorConfig(backend, "cuda:0"), cuda_devices=1).name == backend


def test_load_executor_refuses_an_unknown_backend(trained: dict[str, Artifact]) -> None:
    with pytest.raises(ExecutorError, match="backend tvm on cpu: unknown backend") as caught:
        load_executor(trained["dlrm"], ExecutorConfig("tvm"))
    assert "torch-eager" in caught.value.hint


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_load_executor_refuses_cuda_without_a_gpu(trained: dict[str, Artifact]) -> None:
    with pytest.raises(ExecutorError, match="on cuda: no CUDA GPU is visible"):
        load_executor(trained["dlrm"], ExecutorConfig("torch-eager", "cuda"))


def test_load_executor_names_a_missing_package(
    trained: dict[str, Artifact], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "packages_missing", lambda spec: spec.packages[:1])
    with pytest.raises(ExecutorError, match="needs onnxruntime, which is not installed") as caught:
        load_executor(trained["dlrm"], ExecutorConfig("onnxruntime"))
    assert "pip install onnxruntime" in caught.value.hint


def test_load_executor_takes_a_path(trained: dict[str, Artifact]) -> None:
    path: Path = trained["dlrm"].path
    with load_executor(str(path), ExecutorConfig("torch-eager")) as executor:
        assert executor.artifact_id == trained["dlrm"].manifest.artifact_id


def test_onnx_providers_for_each_device(trained: dict[str, Artifact], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from recaccel.runtime.onnx_exec import choose_providers

    schema = trained["dlrm"].schema
    cpu = choose_providers(
        ExecutorConfig("onnxruntime"), ["CPUExecutionProvider"], schema, tmp_path
    )
    assert cpu == [("CPUExecutionProvider", {})]

    cuda = ExecutorConfig("onnxruntime", "cuda:0", precision="fp16")
    with pytest.raises(ExecutorError, match="no CUDA execution provider") as caught:
        choose_providers(cuda, ["CPUExecutionProvider"], schema, tmp_path)
    assert "onnxruntime-gpu" in caught.value.hint

    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = choose_providers(cuda, every, schema, tmp_path)
    assert [name for name, _ in chosen] == every
    trt = chosen[0][1]
    assert trt["trt_fp16_enable"] and not trt["trt_int8_enable"]
    assert trt["trt_profile_min_shapes"].startswith(f"dense:1x{len(schema.dense)},")
    assert chosen[1][1]["use_tf32"] == 0  # fp32 stays fp32 on Ampere and newer


def test_prepare_form_makes_a_missing_form_and_loads_nothing_otherwise(
    trained: dict[str, Artifact], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(trained["dlrm"].path, tmp_path / "a", ignore=shutil.ignore_patterns("onnx"))
    executor_module.prepare_form(tmp_path / "a", ExecutorConfig("onnxruntime"))
    assert len(list((tmp_path / "a" / "onnx").glob("*/model.onnx"))) == 1
    loaded: list[str] = []
    monkeypatch.setattr(executor_module, "load_executor", lambda a, c, *_: loaded.append(c))
    for backend in ("torch-eager", "torch-compile"):  # nothing outlives their process
        executor_module.prepare_form(tmp_path / "a", ExecutorConfig(backend))
    # The form made above is found by its path: ORT's, and OpenVINO's (the same fp32 file).
    for backend in ("onnxruntime", "openvino"):
        executor_module.prepare_form(tmp_path / "a", ExecutorConfig(backend))
    assert loaded == []
