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
import time

from spamsift.filter.engine.days import day_of

FOLDER = "passthrough"
MAX_READ = 64 << 20
REASONS = ("not_opted_in", "too_big", "unstampable", "error", "tempfail")
FALLBACKS = ("fallback_busy", "fallback_unreachable", "fallback_declined")


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
                and name[4:-4].isdigit()):
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
        days: dict[int, str] = {}
        for line in data.decode("utf-8", "replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) != 3 or not parts[0].isdigit():
                continue
            when = int(parts[0])
            if when < since:
                continue
            day = days.get(when // 900)  # every UTC offset is whole quarter hours
            if day is None:
                day = days[when // 900] = day_of(when)
            key = (day, parts[1], parts[2])
            found[key] = found.get(key, 0) + 1
    return found
