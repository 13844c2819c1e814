"""The Maildir watcher: learns from mail users move into and out of spam folders, on NFS too.

Each cycle stats ``new/`` and ``cur/`` of every folder of every mailbox and lists only the
directories whose mtime changed (a delivery, a move, a flag change or a deletion renames or
creates a directory entry, which is what changes a directory's mtime). In a changed folder a
file whose *base name* (`mailfolders.base_name`, the part before ``:2,``) the folder did not have
at the last listing is a sighting: a new delivery, or a message moved or copied in. Flag
changes and ``new/`` -> ``cur/`` keep the base name, deletions remove one: neither is read.
Sightings are read for their key (`mailfolders.file_key`) and take the watchers' one
exactly-once path (`spamsift.watchers.core`): decided in bulk, and only those that train are
queued; the queue is served round-robin per user at ``watch_rate`` trainings a second
(`core.RateLimiter`), each decided again with fresh state and applied with compare-and-set.

Why not watchdog's `PollingObserver`: its `DirectorySnapshot` stats every file of the tree
each cycle and keeps a path and stat result per file. Measured by benchmarks/watch_tree.py on
the 1,000 mailboxes x 1,000 messages tree: snapshots of 100 mailboxes took 0.57 s CPU each and
186 MB for the two a polling cycle holds, so ~5.7 s CPU per cycle and ~1.9 GB for the whole
tree; this scanner makes ~6,000 stat calls per idle cycle (0.03 s CPU) and keeps 8 bytes per
message (a sorted array of base-name hashes per folder): 29 MB resident in all. Mtimes on NFS
are attribute-cached (``acdirmax``) and may have one-second resolution, so a directory whose
mtime is within `MTIME_SLACK` seconds of its listing is listed again next cycle.

inotify (watchdog's `Observer`, ``--inotify``) only wakes the loop early on local
filesystems; the polling scan is always the source of truth, because inotify does not see
changes other NFS clients make.

The watcher never writes to a mailbox: it opens message files read-only, and only regular
files. It reads with more rights than a mailbox's user, so nothing below the mailbox is
followed through a symlink (folder, ``cur/``, ``new/`` or message: `mailfolders.read_message`
opens each level relative to the one before), and a ``~/Maildir`` not owned by its user
(passwd's uid) is skipped; the user's own is read by its resolved path, with no symlink in
it followed (`Scanner.strict`). Files still in ``tmp/`` are never read; a file that vanishes
between listing and reading is forgotten so that its next name is seen again; unreadable files
and mailboxes deleted mid-scan are logged and skipped.
"""

from __future__ import annotations

import os
import re
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from hashlib import blake2b
from typing import NamedTuple

from spamsift.filter.engine import mailfolders
from spamsift.filter.engine.errors import InvalidUserError, StorageError, StorageUnavailableError
from spamsift.watchers.core import CycleReport, Pipeline, RateLimiter, Sighting, settle
from spamsift.watchers.decide import IGNORED, NOTHING, RECORD
from spamsift.watchers.heartbeat import Heartbeat

MTIME_SLACK = 2.0       # seconds: list a directory again while its mtime is this recent
UNKNOWN_USER_RECHECK = 60.0  # seconds before asking the store again about a user it lacks
PASSWD_RECHECK = 300.0  # seconds between passwd enumerations for a ~/Maildir template
# Seconds between saves of the scanner state (and at stop). A start after a crash lists the
# folders changed since the last save; saving 1M names writes 8 MB (well under a second).
SAVE_EVERY = 300.0


# -- where the mailboxes are ---------------------------------------------------------------
class Template:
    """A mailbox path template relative to a root (``%d/%u/Maildir``): %u the local part,
    %d the domain, %U the whole user name, * any name; ``~/X``: X in each passwd home."""

    def __init__(self, text: str) -> None:
        from spamsift.filter.engine.errors import ConfigError

        self.text = text
        self.home_relative = text.startswith("~/")
        body = text[2:] if self.home_relative else text.strip("/")
        parts = [p for p in body.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ConfigError(f"watch_path_template {text!r}: needs a relative path such as "
                              "%d/%u/Maildir or ~/Maildir")
        if not self.home_relative and not any("%u" in p or "%U" in p for p in parts):
            raise ConfigError(f"watch_path_template {text!r} names no user (%u or %U)")
        self.parts: list[tuple[str, re.Pattern | None]] = []
        for part in parts:
            if "%" in part or "*" in part:
                pattern = ""
                i = 0
                while i < len(part):
                    two = part[i:i + 2]
                    if two in ("%u", "%d", "%U"):
                        group = {"%u": "u", "%d": "d", "%U": "U"}[two]
                        if f"(?P<{group}>" in pattern:
                            pattern += f"(?P={group})"
                        else:
                            pattern += f"(?P<{group}>[^/]+?)"
                        i += 2
                    elif part[i] == "*":
                        pattern += "[^/]*"
                        i += 1
                    else:
                        pattern += re.escape(part[i])
                        i += 1
                self.parts.append((part, re.compile(pattern + r"\Z")))
            else:
                self.parts.append((part, None))

    @staticmethod
    def user_of(bindings: dict[str, str]) -> str:
        if bindings.get("U"):
            return bindings["U"]
        if bindings.get("d"):
            return f"{bindings['u']}@{bindings['d']}"
        return bindings["u"]


class MailboxFinder:
    """Finds (user, mailbox path) under roots; re-lists a directory only when its mtime
    changed, so an idle cycle costs one stat per directory on the template's path."""

    def __init__(self, roots: list[str], template: Template, stat=os.stat, listdir=os.listdir,
                 clock=time.monotonic, log=None, passwd=None) -> None:
        """`passwd()` lists (name, home[, uid]) of the system's users (default:
        pwd.getpwall)."""
        self.roots = [os.path.abspath(r) for r in roots]
        self.template = template
        self.stat = stat
        self.listdir = listdir
        self.clock = clock
        self.log = log or (lambda line: None)
        self._listings: dict[str, tuple[int, list[str]]] = {}
        self._passwd: tuple[float, list[tuple[str, str, int | None]]] | None = None
        self._invalid: set[str] = set()
        self.passwd = passwd or _passwd_entries

    def _entries(self, path: str) -> list[str] | None:
        try:
            mtime = self.stat(path).st_mtime_ns
        except OSError:
            self._listings.pop(path, None)
            return None
        cached = self._listings.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            names = sorted(n for n in self.listdir(path) if not n.startswith("."))
        except OSError as exc:
            self.log(f"cannot list {path}: {exc.strerror or exc}")
            return None
        self._listings[path] = (mtime, names)
        return names

    def find(self) -> dict[str, str]:
        """mailbox path -> user name."""
        found: dict[str, str] = {}
        if self.template.home_relative:
            for user, home, owner in self._passwd_homes():
                path = os.path.join(home, *(p for p, _ in self.template.parts))
                if any(path.startswith(r.rstrip("/") + "/") for r in self.roots):
                    try:
                        real = os.path.realpath(path)
                        box_owner = self.stat(real).st_uid
                        if owner is None:
                            owner = self.stat(home).st_uid
                    except OSError:
                        continue  # no such mailbox (yet)
                    if box_owner != owner:
                        # A user can point ~/Maildir anywhere, and the watcher (root) would
                        # read and learn what the user cannot: only their own mailbox counts.
                        if path not in self._invalid:
                            self._invalid.add(path)
                            self.log(f"skipping {path}: not owned by {user}")
                        continue
                    # Its resolved path is what is read (`Scanner.strict`: no symlink in
                    # it is followed), so swapping ~/Maildir later changes nothing.
                    self._add(found, real, user)
            return found
        for root in self.roots:
            self._walk(root, 0, {}, found)
        return found

    def _walk(self, path: str, depth: int, bindings: dict[str, str],
              found: dict[str, str]) -> None:
        if depth == len(self.template.parts):
            self._add(found, path, self.template.user_of(bindings))
            return
        entries = self._entries(path)
        if entries is None:
            return
        text, pattern = self.template.parts[depth]
        if pattern is None:
            if text in entries:
                self._walk(os.path.join(path, text), depth + 1, bindings, found)
            return
        for name in entries:
            match = pattern.match(name)
            if match is None:
                continue
            merged = dict(bindings)
            conflict = False
            for key, value in match.groupdict().items():
                if merged.setdefault(key, value) != value:
                    conflict = True
            if not conflict:
                self._walk(os.path.join(path, name), depth + 1, merged, found)

    def _add(self, found: dict[str, str], path: str, user: str) -> None:
        from spamsift.filter.engine import users

        try:
            found[path] = users.validate(user)
        except InvalidUserError as exc:
            if path not in self._invalid:
                self._invalid.add(path)
                self.log(f"skipping {path}: {exc}")

    def _passwd_homes(self) -> list[tuple[str, str, int | None]]:
        """(name, home, uid) of the system's users; uid None when `passwd` gives none (the
        home's owner stands in for it)."""
        now = self.clock()
        if self._passwd is None or now - self._passwd[0] > PASSWD_RECHECK:
            entries = [(e[0], e[1], e[2] if len(e) > 2 else None) for e in self.passwd()]
            self._passwd = (now, [e for e in entries if e[1] and e[1] != "/"])
        return self._passwd[1]


def _passwd_entries() -> list[tuple[str, str, int]]:
    import pwd

    return [(p.pw_name, p.pw_dir, p.pw_uid) for p in pwd.getpwall()]


# -- what changed in a mailbox ---------------------------------------------------------------
def _holds(known: array, h: int) -> bool:
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
        self.recheck = False


class MailboxState:
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

    `stat` and `listdir` are seams (as in watchdog's polling emitter); `clock` is wall time,
    compared with directory mtimes."""

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
        self.restored: dict[str, FolderState] = {}  # loaded by `load`, used on first sight
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

    # Saved state -------------------------------------------------------------------------
    STATE_VERSION = 1

    def save(self, path: str, excluded) -> None:
        """Write what each folder held at its last listing to `path` (atomically), without
        the base names of `excluded` files (queued, not yet trained: after a restart they
        must be seen again). A later `load` makes the first scan list only what changed."""
        import marshal

        drop: dict[str, set[int]] = {}
        for file_path in excluded:
            folder = os.path.dirname(os.path.dirname(file_path))
            drop.setdefault(folder, set()).add(
                name_hash(mailfolders.base_name(os.path.basename(file_path))))
        folders = {}
        for box in self.mailboxes.values():
            for state in box.folders.values():
                if state.mtimes is None:
                    continue
                known = state.known
                if state.path in drop:
                    known = array("q", (h for h in known if h not in drop[state.path]))
                folders[state.path] = (state.kind, state.mtimes, state.recheck or
                                       state.path in drop, known.tobytes())
        data = marshal.dumps((self.STATE_VERSION, folders))
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

    def load(self, path: str) -> int:
        """Take over the folder states saved by `save`; how many. A missing, foreign or
        damaged file is ignored (the first scan then reads every message, as without)."""
        import marshal

        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_uid != os.getuid() or st.st_mode & 0o022:
                    self.log(f"{path}: not ours or writable by others; ignored")
                    return 0
                version, folders = marshal.load(fh)
            if version != self.STATE_VERSION or not isinstance(folders, dict):
                return 0
            restored = {}
            for folder_path, (kind, mtimes, recheck, known) in folders.items():
                state = FolderState(os.path.basename(folder_path), folder_path, kind)
                state.mtimes = tuple(mtimes)
                state.recheck = bool(recheck)
                state.known = array("q")
                state.known.frombytes(known)
                restored[folder_path] = state
        except FileNotFoundError:
            return 0
        except (OSError, EOFError, ValueError, TypeError) as exc:
            self.log(f"{path}: unreadable scanner state ({exc}); scanning everything")
            return 0
        self.restored = restored
        return len(restored)

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
                                         self.settings.ignored_folders)
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
        for sub, name in mailfolders.message_files(state.path):
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
                                                  and _holds(copy[0].known, copy[1])),
                         lambda copy: copy[0].kind)
        left = [copy for copies in settled.values() for copy in copies]
        self._forget_hashes((state, h) for state, h, _path in left)
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
        Scanner._forget_hashes((state, name_hash(mailfolders.base_name(name)))
                               for state, _sub, name in arrivals)

    @staticmethod
    def _forget_hashes(pairs) -> None:
        """Drop (folder state, base-name hash) pairs from the folders' listings."""
        gone: dict[int, tuple[FolderState, set[int]]] = {}
        for state, h in pairs:
            gone.setdefault(id(state), (state, set()))[1].add(h)
        for state, hashes in gone.values():
            state.known = array("q", (h for h in state.known if h not in hashes))
            state.recheck = True

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


# -- training, at a bounded rate ---------------------------------------------------------------
class TrainingQueue:
    """Sightings waiting to be trained: one FIFO per user, served round-robin, at most as
    fast as `limiter` allows, so one user's bulk move neither floods the database nor delays
    another user's single drag.

    A newer sighting of a queued message replaces the older one in place: a move out and
    back before its turn is decided once, from where the message ends up (net change)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.users: OrderedDict[int, OrderedDict[str, Sighting]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(q) for q in self.users.values())

    def __contains__(self, uid_key: tuple[int, str]) -> bool:
        queue = self.users.get(uid_key[0])
        return queue is not None and uid_key[1] in queue

    def __iter__(self):
        return (sighting for queue in self.users.values() for sighting in queue.values())

    def put(self, sighting: Sighting) -> None:
        self.users.setdefault(sighting.uid, OrderedDict())[sighting.key] = sighting

    def wait_time(self) -> float:
        """Seconds until `take` may return something (0: now)."""
        return self.limiter.wait_time() if self.users else float("inf")

    def take(self) -> Sighting | None:
        if not self.users or self.wait_time() > 0:
            return None
        self.limiter.take()
        uid, queue = next(iter(self.users.items()))
        _key, sighting = queue.popitem(last=False)
        del self.users[uid]
        if queue:
            self.users[uid] = queue  # to the back of the round
        return sighting


# -- the loop -------------------------------------------------------------------------------------
class Watcher:
    """Scan, queue, train; `cycle` once or `run` until stopped."""

    def __init__(self, settings, store, roots: list[str], template: str | None = None,
                 stat=os.stat, listdir=os.listdir, clock=time.time,
                 monotonic=time.monotonic, sleep=time.sleep, log=None,
                 state_file: str | None = None) -> None:
        """`state_file`: where the scanner state is kept between runs (see `save_state`)."""
        self.settings = settings
        self.log = log or (lambda line: None)
        self.pipeline = Pipeline(settings, store, self._read, self.log, clock, monotonic)
        self.finder = MailboxFinder(roots, Template(template or settings.watch_path_template),
                                    stat, listdir, monotonic, self.log)
        self.scanner = Scanner(self.finder, settings, self.pipeline, stat, listdir, clock,
                               self.log)
        self.queue = TrainingQueue(self.pipeline.limiter)
        self.scanner.queued = lambda uid, key: (uid, key) in self.queue
        self.monotonic = monotonic
        self.sleep = sleep
        self.wake: InotifyWaker | None = None  # wakes the loop early, when asked for
        self.stopped = None  # callable: true once the loop should end
        self.failed_storage = False  # the last cycle found the store unavailable
        self.state_file = state_file
        self.saved_at = monotonic()
        self.heartbeat = Heartbeat(monotonic)
        self.metrics = None  # an engine.metrics.Metrics, with watch --metrics
        if state_file:
            restored = self.scanner.load(state_file)
            if restored:
                self.log(f"scanner state of {restored} folders from {state_file}")
        self.cycles = 0

    def scan(self) -> MaildirReport:
        report = MaildirReport()
        started = self.monotonic()
        for sighting in self.scanner.scan(report, self.stopped):
            self.queue.put(sighting)
            report.queued += 1
        report.seconds = self.monotonic() - started
        if isinstance(self.scanner.failed, StorageUnavailableError):
            self.failed_storage = True
        return report

    def train_one(self, report: MaildirReport) -> bool:
        """Train the next queued sighting if the rate allows; False when none was due."""
        sighting = self.queue.take()
        if sighting is None:
            return False

        try:
            if not self.pipeline.train(sighting, report):
                self.queue.put(sighting)  # another watcher is at it: look again later
        except StorageUnavailableError as exc:
            self.log(f"{sighting.user}: storage unavailable ({exc}); will retry")
            self.queue.put(sighting)
            raise
        return True

    def _read(self, sighting: Sighting) -> bytes | None:
        """The bytes of a sighting's first file still there, or None."""
        files = sighting.where
        for path in files.paths.values():
            try:
                return mailfolders.read_message(path, self.settings.max_message_size or None,
                                                files.mailbox, self.scanner.strict)
            except OSError:
                continue
        return None

    def cycle(self, until: float | None = None) -> MaildirReport:
        """One scan, then training until `until` (monotonic; None: until the queue is
        empty, at the configured rate)."""
        self.cycles += 1
        self.failed_storage = False
        report = self.scan()
        scanned = report.seconds
        started = self.monotonic() - report.seconds
        while len(self.queue) and not (self.stopped is not None and self.stopped()):
            wait = self.queue.wait_time()
            if until is not None and self.monotonic() + wait >= until:
                break
            if wait > 0:
                self.sleep(wait)
            try:
                self.train_one(report)
            except StorageUnavailableError:
                self.failed_storage = True
                break
        report.seconds = self.monotonic() - started
        if self.heartbeat.due(report.active or bool(len(self.queue))):
            self.log(report.line(len(self.queue)))
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self.queue))
            report.publish(self.metrics, scanned)
        return report

    @property
    def store(self):
        """The store connection in use (`use_store` replaces it)."""
        return self.pipeline.store

    def use_store(self, store) -> None:
        """Work with another store connection from now on (after the old one failed)."""
        self.pipeline.use_store(store)

    def save_state(self) -> None:
        """Save the scanner state (`state_file`), leaving out what is still queued."""
        if not self.state_file:
            return
        excluded = [path for sighting in self.queue for path in sighting.where.paths.values()]
        excluded += self.scanner.split_paths()
        try:
            self.scanner.save(self.state_file, excluded)
        except OSError as exc:
            self.log(f"cannot save scanner state {self.state_file}: {exc.strerror or exc}")

    def run(self, interval: float, stop=None, reopen=None) -> None:
        """Cycle every `interval` seconds until `stop()` is true (inotify wakes it early).

        `reopen()` returns a new store connection; it replaces the current one after the
        store was unavailable (MySQL closes connections idle for ``wait_timeout``)."""
        self.stopped = stop
        while stop is None or not stop():
            deadline = self.monotonic() + interval
            try:
                self.cycle(until=deadline)
                failed = self.failed_storage
            except StorageError as exc:
                self.log(f"storage: {exc}; next cycle in {interval:.0f} s")
                failed = isinstance(exc, StorageUnavailableError)
            if self.state_file and self.monotonic() - self.saved_at >= SAVE_EVERY:
                self.save_state()
                self.saved_at = self.monotonic()
            if failed and reopen is not None:
                try:
                    old, fresh = self.store, reopen()
                    self.use_store(fresh)
                    old.close()
                except StorageError as exc:
                    self.log(f"storage: cannot reconnect: {exc}")
            if self.wake is not None:
                self.wake.watch(list(self.scanner.mailboxes))
            left = deadline - self.monotonic()
            if left > 0:
                if self.wake is not None:
                    self.wake.wait(left)
                else:
                    self.sleep(left)


class InotifyWaker:
    """Wakes the loop early when a watched mailbox changes (local filesystems only).

    watchdog's inotify observer, one recursive watch per mailbox; only a wake-up signal: the
    next scan finds what changed."""

    def __init__(self) -> None:
        import threading

        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.event = threading.Event()
        waker = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                # A file being written in a folder's tmp/ is not mail yet.
                src = os.fsdecode(event.src_path)
                if os.path.basename(os.path.dirname(src)) != "tmp":
                    waker.event.set()

        self.handler = Handler()
        self.observer = Observer()
        self.observer.daemon = True
        self.watches: dict = {}
        self.observer.start()

    def watch(self, paths: list[str]) -> None:
        for path in set(self.watches) - set(paths):
            try:
                self.observer.unschedule(self.watches.pop(path))
            except (KeyError, OSError):
                pass
        for path in set(paths) - set(self.watches):
            try:
                self.watches[path] = self.observer.schedule(self.handler, path, recursive=True)
            except OSError:
                pass  # out of inotify watches, or gone: polling still covers it

    def wait(self, timeout: float) -> bool:
        """Sleep until a change (True) or `timeout` (False)."""
        woken = self.event.wait(timeout)
        self.event.clear()
        return woken

    def stop(self) -> None:
        self.observer.stop()
