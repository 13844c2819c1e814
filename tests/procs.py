"""What /proc says about processes a test or benchmark started: parents, children, memory.

Linux only, as the tests that use it are; each function gives a neutral answer for a process
that is gone (it may end between two reads).
"""

from __future__ import annotations

import os


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int:
    """The parent's pid, or -1 once the process is gone."""
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, IndexError, ValueError):
        return -1


def state_of(pid: int) -> str:
    """The process state letter ("Z" for a zombie), or "gone"."""
    try:
        return _stat_fields(pid)[0]
    except (OSError, IndexError):
        return "gone"


def children_of(pid: int) -> list[int]:
    """The pids of the process's children."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and parent_of(int(p)) == pid]


def rss_mb(pids) -> float:
    """Resident memory of these processes together (VmRSS), in MB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            pass
    return total / 1024


def peak_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
