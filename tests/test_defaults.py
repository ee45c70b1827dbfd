"""Each cross-stage default is defined once, in recaccel/defaults.py: every verb's flags and help,
and every stage's own settings, must say what it says."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
from typing import Any

import pytest

from recaccel import defaults
from recaccel.cli import build_parser
from recaccel.defaults import DEFAULT_CANDIDATES, DEFAULT_RELATIVE_BUDGET, DEFAULT_SLO_P99_MS

SLO, BUDGET, CANDIDATES = DEFAULT_SLO_P99_MS, DEFAULT_RELATIVE_BUDGET, DEFAULT_CANDIDATES


def _subparser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the verb (and target) `argv` names, e.g. ["deploy", "ray"]."""
    parser = build_parser()
    for word in argv:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = actions[0].choices[word]
    return parser


def _help(verb: list[str], flag: str) -> str:
    (action,) = [a for a in _subparser(verb)._actions if flag in a.option_strings]
    assert action.help is not None
    return action.help % {"default": action.default}


@pytest.mark.parametrize(
    ("argv", "dest", "default"),
    [
        (["profile"], "slo_ms", SLO),
        (["profile"], "candidates", CANDIDATES),
        (["profile"], "accuracy_budget", BUDGET),
        (["serve"], "accuracy_budget", BUDGET),
        (["bench"], "slo_ms", SLO),
        (["bench"], "accuracy_budget", BUDGET),
        (["deploy", "ray", "ARTIFACT"], "accuracy_budget", BUDGET),
    ],
)
def test_a_verbs_flag_defaults_to_the_one_definition(
    argv: list[str], dest: str, default: float
) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == default


@pytest.mark.parametrize(
    ("verb", "flag", "default"),
    [
        (["profile"], "--slo-ms", SLO),
        (["profile"], "--candidates", CANDIDATES),
        (["profile"], "--accuracy-budget", BUDGET),
        # These flags have no argparse default (None: the serving config decides), so their
        # help states the config's default itself.
        (["serve"], "--slo-ms", SLO),
        (["deploy", "triton"], "--slo-ms", SLO),
        (["deploy", "ray"], "--slo-ms", SLO),
        (["serve"], "--accuracy-budget", BUDGET),
        (["bench"], "--slo-ms", SLO),
        (["bench"], "--accuracy-budget", BUDGET),
        (["deploy", "ray"], "--accuracy-budget", BUDGET),
    ],
)
def test_a_flags_help_states_the_one_definition(verb: list[str], flag: str, default: float) -> None:
    shown = _help(verb, flag)
    assert f"default {default:g})" in shown or f"default: {default})" in shown, shown


def _declared_default(where: str) -> Any:
    """The default declared at "module:Class.field" (a dataclass) or "module:function.param"."""
    module_name, path = where.split(":")
    owner_name, name = path.split(".")
    if module_name.startswith("recaccel.deploy"):  # Ray and Triton may be optional extras
        module = pytest.importorskip(module_name)
    else:
        module = importlib.import_module(module_name)
    owner = getattr(module, owner_name)
    if dataclasses.is_dataclass(owner):
        (field,) = [f for f in dataclasses.fields(owner) if f.name == name]
        return field.default
    return inspect.signature(owner).parameters[name].default


@pytest.mark.parametrize(
    ("where", "default"),
    [
        ("recaccel.serve.config:SloSection.p99_ms", SLO),
        ("recaccel.serve.admission:AdmissionConfig.default_slo_ms", SLO),
        ("recaccel.runtime.select:Requirements.slo_p99_ms", SLO),
        ("recaccel.bench.run:BenchOptions.slo_ms", SLO),
        ("recaccel.bench.served:ServedOptions.slo_ms", SLO),
        ("recaccel.bench.soak:SoakCriteria.p99_ms", SLO),
        ("recaccel.deploy.triton_plan:TritonOptions.slo_ms", SLO),
        ("recaccel.optimize.guard:judge.relative_budget", BUDGET),
        ("recaccel.optimize.recipe:Recipe.relative_budget", BUDGET),
        ("recaccel.optimize.pareto:pick.relative_budget", BUDGET),
        ("recaccel.runtime.select:Requirements.relative_budget", BUDGET),
        ("recaccel.bench.run:BenchOptions.relative_budget", BUDGET),
        ("recaccel.bench.served:ServedOptions.relative_budget", BUDGET),
        ("recaccel.deploy.ray_serve:RayOptions.relative_budget", BUDGET),
        ("recaccel.optimize.recipe:MeasureConfig.serving_batch", CANDIDATES),
        ("recaccel.optimize.search:search.serving_batch", CANDIDATES),
        ("recaccel.runtime.profiler:ProfileOptions.serving_batch", CANDIDATES),
        ("recaccel.runtime.select:Requirements.candidates", CANDIDATES),
        ("recaccel.bench.run:BenchOptions.median_candidates", CANDIDATES),
        ("recaccel.deploy.ray_settings:Capacity.candidates", CANDIDATES),
    ],
)
def test_a_stages_setting_defaults_to_the_one_definition(where: str, default: float) -> None:
    assert _declared_default(where) == default


@pytest.mark.parametrize("recipe", ["default", "search", "search-reuse"])
def test_the_builtin_recipes_take_the_defaults(recipe: str) -> None:
    from recaccel.optimize.recipe import load_recipe

    loaded = load_recipe(recipe)
    assert loaded.relative_budget == BUDGET
    assert loaded.measure.serving_batch == CANDIDATES


def test_every_stage_may_import_the_defaults() -> None:
    """defaults.py sits below every stage (test_layering exempts it): it must import none."""
    tree = ast.parse(inspect.getsource(defaults))
    imported = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
    ]
    assert not imported
