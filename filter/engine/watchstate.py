"""The watchers' record of where each message was last seen, and training that keeps it true.

``spamsift_watch_messages`` holds, per user and message key (`mailfolders.message_key`: the
signature, or ``sha256:`` of the bytes), the class a watcher last trained or saw the message
as. Every change of it is a compare-and-set (`store.base.WatchUpdate`) committed in the same
transaction as the training it belongs to, so training and record never diverge: a crash at
any point, a restart, or two watchers on one tree (MySQL) cannot train a message twice.

Training itself is the engine's: `Agent.retrain` for messages with a known signature (its
own signature compare-and-set already makes a retrain exactly-once) and `Agent.learn` for
unsigned mail learned as corpus. The watch update rides along in the agent's commit through
`StateCarrier`, a store wrapper, so the agent needs no knowledge of watchers.

Used by both watchers (`apply`) and by ``spamsift reclassify --move`` (`record_placement`).
"""

from __future__ import annotations

import time
from hashlib import sha256

from spamsift.filter.engine.errors import ConflictError, StorageError, UnknownSignatureError
from spamsift.filter.engine.store.base import Batch, WatchUpdate

DIGEST_PREFIX = "sha256:"
ATTEMPTS = 4  # re-read and decide again after a lost compare-and-set (another watcher)


def is_signed(key: str) -> bool:
    return not key.startswith(DIGEST_PREFIX)


def derived_signature(uid: int, key: str) -> str:
    """The signature id under which a watcher stores unsigned mail it learned, so a later
    move retrains exactly what was learned. Deterministic, so two watchers derive the same id
    (the second insert fails). Unlike the filter's ids it is guessable, which gives nothing
    away: a signature is only ever retrained for its owner (`signatures.load_owned`)."""
    return "w" + sha256(f"{uid}\0{key}".encode()).hexdigest()[:39]


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(at))


def record_placement(store, uid: int, key: str, klass: str, clock=time.time) -> None:
    """Record that an administrator's tool put message `key` of user `uid` into `klass`
    ("spam" or "innocent"), so that watchers do not take the move for the user's drag.

    For ``spamsift reclassify --move``: call it *before* moving the file (a watcher that
    sees the file in its new folder first would otherwise train it as a drag), and retrain
    the signature yourself if it should count as `klass` (`Agent.retrain`; to have both in
    one transaction, give the agent ``StateCarrier(store, [WatchUpdate(key, WatchUpdate.ANY,
    klass, now)])`` as its store instead). Unconditional: the administrator's decision wins.
    """
    now = clock()
    batch = Batch(_day(now))
    batch.watch.append(WatchUpdate(key, WatchUpdate.ANY, klass, int(now)))
    store.commit(uid, batch)


class StateCarrier:
    """A store whose commits also carry `pending` watch updates (everything else delegates).

    Give it to an `Agent` as its store: whatever the agent commits (a retrain, a learned
    message) then changes the watcher record in the same transaction, or fails with
    `ConflictError` when the record is not what was expected.
    """

    def __init__(self, store, pending: list[WatchUpdate] | None = None) -> None:
        self.store = store
        self.pending = list(pending or [])
        self.commits = 0

    def commit(self, uid: int, batch: Batch) -> None:
        batch.watch.extend(self.pending)
        self.store.commit(uid, batch)
        self.commits += 1

    def __getattr__(self, name: str):
        return getattr(self.store, name)


class Applied:
    """What `apply` did: `action` is "retrained", "learned", "recorded", "unchanged" (the
    training was in effect already; only the record changed) or "nothing"; `decision` the
    `spamsift.watchers.decide.Decision` it carried out."""

    __slots__ = ("action", "decision")

    def __init__(self, action: str, decision) -> None:
        self.action = action
        self.decision = decision

    def __repr__(self) -> str:
        return f"Applied({self.action!r}, {self.decision!r})"


def verdict_of(store, uid: int, key: str) -> str | None:
    """The stored classification of a signed message of `uid`; None when unsigned, unknown
    or another user's."""
    if not is_signed(key):
        return None
    state = store.signature_states([key]).get(key)
    return state[1] if state is not None and state[0] == uid else None


class Applier:
    """Carries out watcher decisions for one store: fresh state, `decide`, training with the
    record's compare-and-set, again after a lost race. One per watcher thread."""

    def __init__(self, settings, store, decide, clock=time.time) -> None:
        """`decide` is `spamsift.watchers.decide.decide` (passed in: the engine imports no
        watcher)."""
        from spamsift.filter.engine.agent import Agent

        self.settings = settings
        self.store = store
        self.decide = decide
        self.clock = clock
        self.carrier = StateCarrier(store)
        self.agent = Agent(settings, self.carrier, clock=clock)

    def apply(self, user: str, uid: int, key: str, seen_in, read=None) -> Applied:
        """Decide about message `key` of `user` just seen in folders of classes `seen_in`
        and carry the decision out exactly once.

        `read()` returns the message's bytes, or None when it vanished; it is called only to
        learn unsigned mail. Raises `StorageError` when the store fails (retry later), and
        `ConflictError` when the record kept changing under us (look again later).
        """
        store, carrier, agent, settings = self.store, self.carrier, self.agent, self.settings
        for _attempt in range(ATTEMPTS):
            recorded = store.watch_states(uid, [key]).get(key)
            verdict = verdict_of(store, uid, key)
            decision = self.decide(seen_in, recorded, verdict, settings.watch_learn_unsigned,
                                   settings.watch_trust_verdict)
            action = decision.action
            if action == "nothing":
                return Applied("nothing", decision)
            carrier.pending = [WatchUpdate(key, recorded, decision.klass, int(self.clock()))]
            carrier.commits = 0
            try:
                if action == "record":
                    carrier.commit(uid, Batch(_day(self.clock())))
                    return Applied("recorded", decision)
                sig_id = key if verdict is not None else derived_signature(uid, key)
                if action == "learn" and not store.signature_states([sig_id]):
                    raw = read() if read is not None else None
                    if raw is None:
                        return Applied("nothing", decision)  # vanished: a later sighting
                    from spamsift.filter.engine.mailfolders import message_key

                    if message_key(raw, settings.header_prefix + "-Signature") != key:
                        return Applied("nothing", decision)  # replaced: not that message
                    ctx = agent.user(user, create=True)
                    agent.learn(ctx, raw, decision.klass, "corpus", signature_id=sig_id)
                    return Applied("learned", decision)
                # A retrain (or a "learn" whose derived signature exists: learned before and
                # the record is gone, so correct what was learned).
                try:
                    agent.retrain(user, sig_id, decision.klass)
                except UnknownSignatureError:
                    # Purged, or never learned: nothing to correct; keep the record true.
                    carrier.commit(uid, Batch(_day(self.clock())))
                    return Applied("recorded", decision)
                if carrier.commits == 0:  # the training was in effect already
                    carrier.commit(uid, Batch(_day(self.clock())))
                    return Applied("unchanged", decision)
                return Applied("retrained", decision)
            except ConflictError:
                continue  # another watcher (or reclassify) got there first: look again
            except StorageError as exc:
                if "exists already" in str(exc):
                    continue  # another watcher inserted the derived signature meanwhile
                raise
            finally:
                carrier.pending = []
        raise ConflictError(f"watch state of {key[:40]} kept changing; will look again")
