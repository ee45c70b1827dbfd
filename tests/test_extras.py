"""The lean install: Ray, tritonclient and OpenVINO are extras, and each verb or backend that
needs one, run without it, fails with recaccel's own error naming the verb and the extra.

A missing package is simulated by `sys.modules[name] = None`, which makes `import name` raise
ImportError (and `importlib.util.find_spec(name)` return None) whether or not it is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from recaccel import cli
from recaccel.deploy.commands import add_deploy_parser
from recaccel.extras import EXTRAS, MissingExtraError
from recaccel.runtime.executor import ExecutorConfig, ExecutorError, load_executor
from recaccel.runtime.openvino_exec import import_openvino
from recaccel.runtime.profiler import (
    ProfileOptions,
    installed_backends,
    machine_facts,
    plan_configs,
    skipped_backends,
)


def without(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make `package` and its submodules unimportable for the rest of the test."""
    for name in [n for n in sys.modules if n.startswith(f"{package}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def _deploy(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recaccel")
    add_deploy_parser(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(argv)


def test_every_extra_is_a_pyproject_extra_and_dev_pulls_them_all() -> None:
    import tomllib

    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert f"recaccel[{','.join(EXTRAS)}]" in extras["all"]
    assert "recaccel[all]" in extras["dev"]
    core = " ".join(project["dependencies"])
    assert not [name for name in ("ray", "tritonclient", "openvino") if name in core]


def test_deploy_ray_without_ray_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without(monkeypatch, "ray")
    args = _deploy(["deploy", "ray", str(tmp_path)])
    with pytest.raises(MissingExtraError) as raised:
        args.run(args)
    assert raised.value.message.startswith("`recaccel deploy ray` needs Ray Serve")
    assert raised.value.hint == "pip install 'recaccel[ray]'"


def test_the_cli_prints_the_missing_extra_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without(monkeypatch, "ray")
    assert cli.main(["deploy", "ray", str(tmp_path)]) == 2
    printed = capsys.readouterr()
    assert "deploy ray" in printed.err and "pip install 'recaccel[ray]'" in printed.err
    assert "Traceback" not in printed.err
    assert printed.out == ""  # refused before announcing a cluster


def test_deploy_triton_without_tritonclient_names_the_extra_before_exporting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without(monkeypatch, "tritonclient")
    # No artifact at this path: the check comes before the artifact is loaded or exported.
    args = _deploy(["deploy", "triton", str(tmp_path / "none"), "--out", str(tmp_path)])
    with pytest.raises(MissingExtraError) as raised:
        args.run(args)
    assert raised.value.message.startswith("`recaccel deploy triton` needs")
    assert raised.value.hint == "pip install 'recaccel[triton]'"


def test_the_openvino_backend_without_openvino_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without(monkeypatch, "openvino")
    with pytest.raises(ExecutorError) as refused:
        load_executor(tmp_path, ExecutorConfig("openvino"))
    assert "backend openvino" in refused.value.message
    assert refused.value.hint == "pip install 'recaccel[openvino]'"
    with pytest.raises(MissingExtraError, match="the openvino backend needs OpenVINO"):
        import_openvino()


def test_profile_leaves_openvino_out_when_it_is_missing_and_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without(monkeypatch, "openvino")
    facts = machine_facts()
    assert "openvino" not in facts.installed_backends
    assert "torch-eager" in facts.installed_backends
    assert "openvino" not in installed_backends()
    assert not [c for c in plan_configs(ProfileOptions(), facts) if c.backend == "openvino"]
    assert "skipping openvino: not installed (pip install 'recaccel[openvino]')" in (
        skipped_backends(facts)
    )
