"""Benchmark: a new user's first messages with and without a group (issue #22).

Protocol: the SpamAssassin corpus is shuffled as in `benchmarks/accuracy.py` (same seed,
``X-Spam-*`` headers removed) and cut in two. User ``site`` learns the first half as corpus
(`Agent.learn`, what ``spamsift train --user site`` does). Then a new user, ``new@example.org``,
runs the online protocol of `accuracy.py` through the second half: each message filtered by
`Agent.process`, each error corrected by `Agent.retrain`. Rows, one per group type:

* ``none``: no group;
* ``merged``: ``site`` is a merged group of everyone (``*``);
* ``global``: ``site`` is a global group of everyone;
* ``classification``: ``site`` and the new user are named members of a classification group
  (the new user asks ``site`` when unsure of an innocent verdict);
* ``shared``: the new user shares ``site``'s dictionary (its messages train it too).

An inoculation group needs another member's reports of the same mail, which this protocol does
not have; tests/test_groups.py covers it.

Printed per row: the new user's errors (ham called spam / spam missed) in its first `--first`
messages and over the whole half, the verdicts the group decided (its ``*_classified``
counters), and milliseconds a message in this process (memory store).

`--lookup` then measures what a merged group costs a message on SQLite and (with
``--mysql URL``) MariaDB: ``site``'s half-corpus data and the new user's are written to a
fresh database, and for the held-out messages the scoring read (`Store.counts_and_weights`
alone, `Store.counts_and_weights_of` for member and group) and a whole `Agent.process` (no
writes: classify only) are timed, median and 90th percentile.

Usage:
  python benchmarks/groups.py [--seed 1] [--first 500] [--lookup] [--mysql mysql://root@127.0.0.1:3306]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from accuracy import load_corpus  # noqa: E402
from filter_latency import corpus_dir  # noqa: E402

NEW_USER = "new@example.org"
TYPES = ("none", "merged", "global", "classification", "shared")


def group_for(kind: str):
    from spamsift.filter.engine.groups import Group

    if kind == "none":
        return ()
    if kind == "classification":
        return (Group("peers", "classification", ("site", NEW_USER)),)
    return (Group("site", kind, ("*",)),)


def train_site(messages) -> object:
    """A memory store in which ``site`` learned `messages` as corpus."""
    from spamsift.filter.engine import config
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.store.memory import MemoryStore

    store = MemoryStore()
    agent = Agent(config.Settings({}), store)
    ctx = agent.user("site")
    for is_spam, raw in messages:
        agent.learn(ctx, raw, "spam" if is_spam else "innocent")
    return store


def run(kind: str, site_store, messages, first: int) -> dict:
    """The new user's online run through `messages` with a group of type `kind`."""
    from spamsift.filter.engine import config
    from spamsift.filter.engine.agent import Agent

    store = copy.deepcopy(site_store)
    settings = config.Settings({}).with_groups(group_for(kind))
    agent = Agent(settings, store)
    ctx = agent.user(NEW_USER)
    figures = {"first_ham": 0, "first_spam": 0, "ham": 0, "spam": 0}
    started = time.perf_counter()
    for n, (is_spam, raw) in enumerate(messages):
        outcome = agent.process(ctx, raw)
        if outcome.is_spam != is_spam:
            key = "spam" if is_spam else "ham"
            figures[key] += 1
            if n < first:
                figures["first_" + key] += 1
            agent.retrain(ctx.name, outcome.signature, "spam" if is_spam else "innocent")
    figures["ms"] = 1000 * (time.perf_counter() - started) / len(messages)
    decided = 0
    for group in settings.groups:
        uid = store.uid(group.name, create=False)
        if uid is not None and group.type != "shared":
            stats = store.stats(uid)
            decided += stats.spam_classified + stats.innocent_classified
    figures["decided"] = decided
    return figures


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    return (f"median {statistics.median(values):.2f} ms, "
            f"p90 {values[int(0.9 * (len(values) - 1))]:.2f} ms")


def lookup_cost(site_store, held_out, url: str, label: str) -> None:
    """Time the scoring read and a classify-only `process` with and without a merged group
    on a real database at `url`, holding ``site``'s data and a young member's."""
    from spamsift.filter.engine import config, logistic
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.store.base import Batch, open_store

    store = open_store(url)
    store.initialize()
    site = store.uid("site")
    batch = Batch("2026-11-24")
    batch.tokens = {tok: [row[0], row[1]] for (uid, tok), row in site_store.tokens.items()}
    batch.weights = {tok: row[3] for (uid, tok), row in site_store.tokens.items() if row[3]}
    for field, value in zip(("spam_learned", "innocent_learned"),
                            (site_store.stats(1).spam_learned,
                             site_store.stats(1).innocent_learned)):
        batch.add_stat(field, value)
    store.commit(site, batch)
    plain = Agent(config.Settings({}), store)
    member = plain.user(NEW_USER)
    for is_spam, raw in held_out[:200]:  # a young member: 200 messages of its own
        plain.learn(member, raw, "spam" if is_spam else "innocent")
    merged = Agent(config.Settings({}).with_groups(group_for("merged")), store)
    timings: dict[str, list[float]] = {"alone": [], "merged": [], "process alone": [],
                                       "process merged": []}
    for _is_spam, raw in held_out[200:]:
        ctx = plain.user(NEW_USER)
        message = plain.tokenize(ctx, raw)
        feats = logistic.features(message.ids.values())
        t0 = time.perf_counter()
        store.counts_and_weights(ctx.uid, feats)
        store.stats(ctx.uid)
        t1 = time.perf_counter()
        store.counts_and_weights_of((ctx.uid, site), feats)
        store.stats(ctx.uid)
        store.stats(site)
        t2 = time.perf_counter()
        plain.process(plain.user(NEW_USER), raw, classify_only=True)
        t3 = time.perf_counter()
        merged.process(merged.user(NEW_USER), raw, classify_only=True)
        t4 = time.perf_counter()
        timings["alone"].append(1000 * (t1 - t0))
        timings["merged"].append(1000 * (t2 - t1))
        timings["process alone"].append(1000 * (t3 - t2))
        timings["process merged"].append(1000 * (t4 - t3))
    rows = sum(1 for _ in site_store.tokens)
    print(f"{label}: {rows:,} site rows, {len(timings['alone'])} messages")
    print(f"  read, member only:           {_percentiles(timings['alone'])}")
    print(f"  read, member + merged group: {_percentiles(timings['merged'])}")
    print(f"  process (classify), no group: {_percentiles(timings['process alone'])}")
    print(f"  process (classify), merged:   {_percentiles(timings['process merged'])}")
    store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", help="corpus folder with an `index` file")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--first", type=int, default=500, help="the new user's first N messages")
    p.add_argument("--types", default=",".join(TYPES), help="rows to run")
    p.add_argument("--lookup", action="store_true", help="also time the merged lookup")
    p.add_argument("--mysql", help="MariaDB server URL for --lookup (a database of its own "
                   "is created and dropped)")
    opts = p.parse_args(argv)
    root = corpus_dir(opts.corpus)
    messages = load_corpus(root, opts.seed, None)
    half = len(messages) // 2
    site_half, new_half = messages[:half], messages[half:]
    started = time.perf_counter()
    site_store = train_site(site_half)
    print(f"corpus {root}, seed {opts.seed}: site learned {half} messages as corpus in "
          f"{time.perf_counter() - started:.0f} s; the new user runs online through "
          f"{len(new_half)} ({sum(s for s, _ in new_half)} spam)", flush=True)
    print(f"{'group':15} {'first ' + str(opts.first) + ': ham/spam errors':>26} "
          f"{'all: ham/spam errors':>22} {'decided':>8} {'ms/msg':>7}", flush=True)
    for kind in opts.types.split(","):
        r = run(kind, site_store, new_half, opts.first)
        first_total = r["first_ham"] + r["first_spam"]
        print(f"{kind:15} {first_total:>10} ({r['first_ham']:3} / {r['first_spam']:3})      "
              f"{r['ham'] + r['spam']:>8} ({r['ham']:3} / {r['spam']:3}) {r['decided']:>8} "
              f"{r['ms']:7.2f}", flush=True)
    if opts.lookup:
        with tempfile.TemporaryDirectory() as tmp:
            lookup_cost(site_store, new_half[:1200], f"sqlite:///{tmp}/groups.db", "SQLite")
        if opts.mysql:
            import pymysql

            from spamsift.filter.engine.store.mysql import parse_url

            params = parse_url(opts.mysql.rstrip("/") + "/mysql")
            params.pop("database")
            admin = pymysql.connect(**params, autocommit=True)
            db = f"spamsift_groups_bench_{os.getpid()}"
            admin.cursor().execute(f"CREATE DATABASE {db}")
            try:
                lookup_cost(site_store, new_half[:1200], f"{opts.mysql.rstrip('/')}/{db}",
                            "MariaDB")
            finally:
                admin.cursor().execute(f"DROP DATABASE {db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
