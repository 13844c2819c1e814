"""The storage contract (filter/engine/store/base.py), run unchanged against every backend."""

from __future__ import annotations

from array import array

import pytest

from spamsift.filter.engine.errors import ConflictError, CorruptDatabaseError, ConfigError
from spamsift.filter.engine.store.base import STAT_FIELDS, Batch, SignatureUpdate, open_store
from spamsift.filter.engine.store.signature import Signature

BIG = (1 << 64) - 5          # token ids above 2^63 must survive signed storage
MID = 1 << 63


def test_uid_is_created_once_and_named(store):
    assert store.uid("alice@example.org", create=False) is None
    a = store.uid("alice@example.org")
    assert a == store.uid("alice@example.org")
    b = store.uid("bob")
    assert a != b
    assert store.username(a) == "alice@example.org"
    assert [n for _u, n in store.users()] == ["alice@example.org", "bob"]


def test_lookup_returns_only_known_tokens(store):
    uid = store.uid("u")
    assert store.lookup(uid, [1, 2, 3]) == {}
    batch = Batch("2026-11-24")
    batch.add_token(1, 2, 0)
    batch.add_token(BIG, 0, 3)
    batch.add_token(MID, 1, 1)
    store.commit(uid, batch)
    assert store.lookup(uid, [1, 2, BIG, MID]) == {1: (2, 0), BIG: (0, 3), MID: (1, 1)}
    other = store.uid("v")
    assert store.lookup(other, [1, BIG]) == {}  # counts are per user


def test_lookup_handles_more_tokens_than_one_statement_takes(store):
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    ids = list(range(10, 70010))
    for t in ids:
        batch.add_token(t, 1, 0)
    store.commit(uid, batch)
    found = store.lookup(uid, ids + [5])
    assert len(found) == len(ids) and found[69999] == (1, 0) and 5 not in found


def test_counts_and_weights_read_both_in_one_go(store):
    """`counts_and_weights` answers exactly what `lookup` and `weights` answer apart: rows
    with counts only, with a weight only, with both, none for absent tokens or another user,
    and more tokens than one statement takes."""
    uid = store.uid("u")
    assert store.counts_and_weights(uid, [1, 2]) == ({}, {})
    batch = Batch("2026-11-24")
    ids = list(range(10, 20010))
    for t in ids:
        batch.add_token(t, t % 3, 1)
    batch.add_token(1, 2, 0)
    batch.add_weight(1, 0.5)       # counts and weight
    batch.add_weight(BIG, -0.25)   # weight only
    batch.add_token(MID, 0, 4)     # counts only
    batch.add_weight(15, 1.5)
    store.commit(uid, batch)
    asked = [1, 2, BIG, MID, *ids]
    counts, weights = store.counts_and_weights(uid, asked)
    assert counts == store.lookup(uid, asked) and weights == store.weights(uid, asked)
    assert counts[1] == (2, 0) and counts[BIG] == (0, 0) and 2 not in counts
    assert len(counts) == len(ids) + 3 and counts[20009] == (20009 % 3, 1)
    assert weights == {1: 0.5, BIG: -0.25, 15: 1.5}
    assert store.counts_and_weights(store.uid("v"), asked) == ({}, {})


def test_counts_and_weights_of_reads_several_users_in_one_go(store):
    """`counts_and_weights_of` answers per uid exactly what `counts_and_weights` answers for
    each alone (a group member's message reads the member's and the group's rows at once),
    across both halves of the 64-bit range and more tokens than one statement takes."""
    a, b, c = store.uid("member"), store.uid("site"), store.uid("nobody")
    ids = list(range(10, 20010))
    for uid, spam in ((a, 1), (b, 3)):
        batch = Batch("2026-11-24")
        for t in ids[::2] if uid == a else ids:
            batch.add_token(t, spam, 1)
        batch.add_token(BIG, spam, 0)
        batch.add_weight(MID, 0.5 * spam)
        store.commit(uid, batch)
    asked = [1, BIG, MID, *ids]
    got = store.counts_and_weights_of([a, b, c], asked)
    assert set(got) == {a, b, c}
    assert got[a] == store.counts_and_weights(a, asked)
    assert got[b] == store.counts_and_weights(b, asked)
    assert got[c] == ({}, {})
    assert got[a][0][BIG] == (1, 0) and got[b][0][BIG] == (3, 0)
    assert got[a][1] == {MID: 0.5} and got[b][1] == {MID: 1.5}
    assert len(got[a][0]) == len(ids) // 2 + 2 and len(got[b][0]) == len(ids) + 2


def test_signature_keeps_whose_data_it_changed_and_its_flags(store):
    """A shared group member's signature records the group's uid as `data_uid` and survives
    the round trip and a compare-and-set; without groups the blob is the old format."""
    uid, group = store.uid("member"), store.uid("site")
    plain = _signature("d" * 30, uid)
    assert plain.pack()[:2] in (b"S1", b"S2") and plain.token_uid == uid
    sig = _signature("e" * 30, uid)
    sig.data_uid, sig.model = group, (0.25, -1.5)
    batch = Batch("2026-11-24")
    batch.new_signature = sig
    store.commit(uid, batch)
    back = store.signature("e" * 30)
    assert (back.data_uid, back.flags, back.token_uid) == (group, 0, group)
    assert back.model == (0.25, -1.5) and list(back.tokens) == [1, BIG, 3]
    assert back.applied == bytes([1, 1, 0]) and back.freqs == bytes([1, 2, 255])
    back.trained, back.flags = "spam", Signature.INOCULATED
    update = Batch("2026-11-24")
    update.signature_update = SignatureUpdate("e" * 30, "innocent", "spam", "spam_learned",
                                              back.pack())
    store.commit(uid, update)
    again = store.signature("e" * 30)
    assert (again.data_uid, again.flags, again.trained) == (group, Signature.INOCULATED,
                                                              "spam")
    assert again.model == (0.25, -1.5) and again.applied == bytes([1, 1, 0])


def test_counts_never_go_below_zero_and_pure_decrements_insert_nothing(store):
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    batch.add_token(7, 1, 1)
    store.commit(uid, batch)
    batch = Batch("2026-11-24")
    batch.add_token(7, -5, 0)
    batch.add_token(8, -1, -1)
    store.commit(uid, batch)
    assert store.lookup(uid, [7, 8]) == {7: (0, 1)}


def test_stats_accumulate_clamp_and_are_per_user(store):
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    batch.add_stat("spam_learned", 2)
    batch.add_stat("innocent_classified", 1)
    store.commit(uid, batch)
    batch = Batch("2026-11-25")
    batch.add_stat("spam_learned", -5)
    batch.add_stat("innocent_learned", 1)
    store.commit(uid, batch)
    stats = store.stats(uid)
    assert stats.spam_learned == 0 and stats.innocent_learned == 1
    assert stats.innocent_classified == 1
    assert store.stats(store.uid("nobody")).as_tuple() == (0,) * len(STAT_FIELDS)


def _signature(sig_id: str, uid: int, trained: str = "innocent") -> Signature:
    return Signature(sig_id, uid, 1700000000, "innocent", trained, "innocent_learned",
                     "192.0.2.1", array("Q", [1, BIG, 3]), bytes([1, 2, 255]),
                     bytes([1, 1, 0]))


def test_signature_round_trip(store):
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    batch.new_signature = _signature("a" * 30, uid)
    store.commit(uid, batch)
    sig = store.signature("a" * 30)
    assert sig is not None and sig.uid == uid
    assert list(sig.tokens) == [1, BIG, 3]
    assert sig.freqs == bytes([1, 2, 255]) and sig.applied == bytes([1, 1, 0])
    assert (sig.result, sig.trained, sig.counter, sig.source_ip) == (
        "innocent", "innocent", "innocent_learned", "192.0.2.1")
    assert store.signature("b" * 30) is None


def test_signature_compare_and_set(store):
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    batch.new_signature = _signature("c" * 30, uid)
    store.commit(uid, batch)
    new = _signature("c" * 30, uid, trained="spam")
    new.applied = bytes([2, 2, 2])
    update = Batch("2026-11-24")
    update.add_token(1, 2, -1)
    update.add_stat("spam_learned", 1)
    update.signature_update = SignatureUpdate("c" * 30, "innocent", "spam",
                                              "spam_learned,spam_misclassified", new.pack())
    store.commit(uid, update)
    sig = store.signature("c" * 30)
    assert sig.trained == "spam" and sig.applied == bytes([2, 2, 2])
    assert sig.counter == "spam_learned,spam_misclassified"
    # The same update again expects "innocent" but finds "spam": nothing may be written.
    before_tokens, before_stats = store.lookup(uid, [1]), store.stats(uid)
    with pytest.raises(ConflictError):
        store.commit(uid, update)
    assert store.lookup(uid, [1]) == before_tokens
    assert store.stats(uid) == before_stats
    # A foreign uid cannot update it either.
    other = store.uid("v")
    update.signature_update = SignatureUpdate("c" * 30, "spam", "innocent", "", new.pack())
    with pytest.raises(ConflictError):
        store.commit(other, update)


def test_preferences(store):
    uid = store.uid("u")
    assert store.preferences(uid) == {}
    store.set_preference(uid, "training_mode", "toe")
    store.set_preference(uid, "training_mode", "tum")
    store.set_preference(uid, "subject_tag", "on")
    assert store.preferences(uid) == {"training_mode": "tum", "subject_tag": "on"}
    store.set_preference(uid, "subject_tag", None)
    assert store.preferences(uid) == {"training_mode": "tum"}


def test_sources(store):
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    batch.add_source("203.0.113.9", 1, 0)
    store.commit(uid, batch)
    batch = Batch("2026-11-24")
    batch.add_source("203.0.113.9", -1, 1)
    batch.add_source("198.51.100.1", 0, 1)
    store.commit(uid, batch)
    assert list(store.sources(uid)) == [(uid, "198.51.100.1", 0, 1), (uid, "203.0.113.9", 0, 1)]


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="sqlite://.*memory://.*mysql://"):
        open_store("postgres://x/y")


def test_sqlite_refuses_a_database_that_is_not_ours(tmp_path):
    import sqlite3

    path = tmp_path / "foreign.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE important (x)")
    db.execute("INSERT INTO important VALUES (42)")
    db.commit()
    db.close()
    with pytest.raises(CorruptDatabaseError):
        open_store(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    assert db.execute("SELECT x FROM important").fetchall() == [(42,)]


def test_sqlite_reports_a_corrupt_file_and_leaves_it(tmp_path):
    path = tmp_path / "corrupt.db"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    with pytest.raises(CorruptDatabaseError):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes() == garbage


def test_a_correction_moves_counts_whether_or_not_the_row_still_exists(store):
    # (-1, +1) on a present token moves one hit; on a purged (absent) one it inserts the
    # increase. MySQL writes both as one clamped upsert per row, so a token that another
    # process inserts meanwhile cannot lose the increase either.
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    batch.add_token(1, 5, 5)
    store.commit(uid, batch)
    batch = Batch("2026-11-25")
    batch.add_token(1, -1, 1)
    batch.add_token(2, -1, 1)
    batch.add_token(3, -2, -2)
    store.commit(uid, batch)
    assert store.lookup(uid, [1, 2, 3]) == {1: (4, 6), 2: (0, 1)}


def test_a_failing_batch_writes_nothing(store):
    # The signature insert comes after the token, counter and source writes; when it fails
    # (here: the id exists), none of them may remain.
    from spamsift.filter.engine.errors import StorageError

    uid = store.uid("u")
    first = Batch("2026-11-24")
    first.new_signature = _signature("d" * 30, uid)
    store.commit(uid, first)
    before = (store.lookup(uid, [1, 2]), store.stats(uid), list(store.sources(uid)))
    batch = Batch("2026-11-24")
    batch.add_token(1, 1, 0)
    batch.add_token(2, 0, 3)
    batch.add_stat("spam_learned", 1)
    batch.add_source("203.0.113.1", 1, 0)
    batch.new_signature = _signature("d" * 30, uid)
    with pytest.raises(StorageError):
        store.commit(uid, batch)
    assert (store.lookup(uid, [1, 2]), store.stats(uid), list(store.sources(uid))) == before
    # A constraint failure is not reported as a corrupt or unreachable database.
    from spamsift.filter.engine.errors import CorruptDatabaseError, StorageUnavailableError

    with pytest.raises(StorageError) as info:
        store.commit(uid, batch)
    assert not isinstance(info.value, (CorruptDatabaseError, StorageUnavailableError))


def test_bulk_reads_for_reports(store):
    """all_stats, daily_stats, preference_values and sources(since=) answer for every user at
    once, with the per-day history signed (a correction on a later day is negative there)."""
    a, b = store.uid("a"), store.uid("b")
    for uid, day, field, delta in ((a, "2026-11-20", "spam_classified", 3),
                                   (a, "2026-11-21", "innocent_classified", 2),
                                   (a, "2026-11-22", "spam_classified", -1),
                                   (a, "2026-11-22", "innocent_misclassified", 1),
                                   (b, "2026-11-22", "innocent_classified", 5)):
        batch = Batch(day)
        batch.add_stat(field, delta)
        if uid == b:
            batch.add_source("192.0.2.1", 0, 5)
        else:
            batch.add_source("198.51.100.%d" % int(day[-1]), 1, 0)
        store.commit(uid, batch)
    stats = store.all_stats()
    assert set(stats) == {a, b}
    assert stats[a].spam_classified == 2 and stats[a].innocent_classified == 2
    assert stats[a].innocent_misclassified == 1 and stats[b].innocent_classified == 5
    daily = store.daily_stats("2026-11-21")
    index = {f: i for i, f in enumerate(STAT_FIELDS)}
    assert [(u, d) for u, d, _ in daily] == [(a, "2026-11-21"), (a, "2026-11-22"),
                                             (b, "2026-11-22")]
    assert daily[1][2][index["spam_classified"]] == -1
    assert daily[1][2][index["innocent_misclassified"]] == 1
    assert daily[2][2][index["innocent_classified"]] == 5
    store.set_preference(a, "opt", "in")
    store.set_preference(0, "opt", "out")
    store.set_preference(b, "tokenizer", "osb")
    assert store.preference_values("opt") == {a: "in", 0: "out"}
    recent = list(store.sources(since="2026-11-22"))
    assert recent == [(a, "198.51.100.2", 2, 0), (b, "192.0.2.1", 0, 5)]
    assert [r[1] for r in store.sources(a, since="2026-11-21")] == ["198.51.100.1",
                                                                     "198.51.100.2"]


def test_watch_state_compare_and_set_commits_with_the_training(store):
    """A WatchUpdate applies only while the recorded class is the expected one, and a batch
    whose watch update conflicts writes nothing at all (tokens, counters, other updates)."""
    from spamsift.filter.engine.store.base import WatchUpdate

    uid, other = store.uid("u"), store.uid("v")
    key, digest = "e" * 30, "sha256:" + "0" * 32
    assert store.watch_states(uid, [key, digest]) == {}
    first = Batch("2026-11-24")
    first.add_token(1, 1, 0)
    first.add_stat("spam_learned", 1)
    first.watch.append(WatchUpdate(key, None, "spam", 1700000000))
    store.commit(uid, first)
    assert store.watch_states(uid, [key, digest]) == {key: "spam"}
    assert store.watch_states(other, [key]) == {}  # records are per user
    # The same first sighting again (a second watcher): must not exist -> conflict.
    before = (store.lookup(uid, [1]), store.stats(uid))
    with pytest.raises(ConflictError):
        store.commit(uid, first)
    # A move with the wrong expectation, even alongside a good one: nothing is written.
    stale = Batch("2026-11-24")
    stale.add_token(1, 5, 5)
    stale.add_stat("innocent_learned", 1)
    stale.watch.append(WatchUpdate(digest, None, "spam", 1700000001))
    stale.watch.append(WatchUpdate(key, "innocent", "spam", 1700000001))
    with pytest.raises(ConflictError):
        store.commit(uid, stale)
    assert (store.lookup(uid, [1]), store.stats(uid)) == before
    assert store.watch_states(uid, [key, digest]) == {key: "spam"}
    # The right expectation applies; ANY sets whatever is there (an administrator's move).
    move = Batch("2026-11-25")
    move.watch.append(WatchUpdate(key, "spam", "innocent", 1700000002))
    store.commit(uid, move)
    admin = Batch("2026-11-25")
    admin.watch.append(WatchUpdate(key, WatchUpdate.ANY, "spam", 1700000003))
    admin.watch.append(WatchUpdate(digest, WatchUpdate.ANY, "innocent", 1700000003))
    store.commit(uid, admin)
    assert store.watch_states(uid, [key, digest]) == {key: "spam", digest: "innocent"}
    # Same class as expected is still "applied" (MySQL counts matched, not changed, rows).
    same = Batch("2026-11-25")
    same.watch.append(WatchUpdate(key, "spam", "spam", 1700000004))
    store.commit(uid, same)
    # Another user's expectation never matches this user's row.
    with pytest.raises(ConflictError):
        store.commit(other, move)


def test_watch_reads_are_bulk(store):
    from spamsift.filter.engine.store.base import WatchUpdate

    uid = store.uid("u")
    keys = [f"k{i:05d}" for i in range(1200)]  # more than one IN list
    batch = Batch("2026-11-24")
    batch.watch = [WatchUpdate(k, None, "spam" if i % 2 else "innocent", 1)
                   for i, k in enumerate(keys)]
    store.commit(uid, batch)
    states = store.watch_states(uid, keys + ["missing"])
    assert len(states) == 1200 and states["k00001"] == "spam" and states["k01198"] == "innocent"
    sigs = Batch("2026-11-24")
    sigs.new_signature = _signature("f" * 30, uid, trained="")
    store.commit(uid, sigs)
    found = store.signature_states(["f" * 30, "0" * 30] + [f"x{i}" for i in range(600)])
    assert found == {"f" * 30: (uid, "innocent", "")}


def test_daily_totals_sum_the_history_in_the_database(store):
    """daily_totals gives, per user and day, mail that passed the filter (learned +
    classified - corpus-fed) and errors (misclassified), the same on every backend."""
    a, b = store.uid("a"), store.uid("b")
    for uid, day, deltas in ((a, "2026-11-20", {"spam_learned": 3, "spam_corpusfed": 2,
                                                "innocent_classified": 4}),
                             (a, "2026-11-21", {"innocent_learned": 1,
                                                "innocent_misclassified": 1,
                                                "spam_learned": -1}),
                             (b, "2026-11-21", {"spam_classified": 7,
                                                "spam_misclassified": 2}),
                             (b, "2026-11-19", {"spam_classified": 9})):
        batch = Batch(day)
        for field, delta in deltas.items():
            batch.add_stat(field, delta)
        store.commit(uid, batch)
    assert store.daily_totals("2026-11-20") == [(a, "2026-11-20", 5, 0),
                                                (a, "2026-11-21", 0, 1),
                                                (b, "2026-11-21", 7, 2)]
    assert store.daily_totals("2026-12-01") == []


def test_weights_add_unclamped_insert_rows_and_leave_counts_alone(store):
    uid = store.uid("u")
    assert store.weights(uid, [1, 2]) == {}
    batch = Batch("2026-11-24")
    batch.add_token(1, 1, 0)
    batch.add_weight(1, 0.25)
    batch.add_weight(BIG, -0.5)   # a new row from a negative delta (counts 0)
    batch.add_weight(MID, 0.0)    # zero: nothing written
    store.commit(uid, batch)
    assert store.weights(uid, [1, 2, BIG, MID]) == {1: 0.25, BIG: -0.5}
    assert store.lookup(uid, [1, BIG, MID]) == {1: (1, 0), BIG: (0, 0)}
    batch = Batch("2026-11-25")
    batch.add_weight(1, -1.0)
    batch.add_weight(BIG, -0.25)
    batch.add_token(1, -3, 0)
    store.commit(uid, batch)
    found = store.weights(uid, [1, BIG])
    assert found[1] == pytest.approx(-0.75) and found[BIG] == pytest.approx(-0.75)
    assert store.lookup(uid, [1]) == {1: (0, 0)}  # counts clamp, weights do not
    assert store.weights(store.uid("v"), [1, BIG]) == {}  # weights are per user
    only_weight = Batch("2026-11-25")
    only_weight.add_weight(9, 1.5)
    assert not only_weight.is_empty()


def test_signature_keeps_the_model_floats(store):
    uid = store.uid("u")
    sig = _signature("c" * 30, uid)
    sig.model = (-0.0123, 4.5)
    batch = Batch("2026-11-24")
    batch.new_signature = sig
    store.commit(uid, batch)
    loaded = store.signature("c" * 30)
    assert loaded is not None and loaded.model == (-0.0123, 4.5)
    assert list(loaded.tokens) == [1, BIG, 3] and loaded.applied == bytes([1, 1, 0])
    loaded.model = (0.5, -1.0)
    loaded.trained = "spam"
    batch = Batch("2026-11-24")
    batch.signature_update = SignatureUpdate(loaded.id, "innocent", "spam", "spam_learned",
                                             loaded.pack())
    store.commit(uid, batch)
    again = store.signature("c" * 30)
    assert again is not None and again.model == (0.5, -1.0) and again.trained == "spam"
    assert _signature("d" * 30, uid).pack()[:2] == b"S1"  # no model: the old format


def test_sqlite_schema_1_is_upgraded_with_a_weight_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    store = open_store(f"sqlite://{path}")
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    batch.add_token(5, 1, 2)
    store.commit(uid, batch)
    store.close()
    db = sqlite3.connect(path)  # make it a schema-1 database: no weight column
    db.executescript("CREATE TABLE t AS SELECT uid, token, spam_hits, innocent_hits, last_hit "
                     "FROM dspam_token_data; DROP TABLE dspam_token_data; "
                     "CREATE TABLE dspam_token_data (uid INTEGER NOT NULL, token INTEGER NOT "
                     "NULL, spam_hits INTEGER NOT NULL DEFAULT 0, innocent_hits INTEGER NOT "
                     "NULL DEFAULT 0, last_hit TEXT NOT NULL, PRIMARY KEY (uid, token)) "
                     "WITHOUT ROWID; INSERT INTO dspam_token_data SELECT * FROM t; "
                     "DROP TABLE t; PRAGMA user_version = 1;")
    db.close()
    store = open_store(f"sqlite://{path}")
    try:
        assert store.check() == []
        assert store.lookup(uid, [5]) == {5: (1, 2)} and store.weights(uid, [5]) == {}
        batch = Batch("2026-11-24")
        batch.add_weight(5, 2.0)
        store.commit(uid, batch)
        assert store.weights(uid, [5]) == {5: 2.0}
    finally:
        store.close()


def test_mysql_init_adds_the_weight_column_to_a_schema_1_database(mysql_url):
    store = open_store(mysql_url)
    try:
        store.initialize()
        with store.db.cursor() as cur:
            cur.execute("ALTER TABLE dspam_token_data DROP COLUMN weight")
        store.db.commit()
        assert any("weight" in p for p in store.check())
        with pytest.raises(CorruptDatabaseError, match="db init"):
            store.weights(store.uid("u"), [1])
        assert store.initialize() == ["added dspam_token_data.weight"]
        assert store.initialize() == []
        assert store.check() == []
    finally:
        store.close()


def test_weights_ride_along_with_every_kind_of_count_change(store):
    uid = store.uid("u")
    batch = Batch("2026-11-24")
    batch.add_token(1, 2, 0)
    batch.add_token(2, 1, 0)
    batch.add_weight(1, 0.5)
    batch.add_weight(2, 0.5)
    store.commit(uid, batch)
    batch = Batch("2026-11-25")  # a correction: spam -> innocent, and one that is missing
    for token in (1, 2, 3):
        batch.add_token(token, -1, 1)
        batch.add_weight(token, -0.75)
    store.commit(uid, batch)
    assert store.lookup(uid, [1, 2, 3]) == {1: (1, 1), 2: (0, 1), 3: (0, 1)}
    found = store.weights(uid, [1, 2, 3])
    assert found == pytest.approx({1: -0.25, 2: -0.25, 3: -0.75})


def test_a_bulk_sized_batch_adds_to_existing_rows(store, monkeypatch):
    # Corpus training commits hundreds of thousands of growing tokens at once; SQLite writes
    # those as JSON statements (sqlite.py _BULK_ROWS), which must add exactly like row upserts.
    from spamsift.filter.engine.store import sqlite

    monkeypatch.setattr(sqlite, "_JSON_ROWS", 4000)  # several statements in one batch
    uid = store.uid("u")
    first = Batch("2026-11-24")
    for t in (1, MID, BIG):
        first.add_token(t, 2, 1)
    store.commit(uid, first)
    big = Batch("2026-11-25")
    ids = [1, MID, BIG] + list(range(1000, 61000, 7)) + [MID + n for n in range(1, 3000)]
    for n, t in enumerate(ids):
        big.add_token(t, n % 3, 1 + n % 2)
    big.add_weight(1, 0.25)              # with counts
    big.add_weight(5, -1.5)              # a weight alone inserts a row with zero counts
    big.add_token(6, 0, 0)               # nothing to add: no row
    store.commit(uid, big)
    found = store.lookup(uid, ids + [5, 6])
    assert found[1] == (2, 2) and found[MID] == (3, 3) and found[BIG] == (4, 2)
    assert found[5] == (0, 0) and 6 not in found
    assert len(found) == len(ids) + 1
    assert all(found[t] == (n % 3, 1 + n % 2) for n, t in enumerate(ids) if n >= 3)
    assert store.weights(uid, [1, 5, 6, MID]) == {1: 0.25, 5: -1.5}


def test_has_tokens_says_whether_a_user_has_any_token_row(store):
    uid, other = store.uid("u"), store.uid("v")
    assert not store.has_tokens(uid)
    batch = Batch("2026-11-24")
    batch.add_weight(BIG, 0.5)  # a row holding only a weight counts too
    store.commit(uid, batch)
    assert store.has_tokens(uid) and not store.has_tokens(other)


def test_a_group_commit_applies_every_batch_in_order_or_none(store):
    """The daemon's writer commits many messages' batches in one transaction: all of them,
    in order, across users; one that fails (a signature id that exists) leaves nothing of the
    group, including the batches before it."""
    from spamsift.filter.engine.errors import StorageError

    a, b = store.uid("a"), store.uid("b")
    group = []
    for n, uid in enumerate((a, b, a)):
        batch = Batch("2026-12-02")
        batch.add_token(1, 1, 0)
        batch.add_token(100 + n, 0, 2)
        batch.add_stat("spam_learned", 1)
        batch.new_signature = _signature(f"{n}" * 30, uid)
        group.append((uid, batch))
    store.commit_group(group)
    assert store.lookup(a, [1, 100, 101, 102]) == {1: (2, 0), 100: (0, 2), 102: (0, 2)}
    assert store.lookup(b, [1, 101]) == {1: (1, 0), 101: (0, 2)}
    assert store.stats(a).spam_learned == 2 and store.signature("2" * 30).uid == a
    before = (store.lookup(a, [1, 7]), store.stats(a).spam_learned)
    fresh = Batch("2026-12-02")
    fresh.add_token(7, 1, 0)
    fresh.add_stat("spam_learned", 1)
    fresh.new_signature = _signature("e" * 30, a)
    clash = Batch("2026-12-02")
    clash.add_token(1, 5, 0)
    clash.new_signature = _signature("1" * 30, b)  # exists already
    with pytest.raises(StorageError):
        store.commit_group([(a, fresh), (b, clash)])
    assert (store.lookup(a, [1, 7]), store.stats(a).spam_learned) == before
    assert store.signature("e" * 30) is None


def test_learned_records_add_up_and_a_taking_is_a_compare_and_set(store):
    """`Batch.learned`: additions upsert (copies and steps add up, per class), a taking
    applies only while the row holds that many copies and a conflicting taking writes
    nothing at all; a row left with no copies is gone; records are per user; reads are bulk."""
    from spamsift.filter.engine.store.base import LearnedChange

    uid, other = store.uid("u"), store.uid("v")
    keys = [f"sha256:{i:032x}" for i in range(1200)]  # more than one IN list
    bulk = Batch("2026-11-24")
    bulk.learned = [LearnedChange(k, "spam" if i % 3 else "innocent", 1, 0.25, 1700000000)
                    for i, k in enumerate(keys)]
    store.commit(uid, bulk)
    again = Batch("2026-11-24")
    again.learned = [LearnedChange(keys[1], "spam", 1, 0.5, 1700000001)]
    store.commit(uid, again)
    found = store.learned_records(uid, keys + ["sha256:missing"])
    assert len(found) == 1200
    assert found[keys[0]] == {"innocent": (1, 0.25)}
    assert found[keys[1]] == {"spam": (2, 0.75)}
    assert store.learned_records(other, keys[:3]) == {}
    # A correction: one copy of keys[0] from innocent to spam, with its token move.
    fix = Batch("2026-11-25")
    fix.add_token(7, 1, 0)
    fix.learned = [LearnedChange(keys[0], "innocent", -1, -0.25, 1700000002),
                   LearnedChange(keys[0], "spam", 1, 0.125, 1700000002)]
    store.commit(uid, fix)
    assert store.learned_records(uid, [keys[0]]) == {keys[0]: {"spam": (1, 0.125)}}
    # The same correction again (another process, or a second run): nothing is written.
    with pytest.raises(ConflictError):
        store.commit(uid, fix)
    assert store.lookup(uid, [7]) == {7: (1, 0)}
    assert store.learned_records(uid, [keys[0]]) == {keys[0]: {"spam": (1, 0.125)}}
    # Two copies taken from a row of two at once apply; a third does not.
    both = Batch("2026-11-25")
    both.learned = [LearnedChange(keys[1], "spam", -1, -0.25, 1),
                    LearnedChange(keys[1], "spam", -1, -0.5, 1)]
    store.commit(uid, both)
    assert keys[1] not in store.learned_records(uid, [keys[1]])
    with pytest.raises(ConflictError):
        store.commit(other, fix)  # another user's row never matches


def test_sqlite_schema_2_is_upgraded_with_the_learned_messages_table(tmp_path):
    import sqlite3

    from spamsift.filter.engine.store.base import LearnedChange

    path = tmp_path / "old.db"
    store = open_store(f"sqlite://{path}")
    uid = store.uid("u")
    store.close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE spamsift_learned_messages; PRAGMA user_version = 2;")
    db.close()
    store = open_store(f"sqlite://{path}")
    try:
        assert store.check() == []
        batch = Batch("2026-11-24")
        batch.learned.append(LearnedChange("k", "spam", 1, 0.0, 1))
        store.commit(uid, batch)
        assert store.learned_records(uid, ["k"]) == {"k": {"spam": (1, 0.0)}}
    finally:
        store.close()


def test_mysql_init_adds_the_learned_messages_table(mysql_url):
    store = open_store(mysql_url)
    try:
        store.initialize()
        with store.db.cursor() as cur:
            cur.execute("DROP TABLE spamsift_learned_messages")
            cur.execute("UPDATE spamsift_meta SET value = '2' WHERE name = 'schema_version'")
        store.db.commit()
        assert any("spamsift_learned_messages" in p for p in store.check())
        with pytest.raises(CorruptDatabaseError, match="db init"):
            store.learned_records(store.uid("u"), ["k"])
        assert store.initialize() == ["created spamsift_learned_messages"]
        assert store.check() == []
    finally:
        store.close()


def test_a_signature_stored_twice_is_a_duplicate_signature_error(store):
    """Two processes inserting one id (two watchers deriving it from the same message): every
    backend raises DuplicateSignatureError, so callers catch the class, and the losing batch,
    alone or in a group, writes nothing."""
    from spamsift.filter.engine.errors import DuplicateSignatureError

    uid = store.uid("u")
    first = Batch("2026-12-03")
    first.new_signature = _signature("f" * 30, uid)
    store.commit(uid, first)
    again = Batch("2026-12-03")
    again.add_token(1, 1, 0)
    again.add_stat("spam_learned", 1)
    again.new_signature = _signature("f" * 30, uid)
    with pytest.raises(DuplicateSignatureError, match="f" * 30):
        store.commit(uid, again)
    other = Batch("2026-12-03")
    other.add_token(2, 0, 1)
    with pytest.raises(DuplicateSignatureError):
        store.commit_group([(uid, other), (uid, again)])
    assert store.lookup(uid, [1, 2]) == {} and store.stats(uid).spam_learned == 0


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_other_constraint_failures_stay_plain_storage_errors(backend, request, tmp_path):
    """Only a stored signature id is a DuplicateSignatureError: a signature the table refuses
    for another reason (here a missing result) stays a plain StorageError."""
    from spamsift.filter.engine.errors import DuplicateSignatureError, StorageError

    if backend == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/store.db")
    else:
        store = open_store(request.getfixturevalue("mysql_url"))
        store.initialize()
    request.addfinalizer(store.close)
    uid = store.uid("u")
    batch = Batch("2026-12-03")
    batch.new_signature = _signature("0f" * 15, uid)
    batch.new_signature.result = None  # type: ignore[assignment]
    with pytest.raises(StorageError) as info:
        store.commit(uid, batch)
    assert type(info.value) is StorageError and "result" in str(info.value)
    assert not isinstance(info.value, DuplicateSignatureError)
    assert store.signature("0f" * 15) is None


def test_reopenable_says_whether_the_url_reaches_the_same_data(store):
    """`reopenable` answers what bulk training's writer thread asks: does a connection of its
    own, opened by `url`, see this store's data?"""
    uid = store.uid("u")
    batch = Batch("2026-12-03")
    batch.add_token(1, 1, 0)
    store.commit(uid, batch)
    other = open_store(store.url)
    try:
        known = other.uid("u", create=False)
        seen = other.lookup(known, [1]) if known is not None else {}
        assert (seen == {1: (1, 0)}) == store.reopenable
        assert other is not store  # a connection of its own, or a store of its own
    finally:
        other.close()


def test_without_create_a_missing_sqlite_file_is_no_database(tmp_path):
    """The registry leaves it to the backend what `create=False` means: for SQLite a file
    that does not exist is NoDatabaseError, and none is made."""
    from spamsift.filter.engine.errors import NoDatabaseError

    with pytest.raises(NoDatabaseError, match="no database at"):
        open_store(f"sqlite:///{tmp_path}/absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()
    open_store(f"sqlite:///{tmp_path}/made.db").close()
    open_store(f"sqlite:///{tmp_path}/made.db", create=False).close()
