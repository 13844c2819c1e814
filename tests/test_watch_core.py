"""The watchers' shared exactly-once path, without files, servers or threads: the applier and
its store wrapper, on the memory backend."""

from __future__ import annotations

import pytest

from spamsift.filter.engine import config
from spamsift.filter.engine.errors import ConflictError, DuplicateSignatureError
from spamsift.filter.engine.store.base import WatchUpdate, open_store
from spamsift.filter.engine.watchstate import record_batch
from spamsift.filter.engine.mailfolders import message_key
from spamsift.watchers.applier import Applier, StateCarrier
from spamsift.watchers.decide import SPAM

UNSIGNED = b"From: x@y.example\nSubject: old mail\n\nfrom before the filter was on\n"


@pytest.fixture
def settings(tmp_path):
    path = tmp_path / "spamsift.toml"
    path.write_text('storage = "memory://"\nsyslog = false\nwatch_rate = 0.0\n'
                    "watch_learn_unsigned = true\ntest_conditional_training = false\n")
    return config.load(str(path), environ={}, use_cache=False)


def test_the_state_carrier_commits_the_record_with_the_batch():
    store = open_store("memory://")
    carrier = StateCarrier(store, [WatchUpdate("k", None, "spam", 1)])
    uid = carrier.uid("u")
    assert uid is not None
    carrier.commit(uid, record_batch(0.0))
    assert store.watch_states(uid, ["k"]) == {"k": "spam"} and carrier.commits == 1
    with pytest.raises(ConflictError):  # the record is no longer None: nothing is written
        carrier.commit(uid, record_batch(0.0))
    assert store.watch_states(uid, ["k"]) == {"k": "spam"} and carrier.commits == 1


def test_the_state_carrier_offers_exactly_what_the_agent_reads():
    # Agent.user, Agent.learn (scoring with the logistic model) and Agent.retrain; anything
    # else would reach the store around the record, so it must fail instead.
    public = {name for name in vars(StateCarrier) if not name.startswith("_")}
    assert public == {"commit", "uid", "username", "preferences", "stats", "signature",
                      "lookup", "weights", "counts_and_weights"}
    with pytest.raises(AttributeError):
        StateCarrier(open_store("memory://")).commit_group  # noqa: B018


class RacingStore:
    """A store where another watcher inserts the same derived signature (learning the same
    unsigned message) just before our insert commits; ours then fails as every backend
    reports it, by class, in its own words."""

    def __init__(self, store) -> None:
        self.store = store
        self.raced = False

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def commit(self, uid: int, batch) -> None:
        if batch.new_signature is not None and not self.raced:
            self.raced = True
            ours, batch.watch = batch.watch, []
            self.store.commit(uid, batch)  # theirs: the same learning, without our record
            batch.watch = ours
            raise DuplicateSignatureError("UNIQUE constraint failed: spamsift_signatures.id")
        self.store.commit(uid, batch)


def test_a_lost_derived_signature_insert_is_decided_again_not_raised(settings):
    store = RacingStore(open_store("memory://"))
    uid = store.uid("u")
    key = message_key(UNSIGNED)
    done = Applier(settings, store).apply("u", uid, key, {SPAM}, read=lambda: UNSIGNED)
    assert store.raced
    # Learned once (theirs); ours found it learned as spam already and kept the record true.
    assert done.action == "unchanged"
    assert store.watch_states(uid, [key]) == {key: SPAM}
    assert store.stats(uid).spam_corpusfed == 1
