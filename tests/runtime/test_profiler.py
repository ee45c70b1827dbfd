"""`recaccel profile`: what it plans, what it measures, what it writes, and the CLI around it.

Timings here are tiny (a few rounds) and only their bookkeeping is asserted: which batch sizes
and repeats were recorded, never how fast anything was.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from recaccel import cli
from recaccel.artifact import Artifact
from recaccel.data import registry
from recaccel.data.dataset import Dataset
from recaccel.errors import ConfigError
from recaccel.optimize.quantize import quantize_embeddings_step
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.profile import Profile, load_profile, save_profile
from recaccel.runtime.profile_report import latency_markdown
from recaccel.runtime.profiler import MachineFacts, ProfileOptions, plan_configs, run_profile
from recaccel.runtime.select import Requirements, select
from recaccel.train.metrics import evaluate

CPU_ONLY = MachineFacts(
    cores=2,
    cuda_devices=0,
    installed_backends=("torch-eager", "torch-compile", "onnxruntime", "openvino"),
    native_half={"cpu": ()},
)
Measured = tuple[Profile, list[Path]]
QUICK = ProfileOptions(
    backends=("torch-eager", "onnxruntime"),
    precisions=("fp32",),
    threads=(1,),
    batches=(1, 8),
    serving_batch=20,
    repeats=3,
    min_repeats=2,
    warmup=1,
)


def test_the_plan_covers_every_installed_backend_precision_and_thread_count() -> None:
    configs = plan_configs(ProfileOptions(), CPU_ONLY)
    assert ExecutorConfig("torch-eager", "cpu", 1, "fp32") in configs
    assert ExecutorConfig("torch-compile", "cpu", 2, "fp32") in configs
    onnx = {(c.precision, c.threads) for c in configs if c.backend == "onnxruntime"}
    assert onnx == {(p, t) for p in ("fp32", "int8-dynamic", "int8-static", "fp16") for t in (1, 2)}
    assert {(c.precision, c.threads) for c in configs if c.backend == "openvino"} == {
        (p, t) for p in ("fp32", "int8-static") for t in (1, 2)
    }
    # Half precision on PyTorch and OpenVINO only where the CPU computes it natively (not AVX2).
    assert not [
        c for c in configs if c.backend != "onnxruntime" and c.precision in ("fp16", "bf16")
    ]


def test_the_plan_adds_the_gpu_with_one_driving_thread() -> None:
    gpu = MachineFacts(2, 1, ("torch-eager", "onnxruntime"), {"cpu": (), "cuda": ("fp16", "bf16")})
    configs = plan_configs(ProfileOptions(precisions=("fp32", "fp16", "bf16")), gpu)
    cuda = {(c.backend, c.precision, c.threads) for c in configs if c.device == "cuda"}
    assert cuda == {
        ("torch-eager", "fp32", 1),
        ("torch-eager", "fp16", 1),
        ("torch-eager", "bf16", 1),
        ("onnxruntime", "fp32", 1),
        ("onnxruntime", "fp16", 1),
    }


def test_an_unknown_backend_is_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="tensorflow"):
        plan_configs(ProfileOptions(backends=("tensorflow",)), CPU_ONLY)


def test_a_profile_of_every_installed_backend_names_the_missing_ones_once(
    trained: dict[str, Artifact], tiny_dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    eager_only = replace(CPU_ONLY, installed_backends=("torch-eager",))
    every = replace(QUICK, backends=None)
    with caplog.at_level("WARNING", logger="recaccel.runtime.profiler"):
        profile = run_profile([trained["dlrm"].path], tiny_dataset, every, eager_only, False)
    assert {e.config.backend for e in profile.entries} == {"torch-eager"}
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert "skipping openvino: not installed (pip install 'recaccel[openvino]')" in skipped
    assert len(skipped) == len(set(skipped)) == 4  # compile, aot, onnxruntime, openvino


def test_a_backend_asked_for_by_name_and_not_installed_is_an_entry_saying_how_to_install_it(
    trained: dict[str, Artifact], tiny_dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    asked = replace(QUICK, backends=("openvino",))
    profile = run_profile([trained["dlrm"].path], tiny_dataset, asked, CPU_ONLY, False)
    refused = [e for e in profile.entries if e.config.backend == "openvino"]
    assert refused and all(e.status == "unsupported" for e in refused)
    reason = refused[0].reason
    assert "openvino" in reason and "pip install 'recaccel[openvino]'" in reason


@pytest.fixture(scope="module")
def int4_artifact(
    trained: dict[str, Artifact], tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("int4") / "dlrm-int4"
    quantize_embeddings_step(trained["dlrm"], tiny_dataset, 4, out)
    return out


@pytest.fixture(scope="module")
def measured(trained: dict[str, Artifact], tiny_dataset: Dataset, int4_artifact: Path) -> Measured:
    pytest.importorskip("onnxruntime")
    paths = [trained["dlrm"].path, trained["deepfm"].path, int4_artifact]
    return run_profile(paths, tiny_dataset, QUICK, CPU_ONLY, progress=False), paths


def test_every_configuration_is_measured_at_every_batch_size(measured: Measured) -> None:
    profile, _ = measured
    assert profile.batches == (1, 8, 20)  # the serving batch is added
    ok = [e for e in profile.entries if e.ok]
    assert sorted((e.model, e.config.backend) for e in ok) == [
        ("deepfm", "onnxruntime"),
        ("deepfm", "torch-eager"),
        ("dlrm", "onnxruntime"),
        ("dlrm", "onnxruntime"),  # the INT4 artifact: its tables have an ONNX form
        ("dlrm", "torch-eager"),
        ("dlrm", "torch-eager"),
    ]
    for e in ok:
        assert [p.batch for p in e.points] == [1, 8, 20]
        assert all(p.repeats >= QUICK.min_repeats and p.p99_ms >= p.median_ms for p in e.points)
        assert e.load_s is not None and e.details["backend"] == e.config.backend
    assert profile.baseline_entry.model == "dlrm"
    assert profile.baseline_entry.config == ExecutorConfig("torch-eager")


def test_accuracy_is_computed_from_each_configurations_own_scores(
    measured: Measured,
    trained: dict[str, Artifact],
    tiny_dataset: Dataset,
) -> None:
    profile, _ = measured
    features = tiny_dataset.validation.features()
    with torch.inference_mode():
        direct = torch.sigmoid(trained["deepfm"].model(*features.as_tuple())).numpy()
    expected = evaluate(tiny_dataset.validation.label, direct).auc
    for e in profile.entries:
        if e.ok and e.model == "deepfm":
            assert e.validation_auc == pytest.approx(expected, abs=1e-6)


def test_an_int4_artifact_is_measured_on_onnx_with_pytorchs_accuracy(measured: Measured) -> None:
    """Selection can pick quantized tables on ONNX Runtime: they are measured there, and score
    as the PyTorch quantized modules do (the same validation AUC)."""
    profile, paths = measured
    int4 = [e for e in profile.entries if e.artifact == str(paths[2])]
    by_backend = {e.config.backend: e for e in int4}
    assert by_backend["torch-eager"].ok and by_backend["onnxruntime"].ok
    eager, ort = by_backend["torch-eager"].validation_auc, by_backend["onnxruntime"].validation_auc
    assert eager is not None and ort == pytest.approx(eager, abs=1e-6)


def test_the_cli_measures_writes_and_selects(
    measured: Measured,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile, _ = measured
    saved = save_profile(profile, tmp_path / "saved.json")
    out = tmp_path / "out"
    code = cli.main(
        [
            "profile",
            "--from",
            str(saved),
            "--select",
            "--candidates",
            "8",
            "--slo-ms",
            "1000",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    selection = select(
        profile, Requirements(1000, 8, cores=printed["selection"]["requirements"]["cores"])
    )
    assert selection.selected is not None
    assert printed["selection"]["selected"]["key"] == selection.selected.key
    assert printed["selection"]["speedup_over_eager_fp32"]["rows"] == 8
    assert {p.name for p in out.iterdir()} == {
        "profile.json",
        "profile.md",
        "profile.png",
        "selection.json",
    }
    assert load_profile(out) == profile
    markdown = (out / "profile.md").read_text()
    assert "Selected:" in markdown


def test_the_report_lists_what_could_not_run_and_why(measured: Measured) -> None:
    profile, _ = measured
    ran = next(e for e in profile.entries if e.ok)
    refused = replace(ran, status="unsupported", reason="uses quantized::linear_dynamic", points=())
    markdown = latency_markdown(replace(profile, entries=(*profile.entries, refused)))
    assert "Not runnable here" in markdown and "quantized::linear_dynamic" in markdown
    assert "Not runnable here" not in latency_markdown(profile)  # every entry here ran


def test_the_cli_profiles_artifacts_end_to_end(
    monkeypatch: pytest.MonkeyPatch,
    tiny_dataset: Dataset,
    trained: dict[str, Artifact],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(registry.DATASETS, "movielens-100k", lambda options: tiny_dataset)
    code = cli.main(
        [
            "profile",
            str(trained["dlrm"].path),
            "--backends",
            "torch-eager",
            "--threads",
            "1",
            "--batches",
            "1,4",
            "--candidates",
            "4",
            "--repeats",
            "2",
            "--select",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    shown = capsys.readouterr().out
    assert "torch-eager" in shown and "Selected:" in shown
    profile = load_profile(tmp_path)
    assert profile.batches == (1, 4)
    assert np.isfinite(profile.baseline_entry.latency_model().predict_ms(4))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile"], "no artifacts to profile"),
        (["profile", "x", "--from", "y.json"], "not both"),
        (["profile", "--from", "missing.json"], "no profile at"),
        (["profile", "x", "--batches", "1,a"], "comma list of integers"),
        (["profile", "x", "--threads", "0"], "thread counts"),
    ],
)
def test_bad_profile_arguments_get_a_message(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
