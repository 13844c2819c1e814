"""Where the IMAP watcher is in each followed folder: its cursors, kept in a file.

A `Cursor` per folder holds the folder's UIDVALIDITY and the highest UID already looked at;
a cycle fetches only the UIDs past it. The cursors of one account live in a small JSON file
in ``HOME/imap-watch/`` (`default_state_path`; ``--state`` overrides), with the messages
still seen in spam and innocent folders at once.

Why a file and not the store: the cursor only saves work; correctness lives in the store's
per-message records (``spamsift_watch_messages``), changed by compare-and-set in the training
transaction. A lost or stale cursor file costs one re-sync, never a second training; and two
watchers on one account (each with its own file, e.g. on two nodes) still train once. The
store contract therefore needs no per-folder table for it.
"""

from __future__ import annotations

import json
import os
from hashlib import sha256

from spamsift.filter.engine import imapurl


class Cursor:
    """One followed folder: its UIDVALIDITY and the highest UID already looked at."""

    __slots__ = ("uidvalidity", "last_uid")

    def __init__(self, uidvalidity: int, last_uid: int = 0) -> None:
        self.uidvalidity = uidvalidity
        self.last_uid = last_uid

    def __repr__(self) -> str:
        return f"Cursor({self.uidvalidity}, {self.last_uid})"


class StateFile:
    """The cursors of one account in a JSON file, replaced atomically (write, fsync, rename).

    An unreadable or damaged file is logged and treated as empty (a re-sync: see above for
    why that is safe); a home we cannot write is logged once and the cursors
    stay in memory."""

    def __init__(self, path: str | None, log) -> None:
        self.path = path
        self.log = log
        self.cursors: dict[str, Cursor] = {}
        # Messages seen in spam and innocent folders in one cycle: key -> (unix time first
        # seen so, their copies), until one class is left or `imap.SPLIT_DAYS` have passed
        # (`ImapWatcher._settle`).
        self.split: dict[str, tuple[int, list[tuple[str, int, int, str]]]] = {}
        self._saved: dict | None = None
        self._warned = False

    def load(self, account: str) -> None:
        if self.path is None or not os.path.exists(self.path):
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("account") != account:
                self.log(f"{self.path}: state of {data.get('account')!r}, not {account!r}; "
                         "starting over")
                return
            self.cursors = {name: Cursor(int(c["uidvalidity"]), int(c["last_uid"]))
                            for name, c in data["folders"].items()}
            self.split = {key: (int(entry["since"]),
                                [(str(f), int(v), int(u), str(k))
                                 for f, v, u, k in entry["copies"]])
                          for key, entry in data.get("split", {}).items()}
            self._saved = self._data(account)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.log(f"{self.path}: unreadable watch state ({exc}); re-syncing every folder")
            self.cursors = {}
            self.split = {}

    def _data(self, account: str) -> dict:
        data: dict = {"account": account,
                      "folders": {n: {"uidvalidity": c.uidvalidity, "last_uid": c.last_uid}
                                  for n, c in sorted(self.cursors.items())}}
        if self.split:
            data["split"] = {key: {"since": since, "copies": [list(c) for c in copies]}
                             for key, (since, copies) in sorted(self.split.items())}
        return data

    def save(self, account: str) -> None:
        data = self._data(account)
        if self.path is None or data == self._saved:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._saved = data
        except OSError as exc:
            if not self._warned:
                self._warned = True
                self.log(f"cannot save watch state to {self.path}: {exc.strerror or exc}; "
                         "a restart will re-sync")
            try:
                os.unlink(tmp)
            except OSError:
                pass


def default_state_path(home: str, url: imapurl.ImapURL, user: str) -> str:
    """``HOME/imap-watch/<user>-<digest of account and folder choice>.json``."""
    digest = sha256(f"{url}\0{user}".encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in user)[:64]
    return os.path.join(home, "imap-watch", f"{safe}-{digest}.json")
