"""Check: `spamsift evaluate`'s replay figures against an independent replay through real
`spamsift filter` processes (issue 5: they must agree within 0.1 percentage points).

1. ``spamsift evaluate --user eval --json --folds 0 --order-file ORDER INDEX`` in a fresh
   home: the estimate, and the order it replayed the messages in (Date order).
2. In another fresh home, for each message of ORDER: one ``spamsift filter --user live
   --stdout --deliver=innocent,spam`` process; when its X-DSPAM-Result is wrong, one
   ``spamsift filter --user live --class=CLASS --source=error`` process with the stamped
   message (what a user's report through .courier-spam / .courier-fp does).
3. Print both sets of figures and their differences.

No daemon runs: each filter process works in-process, so every message is learned before the
next one is classified, as in the replay. About 0.1 s a message on the reference machine.

Usage: python benchmarks/evaluate_vs_filter.py [--corpus DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from filter_latency import corpus_dir, read_index, spamsift_command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus")
    parser.add_argument("--limit", type=int, help="only the first N messages of the index")
    args = parser.parse_args(argv)
    root = corpus_dir(args.corpus)
    entries = read_index(root)[:args.limit] if args.limit else read_index(root)
    command = spamsift_command()
    with tempfile.TemporaryDirectory(prefix="spamsift-eval-check-") as tmp:
        index, order = os.path.join(tmp, "index"), os.path.join(tmp, "order")
        with open(index, "w") as fh:
            fh.writelines(f"{label} {path}\n" for label, path in entries)
        env = {k: v for k, v in os.environ.items() if k not in ("SPAMSIFT_CONFIG",
                                                                  "SPAMSIFT_STORAGE")}
        os.mkdir(os.path.join(tmp, "evaluate"))
        started = time.perf_counter()
        done = subprocess.run([*command, "evaluate", "--user", "eval", "--json", "--folds", "0",
                               "--quiet", "--order-file", order, index], capture_output=True,
                              text=True, env=dict(env, SPAMSIFT_HOME=os.path.join(tmp,
                                                                                  "evaluate")))
        if done.returncode:
            raise SystemExit(f"spamsift evaluate failed: {done.stderr}")
        estimate = json.loads(done.stdout)["replay"]
        print(f"spamsift evaluate: {len(entries)} messages in "
              f"{time.perf_counter() - started:.1f} s")
        live_env = dict(env, SPAMSIFT_HOME=os.path.join(tmp, "live"))
        os.mkdir(live_env["SPAMSIFT_HOME"])
        with open(order) as fh:
            replay = [line.rstrip("\n").split(" ", 1) for line in fh if line.strip()]
        fp = fn = 0
        spam = sum(1 for label, _p in replay if label == "spam")
        started = time.perf_counter()
        for n, (label, path) in enumerate(replay, 1):
            with open(path, "rb") as fh:
                raw = fh.read()
            out = subprocess.run([*command, "filter", "--user", "live", "--stdout",
                                  "--deliver=innocent,spam"], input=raw, capture_output=True,
                                 env=live_env)
            if out.returncode:
                raise SystemExit(f"filter failed on {path}: {out.stderr.decode()}")
            said_spam = b"\nX-DSPAM-Result: Spam" in out.stdout.split(b"\n\n", 1)[0] or \
                b"\nX-DSPAM-Result: Spam" in out.stdout.split(b"\r\n\r\n", 1)[0]
            if said_spam != (label == "spam"):
                if label == "spam":
                    fn += 1
                else:
                    fp += 1
                klass = "spam" if label == "spam" else "innocent"
                fix = subprocess.run([*command, "filter", "--user", "live", f"--class={klass}",
                                      "--source=error"], input=out.stdout,
                                     capture_output=True, env=live_env)
                if fix.returncode:
                    raise SystemExit(f"retrain failed on {path}: {fix.stderr.decode()}")
            if n % 500 == 0:
                print(f"  {n} messages through spamsift filter, {fp} ham and {fn} spam "
                      f"misclassified so far ({time.perf_counter() - started:.0f} s)",
                      flush=True)
        ham = len(replay) - spam
        live = {"ham_misclassified_pct": 100.0 * fp / ham if ham else 0.0,
                "spam_misclassified_pct": 100.0 * fn / spam if spam else 0.0}
        print(f"spamsift filter processes: {len(replay)} messages in "
              f"{time.perf_counter() - started:.0f} s")
        print(f"{'':24} {'evaluate':>10} {'filter':>10} {'difference':>11}")
        worst = 0.0
        for key, name in (("ham_misclassified_pct", "ham misclassified %"),
                          ("spam_misclassified_pct", "spam misclassified %")):
            diff = abs(estimate[key] - live[key])
            worst = max(worst, diff)
            print(f"{name:24} {estimate[key]:10.3f} {live[key]:10.3f} {diff:11.3f}")
        print(f"largest difference: {worst:.3f} percentage points (target <= 0.1): "
              + ("OK" if worst <= 0.1 else "NOT MET"))
    return 0 if worst <= 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
