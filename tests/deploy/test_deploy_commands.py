"""`recaccel deploy`'s verbs, as the CLI registers them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as pb2

from recaccel.deploy.commands import add_deploy_parser
from recaccel.deploy.triton import read_model_config
from recaccel.errors import ConfigError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recaccel")
    add_deploy_parser(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(argv)


def test_the_cli_handler_writes_the_repository(deploy_artifact: Path, tmp_path: Path) -> None:
    args = _parse(
        ["deploy", "triton", str(deploy_artifact), "--out", str(tmp_path), "--slo-ms", "20",
         "--device", "gpu", "--instances", "2", "--precision", "fp16"]
    )  # fmt: skip
    assert args.run(args) == 0
    config = read_model_config(tmp_path / deploy_artifact.name)
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU
    [trt] = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (trt.name, trt.parameters["precision_mode"]) == ("tensorrt", "FP16")
    assert config.dynamic_batching.default_queue_policy.default_timeout_microseconds == 10_000


def test_a_failing_deployment_is_a_recaccel_error_for_cli_to_print(
    deploy_artifact: Path, tmp_path: Path
) -> None:
    args = _parse(["deploy", "triton", str(deploy_artifact), "--out", str(tmp_path)])
    assert args.run(args) == 0
    with pytest.raises(ConfigError, match="already exists"):
        args.run(args)
