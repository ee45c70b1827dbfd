"""Derived forms of an artifact (an ONNX export, a compiled package), cached beside it.

    path = cached(cache_dir(artifact, "onnx") / key / "model.onnx", lambda p: export(p))

A form's key starts with the artifact id (the digest of its weights), so a file made from other
weights is never picked up, even if the directory's weights are replaced by hand. A form is
built in a staging directory and renamed into place, so worker processes that load the same
artifact at once never read a half-written file; the loser of that race keeps the winner's copy.
An artifact directory that is not writable caches under `recaccel_home()/<kind>` instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from recaccel.paths import recaccel_home


def cache_dir(artifact: Path, kind: str) -> Path:
    """Where the forms of `kind` ("onnx", "aoti") of the artifact at `artifact` are kept."""
    if os.access(artifact, os.W_OK):
        return artifact / kind
    return recaccel_home() / kind  # keys start with the artifact id: safe to share


def cached(final: Path, make: Callable[[Path], object]) -> Path:
    """`final` (…/key/file), made by `make(path)` in a staging directory unless present."""
    if final.is_file():
        return final
    root, key = final.parent.parent, final.parent.name
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        make(staging / final.name)
        try:
            staging.rename(final.parent)  # atomic; fails if another process got there first
        except OSError:
            if not final.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
