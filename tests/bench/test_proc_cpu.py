"""CPU time of a process tree from /proc: the stat parser, the tree sum, and the real /proc."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from recaccel.bench.cpu import ProcStat, parse_stat, process_tree_cpu_s, tree_ticks
from recaccel.errors import ConfigError


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cu: int, cs: int) -> str:
    # Fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    #              utime stime cutime cstime priority ...
    return f"{pid} ({comm}) S {ppid} 1 1 0 -1 4194304 10 0 0 0 {utime} {stime} {cu} {cs} 20 0"


def test_parse_stat_survives_odd_command_names() -> None:
    stat = parse_stat(stat_line(42, "a) b (c", 7, 100, 20, 5, 1))
    assert stat == ProcStat(pid=42, ppid=7, utime=100, stime=20, cutime=5, cstime=1)


def test_tree_ticks_sums_live_descendants_and_reaped_children_of_the_root() -> None:
    stats = {
        s.pid: s
        for s in [
            ProcStat(10, 1, 100, 10, 7, 3),  # the server; 10 ticks of reaped workers
            ProcStat(11, 10, 50, 5, 99, 99),  # a worker (its c-fields are not the tree's)
            ProcStat(12, 11, 4, 1, 0, 0),  # the worker's child
            ProcStat(20, 1, 1000, 1000, 0, 0),  # someone else
        ]
    }
    assert tree_ticks(stats, 10) == 110 + 10 + 55 + 5
    assert tree_ticks(stats, 12) == 5


def test_a_fake_proc(tmp_path: Path) -> None:
    for pid, ppid, utime in [(5, 1, 300), (6, 5, 100)]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat_line(pid, "x", ppid, utime, 0, 0, 0))
    (tmp_path / "self").mkdir()  # not a pid: skipped
    assert process_tree_cpu_s(5, tmp_path) == pytest.approx(400 / os.sysconf("SC_CLK_TCK"))
    with pytest.raises(ConfigError, match="no process 99"):
        process_tree_cpu_s(99, tmp_path)
    with pytest.raises(ConfigError, match="/proc"):
        process_tree_cpu_s(5, tmp_path / "missing")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_this_process_has_used_some_cpu() -> None:
    assert process_tree_cpu_s(os.getpid()) > 0
