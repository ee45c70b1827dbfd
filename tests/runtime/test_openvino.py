"""The openvino executor: parity with PyTorch, its compiled-model settings, and its refusals.

Reference: sigmoid of the artifact's own model in eager PyTorch fp32 on CPU, as in
test_executors.py. Worst differences in click probability measured over the four zoo families
(tiny MovieLens test rows, batches of 1, 37 and 120, 1 thread, AMD EPYC AVX2, OpenVINO
2026.4.1), and the bounds:

    openvino fp32         1e-5   (measured <= 6e-8, as onnxruntime fp32: float32 summation
                                  order. Not 3x the measurement: that is one or two float32
                                  steps of a probability, and other CPUs' kernels sum in other
                                  orders; 1e-5 is the suite's fp32 bound and still catches a
                                  wrong op by orders of magnitude)
    openvino int8-static  0.05   (measured <= 0.019, DeepFM; per family identical to
                                  onnxruntime int8-static to the last digit: OpenVINO runs
                                  ORT's scales. 0.05 is also onnxruntime's bound)
    openvino fp16         5e-4   (not measured: no AVX512-FP16/AMX CPU here, where it is
                                  refused; the bound is onnxruntime fp16's 11-bit one)

The float exports come from conftest's `float_onnx` (shared with test_onnx_export.py and
test_executors.py), and the int8-static files from the same calibration rows as
test_executors.py's, so a full run makes each form once.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset, FeatureBatch
from recaccel.models.quant.half import natively_supports, probe_device
from recaccel.models.registry import MODELS
from recaccel.optimize.quantize import quantize_dense_step, quantize_embeddings_step
from recaccel.runtime.executor import ExecutorConfig, ExecutorError, load_executor

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)

ROWS = (1, 37)
MAX_PROB_DIFF = {"fp32": 1e-5, "int8-static": 0.05}
FP16_ATOL = 5e-4


def _reference(artifact: Artifact, batch: FeatureBatch) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(artifact.model(*batch.as_tuple())).numpy()


def _assert_parity(
    executor: object, artifact: Artifact, dataset: Dataset, rows: tuple[int, ...], atol: float
) -> None:
    for count in rows:
        batch = dataset.test.features(slice(0, count))
        got = executor.run(batch)  # type: ignore[attr-defined]
        assert got.shape == (count,) and got.dtype == np.float32
        np.testing.assert_allclose(got, _reference(artifact, batch), rtol=0, atol=atol)


@pytest.mark.parametrize("precision", list(MAX_PROB_DIFF))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_openvino_matches_the_reference(
    with_onnx: dict[str, Artifact], tiny_dataset: Dataset, model_name: str, precision: str
) -> None:
    artifact = with_onnx[model_name]
    calibration = tiny_dataset.train.features() if precision == "int8-static" else None
    config = ExecutorConfig("openvino", precision=precision)
    with load_executor(artifact, config, calibration) as executor:
        _assert_parity(executor, artifact, tiny_dataset, ROWS, MAX_PROB_DIFF[precision])
        assert executor.describe()["inference_precision"] == "f32"


def test_fp16_runs_only_where_native(with_onnx: dict[str, Artifact], tiny_dataset: Dataset) -> None:
    config = ExecutorConfig("openvino", precision="fp16")
    if not natively_supports(probe_device("cpu"), torch.float16):
        with pytest.raises(ExecutorError, match="on cpu: fp16 is not native") as caught:
            load_executor(with_onnx["dlrm"], config)
        assert "precision fp32" in caught.value.hint
        return
    with load_executor(with_onnx["dlrm"], config) as executor:
        _assert_parity(executor, with_onnx["dlrm"], tiny_dataset, ROWS, FP16_ATOL)
        assert executor.describe()["inference_precision"] == "f16"


def test_one_compiled_model_serves_every_batch_size(
    with_onnx: dict[str, Artifact], tiny_dataset: Dataset
) -> None:
    artifact = with_onnx["dcnv2"]
    with load_executor(artifact, ExecutorConfig("openvino")) as executor:
        compiled = executor._compiled  # type: ignore[attr-defined]
        assert all(i.get_partial_shape()[0].is_dynamic for i in compiled.inputs)
        _assert_parity(executor, artifact, tiny_dataset, (1, 37, 120, 2), 1e-5)
        assert executor._compiled is compiled  # type: ignore[attr-defined]
        assert executor.run(tiny_dataset.test.features(slice(0, 0))).shape == (0,)
    with pytest.raises(ExecutorError, match="closed"):
        executor.run(tiny_dataset.test.features(slice(0, 3)))
    assert executor.describe()["openvino"]  # still describable after close


def test_compiled_settings_are_the_configs(
    with_onnx: dict[str, Artifact], capfd: pytest.CaptureFixture[str]
) -> None:
    threads = min(2, os.cpu_count() or 1)
    torch_threads = torch.get_num_threads()
    capfd.readouterr()
    config = ExecutorConfig("openvino", threads=threads)
    with load_executor(with_onnx["deepfm"], config) as executor:
        read = executor._compiled.get_property  # type: ignore[attr-defined]
        assert read("INFERENCE_NUM_THREADS") == threads
        assert read("NUM_STREAMS") == 1
        assert read("ENABLE_CPU_PINNING") is False
        assert str(read("PERFORMANCE_HINT")) == "LATENCY"
        details = executor.describe()
    assert (details["inference_threads"], details["streams"]) == (threads, 1)
    assert details["execution_devices"] == ["CPU"] and details["inference_precision"] == "f32"
    assert details["onnx"].endswith("-fp32/model.onnx")
    assert torch.get_num_threads() == torch_threads  # OpenVINO leaves PyTorch's setting alone
    assert capfd.readouterr() == ("", "")  # loading and running print nothing


def test_a_settings_mismatch_is_an_error() -> None:
    from recaccel.runtime.openvino_exec import check_compiled, compile_settings

    config = ExecutorConfig("openvino", threads=8)
    wanted = compile_settings(config, "f32")
    check_compiled(config, wanted, dict(wanted))
    with pytest.raises(ExecutorError, match="runs 2 threads, not the 8 asked for") as caught:
        check_compiled(config, wanted, {**wanted, "INFERENCE_NUM_THREADS": 2})
    assert "threads <= 2" in caught.value.hint
    with pytest.raises(ExecutorError, match="computes in f32, not f16"):
        fp16 = compile_settings(config, "f16")
        check_compiled(config, fp16, {**fp16, "INFERENCE_PRECISION_HINT": "f32"})
    with pytest.raises(ExecutorError, match="ENABLE_CPU_PINNING False -> True"):
        check_compiled(config, wanted, {**wanted, "ENABLE_CPU_PINNING": True})


# Refusals: each names backend openvino, and says what to do instead.


@pytest.fixture(scope="module")
def quantized(
    trained: dict[str, Artifact], tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Artifact]:
    out = tmp_path_factory.mktemp("quantized-for-openvino")
    quantize_embeddings_step(trained["dlrm"], tiny_dataset, 8, out / "embeddings-int8")
    quantize_dense_step(trained["dlrm"], tiny_dataset, "int8-dynamic", out / "dense-int8-dynamic")
    return {path.name: load_artifact(path) for path in sorted(out.iterdir())}


def test_quantized_tables_run_as_in_pytorch(
    quantized: dict[str, Artifact], tiny_dataset: Dataset
) -> None:
    artifact = quantized["embeddings-int8"]
    with load_executor(artifact, ExecutorConfig("openvino")) as executor:
        _assert_parity(executor, artifact, tiny_dataset, ROWS, MAX_PROB_DIFF["fp32"])


def test_quantized_pytorch_dense_layers_are_refused(quantized: dict[str, Artifact]) -> None:
    from recaccel.runtime.export import UnsupportedOnBackendError

    artifact = quantized["dense-int8-dynamic"]
    with pytest.raises(UnsupportedOnBackendError) as caught:
        load_executor(artifact, ExecutorConfig("openvino"))
    error = caught.value
    assert error.backend == "openvino" and error.op.startswith("quantized::")
    assert error.op in str(error) and "openvino" in error.message
    assert "torch-eager" in error.hint and str(artifact.manifest.parent) in error.hint
    assert not (artifact.path / "onnx").exists()  # refused before any export


@pytest.mark.parametrize(
    ("config", "says", "hint"),
    [
        (ExecutorConfig("openvino", "cuda"), "device not supported", "openvino runs on cpu"),
        (
            ExecutorConfig("openvino", precision="int8-dynamic"),
            "precision int8-dynamic is not available",
            "onnxruntime takes int8-dynamic",
        ),
        (ExecutorConfig("openvino", precision="bf16"), "precision bf16", "torch-eager takes bf16"),
        (
            ExecutorConfig("openvino", precision="int8-static"),
            "needs calibration rows",
            "training rows",
        ),
    ],
)
def test_refusals_name_the_backend_and_what_to_do(
    with_onnx: dict[str, Artifact], config: ExecutorConfig, says: str, hint: str
) -> None:
    with pytest.raises(ExecutorError) as caught:
        load_executor(with_onnx["dlrm"], config)
    error = caught.value
    assert f"backend openvino on {config.device}" in error.message
    assert says in error.message and hint in error.hint


def test_importing_openvino_sends_no_telemetry(tmp_path: Path) -> None:
    """In a fresh process (OpenVINO is imported once per process) with an empty home: the
    telemetry package stays unloaded and nothing is written under ~/intel."""
    code = (
        "import sys\n"
        "from recaccel.runtime.openvino_exec import import_openvino\n"
        "ov = import_openvino()\n"
        "ov.Core()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('openvino_telemetry'))\n"
        "print(type(ov.tools.ovc.telemetry).__module__, loaded)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("CI", None)  # OpenVINO's own opt-out for CI jobs must not be what passes this
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "openvino.tools.ovc.telemetry_stub []"
    assert not (tmp_path / "intel").exists()
