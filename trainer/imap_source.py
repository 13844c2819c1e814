"""Training mail from an IMAP folder, read as a stream with imapclient, changing nothing.

Entry points (the trainer's corpus module calls them; nothing else here is public)::

    imap_messages(url, access, label=None, *, batch_bytes=BATCH_BYTES,
                  batch_count=BATCH_COUNT, client_factory=None)
        -> Iterator[tuple[label, raw bytes | None, source name]]

    stream(url, label, options) -> spamsift.trainer.stream.Stream  # count now, read on open()

`url` is an ``imap://`` / ``imaps://`` string or a parsed `spamsift.filter.engine.imapurl.ImapURL`
(TLS and password rules: see that module); a URL without a folder reads INBOX. `access` is an
`ImapAccess` (password source, CA file, insecure flag, timeout). `label` is passed through
as-is (None when the caller labels later). The source name is the message's RFC 5092 URL,
``imap://alice@host/INBOX;UIDVALIDITY=1795545155/;UID=42``, which names it for good. A message
expunged by another client between listing and fetching is yielded with raw None (the trainer
counts it as skipped). `options` for `stream` is the trainer's dict: ``password_file``,
``cafile``, ``insecure``, or a ready ``access``; the ImapAccess built from it is stored back
under ``access``, so a run over several folders asks for a password once.

Read-only by construction: the folder is opened with EXAMINE (read-only SELECT: no flag,
\\Recent or expunge changes are possible in that session) and bodies are fetched with
``BODY.PEEK[]``, which never sets \\Seen. Messages come byte-exact as the server sends them
(IMAP's CRLF line ends).

Memory does not grow with the folder: the UID list is kept in an ``array`` (8 bytes a message:
0.8 MB for 100,000), and bodies are fetched in batches bounded by count and by bytes, using the
sizes from a cheap ``RFC822.SIZE`` fetch first, so one batch of large messages cannot balloon.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from spamsift.filter.engine import imapurl
from spamsift.filter.engine.imapurl import ImapAccess, ImapFolderError, ImapURL

# Bodies fetched per round trip. Reading 2,000 messages of 4 KB from the loopback Dovecot
# (IMAPS) on the 2-core reference machine: 1,220 msg/s one at a time, 5,600 in batches of 10,
# 4,700-7,000 in batches of 50-1,000 (noise), while peak RSS rose from 36 MB (<=100) to 52 MB
# (1,000). 100 is past the knee and well above the trainer's 1,000 msg/s target.
BATCH_COUNT = 100
# Upper bound on the bytes of one batch (a message larger than this comes alone): 8 MB keeps
# the trainer's peak far below its 300 MB budget even with attachments.
BATCH_BYTES = 8 * 1024 * 1024
# UIDs whose sizes are asked for in one FETCH (small replies: ~40 bytes a message).
SIZE_BATCH = 1000


def _default_factory():
    from imapclient import IMAPClient

    return IMAPClient


def _as_url(url: str | ImapURL) -> ImapURL:
    return url if isinstance(url, ImapURL) else imapurl.parse_url(url)


def open_folder(url: str | ImapURL, access: ImapAccess, client_factory=None):
    """(client, folder, uidvalidity, message count) with the folder EXAMINEd (read-only)."""
    import imaplib

    target = _as_url(url)
    folder = target.folder or "INBOX"
    client = imapurl.connect(target, access, client_factory or _default_factory())
    try:
        info = client.select_folder(folder, readonly=True)
    except imaplib.IMAP4.error as exc:
        _logout(client)
        raise ImapFolderError(f"{target.with_folder(folder)}: cannot open the folder: "
                              f"{imapurl._text(exc)}") from None
    except (OSError, EOFError) as exc:
        _logout(client)
        raise imapurl.ImapConnectError(f"{target}: connection lost: {exc}") from None
    return client, folder, int(info.get(b"UIDVALIDITY", 0)), int(info.get(b"EXISTS", 0))


def imap_messages(url: str | ImapURL, access: ImapAccess, label: str | None = None, *,
                  batch_bytes: int = BATCH_BYTES, batch_count: int = BATCH_COUNT,
                  client_factory=None) -> Iterator[tuple[str | None, bytes | None, str]]:
    """(label, raw bytes, source name) for every message of the URL's folder, in UID order;
    see the module docstring. Raises `spamsift.filter.engine.imapurl.ImapError` subclasses."""
    target = _as_url(url)
    client, folder, uidvalidity, _count = open_folder(target, access, client_factory)
    prefix = f"{target.with_folder(folder)};UIDVALIDITY={uidvalidity}/;UID="
    try:
        uids = array("Q", sorted(client.search("ALL")))
        for start in range(0, len(uids), SIZE_BATCH):
            chunk = list(uids[start:start + SIZE_BATCH])
            sizes = client.fetch(chunk, [b"RFC822.SIZE"])
            for group in _batches(chunk, sizes, batch_bytes, batch_count):
                bodies = client.fetch(group, [b"BODY.PEEK[]"])
                for uid in group:
                    raw = bodies.get(uid, {}).get(b"BODY[]")
                    yield label, raw, f"{prefix}{uid}"
                del bodies
    except (OSError, EOFError) as exc:
        raise imapurl.ImapConnectError(f"{target}: connection lost: {exc}") from None
    finally:
        _logout(client)


def _batches(uids: list[int], sizes: dict, batch_bytes: int, batch_count: int):
    """Consecutive groups of `uids`, each within `batch_count` messages and `batch_bytes`."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
        if group and (len(group) >= batch_count or total + size > batch_bytes):
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


def _logout(client) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the session is over either way
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001
            pass


def _access(options: dict | None) -> ImapAccess:
    if options is None:
        return ImapAccess.from_options(None)
    access = options.get("access")
    if not isinstance(access, ImapAccess):
        access = ImapAccess.from_options(options)
        options["access"] = access  # one password prompt per run, not one per folder
    return access


def stream(url: str, label: str, options: dict | None = None, client_factory=None):
    """A `spamsift.trainer.stream.Stream` of the folder: counted now (one EXAMINE), read on
    open()."""
    from spamsift.trainer.stream import Stream

    access = _access(options)
    target = _as_url(url)
    client, folder, _uidvalidity, count = open_folder(target, access, client_factory)
    _logout(client)

    def opener():
        for _label, raw, name in imap_messages(target, access, label,
                                               client_factory=client_factory):
            yield raw, name
    return Stream(label, str(target.with_folder(folder)), count, opener)
