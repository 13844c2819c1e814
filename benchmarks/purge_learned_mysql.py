"""Benchmark: purging old learned records on MySQL/MariaDB, with and without their index.

A database of the benchmark's own gets `--rows` records of what corpus training learned
(``spamsift_learned_messages``) for 20 users, learned at random over the last 200 days. The
purge's ``learned`` rule (records older than ``purge_learned`` days, 90 by default) then runs
batch by batch as ``spamsift purge`` runs it (`Store.purge_step`, ``purge_batch`` rows a
batch), first with the schema's ``id_learned_at`` index, then on the same rows without it (a
database from before ``spamsift db init`` added it). Printed: records deleted, batches, total
time and the slowest batch. The database is dropped at the end.

Usage: python benchmarks/purge_learned_mysql.py [--server mysql://root@127.0.0.1:3306]
       [--rows N]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

DATABASE = "spamsift_purge_learned_bench"


def main() -> None:
    import pymysql

    from spamsift.filter.engine import config, purging
    from spamsift.filter.engine.store.base import open_store
    from spamsift.filter.engine.store.mysql import parse_url

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="mysql://root@127.0.0.1:3306")
    p.add_argument("--rows", type=int, default=300_000)
    args = p.parse_args()
    params = parse_url(args.server.rstrip("/") + "/mysql")
    params.pop("database", None)
    admin = pymysql.connect(**params)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cur.execute(f"CREATE DATABASE {DATABASE}")
    store = open_store(f"{args.server.rstrip('/')}/{DATABASE}")
    try:
        store.initialize()
        now = int(time.time())
        rng = random.Random(1)
        rows = [(1 + k % 20, f"{k:032x}", "spam" if k % 3 else "innocent", 1, 0.0,
                 now - rng.randrange(0, 200 * 86400)) for k in range(args.rows)]
        with store.db.cursor() as cur:
            for i in range(0, len(rows), 5000):
                cur.executemany("INSERT INTO spamsift_learned_messages VALUES "
                                "(%s, %s, %s, %s, %s, %s)", rows[i:i + 5000])
            cur.execute("CREATE TABLE kept LIKE spamsift_learned_messages")
            cur.execute("INSERT INTO kept SELECT * FROM spamsift_learned_messages")
        store.db.commit()
        settings = config.Settings({})

        def purge(label: str) -> None:
            rule = next(r for r in purging.plan(settings, store) if r.name == "learned")
            cursor, deleted, batches, slowest = None, 0, 0, 0.0
            started = time.perf_counter()
            while True:
                t = time.perf_counter()
                n, cursor = store.purge_step(rule, settings.purge_batch, cursor)
                slowest = max(slowest, time.perf_counter() - t)
                deleted += n
                batches += 1
                if cursor is None:
                    break
            print(f"{label:24} {deleted} of {len(rows)} records deleted in {batches} batches "
                  f"of {settings.purge_batch}: {time.perf_counter() - started:.1f} s, "
                  f"slowest batch {1000 * slowest:.0f} ms")

        purge("with id_learned_at")
        with store.db.cursor() as cur:
            cur.execute("DELETE FROM spamsift_learned_messages")
            cur.execute("INSERT INTO spamsift_learned_messages SELECT * FROM kept")
            cur.execute("ALTER TABLE spamsift_learned_messages DROP KEY id_learned_at")
        store.db.commit()
        purge("without it")
    finally:
        store.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.close()


if __name__ == "__main__":
    main()
