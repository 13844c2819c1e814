"""Benchmark: `spamsift train` throughput and peak memory, one process, on the SpamAssassin
corpus (issue 5 targets on the 2-core reference machine: >= 1,000 messages/s into SQLite,
>= 500 into MySQL, < 300 MB resident).

Each run is one real ``spamsift train --user bench --quiet INDEX`` command (corpus strategy,
the default) into a fresh database, timed from outside. Peak resident memory is sampled from
/proc every 20 ms, of the training process and of it with its tokenizing helper processes
(``--jobs``; the command's default is 1 with the logistic model and up to 2 without it, and
``--jobs 0`` is one process).
The index file lists the corpus in a fixed shuffled order.

Usage: python benchmarks/train_throughput.py [--corpus DIR] [--mysql URL] [--no-mysql]
       [--runs N] [--seed S] [--jobs N] [--algorithm NAME ...]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from filter_latency import corpus_dir, read_index, spamsift_command  # noqa: E402


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (the tokenizing helpers of --jobs)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def run(command: list[str], env: dict[str, str], index: str,
        jobs: list[str]) -> tuple[float, float, float, str]:
    """(seconds, peak MB of the largest process, peak MB of all its processes together,
    summary) of one training process. Both peaks are sampled every 20 ms from /proc."""
    started = time.perf_counter()
    child = subprocess.Popen([*command, "train", "--user", "bench", "--quiet", *jobs, index],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    largest = total = 0.0
    while child.poll() is None:
        sizes = [_rss_mb(p) for p in _tree(child.pid)]
        largest = max(largest, max(sizes))
        total = max(total, sum(sizes))
        time.sleep(0.02)
    out, err = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"spamsift train failed ({child.returncode}): {err}")
    return seconds, largest, total, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus")
    parser.add_argument("--mysql", default=os.environ.get("SPAMSIFT_TEST_MYSQL",
                                                          "mysql://root@127.0.0.1:3306"))
    parser.add_argument("--no-mysql", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", help="pass --jobs N to spamsift train (default: its own "
                                       "default)")
    parser.add_argument("--algorithm", action="append", metavar="NAME",
                        help="train with this algorithm set instead of the default (repeat "
                             "for several, e.g. --algorithm graham --algorithm burton)")
    args = parser.parse_args(argv)
    root = corpus_dir(args.corpus)
    entries = read_index(root)
    random.Random(args.seed).shuffle(entries)
    command = spamsift_command()
    print("targets: >= 1000 msg/s into SQLite, >= 500 into MySQL, < 300 MB resident")
    print("algorithm: " + (" ".join(args.algorithm) if args.algorithm else "the default"))
    with tempfile.TemporaryDirectory(prefix="spamsift-train-bench-") as tmp:
        index = os.path.join(tmp, "index")
        with open(index, "w") as fh:
            fh.writelines(f"{label} {path}\n" for label, path in entries)
        backends = [("sqlite", None)]
        if not args.no_mysql:
            backends.append(("mysql", args.mysql))
        for name, server in backends:
            rates, peaks, totals = [], [], []
            for n in range(args.runs):
                home = os.path.join(tmp, f"{name}-{n}")
                os.mkdir(home)
                env = dict(os.environ, SPAMSIFT_HOME=home)
                env.pop("SPAMSIFT_CONFIG", None)
                if args.algorithm:
                    conf = os.path.join(home, "spamsift.toml")
                    with open(conf, "w") as fh:
                        fh.write("algorithm = [" + ", ".join(f'"{a}"' for a in args.algorithm)
                                 + "]\n")
                    env["SPAMSIFT_CONFIG"] = conf
                dbname = None
                if server:
                    import pymysql

                    from spamsift.filter.engine.store.mysql import parse_url

                    params = parse_url(server + "/mysql")
                    params.pop("database")
                    dbname = "spamsift_bench_" + uuid.uuid4().hex[:10]
                    admin = pymysql.connect(**params, autocommit=True)
                    with admin.cursor() as cur:
                        cur.execute(f"CREATE DATABASE {dbname}")
                    env["SPAMSIFT_STORAGE"] = f"{server}/{dbname}"
                    subprocess.run([*command, "db", "init"], env=env, check=True,
                                   capture_output=True)
                else:
                    env.pop("SPAMSIFT_STORAGE", None)
                try:
                    seconds, peak, total, summary = run(
                        command, env, index, ["--jobs", args.jobs] if args.jobs else [])
                finally:
                    if dbname:
                        with admin.cursor() as cur:
                            cur.execute(f"DROP DATABASE {dbname}")
                        admin.close()
                rates.append(len(entries) / seconds)
                peaks.append(peak)
                totals.append(total)
                size = ""
                if not server:
                    db = os.path.join(home, "spamsift.db")
                    size = f", database {os.path.getsize(db) / 1e6:.1f} MB"
                print(f"{name} run {n + 1}: {len(entries)} messages in {seconds:.2f} s "
                      f"({rates[-1]:.0f} msg/s, process start included), peak "
                      f"{peak:.0f} MB (all processes {total:.0f} MB){size}")
            print(f"{name}: median {statistics.median(rates):.0f} msg/s, best "
                  f"{max(rates):.0f} msg/s, peak resident {max(peaks):.0f} MB (training "
                  f"process), {max(totals):.0f} MB (with its helpers)")
        print("last summary:\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
