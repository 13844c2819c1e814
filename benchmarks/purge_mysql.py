"""Benchmark: purge 1,000,000 stale token rows in MySQL while mail is being filtered.

Protocol (issue 3): a MariaDB database of the benchmark's own holds a user trained on part of
the SpamAssassin corpus plus 1,000,000 stale token rows (last hit 200 days ago) of other
users. A loop filters held-out messages through the real filter path (`spamsift.filter.cli.main`
with one open store, as the daemon runs it, committing inline) and records each message's
latency: first without purge (baseline), then while `spamsift purge` runs in another process
with its default batches. Prints the purge time and the filter's median and 99th percentile
latency for both phases. Target: p99 during purge under 2x the baseline. Prints figures;
asserts nothing.

Usage: python benchmarks/purge_mysql.py [--server mysql://root@127.0.0.1:3306] [--rows N]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from filter_latency import corpus_dir, read_index  # noqa: E402


def figures(label: str, times: list[float]) -> float:
    times = sorted(times)
    p99 = statistics.quantiles(times, n=100)[98]
    print(f"{label}: {len(times)} messages, median {statistics.median(times):.1f} ms, "
          f"p99 {p99:.1f} ms, max {times[-1]:.1f} ms")
    return p99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("SPAMSIFT_TEST_MYSQL",
                                                           "mysql://root@127.0.0.1:3306"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--corpus")
    parser.add_argument("--train", type=int, default=1000)
    args = parser.parse_args(argv)

    import pymysql

    from spamsift.filter import cli
    from spamsift.filter.engine import users
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine import config
    from spamsift.filter.engine.store.base import open_store
    from spamsift.filter.engine.store.mysql import parse_url

    params = parse_url(args.server + "/mysql")
    params.pop("database")
    admin = pymysql.connect(**params, autocommit=True)
    name = "spamsift_bench_purge"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    url = f"{args.server}/{name}"
    store = open_store(url, 30)
    store.initialize()

    root = corpus_dir(args.corpus)
    messages = read_index(root)
    random.Random(1).shuffle(messages)
    train, held = messages[:args.train], messages[args.train:args.train + 3000]
    home = tempfile.mkdtemp(prefix="spamsift-purge-bench-")
    settings = config.load(None, {"SPAMSIFT_HOME": home, "SPAMSIFT_STORAGE": url})
    agent = Agent(settings, store)
    ctx = agent.user("bench")
    for label, path in train:
        with open(path, "rb") as fh:
            agent.learn(ctx, fh.read(), "spam" if label == "spam" else "innocent")

    started = time.perf_counter()
    stale_users = [store.uid(f"stale{n}") for n in range(10)]
    per_user = args.rows // len(stale_users)
    with store.db.cursor() as cur:
        for uid in stale_users:
            # MariaDB's sequence engine makes the rows server-side in one statement each.
            cur.execute(f"INSERT INTO dspam_token_data (uid, token, spam_hits, innocent_hits, "
                        f"last_hit) SELECT {uid}, seq, 1, 0, CURRENT_DATE - INTERVAL 200 DAY "
                        f"FROM seq_1_to_{per_user}")
    store.db.commit()
    print(f"loaded {per_user * len(stale_users)} stale token rows in "
          f"{time.perf_counter() - started:.1f} s; user 'bench' trained on {len(train)} messages")

    bodies = []
    for _label, path in held:
        with open(path, "rb") as fh:
            bodies.append(fh.read())
    env = {"SPAMSIFT_HOME": home, "SPAMSIFT_STORAGE": url}
    caller = users.this_process()

    def filter_one(data: bytes) -> float:
        t0 = time.perf_counter()
        code = cli.main(["--user", "bench", "--stdout"], stdin=io.BytesIO(data),
                        stdout=io.BytesIO(), stderr=io.StringIO(), environ=env,
                        caller=caller, store=store)
        assert code == 0
        return (time.perf_counter() - t0) * 1000

    baseline = [filter_one(bodies[i]) for i in range(300)]
    base_p99 = figures("filter without purge", baseline)

    purge_env = dict(os.environ, SPAMSIFT_HOME=home, SPAMSIFT_STORAGE=url)
    purge_env.pop("SPAMSIFT_CONFIG", None)
    purge_started = time.perf_counter()
    purge = subprocess.Popen([sys.executable, "-m", "spamsift", "purge", "--quiet"],
                             env=purge_env, stdout=subprocess.PIPE, text=True)
    during, i = [], 300
    while purge.poll() is None:
        during.append(filter_one(bodies[i % len(bodies)]))
        i += 1
    purge_s = time.perf_counter() - purge_started
    print(purge.stdout.read().strip())
    print(f"purge took {purge_s:.1f} s ({args.rows / purge_s:,.0f} rows/s)")
    p99 = figures("filter during purge", during)
    print(f"p99 during purge / baseline p99 = {p99 / base_p99:.2f} (target < 2)")
    left = store._read("SELECT count(*) FROM dspam_token_data WHERE uid <> %s", (ctx.uid,))
    print(f"stale rows left: {left[0][0]}")
    store.close()
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
