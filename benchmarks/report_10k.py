"""Benchmark: `spamsift report` over 10,000 users with 30 days of history.

Protocol (issue 6): a generated database of 10,000 users in 50 domains, each with DSPAM
counters, 30 days of per-day history (one row per user and day: 300,000 rows), three source
addresses and, for one user in twenty, an ``opt`` preference. Rows are written directly with
bulk SQL (the filter would take hours to produce them); the numbers are random but
consistent (the counters are the sums of the history plus corpus training). Then:

* ``spamsift report --json`` is run as a process (the installed launcher, as an
  administrator's cron job would run it), three times; wall time from start to exit.
  Target: under 2 s.
* ``spamsift report --watch`` is started in a pseudo-terminal of 160 x 50; the time until the
  first complete frame (its key line) has been written, three times. Target: under 1 s.
  The first frame is drawn from the counters; the trends follow when the history has been
  read (a thread of its own), and the time until that frame is printed too.

Prints figures; asserts nothing. SQLite by default; ``--storage mysql://root@127.0.0.1:3306``
creates a MariaDB database of its own there (dropped afterwards).

Usage: python benchmarks/report_10k.py [--storage URL] [--users N] [--days N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
FIRST_FRAME_MARK = b"q quit"           # the key line ends every frame
FULL_FRAME_MARK = b"Messages today"    # only once the history (trends) has been read


def generate(days_back: int, users: int, seed: int = 6):
    """(virtual uid rows, stats rows, daily rows, source rows, preference rows)."""
    from spamsift.trainer.report_data import today_string, window

    rng = random.Random(seed)
    dates = window(today_string(), days_back)
    uid_rows, stat_rows, daily_rows, source_rows, pref_rows = [], [], [], [], []
    for uid in range(1, users + 1):
        name = f"user{uid:05d}@d{uid % 50:02d}.example"
        uid_rows.append((uid, name))
        volume = rng.choice((0, 5, 20, 60, 150))
        spam_share = rng.uniform(0.3, 0.9)
        error_rate = rng.choice((0.0, 0.002, 0.01, 0.05))
        totals = [0] * 8
        for day in dates:
            n = rng.randint(0, volume * 2) if volume else 0
            if not n:
                continue
            spam = sum(1 for _ in range(n) if rng.random() < spam_share)
            ham = n - spam
            fn = sum(1 for _ in range(spam) if rng.random() < error_rate)
            fp = sum(1 for _ in range(ham) if rng.random() < error_rate / 4)
            row = (spam, ham, fn, fp, 0, 0, 0, 0)
            daily_rows.append((uid, day, *row))
            totals = [a + b for a, b in zip(totals, row)]
        sc, nc = rng.choice(((0, 0), (200, 300), (1000, 2000)))
        totals[0] += sc
        totals[1] += nc
        totals[4] += sc
        totals[5] += nc
        stat_rows.append((uid, *totals))
        for k in range(3):
            ip = f"198.{uid % 200}.{(uid * 7 + k) % 256}.{rng.randint(1, 254)}"
            source_rows.append((uid, ip, rng.randint(0, 50), rng.randint(0, 5), dates[-1]))
        if uid % 20 == 0:
            pref_rows.append((uid, "opt", "out"))
    return uid_rows, stat_rows, daily_rows, source_rows, pref_rows


INSERTS = (
    "INSERT INTO dspam_virtual_uids (uid, username) VALUES ({})",
    "INSERT INTO dspam_stats (uid, spam_learned, innocent_learned, spam_misclassified, "
    "innocent_misclassified, spam_corpusfed, innocent_corpusfed, spam_classified, "
    "innocent_classified) VALUES ({})",
    "INSERT INTO spamsift_stats_daily (uid, day, spam_learned, innocent_learned, "
    "spam_misclassified, innocent_misclassified, spam_corpusfed, innocent_corpusfed, "
    "spam_classified, innocent_classified) VALUES ({})",
    "INSERT INTO spamsift_sources (uid, ip, spam_hits, innocent_hits, last_seen) VALUES ({})",
    "INSERT INTO dspam_preferences (uid, preference, value) VALUES ({})",
)


def load_sqlite(path: str, tables) -> None:
    import sqlite3

    from spamsift.filter.engine.store.base import open_store

    open_store("sqlite://" + path).close()  # creates the schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for sql, rows in zip(INSERTS, tables):
        if rows:
            db.executemany(sql.format(",".join("?" * len(rows[0]))), rows)
    db.execute("COMMIT")
    db.close()


def load_mysql(url: str, tables) -> None:
    import pymysql

    from spamsift.filter.engine.store.base import open_store
    from spamsift.filter.engine.store.mysql import parse_url

    store = open_store(url)
    store.initialize()
    store.close()
    params = parse_url(url)
    db = pymysql.connect(**params, autocommit=False)
    with db.cursor() as cur:
        for sql, rows in zip(INSERTS, tables):
            text = sql.format(",".join(["%s"] * len(rows[0]))) if rows else ""
            for i in range(0, len(rows), 5000):  # executemany sends multi-row INSERTs
                cur.executemany(text, rows[i:i + 5000])
    db.commit()
    db.close()


def time_json(env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([SPAMSIFT, "report", "--json"], env=env, capture_output=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"report --json failed: {done.stderr.decode()[-500:]}")
    print(f"  output {len(done.stdout) / 1e6:.1f} MB")
    return times


def time_first_frame(env: dict[str, str], runs: int, cols: int = 160, lines: int = 50):
    import fcntl
    import pty
    import struct
    import termios

    times, full_times = [], []
    for _ in range(runs):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, cols, 0, 0))
        started = time.perf_counter()
        proc = subprocess.Popen([SPAMSIFT, "report", "--watch", "--interval", "60"],
                                stdin=slave, stdout=slave, stderr=slave,
                                env={**env, "TERM": "xterm-256color"}, close_fds=True,
                                start_new_session=True)
        os.close(slave)
        seen, elapsed, full = b"", None, None
        while time.perf_counter() - started < 30:
            ready, _w, _x = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            seen += chunk
            if elapsed is None and FIRST_FRAME_MARK in seen:
                elapsed = time.perf_counter() - started
            if FULL_FRAME_MARK in seen and seen.rfind(FIRST_FRAME_MARK) > seen.find(
                    FULL_FRAME_MARK):
                full = time.perf_counter() - started
                break
        os.write(master, b"q")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(master)
        if elapsed is None or full is None:
            raise SystemExit(f"no complete frame; the terminal showed: {seen[-500:]!r}")
        times.append(elapsed)
        full_times.append(full)
    return times, full_times


def show(label: str, times: list[float], target: float | None) -> None:
    print(f"{label}: median {statistics.median(times):.2f} s, best {min(times):.2f} s, "
          f"worst {max(times):.2f} s" + (f" (target < {target:g} s)" if target else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="mysql://user@host:port (a database of its own is "
                        "created there); default: a temporary SQLite file")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", help="generate the SQLite database in this folder and "
                        "keep it (for looking at the TUI by hand)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    tables = generate(args.days, args.users)
    print(f"generated {args.users} users, {len(tables[2])} history rows, "
          f"{len(tables[3])} sources in {time.perf_counter() - started:.1f} s")
    home = args.keep or tempfile.mkdtemp(prefix="spamsift-report-")
    os.makedirs(home, exist_ok=True)
    admin = dbname = None
    if args.storage:
        import pymysql

        from spamsift.filter.engine.store.mysql import parse_url

        params = parse_url(args.storage.rstrip("/") + "/mysql")
        params.pop("database")
        admin = pymysql.connect(**params, autocommit=True)
        dbname = "spamsift_bench_" + uuid.uuid4().hex[:10]
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {dbname}")
        url = f"{args.storage.rstrip('/')}/{dbname}"
    else:
        url = "sqlite://" + os.path.join(home, "spamsift.db")
        if os.path.exists(url[len("sqlite://"):]):
            os.remove(url[len("sqlite://"):])
    try:
        started = time.perf_counter()
        (load_mysql if args.storage else load_sqlite)(url if args.storage
                                                       else url[len("sqlite://"):], tables)
        print(f"loaded into {url.split('@')[-1]} in {time.perf_counter() - started:.1f} s")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SPAMSIFT_HOME": home,
               "SPAMSIFT_STORAGE": url, "SPAMSIFT_CONFIG": os.path.join(home, "none.toml"),
               "LANG": "C.UTF-8"}
        with open(env["SPAMSIFT_CONFIG"], "w"):
            pass
        show("report --json", time_json(env, args.runs), 2.0)
        first, full = time_first_frame(env, args.runs)
        show("report --watch, first frame", first, 1.0)
        show("report --watch, frame with the trends", full, None)
    finally:
        if admin is not None:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {dbname}")
            admin.close()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
