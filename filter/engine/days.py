"""Days as the statistics count them: local calendar dates written ``YYYY-MM-DD``.

The filter, the trainer, the watchers and purging all file what they count under the day a
message was handled on this host's local calendar (as DSPAM's ``dspam_stats`` history does),
and the reports read it back the same way.
"""

from __future__ import annotations

import time

DAY = 86400
FORMAT = "%Y-%m-%d"


def day_of(at: float) -> str:
    """The local date of Unix time `at`."""
    return time.strftime(FORMAT, time.localtime(at))


def days_before(day: str, count: int) -> str:
    """The date `count` days before `day` (counted from its noon, so a DST change never
    skips or repeats a date)."""
    noon = time.mktime(time.strptime(day + " 12", FORMAT + " %H"))
    return day_of(noon - DAY * count)
