"""The quarantine: spam that a ``--deliver`` list did not ask for is kept, never dropped.

Each user's quarantine is a Maildir under ``HOME/quarantine/USER`` (the name was validated,
so it cannot leave that folder); files are written to ``tmp/`` and renamed into ``new/``, the
Maildir way, so a reader never sees half a message.
"""

from __future__ import annotations

import os
import socket
import time


def quarantine(home: str, user: str, data: bytes) -> str:
    """Store `data` in the user's quarantine Maildir; returns the file's path."""
    box = os.path.join(home, "quarantine", user)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub), mode=0o770, exist_ok=True)
    name = f"{time.time():.6f}.P{os.getpid()}R{os.urandom(4).hex()}.{socket.gethostname()}"
    tmp = os.path.join(box, "tmp", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    final = os.path.join(box, "new", name)
    os.rename(tmp, final)
    return final
