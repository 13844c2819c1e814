"""Eight processes filter and retrain 2,000 messages at once for the same three users.

On SQLite (one file) and on MySQL/MariaDB (one database), eight spawned processes
(`concurrency_worker.work`) each run a share of 2,000 synthetic messages through the real
inline filter (`spamsift.filter.cli.main` with ``--user U --stdout --deliver=innocent,spam``) and
correct its errors with ``--addspam`` / ``--falsepositive``; some messages are reported twice, some
reported wrong and then taken back, and some (the "storm") are reported by all eight
processes at the same moment, so the signature's compare-and-set is contended.

Afterwards the database must hold exactly what the same work gives done one at a time. Which
messages were misclassified depends on the order the processes happened to run in, so the
expected state is computed from what they recorded, not replayed: with ``training_mode =
"teft"`` and ``test_conditional_training = false`` every message, once corrected, adds exactly
one to each of its tokens in its true class, whatever happened to it before. So:

* every token row of the three users = (number of the user's spam messages holding the
  token, number of its innocent ones), the tokens found by the filter's own tokenizer;
* ``dspam_stats``: *_learned per true class; *_misclassified = messages whose true class
  differs from the filter's first answer; classified and corpusfed 0; the per-day history
  sums to the same;
* one signature per message, trained as its true class, counting the right counters;
* the source addresses' counts per true class;
* no process failed, no message was lost or damaged, every retraining exited 0.

The check is then run once more against a deliberately wrong expectation (one retraining
counted twice) and must find the difference: a comparison that cannot fail proves nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import concurrency_worker as cw

from spamsift.filter.engine import config, logistic, mime
from spamsift.filter.engine.sources import first_external_ip
from spamsift.filter.engine.store.base import STAT_FIELDS, open_store
from spamsift.filter.engine.tokenizer import Tokenizer, token_id

MESSAGES = 2000
SEED = 20240611
TIME_LIMIT = 600  # seconds for the whole run; it takes well under a minute per backend
CONFIG = """\
training_mode = "teft"
test_conditional_training = false
log_messages = false
syslog = false
"""
# PyMySQL (1.2) asks for TLS whenever it can ("preferred") and so builds a default SSL
# context for every connection, loading the system CA bundle: 30-80 ms here, several times
# what the rest of a message costs, even though this server has TLS disabled. Every
# `spamsift filter` run opens one connection, so that alone would make the MySQL run three
# times slower. Pointing OpenSSL at an empty bundle in the worker processes only skips the
# file read; the filter's code path (a fresh connection per command) is unchanged.
WORKER_PROCESS_ENV = {"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}


@pytest.fixture(params=["sqlite", "mysql"])
def storage(request, tmp_path):
    """(backend name, storage URL) of a fresh, initialized database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/spamsift.db"
    else:
        url = request.getfixturevalue("mysql_url")
    store = open_store(url)
    store.initialize()
    store.close()
    return request.param, url


# -- reading the database directly (not through the store under test) ---------------------
def read_state(backend: str, url: str) -> dict:
    """Every row that matters, keyed by user name."""
    if backend == "sqlite":
        db = sqlite3.connect(url.split("://", 1)[1])

        def rows(sql_text):
            return db.execute(sql_text).fetchall()
    else:
        import pymysql

        from spamsift.filter.engine.store.mysql import parse_url

        db = pymysql.connect(**parse_url(url))

        def rows(sql_text):
            with db.cursor() as cur:
                cur.execute(sql_text)
                return cur.fetchall()
    try:
        users = dict(rows("SELECT uid, username FROM dspam_virtual_uids"))
        tokens = {(users[uid], int(token) % (1 << 64)): (int(s), int(i))
                  for uid, token, s, i in rows("SELECT uid, token, spam_hits, innocent_hits "
                                               "FROM dspam_token_data")
                  # the model's bias and reputation features: weights, no counts
                  if int(token) % (1 << 64) not in MODEL_ONLY}
        fields = ", ".join(STAT_FIELDS)
        stats = {users[r[0]]: tuple(int(v) for v in r[1:])
                 for r in rows(f"SELECT uid, {fields} FROM dspam_stats")}
        daily: dict[str, list[int]] = {}
        for r in rows(f"SELECT uid, {fields} FROM spamsift_stats_daily"):
            total = daily.setdefault(users[r[0]], [0] * len(STAT_FIELDS))
            for k, v in enumerate(r[1:]):
                total[k] += int(v)
        signatures = {sig: (users[uid], result, trained, counter, int(length), source_ip)
                      for uid, sig, result, trained, counter, length, source_ip in rows(
                          "SELECT uid, signature, result, trained, counter, length, source_ip "
                          "FROM dspam_signature_data")}
        sources = {(users[uid], ip): (int(s), int(i)) for uid, ip, s, i in rows(
            "SELECT uid, ip, spam_hits, innocent_hits FROM spamsift_sources")}
    finally:
        db.close()
    return {"users": sorted(users.values()), "tokens": tokens, "stats": stats,
            "daily": {u: tuple(v) for u, v in daily.items()}, "signatures": signatures,
            "sources": sources}


# -- what the work gives done one at a time ------------------------------------------------
MODEL_ONLY = frozenset((logistic.BIAS, *logistic.REPUTATION))


def expected_state(messages: list[dict], records: list[dict], settings) -> dict:
    """The final state implied by the messages' true classes and the filter's first answers."""
    tokenizer = Tokenizer(settings.tokenizer, settings.ignore_headers, settings.header_prefix)
    by_index = {m["index"]: m for m in messages}
    tokens: dict[tuple[str, int], list[int]] = {}
    stats = {u: dict.fromkeys(STAT_FIELDS, 0) for u in cw.USERS}
    signatures = {}
    sources: dict[tuple[str, str], list[int]] = {}
    for rec in records:
        msg = by_index[rec["index"]]
        user, label = msg["user"], msg["label"]
        raw = msg["raw"].encode("latin-1")
        side = 0 if label == "spam" else 1
        freq = tokenizer.tokenize(raw)
        for token in freq:
            tokens.setdefault((user, token_id(token)), [0, 0])[side] += 1
        first = "spam" if rec["result"] == "Spam" else "innocent"
        stats[user][f"{label}_learned"] += 1
        counter = f"{label}_learned"
        if label != first:
            stats[user][f"{label}_misclassified"] += 1
            counter += f",{label}_misclassified"
        ip = first_external_ip(mime.parse_headers(mime.split_head_body(raw)[0]),
                               settings.local_mx) or ""
        if ip:
            sources.setdefault((user, ip), [0, 0])[side] += 1
        signatures[rec["signature"]] = (user, rec["result"].lower(), label, counter, len(freq),
                                        ip)
    return {"users": sorted(cw.USERS),
            "tokens": {k: tuple(v) for k, v in tokens.items()},
            "stats": {u: tuple(s[f] for f in STAT_FIELDS) for u, s in stats.items()},
            "signatures": signatures,
            "sources": {k: tuple(v) for k, v in sources.items()}}


def differences(want: dict, got: dict, limit: int = 8) -> list[str]:
    """Every way `got` differs from `want`, a few examples per kind."""
    problems = []
    if got["users"] != want["users"]:
        problems.append(f"users: {got['users']} != {want['users']}")
    for kind in ("tokens", "signatures", "sources"):
        w, g = want[kind], got[kind]
        wrong = [k for k in w if g.get(k) != w[k]]
        extra = [k for k in g if k not in w]
        if wrong or extra:
            problems.append(f"{kind}: {len(wrong)} of {len(w)} differ, {len(extra)} unexpected; "
                            + "; ".join(f"{k}: {g.get(k)} != {w[k]}" for k in wrong[:limit])
                            + "; ".join(f" extra {k}: {g[k]}" for k in extra[:limit]))
    for user in want["users"]:
        w = dict(zip(STAT_FIELDS, want["stats"][user]))
        for name in ("stats", "daily"):
            g = dict(zip(STAT_FIELDS, got[name].get(user, (0,) * len(STAT_FIELDS))))
            if g != w:
                problems.append(f"{name} of {user}: "
                                + ", ".join(f"{f}={g[f]} (want {w[f]})" for f in STAT_FIELDS
                                            if g[f] != w[f]))
    return problems


def double_one_retrain(want: dict, messages: list[dict], records: list[dict],
                       settings) -> dict:
    """`want` as if one corrected message had been retrained twice (a lost compare-and-set):
    its tokens moved a second time (clamped at 0, as the stores do), its counters counted
    again."""
    rec = next(r for r in records if ("spam" if r["result"] == "Spam" else "innocent")
               != r["label"])
    msg = next(m for m in messages if m["index"] == rec["index"])
    label, user = msg["label"], msg["user"]
    tokens = dict(want["tokens"])
    tokenizer = Tokenizer(settings.tokenizer, settings.ignore_headers, settings.header_prefix)
    for token in tokenizer.tokenize(msg["raw"].encode("latin-1")):
        s, i = tokens[(user, token_id(token))]
        tokens[(user, token_id(token))] = ((s + 1, max(i - 1, 0)) if label == "spam"
                                           else (max(s - 1, 0), i + 1))
    stats = dict(want["stats"])
    doubled = dict(zip(STAT_FIELDS, stats[user]))
    doubled[f"{label}_learned"] += 1
    doubled[f"{label}_misclassified"] += 1
    stats[user] = tuple(doubled[f] for f in STAT_FIELDS)
    return dict(want, tokens=tokens, stats=stats)


def server_counters(backend: str, url: str) -> Counter:
    """MariaDB's server-wide deadlock and lock-wait counts (other databases' too); none for
    SQLite, whose writers queue on one lock instead."""
    if backend != "mysql":
        return Counter()
    import pymysql

    from spamsift.filter.engine.store.mysql import parse_url

    db = pymysql.connect(**parse_url(url))
    try:
        with db.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN "
                        "('Innodb_deadlocks', 'Innodb_row_lock_waits')")
            return Counter({name: int(value) for name, value in cur.fetchall()})
    finally:
        db.close()


# -- the test ------------------------------------------------------------------------------
def test_eight_processes_filter_and_retrain_as_if_one_at_a_time(storage, tmp_path):
    backend, url = storage
    home = tmp_path / "home"
    home.mkdir()
    config_path = tmp_path / "spamsift.toml"
    config_path.write_text(CONFIG)
    env = {"SPAMSIFT_HOME": str(home), "SPAMSIFT_STORAGE": url,
           "SPAMSIFT_CONFIG": str(config_path)}
    settings = config.load(None, env, use_cache=False)
    assert (settings.training_mode, settings.test_conditional_training) == ("teft", False)
    messages = cw.corpus(SEED, MESSAGES)
    out_dir = tmp_path / "results"
    out_dir.mkdir()

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(cw.WORKERS)
    procs = [ctx.Process(target=cw.work, name=f"spamsift-worker-{n}",
                         args=(n, messages[n::cw.WORKERS], env, str(out_dir), backend,
                               barrier, WORKER_PROCESS_ENV))
             for n in range(cw.WORKERS)]
    server_before = server_counters(backend, url)
    started = time.monotonic()
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(max(1.0, TIME_LIMIT - (time.monotonic() - started)))
    finally:
        hung = [p.name for p in procs if p.is_alive()]
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    seconds = time.monotonic() - started
    assert not hung, f"workers still running after {TIME_LIMIT} s: {hung}"

    # No process failed, no message was lost or damaged, every command exited 0.
    results, problems = [], []
    for n, proc in enumerate(procs):
        path = out_dir / f"worker-{n}.json"
        if proc.exitcode != 0 or not path.exists():
            problems.append(f"worker {n} exited {proc.exitcode} without a result")
            continue
        results.append(json.loads(path.read_text()))
        problems += results[-1]["errors"]
    assert not problems, f"{len(problems)} failures:\n" + "\n".join(problems[:20])
    records = [r for res in results for r in res["records"]]
    ops = [op for res in results for op in res["ops"]]
    assert sorted(r["index"] for r in records) == list(range(MESSAGES)), "messages lost"
    assert len({r["signature"] for r in records}) == MESSAGES, "a signature id was reused"
    assert all(op["code"] == 0 for op in ops)

    server = server_counters(backend, url)
    server.subtract(server_before)
    errors = sum(("spam" if r["result"] == "Spam" else "innocent") != r["label"]
                 for r in records)
    storm = sum(op["phase"] == 2 for op in ops)
    print(f"\n[{backend}] {MESSAGES} messages, {cw.WORKERS} processes, {seconds:.1f} s; "
          f"{errors} misclassified, {len(ops)} retrain commands ({storm} in the storm), "
          f"{sum(res['cas_conflicts'] for res in results)} compare-and-set conflicts retried, "
          f"{sum(res['deadlocks'] for res in results)} deadlocks/lock timeouts retried"
          + (f" (server-wide: {server['Innodb_deadlocks']} deadlocks, "
             f"{server['Innodb_row_lock_waits']} row lock waits)" if backend == "mysql" else "")
          + "; "
          f"results {dict(Counter(r['result'] for r in records))}")
    # The mix must actually exercise what it is meant to: errors to correct, reports that
    # are no-ops, reports taken back, and many processes on one signature at once.
    assert errors >= 50, "too few misclassifications to exercise retraining"
    assert sum(r["plan"] == "storm" for r in records) >= 20

    got = read_state(backend, url)
    want = expected_state(messages, records, settings)
    problems = differences(want, got)
    assert not problems, "the concurrent result differs from one at a time:\n" + "\n".join(
        problems)
    assert len(got["tokens"]) > 50000  # the comparison covered real volume

    # The comparison can fail: a retraining applied twice must be caught.
    assert differences(double_one_retrain(want, messages, records, settings), got)
