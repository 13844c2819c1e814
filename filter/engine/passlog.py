"""Mail that was not filtered, counted where every delivery can write, database or not.

The trap this closes: a database the delivery uid cannot write (trained as root, say) made
every message pass through unfiltered with exit 0, and only stderr, which Courier does not
show, said why. Such a count cannot live in the database. Each OS uid appends to a file of its
own in ``HOME/passthrough/`` (a sticky folder anyone may add to, as /tmp: `prepare`), one line
per message::

    <unix time> <reason> <user>

and `counts` sums them for `spamsift report`. Reasons (`REASONS`): not filtered because the
user is not opted in, the message is over max_message_size, or it could not be stamped; passed
through or tempfailed after an error; and a thin client that filtered in-process because the
daemon was busy, gone or declined (`FALLBACKS`).

Nothing here may fail a delivery: a line that cannot be written is given up on (the syslog
line beside it stays). A file is trusted only when its owner is the uid its name says, and is
read without following symlinks, at most `MAX_READ` bytes of it.
"""

from __future__ import annotations

import os
import re
import time

from spamsift.filter.engine.days import day_of

FOLDER = "passthrough"
MAX_READ = 64 << 20
# Every file but one's own is another uid's words: only lines of this shape count (a reason
# we know, a time of at most 11 ASCII digits, a user without white space), and one file names
# at most MAX_USERS users (a 64 MB file of lines each with a new name made 2.5 million keys,
# 819 MB and 6 s in the report, or in the daemon at every metrics scrape).
_LINE = re.compile(rb"^([0-9]{1,11}) ([a-z_]{1,32}) ([^\s]{1,128})\r?$", re.M)
MAX_USERS = 10_000
OTHER_USERS = "(others)"  # where a file's lines beyond MAX_USERS users are counted
REASONS = ("not_opted_in", "too_big", "unstampable", "error", "tempfail")
FALLBACKS = ("fallback_busy", "fallback_unreachable", "fallback_declined")
KNOWN_REASONS = frozenset(REASONS + FALLBACKS)


def _path(home: str, uid: int) -> str:
    return os.path.join(home, FOLDER, f"uid-{uid}.log")


def prepare(home: str) -> None:
    """Make ``HOME/passthrough`` (mode 1733: every uid may add its own file, none may list or
    touch another's). Raises OSError."""
    folder = os.path.join(home, FOLDER)
    try:
        os.mkdir(folder, 0o1733)
    except FileExistsError:
        pass
    os.chmod(folder, 0o1733)


def record(home: str, user: str, reason: str, clock=time.time) -> bool:
    """Count one message for `user` (a name, or "-") and `reason`; whether it was written."""
    uid = os.geteuid()
    line = f"{int(clock())} {reason} {user or '-'}\n".encode("utf-8", "backslashreplace")
    try:
        fd = os.open(_path(home, uid), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644)
    except OSError:
        return False
    try:
        # Another uid may have made a file with our name first: never write into theirs.
        if os.fstat(fd).st_uid != uid:
            return False
        return os.write(fd, line) == len(line)
    except OSError:
        return False
    finally:
        os.close(fd)


def counts(home: str, since: float) -> dict[tuple[str, str, str], int]:
    """(day YYYY-MM-DD, reason, user) -> messages, for lines at or after `since`.

    OSError when the folder exists but cannot be listed (the caller's uid is not its owner or
    root): every count would read as zero, which is the silence this module is for."""
    import stat

    folder = os.path.join(home, FOLDER)
    found: dict[tuple[str, str, str], int] = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return found  # nothing was ever passed through here
    for name in names:
        if not (name.startswith("uid-") and name.endswith(".log")
                and name[4:-4].isascii() and name[4:-4].isdigit()):
            continue
        try:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != int(name[4:-4]):
                continue
            data = os.read(fd, MAX_READ)
        except OSError:
            continue
        finally:
            os.close(fd)
        _count_lines(data, since, found)
    return found


def forged(home: str) -> list[str]:
    """The files named for another uid than their owner's. Counts in them are not read, and
    the uid they are named for cannot count at all (`record` never writes into another's
    file): a uid that made one first hides that uid's unfiltered mail. Only root and the
    folder's owner (the site user) may remove them."""
    import stat

    folder = os.path.join(home, FOLDER)
    found: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return found
    for name in sorted(names):
        number = name[4:-4]
        if not (name.startswith("uid-") and name.endswith(".log") and number.isascii()
                and number.isdigit()):
            continue
        try:
            info = os.lstat(os.path.join(folder, name))
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_uid != int(number):
            found.append(os.path.join(folder, name))
    return found


def _count_lines(data: bytes, since: float, found: dict[tuple[str, str, str], int]) -> None:
    """Add one file's well-formed lines at or after `since` to `found`."""
    known = KNOWN_REASONS
    days: dict[int, str] = {}
    users: set[str] = set()
    for m in _LINE.finditer(data):
        when = int(m.group(1))
        reason = m.group(2).decode("ascii")
        if when < since or reason not in known:
            continue
        day = days.get(when // 900)  # every UTC offset is whole quarter hours
        if day is None:
            try:
                day = days[when // 900] = day_of(when)
            except (OverflowError, OSError, ValueError):
                continue  # a time no calendar has
        user = m.group(3).decode("utf-8", "replace")
        if user not in users:
            if len(users) >= MAX_USERS:
                user = OTHER_USERS
            else:
                users.add(user)
        key = (day, reason, user)
        found[key] = found.get(key, 0) + 1
