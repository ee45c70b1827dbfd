"""The profile: what every measured configuration costs, saved as JSON for the scheduler.

`recaccel profile` (runtime/profiler.py) measures each (artifact, backend, device, precision,
threads) configuration at several batch sizes and writes one `Profile`. Serving reads it back
(`load_profile`) to build each executor's `LatencyModel`; `select` reads it to choose a
configuration. A configuration that cannot run here (a backend that lacks an op, a package
that is not installed) is kept as an entry with status "unsupported" and the reason, so the
selection table can say why it was not chosen.

Each entry's `validation_auc` is computed from the scores that configuration itself returned
on the validation split, so an int8 or fp16 form is judged on what it actually computes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recaccel.errors import ConfigError
from recaccel.paths import write_text
from recaccel.runtime.executor import ExecutorConfig
from recaccel.runtime.latency_model import LatencyModel, LatencyPoint

PROFILE_FORMAT = "recaccel.profile/1"
PROFILE_FILE = "profile.json"
STATUSES = ("ok", "unsupported", "failed")


@dataclass(frozen=True)
class ProfileEntry:
    """One configuration: what it ran, how accurate and how fast it was, or why it could not."""

    artifact: str  # the artifact's directory
    artifact_id: str
    model: str
    parameters: int
    weights_bytes: int
    config: ExecutorConfig
    status: str  # one of STATUSES
    reason: str = ""  # why not "ok"
    validation_auc: float | None = None
    points: tuple[LatencyPoint, ...] = ()
    load_s: float | None = None  # load + export/compile + warm-up, once per worker start
    details: dict[str, Any] = field(default_factory=dict)  # Executor.describe()

    @property
    def key(self) -> str:
        """Unique within a profile, e.g. "dlrm@3f2a9c1e onnxruntime/cpu/fp32/t1"."""
        return f"{self.model}@{self.artifact_id[:8]} {self.config.label()}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def latency_model(self) -> LatencyModel:
        if not self.ok or not self.points:
            raise ConfigError(f"{self.key} has no measurements ({self.status}: {self.reason})")
        return LatencyModel.from_points(self.points)

    def point(self, batch: int) -> LatencyPoint | None:
        return next((p for p in self.points if p.batch == batch), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["key"] = self.key
        data["points"] = [p.to_dict() for p in self.points]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileEntry:
        status = str(data["status"])
        if status not in STATUSES:
            raise ConfigError(f"profile entry status {status!r} is not one of {STATUSES}")
        auc = data.get("validation_auc")
        load_s = data.get("load_s")
        return cls(
            artifact=str(data["artifact"]),
            artifact_id=str(data["artifact_id"]),
            model=str(data["model"]),
            parameters=int(data["parameters"]),
            weights_bytes=int(data["weights_bytes"]),
            config=ExecutorConfig(**data["config"]),
            status=status,
            reason=str(data.get("reason", "")),
            validation_auc=None if auc is None else float(auc),
            points=tuple(LatencyPoint.from_dict(p) for p in data.get("points", ())),
            load_s=None if load_s is None else float(load_s),
            details=dict(data.get("details", {})),
        )


@dataclass(frozen=True)
class Profile:
    """Every configuration measured in one run, interleaved, on one machine."""

    batches: tuple[int, ...]
    serving_batch: int  # rows of a typical rank request; always among `batches`
    entries: tuple[ProfileEntry, ...]
    baseline: str  # key of the reference: the first artifact, torch-eager fp32
    machine: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    dataset: str = ""
    validation_rows: int = 0
    format: str = PROFILE_FORMAT

    def entry(self, key: str) -> ProfileEntry:
        for entry in self.entries:
            if entry.key == key:
                return entry
        raise ConfigError(f"no configuration {key!r} in the profile")

    @property
    def baseline_entry(self) -> ProfileEntry:
        return self.entry(self.baseline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created_at": self.created_at,
            "machine": self.machine,
            "dataset": self.dataset,
            "validation_rows": self.validation_rows,
            "batches": list(self.batches),
            "serving_batch": self.serving_batch,
            "baseline": self.baseline,
            "entries": [e.to_dict() for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        if data.get("format") != PROFILE_FORMAT:
            raise ConfigError(
                f"not a recaccel profile (format {data.get('format')!r}, "
                f"expected {PROFILE_FORMAT!r})",
                "make one with `recaccel profile ARTIFACT... --out DIR`",
            )
        return cls(
            batches=tuple(int(b) for b in data["batches"]),
            serving_batch=int(data["serving_batch"]),
            entries=tuple(ProfileEntry.from_dict(e) for e in data["entries"]),
            baseline=str(data["baseline"]),
            machine=dict(data.get("machine", {})),
            created_at=str(data.get("created_at", "")),
            dataset=str(data.get("dataset", "")),
            validation_rows=int(data.get("validation_rows", 0)),
        )


def save_profile(profile: Profile, path: Path) -> Path:
    """Write `profile` as JSON to `path` (a file, or a directory to hold PROFILE_FILE)."""
    target = path / PROFILE_FILE if path.is_dir() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, json.dumps(profile.to_dict(), indent=2) + "\n")
    return target


def load_profile(path: Path) -> Profile:
    """Read a profile written by `save_profile` (a file, or the directory holding it)."""
    target = path / PROFILE_FILE if path.is_dir() else path
    try:
        data = json.loads(target.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no profile at {target}", "make one with `recaccel profile ARTIFACT... --out DIR`"
        ) from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{target} is not valid JSON: {error}") from None
    try:
        return Profile.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{target} is not a valid recaccel profile: {error!r}") from None
