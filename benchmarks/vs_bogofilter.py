"""spamsift beside bogofilter, per message and under 16 concurrent deliveries.

Both filters learn the same 2,000 SpamAssassin-corpus messages (seed 1), spamsift with
`spamsift train`, bogofilter with ``bogofilter -s``/``-n``. Then, with messages the two have
not seen:

* per message, one process each, as maildrop runs them, alternating the commands run by run:
  `spamsift filter --user bench --stdout` through the daemon and standalone, ``bogofilter -u
  -p -e`` (learns every message, as spamsift's TEFT default does) and ``bogofilter -p -e``
  (read-only); on a ~2.5 KB and a ~25 KB message (``--large`` adds a ~500 KB one). Printed:
  the median wall time of each and the ratios spamsift / bogofilter.
* 16 concurrent deliveries of 400 held-out messages (25 a client, in turn), through the daemon
  and with ``bogofilter -u -p -e``: messages a second, the 99th percentile latency, and how
  many clients filtered in-process instead of through the daemon (each says so on stderr).
* What the daemon writes: bytes written by its writer process (from /proc/PID/io: WAL and
  database together) and the signature bytes stored, per message of the concurrent run.

Prints figures, asserts nothing. Needs bogofilter (Debian's package) and the corpus:

    /tmp/bench/bin/python benchmarks/vs_bogofilter.py [--runs 40] [--large]

with /tmp/bench a normal install (docs/benchmarks.md): an editable one times its import hook.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import procs  # noqa: E402

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
BOGOFILTER = shutil.which("bogofilter") or "/usr/bin/bogofilter"


def corpus(given: str | None) -> str:
    dest = given or os.environ.get("SPAMSIFT_CORPUS") or os.path.join(
        tempfile.gettempdir(), "spamsift-corpus")
    if not os.path.exists(os.path.join(dest, "index")):
        subprocess.run(["sh", os.path.join(ROOT, "..", "shared", "corpora", "unpack"), dest],
                       check=True)
    with open(os.path.join(dest, "index")) as fh:
        return [(label, os.path.join(dest, path)) for label, path in
                (line.split() for line in fh if line.strip())]


def nearest(held, size: int) -> str:
    """The held-out ham message whose size is nearest `size` bytes."""
    return min((p for label, p in held if label == "ham"),
               key=lambda p: abs(os.path.getsize(p) - size))


def setup(top: str, train) -> tuple[dict[str, str], str]:
    """Train both filters; (spamsift's environment, bogofilter's database folder)."""
    home = os.path.join(top, "spamsift")
    os.makedirs(home)
    index = os.path.join(top, "train.index")
    with open(index, "w") as fh:
        fh.writelines(f"{label} {path}\n" for label, path in train)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
    env.update(SPAMSIFT_HOME=home, SPAMSIFT_SOCKET=os.path.join(top, "none.sock"))
    subprocess.run([SPAMSIFT, "train", "--user", "bench", "--quiet", index], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    bogo = os.path.join(top, "bogofilter")
    os.makedirs(bogo)
    for label, flag in (("spam", "-s"), ("ham", "-n")):
        paths = [p for lab, p in train if lab == label]
        for k in range(0, len(paths), 200):
            subprocess.run([BOGOFILTER, "-d", bogo, flag, "-B", *paths[k:k + 200]],
                           check=True)
    return env, bogo


def timed(argv: list[str], path: str, env) -> float:
    with open(path, "rb") as fh:
        started = time.perf_counter()
        subprocess.run(argv, stdin=fh, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env, check=False)
        return time.perf_counter() - started


def start_daemon(env: dict[str, str], sock: str) -> subprocess.Popen:
    proc = subprocess.Popen([SPAMSIFT, "daemon", "--socket", sock], env=env,
                            stderr=subprocess.DEVNULL)
    for _ in range(400):
        if os.path.exists(sock):
            return proc
        time.sleep(0.025)
    raise SystemExit("the daemon did not start")


def writer_of(daemon: subprocess.Popen) -> int | None:
    """The daemon's writer process (spawned by multiprocessing; not its resource tracker)."""
    for pid in procs.children_of(daemon.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                if b"spawn_main" in cmd.read():
                    return pid
        except OSError:
            pass
    return None


def written(pid: int | None) -> int:
    """Bytes the process has passed to write() (wchar: the writer writes nothing but the
    database and its WAL; write_bytes would miss what the page cache still holds)."""
    if pid is None:
        return 0
    with open(f"/proc/{pid}/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar"))


def per_message(env, daemon_env, bogo: str, messages: dict[str, str], runs: int) -> None:
    commands = {
        "daemon": ([SPAMSIFT, "filter", "--user", "bench", "--stdout"], daemon_env),
        "standalone": ([SPAMSIFT, "filter", "--user", "bench", "--stdout"], env),
        "bogofilter -u": ([BOGOFILTER, "-d", bogo, "-u", "-p", "-e"], env),
        "bogofilter": ([BOGOFILTER, "-d", bogo, "-p", "-e"], env),
    }
    print(f"\nper message: median wall ms of {runs} runs each, commands alternating")
    print(f"{'message':<12} " + " ".join(f"{name:>14}" for name in commands)
          + "   daemon/bogo-u  standalone/bogo-u  daemon/bogo  standalone/bogo")
    for label, path in messages.items():
        times: dict[str, list[float]] = {name: [] for name in commands}
        for argv, e in commands.values():  # warm-up
            timed(argv, path, e)
        for _ in range(runs):
            for name, (argv, e) in commands.items():
                times[name].append(timed(argv, path, e))
        med = {name: statistics.median(v) * 1000 for name, v in times.items()}
        print(f"{label:<12} " + " ".join(f"{med[n]:>14.1f}" for n in commands)
              + f"   {med['daemon'] / med['bogofilter -u']:>13.2f}"
              f"  {med['standalone'] / med['bogofilter -u']:>17.2f}"
              f"  {med['daemon'] / med['bogofilter']:>11.2f}"
              f"  {med['standalone'] / med['bogofilter']:>15.2f}", flush=True)


def concurrent(argv: list[str], env, paths: list[str], clients: int):
    """(messages a second, p50 and p99 latency in ms, clients that filtered in-process)."""
    latencies: list[float] = []
    fallbacks = 0
    lock = threading.Lock()
    work = list(paths)

    def client() -> None:
        nonlocal fallbacks
        while True:
            with lock:
                if not work:
                    return
                path = work.pop()
            with open(path, "rb") as fh:
                started = time.perf_counter()
                done = subprocess.run(argv, stdin=fh, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, env=env)
                took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                fallbacks += b"in-process" in done.stderr
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return len(paths) / wall, statistics.median(latencies) * 1000, q[98] * 1000, fallbacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--deliveries", type=int, default=400)
    parser.add_argument("--large", action="store_true", help="also a ~500 KB message")
    args = parser.parse_args(argv)
    import spamsift

    if os.path.dirname(os.path.dirname(os.path.abspath(spamsift.__file__))) == ROOT:
        print("note: timing an editable install, whose import hook costs every spamsift "
              "process ~12 ms; measure a normal one (docs/benchmarks.md)", flush=True)
    if not os.path.exists(BOGOFILTER):
        raise SystemExit("bogofilter is not installed (apt-get install bogofilter)")
    messages = corpus(args.corpus)
    random.Random(1).shuffle(messages)
    train, held = messages[:2000], messages[2000:]
    top = tempfile.mkdtemp(prefix="spamsift-vs-bogofilter-")
    try:
        env, bogo = setup(top, train)
        sock = os.path.join(top, "d.sock")
        daemon_env = dict(env, SPAMSIFT_SOCKET=sock)
        daemon = start_daemon(env, sock)
        try:
            sizes = {"~2.5 KB": 2500, "~25 KB": 25000} | (
                {"~500 KB": 500_000} if args.large else {})
            chosen = {f"{label} ({os.path.getsize(p)} B)": p
                      for label, p in ((lab, nearest(held, s)) for lab, s in sizes.items())}
            per_message(env, daemon_env, bogo, chosen, args.runs)
            sample = held[len(held) - args.deliveries:]
            paths = [p for _label, p in sample]
            writer = writer_of(daemon)
            db = sqlite3.connect(os.path.join(env["SPAMSIFT_HOME"], "spamsift.db"))
            sigs0 = db.execute("SELECT count(*), coalesce(sum(length(data)), 0) "
                               "FROM dspam_signature_data").fetchone()
            before = written(writer)
            print(f"\n{args.clients} concurrent deliveries of {len(paths)} held-out messages")
            rate, p50, p99, fallbacks = concurrent(
                [SPAMSIFT, "filter", "--user", "bench", "--stdout"], daemon_env, paths,
                args.clients)
            # Replies never wait for the writer: let it write what it still has queued (one
            # second was not always enough on a loaded machine, and the figures then counted
            # bytes of fewer messages than they divided by).
            for _ in range(600):
                sigs1 = db.execute("SELECT count(*), coalesce(sum(length(data)), 0) "
                                   "FROM dspam_signature_data").fetchone()
                if sigs1[0] - sigs0[0] >= len(paths):
                    break
                time.sleep(0.1)
            time.sleep(0.2)  # the checkpoint that may follow the last commit
            after = written(writer)
            db.close()
            brate, bp50, bp99, _ = concurrent([BOGOFILTER, "-d", bogo, "-u", "-p", "-e"],
                                              env, paths, args.clients)
            print(f"  spamsift (daemon): {rate:6.1f} msg/s, p50 {p50:6.0f} ms, p99 "
                  f"{p99:6.0f} ms, in-process fallbacks {fallbacks}")
            print(f"  bogofilter -u:     {brate:6.1f} msg/s, p50 {bp50:6.0f} ms, p99 "
                  f"{bp99:6.0f} ms")
            print(f"  throughput ratio spamsift / bogofilter -u: {rate / brate:.2f}")
            n = max(1, sigs1[0] - sigs0[0])
            print(f"\nper message of the concurrent run: writer process wrote "
                  f"{(after - before) / n / 1024:.1f} KB (WAL and database); "
                  f"signatures {(sigs1[1] - sigs0[1]) / n / 1024:.2f} KB ({n} stored)")
        finally:
            daemon.terminate()
            daemon.wait(timeout=120)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
