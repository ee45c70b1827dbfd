"""Recipes: built-ins load, files parse, and mistakes fail before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from recaccel.errors import ConfigError, UnknownNameError
from recaccel.optimize.recipe import builtin_recipes, load_recipe, parse_recipe


def test_every_builtin_recipe_loads() -> None:
    assert "default" in builtin_recipes()
    for name in builtin_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.steps


def test_attempts_override_the_steps_shared_parameters() -> None:
    recipe = parse_recipe(
        {
            "guard": {"relative_budget": 0.002},
            "measure": {"serving_batch": 64},
            "step": [
                {
                    "op": "prune",
                    "learning_rate": 3e-4,
                    "attempts": [{"keep_fraction": 0.25}, {"keep_fraction": 0.5}],
                },
                {"op": "quantize_embeddings", "bits": 8},
            ],
        },
        "custom",
    )
    assert recipe.relative_budget == 0.002 and recipe.measure.serving_batch == 64
    prune, quantize = recipe.steps
    assert prune.attempts == (
        {"learning_rate": 3e-4, "keep_fraction": 0.25},
        {"learning_rate": 3e-4, "keep_fraction": 0.5},
    )
    assert quantize.attempts == ({"bits": 8},)


def test_toml_and_yaml_files_give_the_same_recipe(tmp_path: Path) -> None:
    toml = tmp_path / "r.toml"
    toml.write_text(
        '[[step]]\nop = "quantize_embeddings"\nattempts = [{ bits = 4 }, { bits = 8 }]\n'
    )
    yaml = tmp_path / "r.yaml"
    yaml.write_text("step:\n  - op: quantize_embeddings\n    attempts: [{bits: 4}, {bits: 8}]\n")
    assert load_recipe(str(toml)).steps == load_recipe(str(yaml)).steps


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"step": []}, "no steps"),
        ({"step": [{"bits": 8}]}, "no 'op'"),
        ({"step": [{"op": "sparsify"}]}, "unknown op"),
        ({"step": [{"op": "prune", "keep": 0.5}]}, "unknown parameters"),
        ({"step": [{"op": "prune", "attempts": []}]}, "non-empty list"),
        ({"step": [{"op": "distill", "preset": "small"}]}, "student"),
        ({"step": [{"op": "distill", "student": "deepfm"}]}, "preset' or 'config"),
        ({"guard": {"relative_budget": 5}, "step": [{"op": "prune"}]}, "relative_budget"),
        ({"measure": {"serving_batch": 0}, "step": [{"op": "prune"}]}, "serving_batch"),
        ({"steps": []}, "unknown sections"),
    ],
)
def test_recipe_mistakes_fail_with_a_message(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_recipe(data, "bad")


def test_an_unknown_student_fails_when_the_recipe_is_read() -> None:
    with pytest.raises(UnknownNameError):
        parse_recipe({"step": [{"op": "distill", "student": "deepfn", "preset": "small"}]}, "r")


def test_unknown_recipe_names_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"built-in recipes: .*default"):
        load_recipe("fastest")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[[step]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(str(broken))


def test_the_search_reuse_recipe_searches_with_reuse_and_otherwise_as_search() -> None:
    """It differs from `search` in the search step's reuse and the runtime it times on only
    (ONNX Runtime: eager's per-call cost hides how a request's cost grows with candidates)."""
    with_reuse, plain = load_recipe("search-reuse"), load_recipe("search")
    (searched,), (plain_search,) = with_reuse.steps[0].attempts, plain.steps[0].attempts
    assert with_reuse.steps[0].op == "search" and searched["reuse"] is True
    assert searched["latency_backend"] == "onnxruntime"
    assert "reuse" not in plain_search and "latency_backend" not in plain_search
    differing = ("reuse", "latency_backend")
    assert {k: v for k, v in searched.items() if k not in differing} == plain_search
    assert with_reuse.steps[1:] == plain.steps[1:]
    assert with_reuse.measure == plain.measure
