"""The one exactly-once path of every watcher: sightings in, trainings out.

A watcher is an adapter that produces `Sighting`s: a message of one user, named by its key
(`spamsift.filter.engine.mailfolders.message_key`), just seen in new places (files with a new
base name in a Maildir folder, new UIDs in an IMAP folder). From there every watcher takes the
same path, through a `Pipeline`:

1. `Pipeline.decide`: the recorded classes, verdicts and records of what corpus training
   learned of the sightings are read in bulk (three queries per `BULK` keys) and each sighting goes through `spamsift.watchers.decide.decide`.
   What decides nothing is done with; a message seen in a spam and an innocent folder at once
   (`Sighting.split`) is kept by its watcher until `settle` finds one class left.
2. `Pipeline.train`: each sighting that trains is applied on its own by the `Applier` (fresh
   state, decided again, trained with the record's compare-and-set), never more than
   ``watch_rate`` a second (`RateLimiter`), with one error policy and one log line.
3. The watcher's `CycleReport` counts what was trained and says it in one line a cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from spamsift.filter.engine.errors import ConflictError, StorageError, StorageUnavailableError
from spamsift.filter.engine.store.base import WatchUpdate
from spamsift.filter.engine.watchstate import learned_class, record_batch
from spamsift.watchers.applier import Applier, learned_of, verdicts_of
from spamsift.watchers.decide import INNOCENT, SPAM, Decision, decide

BULK = 500  # keys per bulk read of records and verdicts

Copy = TypeVar("Copy")


class Sighting:
    """A message of `user` (store id `uid`) seen in new places: its `key`, the classes of those
    places (`seen_in`), where to read it (`where`) and every copy seen (`copies`, for `settle`).
    `where` and the copies are the watcher's own: file paths, or IMAP folders and UIDs."""

    __slots__ = ("user", "uid", "key", "seen_in", "where", "copies")

    def __init__(self, user: str, uid: int, key: str, seen_in=(), where=None) -> None:
        self.user = user
        self.uid = uid
        self.key = key
        self.seen_in: set[str] = set(seen_in)
        self.where = where
        self.copies: list = []

    @property
    def split(self) -> bool:
        """Seen in a spam and an innocent folder at once: `decide` says nothing until one
        class is left (see `settle`)."""
        return SPAM in self.seen_in and INNOCENT in self.seen_in


def settle(split: dict[str, list[Copy]], present: Callable[[Copy], bool],
           kind: Callable[[Copy], str]) -> dict[str, list[Copy]]:
    """Take out of `split` (message key -> its copies) the messages no longer in a spam and
    an innocent folder at once, each with its copies still `present` (in the class left; none
    when every copy is gone).

    Why a watcher keeps such messages: copies in both classes decide nothing (a client's
    COPY before its delete, or both found at a first start), and deleting one copy is no
    sighting, so the copy left would never be decided. The watcher looks for the copies each
    cycle and decides the message as seen where the copies left are."""
    settled: dict[str, list[Copy]] = {}
    for key, copies in list(split.items()):
        left = [copy for copy in copies if present(copy)]
        if {kind(copy) for copy in left} >= {SPAM, INNOCENT}:
            continue
        del split[key]
        settled[key] = left
    return settled


class RateLimiter:
    """At most `rate` trainings a second (0: no limit), as a token bucket holding one second's
    worth, so one user's bulk move cannot flood the database.

    The default rate (``watch_rate`` = 10 a second): a retrain of a SpamAssassin corpus message
    took 5.2 ms (4.0 ms CPU) on SQLite, so a watcher holds the write lock and a core at most
    ~5% of the time, and 5,000 messages moved at once are trained in about 8 minutes."""

    def __init__(self, rate: float, clock=time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = max(1.0, rate)
        self.filled_at = clock()

    def wait_time(self) -> float:
        """Seconds until the next training is allowed (0: now)."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        """Count one training (`wait_time` says when the next one is due)."""
        if self.rate > 0:
            self._refill()
            self.tokens -= 1

    def pace(self, sleep) -> None:
        """Sleep until a training is allowed, and count it."""
        wait = self.wait_time()
        if wait > 0:
            sleep(wait)
        self.take()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.filled_at) * self.rate)
        self.filled_at = now


class CycleReport:
    """What one cycle trained (`trained`: how many of each `Applied.action`) and how long it
    took; each watcher's report adds what its cycles count and its log `line`."""

    __slots__ = ("trained", "seconds")

    def __init__(self) -> None:
        self.trained: dict[str, int] = {}
        self.seconds = 0.0

    @property
    def active(self) -> bool:
        """Whether the cycle found or trained anything (idle cycles are logged rarely)."""
        return bool(self.trained)

    def trained_text(self) -> str:
        return ", ".join(f"{n} {action}" for action, n in sorted(self.trained.items())) or "none"

    def publish(self, metrics, scan_seconds: float) -> None:
        """Add this cycle to `metrics` (an engine.metrics.Metrics: ``watch --metrics``)."""
        metrics.scan_seconds.set(scan_seconds)
        for action, n in self.trained.items():
            metrics.trained.labels(action).inc(n)


class Pipeline:
    """Decides a watcher's sightings in bulk and trains them one at a time, exactly once.
    One per watcher (thread): it holds one store connection."""

    def __init__(self, settings, store, read: Callable[[Sighting], bytes | None], log,
                 clock=time.time, monotonic=time.monotonic) -> None:
        """`read(sighting)`: the message's bytes, or None when it is gone (only unsigned mail
        about to be learned is read). `clock` is wall time (records, signatures);
        `monotonic` paces the trainings."""
        self.settings = settings
        self.read = read
        self.log = log
        self.clock = clock
        self.limiter = RateLimiter(settings.watch_rate, monotonic)
        self.use_store(store)

    def use_store(self, store) -> None:
        """Work with another store connection from now on (after the old one failed)."""
        self.store = store
        self.applier = Applier(self.settings, store, clock=self.clock)

    def decide(self, uid: int, sightings: list[Sighting]
               ) -> Iterator[list[tuple[Sighting, Decision]]]:
        """Each sighting of user `uid` with its decision, `BULK` at a time (a chunk is decided
        before the next one is read). Raises `StorageError`."""
        learn_unsigned = self.settings.watch_learn_unsigned
        trust = self.settings.watch_trust_verdict
        for start in range(0, len(sightings), BULK):
            chunk = sightings[start:start + BULK]
            keys = [s.key for s in chunk]
            recorded = self.store.watch_states(uid, keys)
            verdicts = verdicts_of(self.store, uid, keys)
            learned = learned_of(self.store, uid, keys, verdicts)
            yield [(s, decide(s.seen_in, recorded.get(s.key), verdicts.get(s.key),
                              learn_unsigned, trust, learned_class(learned.get(s.key))))
                   for s in chunk]

    def train(self, sighting: Sighting, report: CycleReport) -> bool:
        """Apply one sighting, count it in `report` and log what it trained. False when it
        must be tried again later (its record kept changing: another watcher is at it); a
        store error for this message alone is logged and the sighting dropped (True).
        Raises `StorageUnavailableError`: nothing was done, try again after reconnecting."""
        try:
            done = self.applier.apply(sighting.user, sighting.uid, sighting.key,
                                      sighting.seen_in, lambda: self.read(sighting))
        except ConflictError as exc:
            self.log(f"{sighting.user}: {exc}")
            return False
        except StorageUnavailableError:
            raise
        except StorageError as exc:
            self.log(f"{sighting.user}: {sighting.key[:40]}: {exc}; skipped")
            return True
        report.trained[done.action] = report.trained.get(done.action, 0) + 1
        if done.action != "nothing":
            self.log(f"{sighting.user}: {sighting.key[:40]} {done.action} "
                     f"{done.decision.klass} ({done.decision.reason})")
        return True

    def record_first(self, uid: int, sightings: list[tuple[Sighting, str]]) -> list[Sighting]:
        """Record first sightings that train nothing (`RECORD` without
        ``watch_trust_verdict``: (sighting, class) pairs) in one transaction, not one
        training turn each (a first scan meets every message). Returns them all when another
        watcher recorded one meanwhile: they must then be trained one by one."""
        if not sightings:
            return []
        now = self.clock()
        updates = [WatchUpdate(s.key, None, klass, int(now)) for s, klass in sightings]
        try:
            self.store.commit(uid, record_batch(now, updates))
        except ConflictError:
            return [s for s, _klass in sightings]
        return []
