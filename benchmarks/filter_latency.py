"""Benchmark: wall time and peak memory of one `spamsift filter` process per message.

Protocol (issue 2): on the SpamAssassin public corpus, hold out a sample of messages, train a
user on all the others (as corpus), then run one `spamsift filter --user bench --stdout
--deliver=innocent,spam` process per held-out message, as maildrop would, and print the
median / 90th / 99th percentile wall time and the peak resident memory of those processes.
Targets on the 2-core reference machine: median < 25 ms, peak RSS < 40 MB. This prints
figures; it asserts nothing.

Both ways of running are measured: each process doing all the work itself, and each process
as a thin client of `spamsift daemon` (started here on a temporary socket). The figures
depend on how spamsift was installed: a normal `pip install .` lets the launcher skip
Python's `site` set-up; an editable install cannot.

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


SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")


def spamsift_command() -> list[str]:
    return [SPAMSIFT] if os.path.exists(SPAMSIFT) else [sys.executable, "-m", "spamsift"]


def train_user(home: str, train) -> int:
    """Train user "bench" on `train` as corpus, in this process, and say how fast it went."""
    from spamsift.filter.engine import config
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.store.base import open_store

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
          f"({len(train) / train_s:.0f} msg/s in-process, one commit each); database "
          f"{os.path.getsize(db) / 1e6:.1f} MB", flush=True)
    return 0


def run_sample(label: str, command: list[str], held, env) -> None:
    """Run one filter process per held-out message and print the figures."""
    times, errors = [], 0
    for _label, path in held:
        with open(path, "rb") as fh:
            data = fh.read()
        t0 = time.perf_counter()
        done = subprocess.run(command, input=data, capture_output=True, env=env)
        times.append((time.perf_counter() - t0) * 1000)
        if done.returncode != 0 or b"X-DSPAM-Result" not in done.stdout:
            errors += 1
    times.sort()
    q = statistics.quantiles(times, n=100)
    print(f"{label}: {len(held)} messages, one process each: median "
          f"{statistics.median(times):.1f} ms, p90 {q[89]:.1f} ms, p99 {q[98]:.1f} ms, "
          f"max {times[-1]:.1f} ms; failures: {errors}")
    # Memory in a separate pass under /usr/bin/time: the rusage of a child reaped here would
    # count the pages it shared with this (large) benchmark process between fork and exec.
    if not os.path.exists("/usr/bin/time"):
        print("  (no /usr/bin/time: peak memory not measured)")
        return
    peaks = []
    for _label, path in held[:30]:
        with open(path, "rb") as fh, tempfile.NamedTemporaryFile("r") as out:
            subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *command],
                           stdin=fh, capture_output=True, env=env)
            peaks.append(int(out.read().split()[-1]) / 1024)
    print(f"  peak resident memory of a filter process: median {statistics.median(peaks):.1f}"
          f" MB, max {max(peaks):.1f} MB ({len(peaks)} messages)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus")
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--home", help="state folder (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spamsift", help="the spamsift command to time (default: the one "
                        "beside this Python)")
    args = parser.parse_args(argv)
    global SPAMSIFT
    SPAMSIFT = args.spamsift or SPAMSIFT

    root = corpus_dir(args.corpus)
    messages = read_index(root)
    rng = random.Random(args.seed)
    rng.shuffle(messages)
    held, train = messages[:args.sample], messages[args.sample:]
    home = args.home or tempfile.mkdtemp(prefix="spamsift-bench-")
    env = dict(os.environ, SPAMSIFT_HOME=home)
    env.pop("SPAMSIFT_CONFIG", None)
    if args.train_only:
        return train_user(home, train)
    # Train in a child: a parent that holds the engine and a big heap makes every process
    # it starts slower to fork, which would be charged to spamsift.
    print("targets: median < 25 ms, < 40 MB resident")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--train-only", "--home", home,
                    "--corpus", root, "--seed", str(args.seed), "--sample", str(args.sample)],
                   check=True)

    command = spamsift_command() + ["filter", "--user", "bench", "--stdout",
                                    "--deliver=innocent,spam"]
    env["SPAMSIFT_SOCKET"] = os.path.join(home, "none.sock")
    run_sample("in-process", command, held, env)

    sock = os.path.join(home, "daemon.sock")
    daemon = subprocess.Popen(spamsift_command() + ["daemon", "--socket", sock],
                              env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        env["SPAMSIFT_SOCKET"] = sock
        run_sample("daemon client", command, held, env)
        with open(f"/proc/{daemon.pid}/status") as fh:
            peak = [line.split()[1] for line in fh if line.startswith("VmHWM")][0]
        print(f"  spamsift daemon: peak resident memory {int(peak) / 1024:.1f} MB "
              "(plus its writer process)")
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
