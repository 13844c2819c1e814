"""Mail folders as the trainer and the watchers both read them: Maildir++ folders, the class
of a folder name (Maildir++ or IMAP), the message files in a folder and the key that names a
message in whichever folder it is.

Named for what it holds rather than ``maildir``: the Maildir watcher is `spamsift.watchers.maildir`,
and `folder_kind` and the message keys serve IMAP folders too.

A Maildir++ mailbox is a directory with ``cur/``, ``new/`` and ``tmp/`` (the INBOX) and one
subdirectory per folder named ``.Name`` (``.Spam``, ``.Lists.Debian`` for a nested folder),
each again with ``cur/new/tmp`` (Courier-IMAP's and Dovecot's default layout).

A folder's class comes from the settings' `spam_folders` and `ignored_folders` lists: a folder
counts when its name, or the name of any folder it is nested in, is listed (``.Spam.2026`` is
spam; ``.Trash.old`` is ignored). Names compare case-insensitively, with or without the
leading dot and with Dovecot's ``.INBOX.`` prefix removed. Everything else is innocent.

Nothing here writes: neither the trainer (except ``reclassify --move``) nor the watchers may
change a user's Maildir. A message file's *base name* (before ``:2,``, the flags) names it
for its whole life: flag changes rename ``base:2,S`` to ``base:2,RS``, and delivery moves it from
``new/`` to ``cur/`` under the same base.
"""

from __future__ import annotations

import errno
import os

SPAM = "spam"
INNOCENT = "innocent"
IGNORED = "ignored"

SUBDIRS = ("new", "cur")  # tmp/ holds half-written files: never read
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
# What open() with O_NOFOLLOW says of a symlink: Linux ELOOP, FreeBSD EMLINK, NetBSD EFTYPE.
_NOFOLLOW_ERRNOS = frozenset(
    e for e in (errno.ELOOP, errno.EMLINK, getattr(errno, "EFTYPE", None)) if e is not None)


class Folder:
    """One Maildir++ folder: `name` ("" for INBOX, else ``.Name``), `path`, `kind`."""

    __slots__ = ("name", "path", "kind")

    def __init__(self, name: str, path: str, kind: str) -> None:
        self.name = name
        self.path = path
        self.kind = kind

    def __repr__(self) -> str:
        return f"Folder({self.name or 'INBOX'!r}, {self.kind})"


def _normal(name: str) -> str:
    name = name.strip().lstrip(".").lower()
    if name.startswith("inbox."):
        name = name[6:]
    return name


def folder_kind(name: str, spam_folders, ignored_folders) -> str:
    """SPAM, IGNORED or INNOCENT for a folder name ("" or "INBOX" is the INBOX)."""
    norm = _normal(name)
    if not norm or norm == "inbox":
        return INNOCENT
    spam = {_normal(n) for n in spam_folders}
    ignored = {_normal(n) for n in ignored_folders}
    parts = norm.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in ignored:
            return IGNORED
        if prefix in spam:
            return SPAM
    return INNOCENT


def is_maildir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cur")) and os.path.isdir(os.path.join(path, "new"))


def folders(root: str, spam_folders, ignored_folders, listdir=os.listdir) -> list[Folder]:
    """The INBOX and every ``.Name`` folder of the Maildir++ at `root`, sorted by name.

    For the watcher, which reads files for their owner with more rights than the owner:
    below `root` nothing is followed through a symlink (a user's ``.Spam/cur`` pointing at a
    directory only root can read is no folder). Raises OSError when `root` cannot be listed
    (the caller says so and goes on). `listdir` is the watcher's seam (``os.listdir``)."""
    found = [Folder("", root, INNOCENT)] if _real_maildir(root) else []
    for entry in sorted(listdir(root)):
        if not entry.startswith(".") or entry in (".", ".."):
            continue
        path = os.path.join(root, entry)
        if not os.path.islink(path) and _real_maildir(path):
            found.append(Folder(entry, path, folder_kind(entry, spam_folders, ignored_folders)))
    return found


def _real_maildir(path: str) -> bool:
    """`cur/` and `new/` are directories of their own, not symlinks."""
    import stat

    try:
        return all(stat.S_ISDIR(os.lstat(os.path.join(path, sub)).st_mode) for sub in SUBDIRS)
    except OSError:
        return False


def base_name(filename: str) -> str:
    """The part of a Maildir file name that survives flag changes (before ``:2,``)."""
    for sep in (":2,", ";2,", "!2,"):  # Courier/Dovecot; Dovecot's maildir_broken_filename
        at = filename.find(sep)
        if at > 0:
            return filename[:at]
    return filename


def message_files(folder_path: str, listdir=os.listdir):
    """(subdir, file name) of every message in ``new/`` and ``cur/``; dotfiles skipped.

    A subdirectory that vanished (folder deleted mid-scan) or is a symlink yields nothing.
    Each is opened without following a symlink and listed through its descriptor, by
    `listdir` (``os.listdir``; the watcher's seam)."""
    for sub in SUBDIRS:
        try:
            fd = os.open(os.path.join(folder_path, sub), _O_DIR)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if exc.errno in _NOFOLLOW_ERRNOS:  # a symlink put in its place: not listed
                continue
            raise
        try:
            names = listdir(fd)
        finally:
            os.close(fd)
        for name in sorted(names):
            if not name.startswith("."):
                yield sub, name


def signature_of(raw: bytes, header_name: str = "X-DSPAM-Signature") -> str | None:
    """The signature in the message's own top-level header, or None.

    Only that header counts: a forwarded message's quoted signature belongs to someone else's
    copy, and a ``!DSPAM:id!`` body tag is not trusted to name a message."""
    from spamsift.filter.engine.message import Message, valid_signature
    from spamsift.filter.engine.mime import split_head_body

    # Most messages carry no signature at all: one case-blind search of the header block
    # rules that out before the header lines are parsed (0.15 ms a message of the training
    # process's ~0.4 with tokenizing helpers).
    head = split_head_body(raw)[0]
    if header_name.lower().encode("latin-1", "replace") not in head.lower():
        return None
    value = Message(raw).get_header(header_name)
    if value:
        sig = value.split()[0].decode("latin-1", "replace") if value.split() else ""
        if valid_signature(sig):
            return sig
    return None


DIGEST_PREFIX = "sha256:"  # what starts the key of a message without signature


def digest_key(raw: bytes) -> str:
    """The key of a message without signature: `DIGEST_PREFIX` + hex of the first 16 bytes
    of the SHA-256 of its bytes."""
    from hashlib import sha256

    return DIGEST_PREFIX + sha256(raw).hexdigest()[:32]


def message_key(raw: bytes, header_name: str = "X-DSPAM-Signature") -> str:
    """What names a message across folders: its signature, else a digest of its bytes.

    Digest keys are ``sha256:`` + hex of the first 16 bytes."""
    return signature_of(raw, header_name) or digest_key(raw)


HEAD_BYTES = 16384  # a stamped header block fits: read once, the body only when unsigned
_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _open_below(path: str, below: str | None, strict: bool = False) -> int:
    """A read-only descriptor of the file at `path`, following no symlink at its last part,
    nor (with `below`, a directory `path` lies in) at any part below `below`: each directory
    is opened relative to the one before, so none can be swapped for a symlink between a
    check and the open. `below` itself may be a symlink (an administrator's layout), unless
    `strict`: then no part of it from / on may be one (a user's own ~/Maildir, resolved by
    the caller, which the user could otherwise swap for a link to someone else's)."""
    if below is None:
        return os.open(path, _O_READ)
    rel = os.path.relpath(path, below)
    parts = rel.split(os.sep)
    if os.path.isabs(rel) or ".." in parts:
        raise OSError(errno.EINVAL, f"{path} is not below {below}")
    if strict:
        start = "/"
        parts = [p for p in os.path.abspath(below).split(os.sep) if p] + parts
    else:
        start = below
    return _open_chain(start, parts)


def _open_chain(start: str, parts: list[str]) -> int:
    """The file at start/parts[0]/.../parts[-1], each part opened relative to the one before
    without following a symlink (`start` is followed)."""
    fd = os.open(start, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in parts[:-1]:
            inner = os.open(part, _O_DIR, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], _O_READ, dir_fd=fd)
    finally:
        os.close(fd)


def read_message(path: str, limit: int | None = None, below: str | None = None,
                 strict: bool = False) -> bytes:
    """The bytes of a message file (at most `limit`); never follows a symlink (below `below`
    at any level, see `_open_below`), reads only regular files. Raises OSError
    (FileNotFoundError: it vanished, renamed or deleted)."""
    fd = _open_below(path, below, strict)
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        chunks = []
        size = 0
        while limit is None or size < limit:
            chunk = os.read(fd, 1 << 20 if limit is None else min(1 << 20, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def file_key(path: str, header_name: str = "X-DSPAM-Signature",
             limit: int | None = None, below: str | None = None,
             strict: bool = False) -> str | None:
    """`message_key` of a message file, reading only its head when that holds a signature;
    None for an unsigned file larger than `limit` bytes (never digested: the filter passes
    such mail through untouched too). Raises OSError as `read_message` does."""
    head = read_message(path, HEAD_BYTES, below, strict)
    if len(head) < HEAD_BYTES:
        return message_key(head, header_name)
    from spamsift.filter.engine.message import Message

    if Message(head).head_end < len(head):  # the whole header block is in `head`
        sig = signature_of(head, header_name)
        if sig:
            return sig
    if limit:
        raw = read_message(path, limit + 1, below, strict)
        if len(raw) > limit:
            return signature_of(raw, header_name)
        return message_key(raw, header_name)
    return message_key(read_message(path, below=below, strict=strict), header_name)
