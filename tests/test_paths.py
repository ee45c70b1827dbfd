"""Results are written whole or not at all (paths.write_text): a full disk mid-write leaves the
file as it was and says which file and why."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from recaccel.errors import OutputError
from recaccel.paths import write_text

# A file size limit makes a write past it fail (EFBIG) as a full disk does (ENOSPC): the same
# OSError, part way through the file, from the kernel itself.
PAST_A_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from recaccel.errors import OutputError
from recaccel.paths import write_text
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal kills the process
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_text(Path(sys.argv[1]), "x" * 100_000)
except OutputError as error:
    print(error.message)
    sys.exit(3)
"""


def test_a_write_cut_short_by_the_kernel_leaves_the_old_file_and_names_the_reason(
    tmp_path: Path,
) -> None:
    target = tmp_path / "profile.json"
    target.write_text("the old profile\n")
    result = subprocess.run(
        [sys.executable, "-c", PAST_A_SIZE_LIMIT, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    assert f"cannot write {target}: File too large" in result.stdout
    assert target.read_text() == "the old profile\n"
    assert [p.name for p in tmp_path.iterdir()] == ["profile.json"]  # no temporary left


def test_a_full_disk_is_an_output_error_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Path, text: str) -> int:
        self.write_bytes(text[:10].encode())  # part written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "report.md"
    with pytest.raises(OutputError, match="No space left on device") as caught:
        write_text(target, "a report\n" * 100)
    assert str(target) in caught.value.message and "free space" in caught.value.hint
    assert list(tmp_path.iterdir()) == []
