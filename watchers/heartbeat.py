"""When a watcher logs a cycle: what happened, always; an idle cycle only now and then.

A watcher scans every 10 s by default: one line per idle cycle was 8,600 lines a day in syslog.
Cycles that found or trained something are logged; idle ones only with ``--verbose``, or as an
hourly heartbeat that says the watcher is alive.
"""

from __future__ import annotations

HEARTBEAT = 3600.0  # seconds between idle cycles logged without --verbose


class Heartbeat:
    """`due(active)`: whether to log this cycle's line. The first cycle is always logged."""

    __slots__ = ("monotonic", "every", "verbose", "last")

    def __init__(self, monotonic, every: float = HEARTBEAT, verbose: bool = False) -> None:
        self.monotonic = monotonic
        self.every = every
        self.verbose = verbose
        self.last: float | None = None

    def due(self, active: bool) -> bool:
        now = self.monotonic()
        if active or self.verbose or self.last is None or now - self.last >= self.every:
            self.last = now
            return True
        return False
