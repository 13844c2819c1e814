"""Purge: DSPAM's rules, in batches, on every backend; dry run; the command."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from spamsift.filter.engine import config, purging
from spamsift.filter.engine.store.base import Batch, open_store

NOW = time.mktime((2026, 11, 24, 12, 0, 0, 0, 0, -1))


def day(days_ago: int) -> str:
    return purging.cutoff(days_ago, NOW)


def put(store, uid, days_ago, rows):
    batch = Batch(day(days_ago))
    for token, spam, innocent in rows:
        batch.add_token(token, spam, innocent)
    store.commit(uid, batch)


def test_dspam_rules_delete_exactly_the_stale_rows(store):
    teft, toe, tum = store.uid("teft"), store.uid("toe"), store.uid("tum")
    store.set_preference(toe, "training_mode", "toe")
    store.set_preference(tum, "training_mode", "tum")
    for uid in (teft, toe, tum):
        put(store, uid, 40, [(1, 1, 1), (2, 50, 50)])     # hapax (2*1+1 < 5); busy
        put(store, uid, 20, [(3, 1, 0), (4, 0, 1), (5, 2, 0)])  # single hits; a pair
        put(store, uid, 100, [(6, 30, 30), (7, 10, 10)])  # unused: busy / under 50 hits
        put(store, uid, 1, [(8, 1, 0)])                   # fresh
    settings = config.Settings({})
    rules = purging.plan(settings, store, now=NOW)
    assert [r.name for r in rules] == ["hapaxes", "single_spam", "single_innocent",
                                       "unused_teft", "unused_tum", "signatures", "sources",
                                       "watch_records", "learned"]
    counts = {r.name: store.purge_count(r) for r in rules}
    # Hapaxes older than 30 days: token 1 of each user. Tokens 3, 4, 5 are hapaxes too but
    # only 20 days old; token 7 has 2*10+10 = 30 hits.
    assert counts["hapaxes"] == 3
    for rule in rules:
        cursor = "start"
        while cursor is not None:
            _n, cursor = store.purge_step(rule, 2, None if cursor == "start" else cursor)
    left = {uid: sorted(store.lookup(uid, range(1, 9))) for uid in (teft, toe, tum)}
    assert left[teft] == [2, 5, 8]        # all unused (100 days) rows gone for TEFT
    assert left[toe] == [2, 5, 6, 7, 8]   # TOE keeps merely unused tokens
    assert left[tum] == [2, 5, 6, 8]      # TUM drops unused tokens with < 50 hits


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_a_row_touched_between_select_and_delete_stays(backend, request, tmp_path):
    # purge_step selects a batch of stale keys, then deletes them. A delivery or a training
    # that touches one of them in between makes it fresh: the DELETE must not take it (and
    # its new hits) along. (The memory store selects and deletes in one step of one process.)
    if backend == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/store.db")
    else:
        store = open_store(request.getfixturevalue("mysql_url"))
        store.initialize()
    reader = "_query"  # both run the purge's SELECT through it (sqlstore.SQLStore)
    request.addfinalizer(store.close)
    uid = store.uid("u")
    put(store, uid, 40, [(1, 1, 1), (2, 1, 1)])  # two stale hapaxes
    rule = next(r for r in purging.plan(config.Settings({}), store, now=time.time())
                if r.name == "hapaxes")
    real = getattr(store, reader)
    touched = []

    def select_then_touch(*args, **kw):
        rows = real(*args, **kw)
        if not touched:  # the SELECT of the batch: now a delivery learns token 1 as spam
            touched.append(True)
            put(store, uid, 0, [(1, 10, 0)])
        return rows

    setattr(store, reader, select_then_touch)
    try:
        deleted, _cursor = store.purge_step(rule, 10, None)
    finally:
        setattr(store, reader, real)
    assert touched and deleted == 1  # both were selected, only the stale one went
    assert store.lookup(uid, [1, 2]) == {1: (11, 1)}


def test_signatures_and_sources_expire(store):
    from array import array

    from spamsift.filter.engine.store.signature import Signature

    uid = store.uid("u")
    for n, days_ago in ((1, 20), (2, 3)):
        batch = Batch(day(days_ago))
        batch.new_signature = Signature(f"{n:030x}", uid, 0, "spam", "spam", "spam_learned",
                                        "", array("Q", [1]), b"\x01", b"\x01")
        batch.add_source(f"192.0.2.{n}", 1, 0)
        store.commit(uid, batch)
    batch = Batch(day(120))
    batch.add_source("198.51.100.9", 1, 0)
    store.commit(uid, batch)
    for rule in purging.plan(config.Settings({}), store, now=NOW):
        cursor = "start"
        while cursor is not None:
            _n, cursor = store.purge_step(rule, 100, None if cursor == "start" else cursor)
    assert store.signature(f"{1:030x}") is None and store.signature(f"{2:030x}") is not None
    assert [r[1] for r in store.sources(uid)] == ["192.0.2.1", "192.0.2.2"]


def test_watch_records_go_when_old_and_their_signature_is_gone(store):
    """A watcher record is kept while its signature exists (a rescan would compare the
    message with the signature's verdict again) and while it is younger than purge_unused."""
    from array import array

    from spamsift.filter.engine.store.base import WatchUpdate
    from spamsift.filter.engine.store.signature import Signature

    uid = store.uid("w")
    old, fresh = int(NOW - 100 * 86400), int(NOW - 10 * 86400)
    batch = Batch(day(2))
    batch.new_signature = Signature("a" * 30, uid, 0, "spam", "spam", "spam_learned", "",
                                    array("Q", [1]), b"\x01", b"\x01")
    batch.watch = [WatchUpdate("a" * 30, None, "spam", old),          # signature kept
                   WatchUpdate("b" * 30, None, "innocent", old),      # signature gone, old
                   WatchUpdate("sha256:" + "c" * 32, None, "spam", old),  # digest key, old
                   WatchUpdate("d" * 30, None, "spam", fresh)]        # gone, but recent
    store.commit(uid, batch)
    rule = next(r for r in purging.plan(config.Settings({}), store, now=NOW)
                if r.name == "watch_records")
    assert store.purge_count(rule) == 2
    cursor = "start"
    while cursor is not None:
        _n, cursor = store.purge_step(rule, 1, None if cursor == "start" else cursor)
    keys = ["a" * 30, "b" * 30, "sha256:" + "c" * 32, "d" * 30]
    assert sorted(store.watch_states(uid, keys)) == ["a" * 30, "d" * 30]


def test_a_rule_with_age_zero_is_off():
    settings = config.Settings({}).replace(purge_hapaxes=0, purge_unused=0)
    store = open_store("memory://")
    store.uid("u")
    names = [r.name for r in purging.plan(settings, store, now=NOW)]
    assert "hapaxes" not in names and "unused_teft" not in names and "sources" not in names


def test_purge_command_dry_run_and_real(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/spamsift.db")
    uid = store.uid("u")
    put(store, uid, 400, [(t, 1, 0) for t in range(1, 251)])
    put(store, uid, 0, [(1000, 1, 0)])
    store.close()
    env = {"SPAMSIFT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "100"}
    run = [sys.executable, "-m", "spamsift", "purge", "--quiet", "--pause", "0"]
    dry = subprocess.run(run + ["--dry-run"], env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "hapaxes" in dry.stdout and "250" in dry.stdout
    store = open_store(f"sqlite:///{tmp_path}/spamsift.db")
    assert len(store.lookup(uid, range(1, 1001))) == 251  # a dry run deletes nothing
    store.close()
    for bad in (["--batch", "0"], ["--batch", "-3"], ["--pause", "nan"]):
        # LIMIT 0 purged nothing and SQLite takes LIMIT -3 as no limit at all.
        refused = subprocess.run(run + bad, env=env, capture_output=True, text=True)
        assert refused.returncode == 78 and refused.stderr.count("\n") == 1, refused.stderr
        assert "purge_" in refused.stderr
    real = subprocess.run(run + ["--batch", "7"], env=env, capture_output=True, text=True)
    assert real.returncode == 0, real.stderr
    assert "total" in real.stdout
    store = open_store(f"sqlite:///{tmp_path}/spamsift.db")
    assert sorted(store.lookup(uid, range(1, 1001))) == [1000]
    store.close()


def _fixture_rows(store):
    today = time.time()
    teft, tum = store.uid("teft"), store.uid("tum")
    store.set_preference(tum, "training_mode", "tum")
    for uid in (teft, tum):
        for days_ago, rows in ((40, [(1, 1, 1), (2, 50, 50)]), (100, [(6, 30, 30), (7, 10, 10)]),
                               (1, [(8, 1, 0)])):
            batch = Batch(purging.cutoff(days_ago, today))
            for token, s, i in rows:
                batch.add_token(token, s, i)
            store.commit(uid, batch)
    return teft, tum


def test_sqlite_purge_sql_applies_the_same_rules(tmp_path):
    from spamsift import sql

    store = open_store(f"sqlite:///{tmp_path}/p.db")
    teft, tum = _fixture_rows(store)
    store.db.executescript(sql.read("sqlite", "purge.sql"))
    assert sorted(store.lookup(teft, range(1, 9))) == [2, 8]
    assert sorted(store.lookup(tum, range(1, 9))) == [2, 6, 8]
    store.close()


def test_mysql_purge_sql_applies_the_same_rules(mysql_url):
    from spamsift import sql

    store = open_store(mysql_url)
    store.initialize()
    teft, tum = _fixture_rows(store)
    text = "\n".join(line.split("--", 1)[0] for line in sql.read("mysql", "purge.sql").splitlines())
    with store.db.cursor() as cur:
        for statement in (s.strip() for s in text.split(";")):
            if statement:
                cur.execute(statement)
    store.db.commit()
    assert sorted(store.lookup(teft, range(1, 9))) == [2, 8]
    assert sorted(store.lookup(tum, range(1, 9))) == [2, 6, 8]
    store.close()


def test_learned_records_go_when_older_than_purge_learned(store):
    """What corpus training learned, per message, goes after purge_learned days (by default
    purge_unused', so the watcher's record goes with it), so the table does not grow for
    ever; the token counts it learned stay."""
    from spamsift.filter.engine.store.base import LearnedChange

    settings = config.Settings({})
    assert settings.purge_learned == settings.purge_unused == 90
    uid = store.uid("l")
    old, fresh = int(NOW - 100 * 86400), int(NOW - 30 * 86400)
    batch = Batch(day(2))
    batch.add_token(1, 0, 2)
    batch.learned = [LearnedChange("sha256:" + "a" * 32, "innocent", 1, 0.5, old),
                     LearnedChange("sha256:" + "b" * 32, "innocent", 1, 0.0, old),
                     LearnedChange("sha256:" + "b" * 32, "spam", 1, 0.0, old),
                     LearnedChange("c" * 30, "spam", 1, 0.0, fresh)]
    store.commit(uid, batch)
    rule = next(r for r in purging.plan(settings, store, now=NOW) if r.name == "learned")
    assert store.purge_count(rule) == 3
    cursor = "start"
    while cursor is not None:
        _n, cursor = store.purge_step(rule, 1, None if cursor == "start" else cursor)
    keys = ["sha256:" + "a" * 32, "sha256:" + "b" * 32, "c" * 30]
    assert list(store.learned_records(uid, keys)) == ["c" * 30]
    assert store.lookup(uid, [1]) == {1: (0, 2)}
    assert not any(r.name == "learned" for r in purging.plan(
        settings.replace(purge_learned=0), store, now=NOW))
