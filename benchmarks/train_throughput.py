"""Benchmark: `spamsift train` throughput and peak memory, one process, on the SpamAssassin
corpus (issue 5 targets on the 2-core reference machine: >= 1,000 messages/s into SQLite,
>= 500 into MySQL, < 300 MB resident).

Each run is one real ``spamsift train --user bench --quiet INDEX`` process (corpus strategy,
the default) into a fresh database, timed from outside, its peak resident memory taken by
/usr/bin/time. The index file lists the corpus in a fixed shuffled order.

Usage: python benchmarks/train_throughput.py [--corpus DIR] [--mysql URL] [--no-mysql]
       [--runs N] [--seed S]
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


def run(command: list[str], env: dict[str, str], index: str) -> tuple[float, float, str]:
    """(seconds, peak MB, summary) of one training process."""
    with tempfile.NamedTemporaryFile("r") as out:
        prefix = ["/usr/bin/time", "-f", "%M", "-o", out.name] if os.path.exists(
            "/usr/bin/time") else []
        started = time.perf_counter()
        done = subprocess.run([*prefix, *command, "train", "--user", "bench", "--quiet",
                               index], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"spamsift train failed ({done.returncode}): {done.stderr}")
        peak = int(out.read().split()[-1]) / 1024 if prefix else float("nan")
    return seconds, peak, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus")
    parser.add_argument("--mysql", default=os.environ.get("SPAMSIFT_TEST_MYSQL",
                                                          "mysql://root@127.0.0.1:3306"))
    parser.add_argument("--no-mysql", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
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
            rates, peaks = [], []
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

                    from filter.engine.store.mysql import parse_url

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
                    seconds, peak, summary = run(command, env, index)
                finally:
                    if dbname:
                        with admin.cursor() as cur:
                            cur.execute(f"DROP DATABASE {dbname}")
                        admin.close()
                rates.append(len(entries) / seconds)
                peaks.append(peak)
                size = ""
                if not server:
                    db = os.path.join(home, "spamsift.db")
                    size = f", database {os.path.getsize(db) / 1e6:.1f} MB"
                print(f"{name} run {n + 1}: {len(entries)} messages in {seconds:.2f} s "
                      f"({rates[-1]:.0f} msg/s, process start included), peak "
                      f"{peak:.0f} MB{size}")
            print(f"{name}: median {statistics.median(rates):.0f} msg/s, best "
                  f"{max(rates):.0f} msg/s, peak resident {max(peaks):.0f} MB")
        print("last summary:\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
