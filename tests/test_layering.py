"""Data flows one way (docs/design.md): a lower stage never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import recaccel

PACKAGE = Path(recaccel.__file__).parent

# Stage order, lowest first.
STAGES = [
    "data",
    "models",
    "imported",
    "artifact",
    "train",
    "optimize",
    "runtime",
    "serve",
    "bench",
    "deploy",
    "cli",
]
# Modules outside the stages, shared by every stage.
SHARED = {"defaults", "errors", "extras", "machine", "paths", "slot_cache"}


def _stage(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "recaccel" or len(parts) < 2:
        return None
    return STAGES.index(parts[1]) if parts[1] in STAGES else None


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_stage_imports_a_higher_one() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "recaccel." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = _stage(module)
        if own is None:
            continue
        for imported in _imports(path):
            other = _stage(imported)
            if other is not None and other > own:
                violations.append(f"{module} imports {imported}")
    assert not violations, violations


def test_every_stage_module_is_known() -> None:
    top_level = {
        p.stem
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists() or p.is_dir()
    }
    unknown = top_level - set(STAGES) - SHARED - {"__init__", "__pycache__"}
    assert not unknown, f"place these in STAGES: {unknown}"
