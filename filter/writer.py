"""The daemon's writer process: what inbound messages learned, written off the reply path.

`Writer` (in the daemon) queues each message's `Batch`; `_write_batches` (a process of its
own) commits them in arrival order, grouped into few transactions. What a crash can lose,
and why this is a process and not a thread, is in `Writer`'s docstring.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from spamsift.filter.engine import log
from spamsift.filter.engine.errors import SpamsiftError


def _write_batches(inbox, storage_url: str, timeout: float, use_syslog: bool,
                   parent: int | None = None, queued=None, done=None) -> None:
    """The writer process: commit queued batches in order, in groups, until None arrives,
    or until the daemon (`parent`) is gone and nothing is queued any more (a SIGKILLed daemon
    left it behind for ever).

    Items are (sequence number, uid, batch). A group is what arrives within `GROUP_WINDOW`
    of its first batch, at most `GROUP_BATCHES` batches or `GROUP_ROWS` rows, committed in
    one transaction: a page that several messages change is written once, and one WAL commit
    serves them all. `queued` (a shared counter) is lowered by each batch's `_weight` as it is
    taken; `done` (shared) is raised to the last sequence number written (or given up on)."""
    import queue

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    # Learning can wait; replies cannot. On 2 cores the writer's ~10 ms of CPU a message
    # competed with the next client and the daemon (median 26.0 ms before this).
    os.nice(10)
    store = None
    stopping = False
    while not stopping:
        try:
            item = inbox.get(timeout=ORPHAN_CHECK)
        except queue.Empty:
            if parent is not None and os.getppid() != parent:
                break
            continue
        if item is None:
            break
        group = [item]
        rows = _weight(item[2])
        window_ends = time.monotonic() + GROUP_WINDOW
        while len(group) < GROUP_BATCHES and rows < GROUP_ROWS:
            left = window_ends - time.monotonic()
            if left <= 0:
                break
            try:
                item = inbox.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                stopping = True
                break
            group.append(item)
            rows += _weight(item[2])
        if queued is not None:
            with queued.get_lock():
                queued.value -= rows
        store = _commit(store, group, storage_url, timeout, use_syslog)
        if done is not None:
            done.value = group[-1][0]
    if store is not None:
        store.close()


def _commit(store, group, storage_url: str, timeout: float, use_syslog: bool):
    """Write `group` in one transaction (three tries); if that keeps failing, batch by batch,
    so that one batch the database refuses does not take the others with it. The store to use
    next (None: open a new one)."""
    from spamsift.filter.engine.store.base import open_store

    items = [(uid, batch) for _seq, uid, batch in group]
    for attempt in range(3):
        try:
            if store is None:
                store = open_store(storage_url, timeout)
            store.commit_group(items)
            return store
        except SpamsiftError as exc:
            log.error(f"daemon: writer: {exc} (attempt {attempt + 1}, {len(items)} messages)",
                      use_syslog)
            if store is not None:
                store.close()
                store = None
    if len(items) > 1:
        for uid, batch in items:
            try:
                if store is None:
                    store = open_store(storage_url, timeout)
                store.commit(uid, batch)
            except SpamsiftError as exc:
                log.error(f"daemon: writer: {exc}: one message not learned", use_syslog)
                if store is not None:
                    store.close()
                    store = None
    return store


ORPHAN_CHECK = 5.0   # seconds between the writer's looks at whether the daemon still runs
SUBMIT_WAIT = 10.0   # seconds a reply may wait for room in the writer's queue
SYNC_WAIT = 10.0     # seconds a training request waits for earlier messages to be written
# A group commit: what arrives within GROUP_WINDOW of a group's first batch, bounded in
# batches and rows. See benchmarks/vs_bogofilter.py for what it writes per message.
GROUP_WINDOW = 0.05
GROUP_BATCHES = 100
GROUP_ROWS = 200_000
# Token and weight rows the writer's queue may hold: a batch of a message at the tokenizer's
# cap (20,000 tokens, as many weights) holds ~5 MB in this process until the writer takes it,
# so the queue is bounded by rows (~25 MB), not only by batches: a niced writer behind 16
# hostile clients let it grow without limit.
MAX_QUEUED_ROWS = 100_000


def _weight(batch) -> int:
    """What a batch holds while queued, in rows (at least 1)."""
    return 1 + len(batch.tokens) + len(batch.weights)


class Writer:
    """Commits what inbound messages learned, in arrival order and in groups, off the reply
    path.

    A TEFT commit is most of what a message costs; the client only needs the stamped
    message. The writer is a process of its own: as a thread it held the interpreter lock
    while binding 650 rows and doubled the reply time (6 ms in-process, 14 ms through the
    daemon). The queue is bounded, so a burst slows replies instead of growing memory.

    What a crash loses: messages answered but not yet written -- the writer's open group (at
    most GROUP_WINDOW, GROUP_BATCHES) and what waited in the queue (at most MAX_QUEUED_ROWS
    rows; under a load the writer keeps up with, about one window). Those messages keep their
    headers, but were not learned and their signatures were not stored: a later report of one
    is a clear error (exit 65, unknown signature), never a wrong retrain. Mail is never lost.
    On SIGTERM everything queued is written before the daemon exits. A training request
    waits (`sync`) until every message answered before it is written, so a report of a
    message the daemon has just answered finds its signature.
    """

    def __init__(self, settings) -> None:
        import multiprocessing

        self.settings = settings
        self.lock = threading.Lock()
        self.context = multiprocessing.get_context("spawn")
        self.submitted = 0  # sequence number of the last batch queued
        self.done = self.context.Value("q", 0, lock=False)  # written by the writer only
        self._spawn()

    def _spawn(self) -> None:
        context = self.context
        # A new queue with each process: one whose reader was killed may hold its read lock.
        self.inbox = context.Queue(maxsize=1000)
        self.queued = context.Value("q", 0)
        self.done.value = self.submitted  # what an earlier writer had queued is gone
        self.process = context.Process(
            target=_write_batches, name="spamsift-writer", daemon=True,
            args=(self.inbox, self.settings.storage_url, self.settings.storage_timeout,
                  self.settings.syslog, os.getpid(), self.queued, self.done))

    def start(self) -> None:
        self.process.start()

    def _alive(self) -> None:
        """Replace a writer that died (the OOM killer, say), or nothing would be learned
        again and, once the queue was full, every reply would wait."""
        if not self.process.is_alive():
            log.error(f"daemon: the writer process ended (exit {self.process.exitcode}); "
                      "starting a new one: what it had queued was not learned",
                      self.settings.syslog)
            self._spawn()
            self.start()

    def submit(self, uid: int, batch) -> None:
        """Queue a batch. A queue full for `SUBMIT_WAIT` seconds drops this batch: mail
        first."""
        import queue
        weight = _weight(batch)
        deadline = time.monotonic() + SUBMIT_WAIT
        try:
            while self.queued.value + weight > MAX_QUEUED_ROWS and self.queued.value > 0:
                if time.monotonic() > deadline:
                    raise queue.Full
                time.sleep(0.005)
            with self.lock:
                self._alive()
                with self.queued.get_lock():
                    self.queued.value += weight
                self.submitted += 1
                try:
                    # Under the lock: sequence numbers reach the writer in order.
                    self.inbox.put((self.submitted, uid, batch),
                                   timeout=max(0.0, deadline - time.monotonic()))
                except queue.Full:
                    self.submitted -= 1
                    with self.queued.get_lock():
                        self.queued.value -= weight
                    raise
        except queue.Full:
            log.error(f"daemon: the writer's queue stayed full for {SUBMIT_WAIT:g} s: this "
                      "message was not learned", self.settings.syslog)

    def sync(self, timeout: float = SYNC_WAIT) -> bool:
        """Wait until every batch queued so far is written (or given up on); False when that
        took longer than `timeout` seconds."""
        with self.lock:
            self._alive()
            target = self.submitted
        deadline = time.monotonic() + timeout
        while self.done.value < target:
            if time.monotonic() > deadline:
                return False
            if not self.process.is_alive():
                with self.lock:
                    self._alive()
                return True
            time.sleep(0.002)
        return True

    def stop(self) -> None:
        """Write everything queued, then end."""
        import queue

        if self.process.is_alive():
            try:
                self.inbox.put(None, timeout=60)
            except queue.Full:
                pass
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.terminate()
