"""The Maildir watcher: learns from mail users move into and out of spam folders, on NFS too.

Each cycle the `Scanner` (`spamsift.watchers.scanner`) finds the messages that appeared in
the folders of the mailboxes under the roots (`spamsift.watchers.finder`), statting only
directories; the sightings it decides in bulk (`spamsift.watchers.core`) and that train are
queued here. The queue is served round-robin per user at ``watch_rate`` trainings a second
(`core.RateLimiter`), each decided again with fresh state and applied with compare-and-set.
The scanner's state is saved every `SAVE_EVERY` seconds and at stop (`scanstate`), so a
restart lists only the folders that changed meanwhile.

inotify (watchdog's `Observer`, ``--inotify``, `spamsift.watchers.inotify`) only wakes the
loop early on local filesystems; the polling scan is always the source of truth, because
inotify does not see changes other NFS clients make.

The watcher never writes to a mailbox: it opens message files read-only, and only regular
files, never through a symlink below the mailbox (see `spamsift.watchers.scanner`).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict

from spamsift.filter.engine import mailfolders
from spamsift.filter.engine.errors import StorageError, StorageUnavailableError
from spamsift.watchers import scanstate
from spamsift.watchers.core import Pipeline, RateLimiter, Sighting
from spamsift.watchers.finder import MailboxFinder, Template
from spamsift.watchers.heartbeat import Heartbeat
from spamsift.watchers.inotify import InotifyWaker
from spamsift.watchers.scanner import MaildirReport, Scanner

# Seconds between saves of the scanner state (and at stop). A start after a crash lists the
# folders changed since the last save; saving 1M names writes 8 MB (well under a second).
SAVE_EVERY = 300.0


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
            self.scanner.restored = scanstate.load(state_file, self.log)
            if self.scanner.restored:
                self.log(f"scanner state of {len(self.scanner.restored)} folders from "
                         f"{state_file}")
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
            scanstate.save(self.state_file, self.scanner.mailboxes.values(), excluded)
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
