"""The watchers' record of where each message was last seen: the part the trainer needs too.

``spamsift_watch_messages`` holds, per user and message key (`mailfolders.message_key`: the
signature, or `mailfolders.DIGEST_PREFIX` and a digest of the bytes), the class a watcher last
trained or saw the message as. Every change of it is a compare-and-set (`store.base.WatchUpdate`)
committed in the same transaction as the training it belongs to, so training and record never
diverge: a crash at any point, a restart, or two watchers on one tree (MySQL) cannot train a
message twice.

Carrying out the watchers' decisions is theirs (`spamsift.watchers.applier`); what is here is
shared with ``spamsift reclassify --move`` (`record_placement`) and ``spamsift train --clean``
(`StateCarrier`), which must not import a watcher: the key vocabulary, the signature a
watcher learns unsigned mail under, a batch that changes records only, and the store wrapper
that makes a record change ride in an agent's commit.
"""

from __future__ import annotations

import time
from hashlib import sha256

from spamsift.filter.engine.days import day_of
from spamsift.filter.engine.mailfolders import DIGEST_PREFIX
from spamsift.filter.engine.store.base import Batch, Store, WatchUpdate
from spamsift.filter.engine.store.passthrough import PassThrough


def is_signed(key: str) -> bool:
    """Whether message key `key` is a signature (else the digest of an unsigned message)."""
    return not key.startswith(DIGEST_PREFIX)


def derived_signature(uid: int, key: str) -> str:
    """The signature id under which a watcher stores unsigned mail it learned, so a later
    move retrains exactly what was learned. Deterministic, so two watchers derive the same id
    (the second insert fails). Unlike the filter's ids it is guessable, which gives nothing
    away: a signature is only ever retrained for its owner (`signatures.load_owned`)."""
    return "w" + sha256(f"{uid}\0{key}".encode()).hexdigest()[:39]


def learned_class(record: dict[str, tuple[int, float]] | None) -> str | None:
    """The class a message's corpus learning counts as, from its record
    (`Store.learned_records`: class -> (copies, step)); the class of most copies when a
    duplicate was learned as both, None without a record."""
    if not record:
        return None
    return max(sorted(record), key=lambda klass: record[klass][0])


def record_batch(at: float, updates: list[WatchUpdate] | None = None) -> Batch:
    """A batch dated `at` (unix time) that changes only watcher records: `updates`."""
    batch = Batch(day_of(at))
    batch.watch.extend(updates or ())
    return batch


def record_placement(store, uid: int, key: str, klass: str, clock=time.time) -> None:
    """Record that an administrator's tool put message `key` of user `uid` into `klass`
    ("spam" or "innocent"), so that watchers do not take the move for the user's drag.

    For ``spamsift reclassify --move``: call it *before* moving the file (a watcher that
    sees the file in its new folder first would otherwise train it as a drag), and retrain
    the signature yourself if it should count as `klass` (`Agent.retrain`). Unconditional:
    the administrator's decision wins.
    """
    now = clock()
    store.commit(uid, record_batch(now, [WatchUpdate(key, WatchUpdate.ANY, klass, int(now))]))


class StateCarrier(PassThrough):
    """A store for an `Agent` whose commits also carry `pending` watch updates.

    Give it to an `Agent` as its store: whatever the agent commits (a retrain, a learned
    message) then changes the watcher record in the same transaction, or fails with
    `ConflictError` when the record is not what was expected. Besides the commits it has
    exactly the reads `Agent.user`, `Agent.learn` and `Agent.retrain` make, passed through
    (`PassThrough`):
    an agent path that needs another method fails loudly here instead of reaching the store
    around the record.
    """

    def __init__(self, store: Store, pending: list[WatchUpdate] | None = None) -> None:
        super().__init__(store)
        self.pending = list(pending or [])
        self.commits = 0

    def commit(self, uid: int, batch: Batch) -> None:
        batch.watch.extend(self.pending)
        self.store.commit(uid, batch)
        self.commits += 1

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        """What the agent writes for a group member (filter/engine/groups.py) in one
        transaction: the record rides with the first item, the acting user's own (the
        agent puts it first), so it changes with the training or not at all."""
        items[0][1].watch.extend(self.pending)
        self.store.commit_group(items)
        self.commits += 1
