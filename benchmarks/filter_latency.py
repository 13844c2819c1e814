"""Benchmark: wall time and peak memory of one `spamsift filter` process per message.

Protocol (issue 2): on the SpamAssassin public corpus, hold out a sample of messages, train a
user on all the others (as corpus), then run one `spamsift filter --user bench --stdout
--deliver=innocent,spam` process per held-out message, as maildrop would, and print the
median / 90th / 99th percentile wall time and the peak resident memory of those processes.
Targets on the 2-core reference machine: median < 25 ms, peak RSS < 40 MB. This prints
figures; it asserts nothing.

Usage: python benchmarks/filter_latency.py [--corpus DIR] [--sample N] [--home DIR]
The corpus is unpacked from ../shared/corpora when --corpus is not given.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def corpus_dir(given: str | None) -> str:
    if given:
        return given
    dest = os.environ.get("SPAMSIFT_CORPUS") or os.path.join(tempfile.gettempdir(),
                                                              "spamsift-corpus")
    unpack = os.path.join(ROOT, "..", "shared", "corpora", "unpack")
    if not os.path.exists(os.path.join(dest, "index")):
        subprocess.run(["sh", unpack, dest], check=True)
    return dest


def read_index(root: str) -> list[tuple[str, str]]:
    with open(os.path.join(root, "index")) as fh:
        return [(label, os.path.join(root, path)) for label, path in
                (line.split() for line in fh if line.strip())]


def spamsift_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "spamsift")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "spamsift"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus")
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--home", help="state folder (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    from filter.engine import config
    from filter.engine.agent import Agent
    from filter.engine.store.base import open_store

    root = corpus_dir(args.corpus)
    messages = read_index(root)
    rng = random.Random(args.seed)
    rng.shuffle(messages)
    held, train = messages[:args.sample], messages[args.sample:]
    home = args.home or tempfile.mkdtemp(prefix="spamsift-bench-")
    env = dict(os.environ, SPAMSIFT_HOME=home)
    env.pop("SPAMSIFT_CONFIG", None)
    settings = config.load(None, {"SPAMSIFT_HOME": home})
    store = open_store(settings.storage_url)
    agent = Agent(settings, store)
    ctx = agent.user("bench")
    started = time.perf_counter()
    for label, path in train:
        with open(path, "rb") as fh:
            agent.learn(ctx, fh.read(), "spam" if label == "spam" else "innocent")
    train_s = time.perf_counter() - started
    store.close()
    db = os.path.join(home, "spamsift.db")
    print(f"trained {len(train)} messages in {train_s:.1f} s "
          f"({len(train) / train_s:.0f} msg/s in-process); database "
          f"{os.path.getsize(db) / 1e6:.1f} MB")

    command = spamsift_command() + ["filter", "--user", "bench", "--stdout",
                                    "--deliver=innocent,spam"]
    times, rss, errors = [], [], 0
    for label, path in held:
        with open(path, "rb") as fh:
            data = fh.read()
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env)
        proc.stdin.write(data)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        out = proc.stdout.read()  # type: ignore[union-attr]
        # wait4 instead of wait(): it returns this one child's peak resident memory.
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()  # type: ignore[union-attr]
        times.append(elapsed * 1000)
        rss.append(usage.ru_maxrss / 1024)
        if proc.returncode != 0 or b"X-DSPAM-Result" not in out:
            errors += 1
    times.sort()
    q = statistics.quantiles(times, n=100)
    print(f"filtered {len(held)} messages, one process each: median {statistics.median(times):.1f} ms, "
          f"p90 {q[89]:.1f} ms, p99 {q[98]:.1f} ms, max {times[-1]:.1f} ms")
    print(f"peak resident memory of a filter process: median {statistics.median(rss):.1f} MB, "
          f"max {max(rss):.1f} MB "
          f"(targets: median < 25 ms, < 40 MB); failures: {errors}")
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
