"""Where recaccel keeps its cache, and how it writes the files it leaves behind."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from recaccel.errors import OutputError


def recaccel_home() -> Path:
    """The cache root: `$RECACCEL_HOME`, else `$XDG_CACHE_HOME/recaccel`, else ~/.cache/recaccel."""
    if home := os.environ.get("RECACCEL_HOME"):
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "recaccel"


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a full disk (or a quota, or a file size
    limit) mid-write leaves whatever was there before, never half a profile or report that a
    later command would choke on, and is an OutputError naming the file and the reason."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise OutputError(
            f"cannot write {path}: {error.strerror or error}",
            "free space on that disk, or write elsewhere (--out)",
        ) from None
