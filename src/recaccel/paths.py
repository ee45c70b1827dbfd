"""Where recaccel keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path


def recaccel_home() -> Path:
    """The cache root: `$RECACCEL_HOME`, else `$XDG_CACHE_HOME/recaccel`, else ~/.cache/recaccel."""
    if home := os.environ.get("RECACCEL_HOME"):
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "recaccel"
