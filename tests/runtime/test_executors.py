"""Parity: every installed backend scores like PyTorch eager FP32, at batch 1 and batch 37.

Reference: sigmoid of the artifact's own model in eager PyTorch, on CPU, in fp32. Bounds, on
click probabilities, set at about 3x the worst measured over the four zoo families (tiny
MovieLens test rows, batches of 1, 37 and 120, 1 thread, AVX2 CPU) so noise passes and a wrong
op does not:

    torch-eager fp32       1e-5   (measured 0: the same module and kernels)
    torch-compile fp32     1e-5   (inductor fuses and reorders sums; float32 noise)
    torch-aot fp32         1e-5   (the same kernels, compiled ahead of time)
    onnxruntime fp32       1e-5   (measured <= 6e-8: MLAS vs PyTorch summation order)
    onnxruntime fp16       5e-4   (measured <= 1.1e-4: 11-bit mantissa)
    onnxruntime int8-dyn   0.01   (measured <= 0.0034, 7-bit weights, see onnx_quantize.py)
    onnxruntime int8-stat  0.05   (measured <= 0.019: activation ranges fixed in advance)
    cuda fp32              1e-5   (measured <= 7.5e-8 on an H100: torch keeps fp32 matmuls
                                   off TF32 by default)
    cuda fp16 (MLPs)       5e-4   (measured <= 1.3e-4 on an H100; 11-bit mantissa)
    cuda bf16 (MLPs)       5e-3   (measured <= 1.2e-3 on an H100; 8-bit mantissa)
    onnxruntime cuda       as its CPU bounds (not measured: no onnxruntime-gpu here)

torch.compile is slow to compile (5-20 s a model on 2 cores), so it compiles one float family
(DLRM) and one quantized artifact, and AOTInductor two families (DeepFM, with its bag, and
DLRM), not every family: the other families differ only in which
layers they stack, which the eager and ONNX parity already cover.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset, FeatureBatch
from recaccel.errors import ConfigError
from recaccel.models.quant.half import HALF_DTYPES, natively_supports, probe_device
from recaccel.models.registry import MODELS
from recaccel.optimize.quantize import quantize_dense_step, quantize_embeddings_step
from recaccel.runtime.executor import (
    ExecutorConfig,
    ExecutorError,
    load_executor,
)

ROWS = (1, 37)
FP32_ATOL = 1e-5
FP16_ATOL = 5e-4
BF16_ATOL = 5e-3
MAX_PROB_DIFF = {"fp32": FP32_ATOL, "fp16": FP16_ATOL, "int8-dynamic": 0.01, "int8-static": 0.05}

try:
    import onnxruntime

    ORT_PROVIDERS = set(onnxruntime.get_available_providers())
except ImportError:
    ORT_PROVIDERS = set()
needs_ort = pytest.mark.skipif(not ORT_PROVIDERS, reason="onnxruntime is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _reference(artifact: Artifact, batch: FeatureBatch) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(artifact.model(*batch.as_tuple())).numpy()


def _batches(dataset: Dataset) -> list[FeatureBatch]:
    return [dataset.test.features(slice(0, rows)) for rows in ROWS]


def _assert_parity(
    artifact: Artifact, config: ExecutorConfig, dataset: Dataset, atol: float, **kwargs: object
) -> None:
    with load_executor(artifact, config, **kwargs) as executor:  # type: ignore[arg-type]
        for batch in _batches(dataset):
            got = executor.run(batch)
            assert got.shape == (len(batch),) and got.dtype == np.float32
            assert ((got >= 0) & (got <= 1)).all()
            np.testing.assert_allclose(got, _reference(artifact, batch), rtol=0, atol=atol)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_torch_eager_matches_the_reference(
    trained: dict[str, Artifact], tiny_dataset: Dataset, model_name: str
) -> None:
    _assert_parity(trained[model_name], ExecutorConfig("torch-eager"), tiny_dataset, FP32_ATOL)


@needs_ort
@pytest.mark.parametrize("precision", list(MAX_PROB_DIFF))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_onnxruntime_matches_the_reference(
    with_onnx: dict[str, Artifact], tiny_dataset: Dataset, model_name: str, precision: str
) -> None:
    config = ExecutorConfig("onnxruntime", precision=precision)
    calibration = tiny_dataset.train.features() if precision == "int8-static" else None
    _assert_parity(
        with_onnx[model_name],
        config,
        tiny_dataset,
        MAX_PROB_DIFF[precision],
        calibration=calibration,
    )


def test_torch_compile_matches_and_compiles_once_for_every_batch_size(
    trained: dict[str, Artifact], tiny_dataset: Dataset
) -> None:
    artifact = trained["dlrm"]
    with load_executor(artifact, ExecutorConfig("torch-compile")) as executor:
        # Compiled at load: from here on, any recompile is an error.
        with torch.compiler.set_stance("fail_on_recompile"):
            for batch in _batches(tiny_dataset):
                got = executor.run(batch)
                np.testing.assert_allclose(got, _reference(artifact, batch), atol=FP32_ATOL)
            for rows in (2, 64, 120):
                assert executor.run(tiny_dataset.test.features(slice(0, rows))).shape == (rows,)
            with torch.inference_mode():  # inference tensors: a worker process makes these
                batch = tiny_dataset.test.features(slice(0, 9))
            assert executor.run(batch).shape == (9,)
        assert executor.describe()["dynamic_batch"] == "unbacked"


@pytest.mark.parametrize("model_name", ["deepfm", "dlrm"])
def test_torch_aot_matches_and_its_package_is_compiled_once(
    trained: dict[str, Artifact],
    tiny_dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model_name: str,
) -> None:
    from recaccel.runtime import aot_exec

    # A copy without the packages other tests compiled.
    shutil.copytree(trained[model_name].path, tmp_path / "a", ignore=shutil.ignore_patterns("aoti"))
    artifact = load_artifact(tmp_path / "a")
    with load_executor(artifact, ExecutorConfig("torch-aot")) as executor:
        for batch in _batches(tiny_dataset):
            np.testing.assert_allclose(
                executor.run(batch), _reference(artifact, batch), rtol=0, atol=FP32_ATOL
            )
        assert executor.run(tiny_dataset.test.features(slice(0, 120))).shape == (120,)
        package = Path(executor.describe()["package"])
    assert package.parent.name.startswith(f"{artifact.manifest.artifact_id}-fp32-cpu-t1-v")
    found = aot_exec.form_path(artifact.path, artifact.manifest.artifact_id, executor.config)
    assert found == package  # where `prepare_form` looks
    # The next load reads the package: compiling again would fail here.
    monkeypatch.setattr(aot_exec, "compile_package", lambda *a: pytest.fail("compiled twice"))
    with load_executor(artifact, ExecutorConfig("torch-aot")) as again:
        batch = tiny_dataset.test.features(slice(0, 37))
        np.testing.assert_allclose(again.run(batch), _reference(artifact, batch), atol=FP32_ATOL)


# Quantized PyTorch artifacts: they run where their FBGEMM kernels run, quantized tables also on
# ONNX Runtime, and a clear refusal elsewhere. Their reference is their own eager output (their
# distance from the float parent is the quantization step's business, tested in tests/optimize
# and tests/models).


@pytest.fixture(scope="module")
def quantized(
    trained: dict[str, Artifact], tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Artifact]:
    out = tmp_path_factory.mktemp("quantized")
    parent = trained["dlrm"]
    quantize_embeddings_step(parent, tiny_dataset, 8, out / "embeddings-int8")
    quantize_dense_step(parent, tiny_dataset, "int8-dynamic", out / "dense-int8-dynamic")
    quantize_dense_step(parent, tiny_dataset, "int8-static", out / "dense-int8-static")
    return {path.name: load_artifact(path) for path in sorted(out.iterdir())}


@pytest.mark.parametrize("name", ["embeddings-int8", "dense-int8-dynamic", "dense-int8-static"])
def test_quantized_artifacts_run_on_torch_eager(
    quantized: dict[str, Artifact], tiny_dataset: Dataset, name: str
) -> None:
    artifact = quantized[name]
    _assert_parity(artifact, ExecutorConfig("torch-eager"), tiny_dataset, FP32_ATOL)
    with load_executor(artifact, ExecutorConfig("torch-eager")) as executor:
        assert executor.describe()["kernels"]  # says which quantized kernels run


def test_a_quantized_artifact_runs_on_torch_compile(
    quantized: dict[str, Artifact], tiny_dataset: Dataset
) -> None:
    _assert_parity(
        quantized["embeddings-int8"], ExecutorConfig("torch-compile"), tiny_dataset, FP32_ATOL
    )


def test_torch_aot_refuses_quantized_artifacts_and_names_the_op(
    quantized: dict[str, Artifact],
) -> None:
    artifact = quantized["embeddings-int8"]
    with pytest.raises(ExecutorError, match="quantized::embedding_bag_byte") as caught:
        load_executor(artifact, ExecutorConfig("torch-aot"))
    assert "torch-compile" in caught.value.hint
    assert not (artifact.path / "aoti").exists()  # nothing half-made cached


@needs_ort
def test_quantized_tables_run_on_onnxruntime_as_in_pytorch(
    quantized: dict[str, Artifact], tiny_dataset: Dataset
) -> None:
    """Row-wise INT8 tables have an ONNX form (runtime/onnx_lookups.py): the same bytes,
    dequantized after the gather, so ORT scores as the PyTorch quantized modules do."""
    artifact = quantized["embeddings-int8"]
    _assert_parity(artifact, ExecutorConfig("onnxruntime"), tiny_dataset, FP32_ATOL)


@needs_ort
def test_onnxruntime_refuses_quantized_pytorch_dense_layers(
    quantized: dict[str, Artifact],
) -> None:
    from recaccel.runtime.export import UnsupportedOnBackendError

    artifact = quantized["dense-int8-dynamic"]
    with pytest.raises(UnsupportedOnBackendError) as caught:
        load_executor(artifact, ExecutorConfig("onnxruntime"))
    error = caught.value
    assert error.backend == "ONNX Runtime" and error.op.startswith("quantized::")
    assert error.op in str(error) and "quantize_onnx" in error.hint
    assert not list((artifact.path / "onnx").glob("*/model.onnx"))  # nothing half-made cached


# The ONNX cache: made once, keyed by the artifact's id and the calibration rows.


@needs_ort
def test_onnx_forms_are_cached_by_artifact_id_and_calibration(
    trained: dict[str, Artifact], tiny_dataset: Dataset, tmp_path: Path
) -> None:
    from recaccel.runtime.onnx_exec import cached_onnx

    source = trained["wide_deep"]
    # A copy without the cache other tests filled.
    shutil.copytree(source.path, tmp_path / "a", ignore=shutil.ignore_patterns("onnx"))
    artifact = load_artifact(tmp_path / "a")
    artifact_id = artifact.manifest.artifact_id
    # A file left by other weights under another id is never read.
    stale = artifact.path / "onnx" / f"{'0' * 16}-fp32" / "model.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a model")

    with load_executor(artifact, ExecutorConfig("onnxruntime")) as executor:
        path = Path(executor.describe()["onnx"])
    assert path.parent.name == f"{artifact_id}-fp32"
    made_at = path.stat().st_mtime_ns
    assert cached_onnx(artifact, "fp32") == path and path.stat().st_mtime_ns == made_at

    rows = tiny_dataset.train.features
    one = cached_onnx(artifact, "int8-static", rows(slice(0, 200)))
    assert cached_onnx(artifact, "int8-static", rows(slice(0, 200))) == one
    other = cached_onnx(artifact, "int8-static", rows(slice(200, 400)))
    assert one != other and one.parent.name.startswith(f"{artifact_id}-int8-static-")
    assert not [p for p in (artifact.path / "onnx").iterdir() if p.name.startswith(".")]


@needs_ort
def test_onnx_int8_static_without_calibration_says_what_to_pass(
    with_onnx: dict[str, Artifact],
) -> None:
    config = ExecutorConfig("onnxruntime", precision="int8-static")
    with pytest.raises(ExecutorError, match="needs calibration rows") as caught:
        load_executor(with_onnx["dlrm"], config)
    assert "training rows" in caught.value.hint


# Threads, batches, lifecycle.


def test_torch_executors_set_their_threads_and_reassert_them(
    trained: dict[str, Artifact], tiny_dataset: Dataset
) -> None:
    batch = tiny_dataset.test.features(slice(0, 3))
    one = load_executor(trained["dlrm"], ExecutorConfig("torch-eager", threads=1))
    assert torch.get_num_threads() == 1
    two = load_executor(trained["deepfm"], ExecutorConfig("torch-eager", threads=2))
    assert torch.get_num_threads() == 2
    one.run(batch)
    assert torch.get_num_threads() == 1
    two.run(batch)
    assert torch.get_num_threads() == 2


@needs_ort
def test_onnx_sessions_own_their_thread_count(with_onnx: dict[str, Artifact]) -> None:
    torch_threads = torch.get_num_threads()
    with load_executor(with_onnx["dlrm"], ExecutorConfig("onnxruntime", threads=2)) as executor:
        options = executor._session.get_session_options()  # type: ignore[attr-defined]
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
        assert executor.describe()["graph_optimization"] == "ORT_ENABLE_ALL"
    assert torch.get_num_threads() == torch_threads  # ORT leaves PyTorch's setting alone


def test_batches_are_checked_and_an_empty_one_is_fine(
    trained: dict[str, Artifact], tiny_dataset: Dataset
) -> None:
    batch = tiny_dataset.test.features(slice(0, 4))
    with load_executor(trained["dlrm"], ExecutorConfig("torch-eager")) as executor:
        assert executor.run(tiny_dataset.test.features(slice(0, 0))).shape == (0,)
        with pytest.raises(ConfigError, match="categorical has shape"):
            executor.run(FeatureBatch(batch.dense, batch.categorical[:, :1], batch.multi_hot))
        assert executor.name.startswith("dlrm@") and "torch-eager/cpu/fp32/t1" in executor.name
    with pytest.raises(ExecutorError, match="closed"):
        executor.run(batch)


def test_the_callers_model_is_left_as_it_was(trained: dict[str, Artifact]) -> None:
    artifact = trained["dlrm"]
    before = copy.deepcopy(artifact.model.state_dict())
    with load_executor(artifact, ExecutorConfig("torch-eager")) as executor:
        assert executor.model is not artifact.model  # type: ignore[attr-defined]
    after = artifact.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("precision", list(HALF_DTYPES))
def test_half_precision_on_cpu_runs_only_where_native(
    trained: dict[str, Artifact], tiny_dataset: Dataset, precision: str
) -> None:
    config = ExecutorConfig("torch-eager", precision=precision)
    if not natively_supports(probe_device("cpu"), HALF_DTYPES[precision]):
        with pytest.raises(ExecutorError, match=f"on cpu: {precision} is not native"):
            load_executor(trained["dlrm"], config)
        return
    atol = FP16_ATOL if precision == "fp16" else BF16_ATOL
    _assert_parity(trained["dlrm"], config, tiny_dataset, atol)


# CUDA: skipped cleanly without a GPU; on one, these exercise the real device path.


def _on_cuda(executor: object) -> bool:
    model = executor.model  # type: ignore[attr-defined]
    tensors = [*model.parameters(), *model.buffers()]
    return bool(tensors) and all(t.device.type == "cuda" for t in tensors)


@needs_cuda
@pytest.mark.parametrize("model_name", list(MODELS))
def test_cuda_torch_eager_matches_the_cpu_reference(
    trained: dict[str, Artifact], tiny_dataset: Dataset, model_name: str
) -> None:
    artifact = trained[model_name]
    config = ExecutorConfig("torch-eager", "cuda")
    _assert_parity(artifact, config, tiny_dataset, FP32_ATOL)
    with load_executor(artifact, config) as executor:
        assert _on_cuda(executor)
        assert next(artifact.model.parameters()).device.type == "cpu"  # caller's model stays


@needs_cuda
@pytest.mark.parametrize(("precision", "atol"), [("fp16", FP16_ATOL), ("bf16", BF16_ATOL)])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_cuda_half_precision_within_its_bound(
    trained: dict[str, Artifact],
    tiny_dataset: Dataset,
    model_name: str,
    precision: str,
    atol: float,
) -> None:
    if not natively_supports(probe_device("cuda"), HALF_DTYPES[precision]):
        pytest.skip(f"{precision} is not native on this GPU")
    config = ExecutorConfig("torch-eager", "cuda", precision=precision)
    _assert_parity(trained[model_name], config, tiny_dataset, atol)
    with load_executor(trained[model_name], config) as executor:
        assert _on_cuda(executor)
        dtypes = {p.dtype for p in executor.model.parameters()}  # type: ignore[attr-defined]
        assert HALF_DTYPES[precision] in dtypes


@needs_cuda
def test_cuda_torch_compile_matches_and_compiles_once(
    trained: dict[str, Artifact], tiny_dataset: Dataset
) -> None:
    artifact = trained["dlrm"]
    with load_executor(artifact, ExecutorConfig("torch-compile", "cuda")) as executor:
        assert _on_cuda(executor)
        with torch.compiler.set_stance("fail_on_recompile"):
            for batch in _batches(tiny_dataset):
                got = executor.run(batch)
                np.testing.assert_allclose(got, _reference(artifact, batch), atol=FP32_ATOL)
            assert executor.run(tiny_dataset.test.features(slice(0, 100))).shape == (100,)


@needs_cuda
def test_cuda_refuses_fbgemm_quantized_artifacts(quantized: dict[str, Artifact]) -> None:
    with pytest.raises(ExecutorError, match="embedding_bag_byte_rowwise_offsets") as caught:
        load_executor(quantized["embeddings-int8"], ExecutorConfig("torch-eager", "cuda"))
    assert "CPU only" in caught.value.message and "device='cpu'" in caught.value.hint


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ORT_PROVIDERS or not torch.cuda.is_available(),
    reason="no onnxruntime-gpu or no GPU",
)
@pytest.mark.parametrize(("precision", "atol"), [("fp32", FP32_ATOL), ("fp16", FP16_ATOL)])
def test_cuda_onnxruntime_matches_the_reference(
    with_onnx: dict[str, Artifact], tiny_dataset: Dataset, precision: str, atol: float
) -> None:
    config = ExecutorConfig("onnxruntime", "cuda", precision=precision)
    for model_name in MODELS:
        _assert_parity(with_onnx[model_name], config, tiny_dataset, atol)
    with load_executor(with_onnx["dlrm"], config) as executor:
        assert "CUDAExecutionProvider" in executor.describe()["providers"]
