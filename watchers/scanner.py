"""The Maildir scanner: sightings from the mailboxes a `MailboxFinder` finds, statting only
directories.

Each cycle stats ``new/`` and ``cur/`` of every folder of every mailbox and lists only the
directories whose mtime changed (a delivery, a move, a flag change or a deletion renames or
creates a directory entry, which is what changes a directory's mtime). In a changed folder a
file whose *base name* (`mailfolders.base_name`, the part before ``:2,``) the folder did not
have at the last listing is a sighting: a new delivery, or a message moved or copied in. Flag
changes and ``new/`` -> ``cur/`` keep the base name, deletions remove one: neither is read.
Sightings are read for their key (`mailfolders.file_key`) and decided in bulk
(`core.Pipeline.decide`); the scanner passes on those that train.

Why not watchdog's `PollingObserver`: its `DirectorySnapshot` stats every file of the tree
each cycle and keeps a path and stat result per file. Measured by benchmarks/watch_tree.py on
the 1,000 mailboxes x 1,000 messages tree: snapshots of 100 mailboxes took 0.57 s CPU each and
186 MB for the two a polling cycle holds, so ~5.7 s CPU per cycle and ~1.9 GB for the whole
tree; this scanner makes ~6,000 stat calls per idle cycle (0.03 s CPU) and keeps 8 bytes per
message (`scanstate`): 29 MB resident in all. Mtimes on NFS are attribute-cached
(``acdirmax``) and may have one-second resolution, so a directory whose mtime is within
`MTIME_SLACK` seconds of its listing is listed again next cycle.

It reads with more rights than a mailbox's user, so nothing below the mailbox is followed
through a symlink (folder, ``cur/``, ``new/`` or message: `mailfolders.read_message` opens each
level relative to the one before); a user's own ``~/Maildir`` is read by its resolved path,
with no symlink in it followed (`Scanner.strict`). Files still in ``tmp/`` are never read; a
file that vanishes between listing and reading is forgotten so that its next name is seen
again; unreadable files and mailboxes deleted mid-scan are logged and skipped.
"""

from __future__ import annotations

import os
import time
from array import array
from typing import NamedTuple

from spamsift.filter.engine import mailfolders
from spamsift.filter.engine.errors import StorageError
from spamsift.watchers import scanstate
from spamsift.watchers.core import CycleReport, Pipeline, Sighting, settle
from spamsift.watchers.decide import IGNORED, NOTHING, RECORD
from spamsift.watchers.finder import MailboxFinder
from spamsift.watchers.scanstate import FolderState, MailboxState, holds, name_hash

MTIME_SLACK = 2.0       # seconds: list a directory again while its mtime is this recent
UNKNOWN_USER_RECHECK = 60.0  # seconds before asking the store again about a user it lacks


class Files(NamedTuple):
    """Where a Maildir sighting is (`Sighting.where`): its mailbox (nothing below it is read
    through a symlink) and a file per folder class it was seen in."""

    mailbox: str
    paths: dict[str, str]


class MaildirReport(CycleReport):
    __slots__ = ("mailboxes", "folders", "listed", "files", "unreadable", "vanished",
                 "queued")

    def __init__(self) -> None:
        super().__init__()
        self.mailboxes = self.folders = self.listed = self.files = 0
        self.unreadable = self.vanished = self.queued = 0

    @property
    def active(self) -> bool:
        return bool(self.files or self.queued or self.trained or self.unreadable
                    or self.vanished)

    def line(self, waiting: int) -> str:
        return (f"watch: {self.mailboxes} mailboxes, {self.folders} folders, {self.listed} "
                f"changed listed, {self.files} new files ({self.unreadable} unreadable, "
                f"{self.vanished} vanished), {self.queued} queued; trained: "
                f"{self.trained_text()}; {waiting} waiting; {self.seconds:.2f} s")



class Scanner:
    """Finds sightings in the mailboxes of a `MailboxFinder`, statting only directories.

    `stat` and `listdir` are seams (as in watchdog's polling emitter): every directory stat
    and listing of a scan goes through them (``cur/`` and ``new/`` are listed by descriptor,
    opened without following a symlink). `clock` is wall time, compared with directory
    mtimes."""

    def __init__(self, finder: MailboxFinder, settings, pipeline: Pipeline, stat=os.stat,
                 listdir=os.listdir, clock=time.time, log=None) -> None:
        self.finder = finder
        self.settings = settings
        self.pipeline = pipeline
        self.stat = stat
        self.listdir = listdir
        self.clock = clock
        self.log = log or (lambda line: None)
        self.mailboxes: dict[str, MailboxState] = {}
        self.header = settings.header_prefix + "-Signature"
        self.queued = lambda uid, key: False  # is this message waiting to be trained?
        self.failed: StorageError | None = None  # what stopped the last scan, if anything
        # Folder states saved by an earlier run (`scanstate.load`), taken at first sight.
        self.restored: dict[str, FolderState] = {}
        # Users' own ~/Maildir (resolved by the finder): no part of its path is followed
        # through a symlink when a message is read (`mailfolders.read_message`'s strict).
        self.strict = bool(getattr(getattr(finder, "template", None), "home_relative", False))

    # One cycle ------------------------------------------------------------------------------
    def scan(self, report: MaildirReport, stop=None) -> list[Sighting]:
        """Sightings worth deciding in every mailbox (`stop()` true: end early; the
        mailboxes not reached keep their state and are scanned next time)."""
        self.failed = None
        found = self.finder.find()
        for path in list(self.mailboxes):
            if path not in found:
                del self.mailboxes[path]
        sightings: list[Sighting] = []
        for path, user in found.items():
            if stop is not None and stop():
                break
            box = self.mailboxes.get(path)
            if box is None or box.user != user:
                box = self.mailboxes[path] = MailboxState(path, user)
            arrivals: list[tuple] = []
            try:
                if not self._known_user(box):
                    continue
                report.mailboxes += 1
                arrivals = self._scan_mailbox(box, report)
                if box.split:
                    for state in self._settle(box):
                        arrivals += self._scan_folder(state, report)
                if arrivals:
                    sightings += self._sightings(box, arrivals, report)
            except StorageError as exc:
                # Not decided: see these files again next cycle; keep what was found.
                self.forget_all(arrivals)
                self.log(f"storage: {exc}; scan resumes next cycle")
                self.failed = exc
                break
        return sightings

    def _known_user(self, box: MailboxState) -> bool:
        """Only users the store knows are watched: a user never filtered has no signatures
        and nothing to correct. Asked again every `UNKNOWN_USER_RECHECK` seconds."""
        if box.uid is not None:
            return True
        now = self.clock()
        if box.unknown_since is not None and now - box.unknown_since < UNKNOWN_USER_RECHECK:
            return False
        box.uid = self.pipeline.store.uid(box.user, create=False)
        box.unknown_since = None if box.uid is not None else now
        return box.uid is not None

    def _scan_mailbox(self, box: MailboxState, report: MaildirReport) -> list[tuple]:
        try:
            mtime = self.stat(box.path).st_mtime_ns
        except OSError:
            self.log(f"{box.path}: mailbox vanished; skipped")
            box.folders.clear()
            box.mtime = None
            return []
        if mtime != box.mtime or not box.folders:
            try:
                listed = mailfolders.folders(box.path, self.settings.spam_folders,
                                             self.settings.ignored_folders, self.listdir)
            except OSError as exc:
                self.log(f"{box.path}: cannot list: {exc.strerror or exc}; skipped")
                return []
            old = box.folders
            box.folders = {}
            for folder in listed:
                state = old.get(folder.path) or self.restored.pop(folder.path, None)
                if state is None or state.kind != folder.kind:
                    state = FolderState(folder.name, folder.path, folder.kind)
                box.folders[folder.path] = state
            box.mtime = mtime
        arrivals: list[tuple] = []
        for state in box.folders.values():
            report.folders += 1
            arrivals += self._scan_folder(state, report)
        return arrivals

    def _scan_folder(self, state: FolderState, report: MaildirReport) -> list[tuple]:
        """(folder state, subdir, file name) of files whose base name is new here."""
        if state.kind == IGNORED:
            return []  # nothing seen there trains: not even statted
        mtimes = []
        for sub in mailfolders.SUBDIRS:
            try:
                mtimes.append(self.stat(os.path.join(state.path, sub)).st_mtime_ns)
            except OSError:
                mtimes.append(None)
        mtimes_t = tuple(mtimes)
        if mtimes_t == state.mtimes and not state.recheck:
            return []
        listed_at = self.clock()
        report.listed += 1
        current: dict[int, tuple[str, str]] = {}
        for sub, name in mailfolders.message_files(state.path, self.listdir):
            current[name_hash(mailfolders.base_name(name))] = (sub, name)
        old = set(state.known)
        arrivals = [(state, sub, name) for h, (sub, name) in current.items() if h not in old]
        state.known = array("q", sorted(current))
        state.mtimes = mtimes_t
        newest = max((m for m in mtimes if m is not None), default=0)
        state.recheck = newest >= (listed_at - MTIME_SLACK) * 1e9
        return arrivals

    def _settle(self, box: MailboxState) -> list[FolderState]:
        """The folders to list again for the split messages of `box` now in one class only
        (`core.settle`; a copy counts while its base name was in its folder at the last
        listing): the copies left are forgotten, so listing their folders again sees them as
        arrivals, and the move is decided."""
        settled = settle(box.split, lambda copy: (box.folders.get(copy[0].path) is copy[0]
                                                  and holds(copy[0].known, copy[1])),
                         lambda copy: copy[0].kind)
        left = [copy for copies in settled.values() for copy in copies]
        scanstate.forget((state, h) for state, h, _path in left)
        return list({id(state): state for state, _h, _path in left}.values())

    def split_paths(self) -> list[str]:
        """Files of messages still in spam and innocent folders at once: left out of the
        saved state, so that after a restart they are seen (together) again."""
        return [path for box in self.mailboxes.values() for copies in box.split.values()
                for _state, _h, path in copies]

    def forget(self, state: FolderState, name: str) -> None:
        """Drop a file's base name so it counts as new at the next listing (it vanished
        between listing and reading: renamed by a flag change or moved on)."""
        self.forget_all([(state, "", name)])

    @staticmethod
    def forget_all(arrivals: list[tuple]) -> None:
        """`forget` for many (folder state, subdir, name), one pass per folder."""
        scanstate.forget((state, name_hash(mailfolders.base_name(name)))
                         for state, _sub, name in arrivals)

    def _sightings(self, box: MailboxState, arrivals: list[tuple],
                   report: MaildirReport) -> list[Sighting]:
        assert box.uid is not None
        by_key: dict[str, Sighting] = {}
        for state, sub, name in arrivals:
            path = os.path.join(state.path, sub, name)
            report.files += 1
            try:
                key = mailfolders.file_key(path, self.header, self.settings.max_message_size,
                                           below=box.path, strict=self.strict)
            except FileNotFoundError:
                report.vanished += 1
                self.forget(state, name)
                continue
            except OSError as exc:
                report.unreadable += 1
                self.log(f"{path}: unreadable ({exc.strerror or exc}); skipped")
                continue
            if key is None:
                report.unreadable += 1
                self.log(f"{path}: unsigned and over max_message_size; skipped")
                continue
            sighting = by_key.get(key)
            if sighting is None:
                sighting = by_key[key] = Sighting(box.user, box.uid, key,
                                                  where=Files(box.path, {}))
            sighting.seen_in.add(state.kind)
            sighting.where.paths.setdefault(state.kind, path)
            sighting.copies.append((state, name_hash(mailfolders.base_name(name)), path))
        out: list[Sighting] = []
        for decided in self.pipeline.decide(box.uid, list(by_key.values())):
            records = []
            for sighting, decision in decided:
                # A message already queued is always passed on: its newer sighting replaces
                # the queued one (moved back before its turn: then nothing is trained).
                queued = self.queued(box.uid, sighting.key)
                if decision.action == NOTHING and not queued:
                    if sighting.split:
                        box.split[sighting.key] = sighting.copies
                    continue
                if decision.action == RECORD and not queued:
                    records.append((sighting, decision.klass))
                else:
                    out.append(sighting)
            out += self.pipeline.record_first(box.uid, records)
        return out
