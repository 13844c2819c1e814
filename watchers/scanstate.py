"""What the Maildir scanner remembers of each folder, in memory and between runs.

Per folder (`FolderState`): the mtimes of ``new/`` and ``cur/`` at its last listing and a
sorted array of 8-byte hashes of the base names it held (`name_hash`), so the scanner knows
which files are new without keeping a path or a stat result per file (29 MB resident for the
1,000 mailboxes x 1,000 messages tree of benchmarks/watch_tree.py). `save` writes the folder
states to a file in the home and `load` takes them over, so a restart lists only the folders
that changed meanwhile instead of reading every message once.
"""

from __future__ import annotations

import os
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from hashlib import blake2b

from spamsift.filter.engine import mailfolders

VERSION = 1  # of the saved file's layout: another version is ignored (a full first scan)


def holds(known: array, h: int) -> bool:
    """Whether the sorted array `known` holds `h`."""
    i = bisect_left(known, h)
    return i < len(known) and known[i] == h


def name_hash(base: str) -> int:
    """A stable signed 64-bit hash of a base name (Python's hash() changes per process, and
    the scanner state outlives it): collisions among a million names ~ 3e-8."""
    return int.from_bytes(blake2b(base.encode("utf-8", "surrogateescape"),
                                  digest_size=8).digest(), "little", signed=True)


class FolderState:
    """One folder as last listed: mtimes of new/ and cur/, hashes of its base names."""

    __slots__ = ("name", "path", "kind", "mtimes", "known", "recheck")

    def __init__(self, name: str, path: str, kind: str) -> None:
        self.name = name
        self.path = path
        self.kind = kind
        self.mtimes: tuple | None = None
        self.known = array("q")   # sorted name_hash(base) of every message at last listing
        self.recheck = False      # list it again next cycle, whatever its mtimes say


class MailboxState:
    """One mailbox of `user`: its folders (path -> `FolderState`) as of the mailbox
    directory's `mtime`, the user's store id once known, and its split messages."""

    __slots__ = ("path", "user", "uid", "mtime", "folders", "unknown_since", "split")

    def __init__(self, path: str, user: str) -> None:
        self.path = path
        self.user = user
        self.uid: int | None = None
        self.mtime: int | None = None
        self.folders: dict[str, FolderState] = {}
        self.unknown_since: float | None = None
        # Messages first seen with copies in spam and innocent folders at once (decide.py:
        # nothing until one class is left): key -> (folder state, base-name hash, path) of
        # each copy. See `Scanner._settle`.
        self.split: dict[str, list[tuple[FolderState, int, str]]] = {}


def forget(pairs: Iterable[tuple[FolderState, int]]) -> None:
    """Drop (folder state, base-name hash) pairs from the folders' listings, one pass per
    folder, and have those folders listed again: the files count as new there."""
    gone: dict[int, tuple[FolderState, set[int]]] = {}
    for state, h in pairs:
        gone.setdefault(id(state), (state, set()))[1].add(h)
    for state, hashes in gone.values():
        state.known = array("q", (h for h in state.known if h not in hashes))
        state.recheck = True


def save(path: str, mailboxes: Iterable[MailboxState], excluded: Iterable[str]) -> None:
    """Write what each folder held at its last listing to `path` (atomically, mode 0600),
    without the base names of `excluded` files (queued, not yet trained: after a restart they
    must be seen again). A later `load` makes the first scan list only what changed."""
    import marshal

    drop: dict[str, set[int]] = {}
    for file_path in excluded:
        folder = os.path.dirname(os.path.dirname(file_path))
        drop.setdefault(folder, set()).add(
            name_hash(mailfolders.base_name(os.path.basename(file_path))))
    folders = {}
    for box in mailboxes:
        for state in box.folders.values():
            if state.mtimes is None:
                continue
            known = state.known
            if state.path in drop:
                known = array("q", (h for h in known if h not in drop[state.path]))
            folders[state.path] = (state.kind, state.mtimes, state.recheck or
                                   state.path in drop, known.tobytes())
    data = marshal.dumps((VERSION, folders))
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path: str, log) -> dict[str, FolderState]:
    """The folder states saved by `save` (folder path -> state). A missing, foreign or
    damaged file gives none (the first scan then reads every message, as without)."""
    import marshal

    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                log(f"{path}: not ours or writable by others; ignored")
                return {}
            version, folders = marshal.load(fh)
        if version != VERSION or not isinstance(folders, dict):
            return {}
        restored = {}
        for folder_path, (kind, mtimes, recheck, known) in folders.items():
            state = FolderState(os.path.basename(folder_path), folder_path, kind)
            state.mtimes = tuple(mtimes)
            state.recheck = bool(recheck)
            state.known = array("q")
            state.known.frombytes(known)
            restored[folder_path] = state
    except FileNotFoundError:
        return {}
    except (OSError, EOFError, ValueError, TypeError) as exc:
        log(f"{path}: unreadable scanner state ({exc}); scanning everything")
        return {}
    return restored
