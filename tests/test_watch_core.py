"""The watchers' shared exactly-once path, without files, servers or threads: the applier and
its store wrapper, on the memory backend."""

from __future__ import annotations

import pytest

from spamsift.filter.engine.errors import ConflictError
from spamsift.filter.engine.store.base import WatchUpdate, open_store
from spamsift.filter.engine.watchstate import record_batch
from spamsift.watchers.applier import StateCarrier


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
