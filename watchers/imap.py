"""The IMAP watcher: ``spamsift watch imap://USER@HOST/`` learns from the moves a user makes
on an IMAP server, for mailboxes that are on no local or NFS path.

What it follows: INBOX and every folder whose name is a spam folder (`spam_folders`, as LIST
reports the names: ``Junk``, ``INBOX.Spam``, ``Spam/2026``); a folder in the URL takes INBOX's
place, and ``--all-folders`` follows every folder that is not ignored (`ignored_folders`).

How it sees a move: a message moved or copied into a folder (IMAP MOVE, COPY + EXPUNGE, a
client's drag, or a server-side rename in Dovecot's Maildir) gets a new UID there. Per
folder the watcher keeps the folder's UIDVALIDITY and the highest UID it has looked at; each
cycle asks STATUS (UIDVALIDITY UIDNEXT) of every followed folder and fetches, for new UIDs
only, the signature header (``BODY.PEEK[HEADER.FIELDS (X-DSPAM-Signature)]``: a few dozen
bytes a message, and \\Seen is never set). Expunges and flag changes are not looked at, as
in the Maildir watcher. A changed UIDVALIDITY means the server renumbered the folder: its
cursor is dropped and the whole folder is looked at again (re-sync); the recorded classes
make that harmless (a message trained before is where its record says: nothing).

Each new sighting takes the watchers' one exactly-once path (`spamsift.watchers.core`):
decided with the message's recorded class and verdict read in bulk, and what trains is decided
again on fresh state and trained with a compare-and-set on the record, at most ``watch_rate``
a second: exactly once, with the Maildir watcher's rules. Unsigned mail is read whole
(``BODY.PEEK[]``) only when ``watch_learn_unsigned`` is on (its key is the digest of its
bytes, CRLF as IMAP sends them). The watcher never changes the mailbox: folders are opened
with EXAMINE (read-only).

Waking up: where the server has IDLE, one extra connection per followed folder (at most
`MAX_IDLERS`) idles and wakes the loop when the folder changes, so a drag is trained within
about a second (`spamsift.watchers.idle`); folders beyond that, servers without IDLE, and
``--no-idle`` are polled every ``watch_interval`` seconds. The polling cycle also runs with
IDLE, as the source of truth.

The cursors (per folder: UIDVALIDITY and the highest UID looked at) are kept in a file per
account (`spamsift.watchers.cursors`, which says why not in the store). The command line is
`spamsift.watchers.cli.imap_main`.
"""


from __future__ import annotations

import imaplib
import threading
import time

from spamsift.filter.engine import imapurl, mailfolders
from spamsift.filter.engine.errors import StorageError
from spamsift.watchers.core import CycleReport, Pipeline, Sighting, settle
from spamsift.watchers.cursors import Cursor, StateFile
from spamsift.watchers.decide import IGNORED, INNOCENT, NOTHING, SPAM
from spamsift.watchers.heartbeat import Heartbeat
from spamsift.watchers.idle import IDLE_TICK, Idler

# New UIDs whose headers are fetched per round trip; the reply is ~80 bytes a message.
FETCH_BATCH = 500
# Sightings held before they are decided and the cursors advanced: bounds memory during a
# re-sync of a large folder (~200 bytes a sighting) while letting a COPY seen in two
# followed folders in one cycle be decided as one sighting.
FLUSH_SIGHTINGS = 5000
# IDLE connections per account: INBOX and one or two spam folders cover the usual drags, and
# Dovecot allows 10 connections per user and IP by default (mail_max_userip_connections).
MAX_IDLERS = 4
SPLIT_DAYS = 30     # copies in spam and innocent folders at once are looked for this long
SEARCH_UIDS = 500   # UIDs per UID SEARCH (Dovecot refuses arguments over ~64 KB)


def _default_factory():
    from imapclient import IMAPClient

    return IMAPClient


def _uid_set(uids: list[int]) -> str:
    """A sorted list of UIDs as an IMAP sequence set, runs as ranges (``1:5,9``)."""
    parts = []
    start = prev = uids[0]
    for u in uids[1:]:
        if u != prev + 1:
            parts.append(f"{start}:{prev}" if prev != start else str(start))
            start = u
        prev = u
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


class ImapReport(CycleReport):
    __slots__ = ("folders", "looked", "new_uids", "unsigned", "resynced")

    def __init__(self) -> None:
        super().__init__()
        self.folders = self.looked = self.new_uids = self.unsigned = 0
        self.resynced: list[str] = []

    @property
    def active(self) -> bool:
        return bool(self.new_uids or self.resynced or self.trained)

    def line(self, account: str) -> str:
        resync = f", UIDVALIDITY changed (re-sync): {', '.join(self.resynced)}" \
            if self.resynced else ""
        return (f"watch {account}: {self.folders} folders, {self.looked} with new mail, "
                f"{self.new_uids} new UIDs ({self.unsigned} unsigned skipped){resync}; "
                f"trained: {self.trained_text()}; {self.seconds:.2f} s")


class ImapWatcher:
    """Follows one IMAP account for one spamsift user; `cycle` once or `run` until stopped.

    Seams: `client_factory` (``imapclient.IMAPClient``), `clock`, `monotonic`, `sleep`."""

    def __init__(self, settings, store, url: imapurl.ImapURL, access: imapurl.ImapAccess,
                 user: str | None = None, state_path: str | None = None,
                 all_folders: bool = False, idle: bool = True, client_factory=None,
                 clock=time.time, monotonic=time.monotonic, sleep=time.sleep,
                 log=None) -> None:
        from spamsift.filter.engine import users

        self.settings = settings
        self.url = url
        self.access = access
        self.user = users.validate(user or url.user)
        self.account = str(url.with_folder(None))
        self.all_folders = all_folders
        self.use_idle = idle
        self.factory = client_factory or _default_factory()
        self.clock = clock
        self.monotonic = monotonic
        self.heartbeat = Heartbeat(monotonic)
        self.metrics = None  # an engine.metrics.Metrics, with watch --metrics
        self.sleep = sleep
        self.log = log or (lambda line: None)
        self.header = settings.header_prefix + "-Signature"
        self.state = StateFile(state_path, self.log)
        self.state.load(str(url))
        self.pipeline = Pipeline(settings, store, self._read, self.log, clock, monotonic)
        self.client = None
        self.wake = threading.Event()
        self.idlers: dict[str, Idler] = {}
        self._unknown_logged = False

    # -- connection --------------------------------------------------------------------------
    def connect(self):
        if self.client is None:
            self.client = imapurl.connect(self.url, self.access, self.factory)
        return self.client

    def disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.logout()
            except Exception:  # noqa: BLE001 - a broken connection is being dropped anyway
                try:
                    client.shutdown()
                except Exception:  # noqa: BLE001
                    pass

    def close(self) -> None:
        self.stop_idlers()
        self.disconnect()

    # -- which folders ------------------------------------------------------------------------
    def followed(self) -> list[tuple[str, str]]:
        """(folder name, class) of every folder to follow, from LIST."""
        client = self.connect()
        base = self.url.folder or "INBOX"
        out: dict[str, str] = {}
        spam, ignored = self.settings.spam_folders, self.settings.ignored_folders
        for flags, delimiter, name in client.list_folders():
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            if any(f.lower() == b"\\noselect" for f in flags):
                continue
            dotted = name.replace(delimiter.decode(), ".") if delimiter else name
            kind = mailfolders.folder_kind(dotted, spam, ignored)
            if name == base or name.upper() == "INBOX" == base.upper():
                out[name] = kind if kind != IGNORED else INNOCENT
            elif kind == SPAM or (self.all_folders and kind == INNOCENT):
                out[name] = kind
        if base not in out and base.upper() != "INBOX":
            raise imapurl.ImapFolderError(f"{self.url}: no folder {base!r} on the server")
        return sorted(out.items(), key=lambda item: (item[0].upper() != "INBOX", item[0]))

    # -- a cycle ---------------------------------------------------------------------------------
    def cycle(self) -> ImapReport:
        """Look at every followed folder once and train what moved. Raises ImapError when
        the server fails (the connection is dropped: the next cycle reconnects) and
        StorageError when the store does."""
        report = ImapReport()
        started = self.monotonic()
        try:
            self._cycle(report)
        except (OSError, EOFError) as exc:
            self.disconnect()
            raise imapurl.ImapConnectError(f"{self.account}: connection lost: {exc}") from None
        except imapurl.ImapError:
            self.disconnect()
            raise
        except imaplib.IMAP4.error as exc:  # imapclient's errors derive from it
            self.disconnect()
            raise imapurl.ImapConnectError(
                f"{self.account}: server error: {imapurl._text(exc)}") from None
        finally:
            report.seconds = self.monotonic() - started
        if self.heartbeat.due(report.active):
            self.log(report.line(self.account))
        if self.metrics is not None:
            report.publish(self.metrics, report.seconds)
        return report

    def _cycle(self, report: ImapReport) -> None:
        uid = self.pipeline.store.uid(self.user, create=False)
        if uid is None:
            if not self._unknown_logged:
                self._unknown_logged = True
                self.log(f"{self.user}: not known to the store (never filtered): nothing to "
                         "correct yet; looking again each cycle")
            return
        self._unknown_logged = False
        client = self.connect()
        folders = self.followed()
        report.folders = len(folders)
        if self.use_idle:
            self._start_idlers([name for name, _kind in folders])
        pending: dict[str, Sighting] = {}
        advanced: dict[str, Cursor] = {}
        self._unselect(client)
        if self.state.split:
            self._settle(client, uid, report)
        for name, kind in folders:
            status = client.folder_status(name, [b"UIDVALIDITY", b"UIDNEXT"])
            validity, uidnext = int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"])
            cursor = self.state.cursors.get(name)
            if cursor is not None and cursor.uidvalidity != validity:
                report.resynced.append(name)
                self.log(f"{self.account}: {name}: UIDVALIDITY {cursor.uidvalidity} -> "
                         f"{validity}: the server renumbered it; looking at all of it again")
                cursor = None
            if cursor is None:
                cursor = self.state.cursors[name] = Cursor(validity, 0)
            if uidnext - 1 <= cursor.last_uid:
                continue
            report.looked += 1
            info = client.select_folder(name, readonly=True)
            if int(info.get(b"UIDVALIDITY", validity)) != validity:
                continue  # renumbered between STATUS and EXAMINE: the next cycle re-syncs
            new = sorted(u for u in client.search(["UID", f"{cursor.last_uid + 1}:*"])
                         if u > cursor.last_uid)
            for start in range(0, len(new), FETCH_BATCH):
                chunk = new[start:start + FETCH_BATCH]
                report.new_uids += len(chunk)
                for msg_uid, key in self._keys(client, chunk, report):
                    sighting = pending.get(key)
                    if sighting is None:
                        sighting = pending[key] = Sighting(self.user, uid, key)
                    sighting.seen_in.add(kind)
                    sighting.copies.append((name, validity, msg_uid, kind))
                    if sighting.where is None or kind != IGNORED:
                        sighting.where = (name, validity, msg_uid)
                advanced[name] = Cursor(validity, chunk[-1])
                if len(pending) >= FLUSH_SIGHTINGS:
                    self._flush(uid, pending, advanced, report)
            # STATUS of the selected folder may answer from the session's view (Dovecot
            # does: a message moved in since was not counted), so never leave one selected.
            self._unselect(client)
        self._flush(uid, pending, advanced, report)
        self._unselect(client)

    def _settle(self, client, uid: int, report: ImapReport) -> None:
        """Decide the messages seen in spam and innocent folders at once (a client's COPY
        before its expunge; an expunge is no new UID) whose copies are now in one class
        only (`core.settle`). A folder that cannot be examined now keeps its copies in doubt
        (nothing is decided); a renumbered one (UIDVALIDITY) drops them undecided, as its
        messages are seen again as new UIDs; copies still in both classes after
        `SPLIT_DAYS` are forgotten (a user keeping both made no move)."""
        now = int(self.clock())
        split = self.state.split
        wanted: dict[tuple[str, int], set[int]] = {}
        for key, (since, copies) in list(split.items()):
            if now - since > SPLIT_DAYS * 86400:
                del split[key]
                continue
            for folder, validity, msg_uid, _kind in copies:
                wanted.setdefault((folder, validity), set()).add(msg_uid)
        present, doubtful, renumbered = self._look_for(client, wanted)
        decidable: dict[str, list[tuple[str, int, int, str]]] = {}
        for key, (_since, copies) in list(split.items()):
            places = {c[:2] for c in copies}
            if places & doubtful:
                continue
            if places & renumbered:
                del split[key]
                continue
            decidable[key] = copies
        settled = settle(decidable, lambda c: c[:3] in present, lambda c: c[3])
        held = {key: split.pop(key) for key in settled}
        pending = {key: Sighting(self.user, uid, key, {c[3] for c in left}, where=left[0][:3])
                   for key, left in settled.items() if left}
        for key in self._flush(uid, pending, {}, report):
            split[key] = held[key]  # another watcher was at it: next cycle

    def _look_for(self, client, wanted: dict[tuple[str, int], set[int]]):
        """Which of the `wanted` UIDs (per folder and UIDVALIDITY) are still there: the
        present (folder, uidvalidity, uid), the places that cannot be examined now (in
        doubt) and those renumbered since."""
        present: set[tuple[str, int, int]] = set()
        doubtful: set[tuple[str, int]] = set()
        renumbered: set[tuple[str, int]] = set()
        for (folder, validity), uids in wanted.items():
            try:
                info = client.select_folder(folder, readonly=True)
            except imaplib.IMAP4.error:
                # Gone, or only unavailable now: ask the folder list which.
                if client.folder_exists(folder):
                    doubtful.add((folder, validity))
                continue
            if int(info.get(b"UIDVALIDITY", 0)) != validity:
                renumbered.add((folder, validity))
                continue
            ordered = sorted(uids)
            for start in range(0, len(ordered), SEARCH_UIDS):
                found = client.search(["UID", _uid_set(ordered[start:start + SEARCH_UIDS])])
                present.update((folder, validity, u) for u in found)
        self._unselect(client)
        return present, doubtful, renumbered

    @staticmethod
    def _unselect(client) -> None:
        if client._imap.state != "SELECTED":
            return
        if client.has_capability("UNSELECT"):
            client.unselect_folder()
        else:
            client.close_folder()  # after EXAMINE, CLOSE expunges nothing (RFC 3501 6.4.2)

    def _keys(self, client, uids: list[int], report: ImapReport):
        """(uid, message key) of these UIDs of the selected folder; unsigned mail only when
        it may be learned (then read whole for its digest)."""
        fetched = client.fetch(uids, [f"BODY.PEEK[HEADER.FIELDS ({self.header})]".encode()])
        unsigned = []
        for msg_uid in uids:
            data = fetched.get(msg_uid)
            if data is None:
                continue  # expunged meanwhile
            head = b""
            for name, value in data.items():
                if isinstance(name, bytes) and name.upper().startswith(b"BODY[HEADER.FIELDS"):
                    head = value or b""
            sig = mailfolders.signature_of(head + b"\r\n", self.header) if head.strip() else None
            if sig:
                yield msg_uid, sig
            else:
                unsigned.append(msg_uid)
        if not unsigned:
            return
        if not self.settings.watch_learn_unsigned:
            report.unsigned += len(unsigned)
            return
        # Whole messages, a bounded number at a time (they can be large).
        for start in range(0, len(unsigned), 50):
            part = unsigned[start:start + 50]
            bodies = client.fetch(part, [b"BODY.PEEK[]"])
            for msg_uid in part:
                raw = bodies.get(msg_uid, {}).get(b"BODY[]")
                if raw is not None:
                    yield msg_uid, mailfolders.digest_key(raw)

    def _flush(self, uid: int, pending: dict[str, Sighting], advanced: dict[str, Cursor],
               report: ImapReport) -> set[str]:
        """Decide the pending sightings (bulk reads first; only what trains is applied, one
        by one at `watch_rate`), then advance the cursors past them and save. Returns the
        keys whose training must be tried again."""
        held: dict[str, int] = {}  # folder -> lowest UID whose training must be tried again
        retry: set[str] = set()
        for decided in self.pipeline.decide(uid, list(pending.values())):
            for sighting, decision in decided:
                if decision.action == NOTHING:
                    if sighting.split:
                        self.state.split[sighting.key] = (
                            int(self.clock()),
                            [c for c in sighting.copies if c[3] in (SPAM, INNOCENT)])
                    continue
                self.pipeline.limiter.pace(self.sleep)
                # StorageUnavailableError ends the cycle before any cursor moves: all of it
                # is seen again.
                if not self.pipeline.train(sighting, report):
                    retry.add(sighting.key)
                    if sighting.where is not None:
                        folder, _validity, msg_uid = sighting.where
                        held[folder] = min(held.get(folder, msg_uid), msg_uid)
        pending.clear()
        for name, cursor in advanced.items():
            if name in held:  # look at the undecided message (and what follows) again
                cursor.last_uid = min(cursor.last_uid, held[name] - 1)
            self.state.cursors[name] = cursor
        advanced.clear()
        self.state.save(str(self.url))
        return retry

    def _read(self, sighting: Sighting) -> bytes | None:
        """The whole message at a sighting's UID, or None when it is gone or renumbered."""
        if sighting.where is None:
            return None
        folder, validity, msg_uid = sighting.where
        client = self.connect()
        info = client.select_folder(folder, readonly=True)
        if int(info.get(b"UIDVALIDITY", 0)) != validity:
            return None
        return client.fetch([msg_uid], [b"BODY.PEEK[]"]).get(msg_uid, {}).get(b"BODY[]")

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, interval: float, stop=None) -> None:
        """Cycle until `stop()` is true: at once when an idler wakes it, else every
        `interval` seconds. Server and storage failures are logged and retried."""
        stop = stop or (lambda: False)
        while not stop():
            try:
                self.cycle()
            except (imapurl.ImapError, StorageError) as exc:
                self.log(f"{exc}; trying again in {interval:g} s")
            if stop():
                break
            self.wake.wait(interval)
            self.wake.clear()

    def _start_idlers(self, names: list[str]) -> None:
        if not self.connect().has_capability("IDLE"):
            return
        for name in list(self.idlers):
            if name not in names or not self.idlers[name].is_alive():
                self.idlers.pop(name).stop()
        for name in names[:MAX_IDLERS]:
            if name not in self.idlers:
                idler = Idler(name, lambda: imapurl.connect(self.url, self.access, self.factory),
                              self.wake, lambda line: self.log(f"{self.account}: {line}"))
                self.idlers[name] = idler
                idler.start()

    def stop_idlers(self) -> None:
        idlers = list(self.idlers.values())
        self.idlers.clear()
        for idler in idlers:
            idler.stop()
        for idler in idlers:
            idler.join(timeout=IDLE_TICK + 5)
