"""Optimization recipes: which steps to chain, and what to try when a step fails the guard.

A recipe is a small TOML (or YAML) file:

    [guard]
    relative_budget = 0.001        # a step may lose at most 0.1% of the original validation AUC
    max_slowdown = 1.05            # and may not add more latency than this for its size saving

    [measure]
    serving_batch = 100            # rows per rank request the latency report is read at
    threads = 1

    [[step]]
    op = "distill"
    student = "deepfm"
    preset = "small"

    [[step]]
    op = "prune"
    attempts = [{ keep_fraction = 0.25 }, { keep_fraction = 0.5 }]

A step's own keys are its parameters; `attempts` lists overrides tried in order, most aggressive
first, until the accuracy guard accepts one (re-tuning). A step none of whose attempts passes
is rejected, and the chain goes on from the last accepted model. Files are parsed here, at the
edge; everything past `load_recipe` is typed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from recaccel.defaults import DEFAULT_CANDIDATES, DEFAULT_RELATIVE_BUDGET
from recaccel.errors import ConfigError
from recaccel.models.registry import config_from_dict, preset_config
from recaccel.optimize.guard import BUDGET_HINT, MAX_SLOWDOWN
from recaccel.optimize.latency import DEFAULT_REPEATS

# Step ops and the parameters each accepts (checked when the recipe is read, so a typo fails
# before an hour of training, not after).
STEP_PARAMETERS: dict[str, frozenset[str]] = {
    "distill": frozenset(
        {"student", "preset", "config", "alpha", "learning_rate", "max_epochs", "weight_decay"}
    ),
    "search": frozenset(
        {
            "budget_seconds",
            "n_trials",
            "alpha",
            "learning_rate",
            "max_epochs",
            "weight_decay",
            "reuse",
            "latency_backend",
        }
    ),
    "prune": frozenset({"keep_fraction", "learning_rate", "max_epochs", "weight_decay"}),
    "prune_fields": frozenset({"tolerance", "max_fields", "learning_rate", "max_epochs"}),
    "prune_embedding_dims": frozenset({"keep_fraction", "learning_rate", "max_epochs"}),
    "quantize_embeddings": frozenset({"bits"}),
    "quantize_dense": frozenset({"mode", "force"}),
}
RECIPES_PACKAGE = "recaccel.optimize.recipes"


@dataclass(frozen=True)
class Step:
    op: str
    # Each attempt's full parameters (the step's keys with one attempt's overrides applied).
    attempts: tuple[dict[str, Any], ...]

    def describe(self, attempt: Mapping[str, Any]) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in attempt.items())
        return f"{self.op}({shown})"


@dataclass(frozen=True)
class MeasureConfig:
    serving_batch: int = DEFAULT_CANDIDATES
    threads: int = 1
    repeats: int = DEFAULT_REPEATS

    def __post_init__(self) -> None:
        if self.serving_batch < 1 or self.threads < 1 or self.repeats < 1:
            raise ConfigError("recipe [measure]: serving_batch, threads and repeats must be >= 1")


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[Step, ...]
    relative_budget: float = DEFAULT_RELATIVE_BUDGET
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    # The most latency a step may add for what it saves in size (see guard.judge_cost).
    max_slowdown: float = MAX_SLOWDOWN

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError(f"recipe {self.name!r} has no steps", "add at least one [[step]]")
        if not 0 <= self.relative_budget < 1:
            raise ConfigError(
                f"recipe {self.name!r}: relative_budget {self.relative_budget} is not in [0, 1)",
                BUDGET_HINT,
            )
        if self.max_slowdown < 1:
            raise ConfigError(f"recipe {self.name!r}: max_slowdown {self.max_slowdown} < 1")


def _parse_step(raw: Mapping[str, Any], index: int) -> Step:
    where = f"step {index + 1}"
    if not isinstance(raw, Mapping) or "op" not in raw:
        raise ConfigError(f"recipe {where} has no 'op'", f"ops: {', '.join(STEP_PARAMETERS)}")
    op = raw["op"]
    if op not in STEP_PARAMETERS:
        raise ConfigError(
            f"recipe {where}: unknown op {op!r}", f"ops: {', '.join(STEP_PARAMETERS)}"
        )
    shared = {k: v for k, v in raw.items() if k not in ("op", "attempts")}
    overrides = raw.get("attempts", [{}])
    if not isinstance(overrides, list) or not overrides:
        raise ConfigError(f"recipe {where} ({op}): attempts must be a non-empty list of tables")
    attempts = []
    for override in overrides:
        if not isinstance(override, Mapping):
            raise ConfigError(f"recipe {where} ({op}): each attempt must be a table of parameters")
        params = {**shared, **override}
        unknown = sorted(set(params) - STEP_PARAMETERS[op])
        if unknown:
            raise ConfigError(
                f"recipe {where} ({op}): unknown parameters {unknown}",
                f"{op} takes {', '.join(sorted(STEP_PARAMETERS[op]))}",
            )
        if op == "distill":
            _check_student(params, where)
        attempts.append(params)
    return Step(op, tuple(attempts))


def _check_student(params: Mapping[str, Any], where: str) -> None:
    """Fail on a mistyped student now, not after the steps before it have trained."""
    student = params.get("student")
    if not isinstance(student, str):
        raise ConfigError(f"recipe {where} (distill) needs a 'student' model name")
    if "config" in params:
        config_from_dict(student, params["config"])
    elif "preset" in params:
        preset_config(student, str(params["preset"]))
    else:
        raise ConfigError(f"recipe {where} (distill) needs a student 'preset' or 'config'")


def parse_recipe(data: Mapping[str, Any], name: str) -> Recipe:
    """A typed recipe from parsed TOML/YAML data (see the module docstring for the layout)."""
    unknown = sorted(set(data) - {"guard", "measure", "step", "description"})
    if unknown:
        raise ConfigError(
            f"recipe {name!r}: unknown sections {unknown}", "sections: guard, measure, step"
        )
    steps = data.get("step", [])
    if not isinstance(steps, list):
        raise ConfigError(f"recipe {name!r}: 'step' must be a list ([[step]] tables in TOML)")
    guard = data.get("guard", {})
    try:
        measure = MeasureConfig(**data.get("measure", {}))
        budget = float(guard.get("relative_budget", DEFAULT_RELATIVE_BUDGET))
        max_slowdown = float(guard.get("max_slowdown", MAX_SLOWDOWN))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"recipe {name!r}: bad [guard] or [measure]: {exc}") from None
    return Recipe(
        name,
        tuple(_parse_step(raw, i) for i, raw in enumerate(steps)),
        budget,
        measure,
        max_slowdown,
    )


def builtin_recipes() -> list[str]:
    files = resources.files(RECIPES_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe by name (e.g. "default"), or a .toml / .yaml / .yml file."""
    path = Path(name_or_path)
    if path.suffix in (".toml", ".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        text, suffix, name = path.read_text(), path.suffix, path.stem
    else:
        if name_or_path not in builtin_recipes():
            raise ConfigError(
                f"unknown recipe {name_or_path!r}",
                f"built-in recipes: {', '.join(builtin_recipes())}; or pass a .toml/.yaml file",
            )
        resource = resources.files(RECIPES_PACKAGE) / f"{name_or_path}.toml"
        text, suffix, name = resource.read_text(), ".toml", name_or_path
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"recipe {name_or_path} is not valid {suffix[1:].upper()}: {exc}"
        ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"recipe {name_or_path} must be a table of sections")
    return parse_recipe(data, name)
