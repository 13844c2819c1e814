"""Carrying out watcher decisions exactly once: fresh state, `decide`, training with the record.

Training itself is the engine's: `Agent.retrain` for messages with a known signature (its
own signature compare-and-set already makes a retrain exactly-once), `Agent.correct_learned`
for mail ``spamsift train`` learned in bulk (through its record in
``spamsift_learned_messages``, itself a compare-and-set) and `Agent.learn` for unsigned mail
learned as corpus. The record change (`WatchUpdate`, a compare-and-set on
``spamsift_watch_messages``, see `spamsift.filter.engine.watchstate`) rides along in the
agent's commit through `StateCarrier` (`spamsift.filter.engine.watchstate`), a store wrapper, so the agent needs no knowledge of
watchers and training and record change together or not at all.
"""

from __future__ import annotations

import time

from spamsift.filter.engine.errors import (ConflictError, DuplicateSignatureError,
                                          UnknownSignatureError)
from spamsift.filter.engine.store.base import Store, WatchUpdate
from spamsift.filter.engine.watchstate import (StateCarrier, derived_signature, is_signed,
                                               learned_class, record_batch)
from spamsift.watchers.decide import (CORRECT, INNOCENT, LEARN, NOTHING, RECORD, SPAM,
                                      Decision, decide)

ATTEMPTS = 4  # re-read and decide again after a lost compare-and-set (another watcher)


class Applied:
    """What `Applier.apply` did: `action` is "retrained", "learned", "recorded", "unchanged"
    (the training was in effect already; only the record changed) or "nothing"; `decision`
    the `Decision` it carried out."""

    __slots__ = ("action", "decision")

    def __init__(self, action: str, decision: Decision) -> None:
        self.action = action
        self.decision = decision

    def __repr__(self) -> str:
        return f"Applied({self.action!r}, {self.decision!r})"


def verdicts_of(store, uid: int, keys) -> dict[str, str]:
    """The stored classification of each signed message of `uid` among `keys`, in one query;
    unsigned, unknown and other users' messages are left out."""
    signed = [k for k in keys if is_signed(k)]
    states = store.signature_states(signed) if signed else {}
    return {k: state[1] for k, state in states.items() if state[0] == uid}


def learned_of(store, uid: int, keys, verdicts: dict[str, str]
               ) -> dict[str, dict[str, tuple[int, float]]]:
    """The records of what corpus training learned (`Store.learned_records`) of those `keys`
    without a known signature (`verdicts`: a signature's own training comes first), in one
    query per few hundred keys."""
    rest = [k for k in keys if k not in verdicts]
    return store.learned_records(uid, rest) if rest else {}


class Applier:
    """Carries out watcher decisions for one store: fresh state, `decide`, training with the
    record's compare-and-set, again after a lost race. One per watcher thread."""

    def __init__(self, settings, store: Store, decide=decide, clock=time.time) -> None:
        """`decide`: `spamsift.watchers.decide.decide` (a seam for tests)."""
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
            verdicts = verdicts_of(store, uid, [key])
            verdict = verdicts.get(key)
            record = learned_of(store, uid, [key], verdicts).get(key)
            decision = self.decide(seen_in, recorded, verdict, settings.watch_learn_unsigned,
                                   settings.watch_trust_verdict, learned_class(record))
            action = decision.action
            if action == NOTHING:
                return Applied("nothing", decision)
            carrier.pending = [WatchUpdate(key, recorded, decision.klass, int(self.clock()))]
            carrier.commits = 0
            try:
                if action == RECORD:
                    carrier.commit(uid, record_batch(self.clock()))
                    return Applied("recorded", decision)
                if action == CORRECT:
                    assert record is not None  # decided from it
                    return self._correct(user, uid, key, record, decision, read)
                sig_id = key if verdict is not None else derived_signature(uid, key)
                if action == LEARN and not store.signature_states([sig_id]):
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
                    carrier.commit(uid, record_batch(self.clock()))
                    return Applied("recorded", decision)
                if carrier.commits == 0:  # the training was in effect already
                    carrier.commit(uid, record_batch(self.clock()))
                    return Applied("unchanged", decision)
                return Applied("retrained", decision)
            except ConflictError:
                continue  # another watcher (or reclassify) got there first: look again
            except DuplicateSignatureError:
                continue  # another watcher inserted the derived signature meanwhile
            finally:
                carrier.pending = []
        raise ConflictError(f"watch state of {key[:40]} kept changing; will look again")

    def _correct(self, user: str, uid: int, key: str, record: dict[str, tuple[int, float]],
                 decision: Decision, read) -> Applied:
        """Correct what corpus training learned of message `key` (its `record`) to the
        decision's class, with the pending record change; raises `ConflictError` when the
        record changed meanwhile (another watcher, reclassify)."""
        from spamsift.filter.engine.leaveoneout import model_without
        from spamsift.filter.engine.mailfolders import message_key
        from spamsift.filter.engine.message import unstamp

        settings, agent, carrier = self.settings, self.agent, self.carrier
        target = decision.klass
        old = INNOCENT if target == SPAM else SPAM
        if old not in record:  # counts as `target` already (train --clean): only the record
            carrier.commit(uid, record_batch(self.clock()))
            return Applied("unchanged", decision)
        raw = read() if read is not None else None
        if raw is None or message_key(raw, settings.header_prefix + "-Signature") != key:
            return Applied("nothing", decision)  # vanished or replaced: a later sighting
        ctx = agent.user(user, create=False)
        message = agent.tokenize(ctx, unstamp(raw, ctx.settings))
        copies, step = record[old]
        # One learning of it moves, as reclassify --retrain moves one (of duplicates, each
        # file is a copy; the watcher sees their one key).
        model = model_without(settings, self.store, ctx, message, old, copies, step)
        agent.correct_learned(ctx, message, key, old, target, step / copies, model)
        return Applied("retrained", decision)
