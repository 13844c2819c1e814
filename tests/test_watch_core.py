"""The watchers' shared exactly-once path, without files, servers or threads: the pipeline,
its rate limiter and split settling, the applier and its store wrapper (memory backend)."""

from __future__ import annotations

import pytest

from spamsift.filter.engine import config
from spamsift.filter.engine.errors import (ConflictError, DuplicateSignatureError, StorageError,
                                          StorageUnavailableError)
from spamsift.filter.engine.store.base import WatchUpdate, open_store
from spamsift.filter.engine.watchstate import record_batch
from spamsift.filter.engine.mailfolders import message_key
from spamsift.watchers.applier import Applier, StateCarrier
from spamsift.watchers.core import BULK, CycleReport, Pipeline, RateLimiter, Sighting, settle
from spamsift.watchers.decide import IGNORED, INNOCENT, LEARN, NOTHING, SPAM

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
    # A group member's training is one group commit and reads several users' rows at once
    # (filter/engine/groups.py); the record rides with it (next test).
    # Its own methods and those it inherits from PassThrough.
    public = {name for klass in StateCarrier.__mro__[:-1] for name in vars(klass)
              if not name.startswith("_")}
    assert public == {"commit", "commit_group", "uid", "username", "preferences", "stats",
                      "signature", "lookup", "weights", "counts_and_weights",
                      "counts_and_weights_of"}
    with pytest.raises(AttributeError):
        StateCarrier(open_store("memory://")).all_stats  # noqa: B018


def test_the_state_carrier_commits_the_record_with_a_group_commit():
    """The record rides with the first item (the acting user's, as the agent orders them):
    written with the whole group, or, when it is not what was expected, nothing is."""
    store = open_store("memory://")
    carrier = StateCarrier(store, [WatchUpdate("k", None, "spam", 1)])
    member, group = carrier.uid("u"), carrier.uid("site")
    assert member is not None and group is not None
    shared = record_batch(0.0)
    shared.add_token(7, 1, 0)
    carrier.commit_group([(member, record_batch(0.0)), (group, shared)])
    assert store.watch_states(member, ["k"]) == {"k": "spam"} and carrier.commits == 1
    assert store.lookup(group, [7]) == {7: (1, 0)}
    again = record_batch(0.0)
    again.add_token(7, 1, 0)
    with pytest.raises(ConflictError):
        carrier.commit_group([(member, record_batch(0.0)), (group, again)])
    assert store.lookup(group, [7]) == {7: (1, 0)} and carrier.commits == 1


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


def test_the_rate_limiter_allows_a_second_s_worth_then_paces():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, clock=lambda: now[0])
    for _ in range(4):
        limiter.pace(sleep)
    assert slept == [0.5, 0.5]  # two at once (one second's worth), then one per 1/rate
    now[0] += 10.0  # a quiet spell refills no more than one second's worth
    assert limiter.wait_time() == 0.0 and limiter.tokens == 2.0
    unlimited = RateLimiter(0.0, clock=lambda: now[0])
    for _ in range(100):
        unlimited.pace(sleep)
    assert len(slept) == 2


def test_settle_takes_out_what_is_left_in_one_class():
    # (place, kind) copies; `present` says which are still there.
    split = {"both": [("a", SPAM), ("b", INNOCENT)],
             "spam left": [("c", SPAM), ("d", INNOCENT)],
             "all gone": [("e", SPAM), ("f", INNOCENT)],
             "ignored is no class": [("g", SPAM), ("h", IGNORED)]}
    there = {"a", "b", "c", "g", "h"}
    settled = settle(split, lambda c: c[0] in there, lambda c: c[1])
    assert settled == {"spam left": [("c", SPAM)], "all gone": [],
                       "ignored is no class": [("g", SPAM), ("h", IGNORED)]}
    assert list(split) == ["both"]  # still in both classes: kept, undecided


def test_sightings_are_decided_in_bulk_chunks(settings):
    class Counting:
        def __init__(self, store) -> None:
            self.store, self.reads = store, 0

        def __getattr__(self, name: str):
            return getattr(self.store, name)

        def watch_states(self, uid, keys):
            self.reads += 1
            return self.store.watch_states(uid, keys)

    store = Counting(open_store("memory://"))
    uid = store.uid("u")
    pipeline = Pipeline(settings, store, read=lambda s: None, log=lambda line: None)
    sightings = [Sighting("u", uid, f"sha256:{n:032x}", {SPAM}) for n in range(2 * BULK + 1)]
    store.commit(uid, record_batch(0.0, [WatchUpdate(sightings[0].key, None, SPAM, 0)]))
    chunks = list(pipeline.decide(uid, sightings))
    assert [len(c) for c in chunks] == [BULK, BULK, 1] and store.reads == 3
    decided = [d.action for c in chunks for _s, d in c]
    assert decided == [NOTHING] + [LEARN] * (2 * BULK)  # recorded where it is: nothing
    assert [s for c in chunks for s, _d in c] == sightings


def test_one_error_policy_and_one_log_line(settings):
    lines: list[str] = []
    store = open_store("memory://")
    uid = store.uid("u")
    assert uid is not None
    key = message_key(UNSIGNED)
    pipeline = Pipeline(settings, store, read=lambda s: UNSIGNED, log=lines.append)
    report = CycleReport()
    assert pipeline.train(Sighting("u", uid, key, {SPAM}), report) is True
    assert report.trained == {"learned": 1}
    assert lines == [f"u: {key[:40]} learned spam (unsigned, in a spam folder)"]

    class Failing:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def apply(self, *_args):
            raise self.exc

    sighting = Sighting("u", uid, "k", {SPAM})
    pipeline.applier = Failing(ConflictError("watch state of k kept changing"))
    assert pipeline.train(sighting, report) is False  # try again later
    assert lines[-1] == "u: watch state of k kept changing"
    pipeline.applier = Failing(StorageError("disk I/O error"))
    assert pipeline.train(sighting, report) is True  # this message alone: dropped
    assert lines[-1] == "u: k: disk I/O error; skipped"
    pipeline.applier = Failing(StorageUnavailableError("server has gone away"))
    with pytest.raises(StorageUnavailableError):
        pipeline.train(sighting, report)
    assert report.trained == {"learned": 1} and len(lines) == 3
