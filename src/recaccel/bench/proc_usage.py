"""Memory and open files of a server's process tree, read from Linux's /proc.

A leak shows as a figure that keeps growing under a steady load, and a server here is a tree
(the supervisor, its front processes, their worker processes), so the figures are sums over
the tree (cpu.py finds it):

- RSS: resident pages of each process (/proc/<pid>/statm, field 2) × the page size. Pages the
  processes share (the mapped weights, what a fork left shared) count once per process, so the
  sum overstates the memory used; what a soak watches is whether it grows. PSS would split
  shared pages fairly (scripts/weights_memory.py reads it) but costs a walk of every mapping.
- open file descriptors: the entries of /proc/<pid>/fd, and how many of them are sockets
  (a link to "socket:[inode]"): a client's connections come and go, a leaked file or pipe
  does not.

A process that exits while it is read is skipped; reading another user's fds needs their
rights (a server started by this user is readable). psutil would do the same and is not a
dependency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recaccel.bench.cpu import PROC, process_tree_pids


@dataclass(frozen=True)
class TreeUsage:
    """A process tree's summed figures at one moment."""

    processes: int
    rss_bytes: int
    fds: int
    sockets: int  # of `fds`

    def __add__(self, other: TreeUsage) -> TreeUsage:
        return TreeUsage(
            self.processes + other.processes,
            self.rss_bytes + other.rss_bytes,
            self.fds + other.fds,
            self.sockets + other.sockets,
        )


NOTHING = TreeUsage(0, 0, 0, 0)


def rss_pages(statm: str) -> int:
    """Resident pages from /proc/<pid>/statm's text (size resident shared text lib data dt)."""
    return int(statm.split()[1])


def process_usage(pid: int, proc: Path = PROC, page_bytes: int | None = None) -> TreeUsage:
    """One process's figures; NOTHING if it exited meanwhile."""
    page = page_bytes if page_bytes is not None else os.sysconf("SC_PAGE_SIZE")
    entry = proc / str(pid)
    try:
        rss = rss_pages((entry / "statm").read_text()) * page
        links = [_link(fd) for fd in (entry / "fd").iterdir()]
    except (OSError, ValueError, IndexError):
        return NOTHING
    fds = [link for link in links if link is not None]
    sockets = sum(1 for link in fds if link.startswith("socket:"))
    return TreeUsage(1, rss, len(fds), sockets)


def _link(fd: Path) -> str | None:
    try:
        return os.readlink(fd)
    except OSError:
        return None  # closed while we looked


def tree_usage(pid: int, proc: Path = PROC, page_bytes: int | None = None) -> TreeUsage:
    """Process `pid` and its descendants, summed. ConfigError: no /proc, or no such process."""
    total = NOTHING
    for member in process_tree_pids(pid, proc):
        total += process_usage(member, proc, page_bytes)
    return total
