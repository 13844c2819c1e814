"""Logging for processes whose stdout belongs to the message: syslog (facility mail) + stderr.

The `logging` package is not used: it costs ~15 ms to import, half the filter's budget.
"""

from __future__ import annotations

import sys

_opened = False


def _syslog(priority: str, line: str) -> None:
    global _opened
    try:
        import syslog

        if not _opened:
            syslog.openlog("spamsift", syslog.LOG_PID, syslog.LOG_MAIL)
            _opened = True
        # A name or path that is not UTF-8 (surrogate escapes) is logged escaped, not lost.
        syslog.syslog(getattr(syslog, priority),
                      line.encode("utf-8", "backslashreplace").decode("utf-8"))
    except (ImportError, OSError, ValueError):
        pass  # no syslog here: stderr still has it


def error(line: str, use_syslog: bool = True, stderr=None) -> None:
    """One line to syslog (err) and stderr."""
    line = " ".join(str(line).split())[:900]
    if use_syslog:
        _syslog("LOG_ERR", line)
    try:
        print(f"spamsift: {line}", file=stderr or sys.stderr)
    except (OSError, ValueError):
        pass


def info(line: str, use_syslog: bool = True) -> None:
    """One line to syslog only (info): per-message records that must not reach a bounce."""
    if use_syslog:
        _syslog("LOG_INFO", " ".join(str(line).split())[:900])
