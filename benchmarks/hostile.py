"""Time and peak memory of hostile messages, in the filter process and through the daemon.

For each message of tests/hostile.py (all within the default 4 MB max_message_size), on a
user trained with a small generated corpus:

* ``filter``: one `spamsift filter --user alice --stdout` process; its CPU time (user + system)
  and peak resident memory from wait4(), and its wall time.
* ``daemon``: 16 concurrent clients send the message at once to one `spamsift daemon`; the
  wall time until all have answered, and the peak resident memory of the daemon and its
  writer together, sampled from /proc every 10 ms.

The issue's bounds: at most 1 s of CPU and 100 MB in the filter process, at most 300 MB for
the daemon with its writer. Prints the figures; asserts nothing.

    .venv/bin/python benchmarks/hostile.py [--only NAME] [--clients 16]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "examples", "demo"))

import hostile  # noqa: E402
import procs  # noqa: E402
import make_corpus  # noqa: E402

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")


def _env(home: str, sock: str | None = None) -> dict[str, str]:
    env = dict(os.environ, SPAMSIFT_HOME=home)
    for key in ("SPAMSIFT_CONFIG", "SPAMSIFT_STORAGE"):
        env.pop(key, None)
    env["SPAMSIFT_SOCKET"] = sock or os.path.join(home, "no-daemon.sock")
    return env


def trained_home() -> str:
    home = tempfile.mkdtemp(prefix="spamsift-hostile-")
    rng = random.Random(3)
    for label, spam in (("spam", True), ("ham", False)):
        os.makedirs(os.path.join(home, "corpus", label))
        for k in range(300):
            with open(os.path.join(home, "corpus", label, f"{k}.eml"), "wb") as fh:
                fh.write(make_corpus.message(rng, spam, k))
    subprocess.run([SPAMSIFT, "train", "--user", "alice", "--quiet", "--jobs", "0",
                    "--spam", os.path.join(home, "corpus", "spam"),
                    "--ham", os.path.join(home, "corpus", "ham")], env=_env(home), check=True)
    return home


def in_filter(home: str, raw: bytes) -> tuple[float, float, float, int]:
    """(CPU seconds, peak MB, wall seconds, exit status) of one filter process."""
    scratch = tempfile.mkdtemp(prefix="spamsift-hostile-run-")
    try:
        shutil.copy(os.path.join(home, "spamsift.db"), os.path.join(scratch, "spamsift.db"))
        started = time.perf_counter()
        code, _out, _err, cpu, peak = hostile.run_measured(
            [SPAMSIFT, "filter", "--user", "alice", "--stdout"], raw, _env(scratch))
        return cpu, peak, time.perf_counter() - started, code
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def through_daemon(home: str, raw: bytes, clients: int) -> tuple[float, float, list[int]]:
    """(wall seconds for all clients, peak MB of daemon + writer, client exit statuses)."""
    scratch = tempfile.mkdtemp(prefix="spamsift-hostile-daemon-")
    sock = os.path.join(scratch, "d.sock")
    shutil.copy(os.path.join(home, "spamsift.db"), os.path.join(scratch, "spamsift.db"))
    env = _env(scratch, sock)
    daemon = subprocess.Popen([SPAMSIFT, "daemon", "--socket", sock], env=env,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            if os.path.exists(sock):
                break
            time.sleep(0.025)
        peak = 0.0
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, procs.rss_mb([daemon.pid, *procs.children_of(daemon.pid)]))
                time.sleep(0.01)
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        running = [subprocess.Popen([SPAMSIFT, "filter", "--user", "alice", "--stdout"],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env)
                   for _ in range(clients)]
        writers = [threading.Thread(target=p.communicate, args=(raw,)) for p in running]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        wall = time.perf_counter() - started
        time.sleep(0.5)  # the writer's share of the work comes after the replies
        done.set()
        sampler.join()
        return wall, peak, [p.returncode for p in running]
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(hostile.ALL))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--no-daemon", action="store_true")
    args = parser.parse_args(argv)
    home = trained_home()
    try:
        print(f"{'input':<14} {'bytes':>9}  {'filter: CPU s':>13} {'peak MB':>8} "
              f"{'wall s':>7} {'exit':>4}  {'daemon x' + str(args.clients) + ': wall s':>19} "
              f"{'peak MB':>8}", flush=True)
        for name in args.only or list(hostile.ALL):
            raw = hostile.ALL[name]()
            cpu, rss, wall, code = in_filter(home, raw)
            line = f"{name:<14} {len(raw):>9}  {cpu:>13.2f} {rss:>8.0f} {wall:>7.2f} {code:>4}"
            if not args.no_daemon:
                dwall, dpeak, codes = through_daemon(home, raw, args.clients)
                bad = [c for c in codes if c != 0]
                line += f"  {dwall:>19.2f} {dpeak:>8.0f}" + (f"  exits {bad}" if bad else "")
            print(line, flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
