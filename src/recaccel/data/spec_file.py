"""Files that declare features: the schema file of an imported model and the spec of a dataset
of your own share their `[[features]]` list (docs/importing.md)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from recaccel.data.schema import FeatureKind, FeatureSchema
from recaccel.errors import ConfigError


def read_spec_file(path: Path, what: str) -> dict[str, Any]:
    """A TOML or YAML file (by suffix) as a dict; ConfigError naming `what` it should be."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no {what} at {path}", "pass the TOML or YAML file (docs/importing.md)")
    try:
        text = path.read_text("utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML or YAML: {exc}", "fix its syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds no table", f"a {what} is a table with [[features]]")
    return data


def features_of(data: dict[str, Any], path: Path) -> FeatureSchema:
    """The `[[features]]` of a spec file's dict (with its `name` and `label`) as a schema."""
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise ConfigError(f"{path} declares no [[features]]", "list each feature the model reads")
    kinds = [k.value for k in FeatureKind]
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or "name" not in feature or "kind" not in feature:
            raise ConfigError(
                f"{path}: features[{i}] needs a name and a kind", f"kind = {' | '.join(kinds)}"
            )
        if feature["kind"] not in kinds:
            raise ConfigError(
                f"{path}: feature {feature['name']!r} has kind {feature['kind']!r}",
                f"kind is one of {', '.join(kinds)}",
            )
    return FeatureSchema.from_dict(
        {
            "name": data.get("name", Path(path).stem),
            "label": data.get("label", "label"),
            "features": features,
        }
    )
