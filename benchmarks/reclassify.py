"""Benchmark: ``spamsift reclassify`` (leave-one-out) against ``spamsift train`` on the same
Maildir (issue 20: reclassify at most 2x the time of train over 10,000 messages).

A Maildir++ of `--messages` corpus messages is built in a temporary directory: the whole
SpamAssassin corpus, and past its 6,046 messages copies of it, each with an
``X-Benchmark-Copy`` header so that its bytes (and its record) are its own. 5% are misfiled
(spam in the INBOX, ham in .Spam, 2:1 as in the issue). Then, each a real command timed from
outside, into a fresh SQLite database: ``spamsift train --quiet MAILDIR`` and ``spamsift
reclassify --json MAILDIR``. Printed: both times, their ratio, and how many of the misfiled
messages reclassify listed and how many others.

Usage: python benchmarks/reclassify.py [--corpus DIR] [--messages N] [--seed S]
       [--algorithm NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from filter_latency import corpus_dir, read_index, spamsift_command  # noqa: E402


def build(root: str, corpus: list[tuple[str, str]], n: int, seed: int,
          misfiled_share: float = 0.05) -> set[str]:
    """Write the Maildir; the relative paths of the misfiled messages."""
    rng = random.Random(seed)
    entries = []
    for k in range(n):
        label, path = corpus[k % len(corpus)]
        entries.append((label, path, k // len(corpus)))
    rng.shuffle(entries)
    spam_idx = [i for i, e in enumerate(entries) if e[0] == "spam"]
    ham_idx = [i for i, e in enumerate(entries) if e[0] == "ham"]
    bad = int(n * misfiled_share)
    wrong = set(rng.sample(spam_idx, bad * 2 // 3)) | set(rng.sample(ham_idx, bad - bad * 2 // 3))
    misfiled = set()
    for folder in ("", ".Spam"):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(root, folder, sub), exist_ok=True)
    for i, (label, path, copy) in enumerate(entries):
        spam = (label == "spam") != (i in wrong)
        folder = ".Spam" if spam else ""
        rel = os.path.join(folder, "cur", f"{1700000000 + i}.M{i}.bench:2,S")
        with open(path, "rb") as fh:
            raw = fh.read()
        if copy:
            raw = f"X-Benchmark-Copy: {copy}\n".encode() + raw
        with open(os.path.join(root, rel), "wb") as fh:
            fh.write(raw)
        if i in wrong:
            misfiled.add(rel)
    return misfiled


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}")
    return seconds, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus")
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--algorithm", nargs="+", help="algorithms (default: the defaults)")
    args = parser.parse_args(argv)
    corpus = read_index(corpus_dir(args.corpus))
    top = tempfile.mkdtemp(prefix="spamsift-reclassify-bench-")
    try:
        maildir = os.path.join(top, "Maildir")
        misfiled = build(maildir, corpus, args.messages, args.seed)
        env = dict(os.environ, SPAMSIFT_HOME=os.path.join(top, "home"))
        env.pop("SPAMSIFT_STORAGE", None)
        env.pop("SPAMSIFT_CONFIG", None)
        extra: list[str] = []
        if args.algorithm:
            cfg = os.path.join(top, "spamsift.toml")
            with open(cfg, "w") as fh:
                fh.write(f"algorithm = {json.dumps(args.algorithm)}\n")
            extra = ["--config", cfg]
        command = spamsift_command()
        train_s, _out = timed(command + ["train", "--user", "bench", "--quiet", *extra,
                                         maildir], env)
        reclass_s, out = timed(command + ["reclassify", "--user", "bench", "--json", *extra,
                                          maildir], env)
        report = json.loads(out)
        listed = {os.path.join("" if f["folder"] == "INBOX" else f["folder"], f["file"])
                  for f in report["findings"]}
        found = len(listed & misfiled)
        print(f"{args.messages} messages ({len(misfiled)} misfiled), algorithms "
              f"{' '.join(args.algorithm) if args.algorithm else 'default'}")
        print(f"train       {train_s:7.1f} s ({args.messages / train_s:.0f} msg/s)")
        print(f"reclassify  {reclass_s:7.1f} s ({args.messages / reclass_s:.0f} msg/s), "
              f"{report['left_out']} judged without their own learning")
        print(f"ratio       {reclass_s / train_s:7.2f} (goal: at most 2)")
        print(f"listed      {found} of the {len(misfiled)} misfiled (recall "
              f"{found / len(misfiled):.3f}), {len(listed) - found} others (precision "
              f"{found / max(len(listed), 1):.3f})")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
