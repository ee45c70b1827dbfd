"""CPU seconds a server process tree used, read from Linux's /proc.

Throughput alone hides cost: two servers at the same QPS may burn one core or two. The bench
reads the server's CPU time before and after a run and reports CPU-seconds per 1,000 requests.

A server here is a tree — the uvicorn process and its model worker processes — so its CPU time
is the sum over the tree: each live process's utime + stime (/proc/<pid>/stat fields 14 and
15), plus the root's cutime + cstime (16, 17), the time of children it has already waited for
(a worker that died and was replaced). A child's cutime is not counted again under its own
entry: a live process's c-fields hold only its reaped children, which are gone from /proc.
Children are found by scanning /proc for parent pids: /proc/<pid>/task/*/children needs a
kernel option that is not always on. psutil would do the same and is not a dependency.

Not Linux, or no such pid: ConfigError, saying so; the bench runs without the figure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recaccel.errors import ConfigError

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this module reads; times in clock ticks."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int


def parse_stat(text: str) -> ProcStat:
    """/proc/<pid>/stat's text -> its fields. The command name (field 2) is in parentheses and
    may hold spaces and parentheses itself, so the fields are counted after the last ')'."""
    head, _, tail = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = tail.split()  # fields[0] is field 3 (state)
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def _read_stats(proc: Path) -> dict[int, ProcStat]:
    stats = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked, or not a process entry
    return stats


def tree_pids(stats: dict[int, ProcStat], root: int) -> list[int]:
    """`root` and every live descendant of it, root first."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_ticks(stats: dict[int, ProcStat], root: int) -> int:
    """utime + stime of `root` and every live descendant, plus `root`'s reaped children."""
    total = stats[root].cutime + stats[root].cstime
    return total + sum(stats[pid].utime + stats[pid].stime for pid in tree_pids(stats, root))


def _stats_with(pid: int, proc: Path, what: str, hint: str) -> dict[int, ProcStat]:
    if not proc.is_dir():
        raise ConfigError(f"reading a server's {what} needs Linux's /proc", "run on Linux")
    stats = _read_stats(proc)
    if pid not in stats:
        raise ConfigError(f"no process {pid} to read {what} from", hint)
    return stats


def process_tree_pids(pid: int, proc: Path = PROC) -> list[int]:
    """Process `pid` and its live descendants (a server's fronts and workers), `pid` first."""
    hint = "pass the pid of the server's first process (its supervisor)"
    return tree_pids(_stats_with(pid, proc, "process tree", hint), pid)


def process_tree_cpu_s(pid: int, proc: Path = PROC) -> float:
    """CPU seconds (user + system) used so far by process `pid` and its descendants."""
    stats = _stats_with(pid, proc, "CPU time", "pass the server's pid, or none")
    return tree_ticks(stats, pid) / os.sysconf("SC_CLK_TCK")
