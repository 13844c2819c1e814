"""Benchmark: `spamsift watch` on a generated tree of 1,000 mailboxes x 1,000 messages.

Protocol (issue 4): a Maildir++ tree under /tmp (INBOX, .Spam, .Trash per mailbox; small
synthetic messages, each with a signature header the store does not know, so they decide to
nothing) and a SQLite store that knows every user. One message in the first mailbox is
stamped by the real filter. The real `spamsift watch -v --interval S` runs as a child; from
its per-cycle log lines and /proc this prints:

* the first (full) scan: seconds, CPU seconds;
* CPU seconds per idle cycle (utime+stime between cycle lines; target < 0.5 s);
* resident memory, now and peak (VmRSS, VmHWM; target < 200 MB);
* the time from a rename into .Spam (as Courier-IMAP does) to the finished retrain, read
  from the store, and back out again (target: one poll interval + 2 s);
* a restart: SIGTERM (the watcher saves its scanner state), a drag while it is down, a new
  process: its first scan and when the drag made meanwhile is trained.

With --watchdog-mailboxes N it also measures watchdog's `DirectorySnapshot` (what its
`PollingObserver` takes every cycle) over the first N mailboxes, in a child, and scales the
figures to the whole tree: that is the comparison behind the scanner's design.

Prints figures; asserts nothing. Needs ~5 GB and 1M inodes free for the default size (the
script checks with statvfs first).

Usage: python benchmarks/watch_tree.py [--mailboxes 1000] [--messages 1000] [--interval 5]
       [--dir /tmp/spamsift-watchbench] [--idle-cycles 5] [--watchdog-mailboxes 100]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TICK = os.sysconf("SC_CLK_TCK")
HAM = (b"From: Bob <bob@example.com>\nTo: user0@d0.example\nSubject: lunch\n"
       b"Message-ID: <bench@x>\n\nShall we have lunch tomorrow at noon? The usual place.\n")


def generate(base: str, mailboxes: int, messages: int) -> str:
    """The tree (reused when one of this size exists). Mailboxes d{k}/user{n}/Maildir."""
    root = os.path.join(base, "mail")
    marker = os.path.join(base, f"tree-{mailboxes}x{messages}")
    if os.path.exists(marker):
        return root
    st = os.statvfs(base)
    need_files = mailboxes * (messages + 12)
    need_bytes = need_files * st.f_bsize
    if st.f_favail < need_files * 1.1 or st.f_bavail * st.f_frsize < need_bytes * 1.2:
        sys.exit(f"not enough space in {base}: need ~{need_bytes >> 20} MB and "
                 f"{need_files} inodes")
    started = time.monotonic()
    spam_share = max(1, messages // 10)
    body = b"x" * 200
    for k in range(mailboxes):
        box = os.path.join(root, f"d{k % 10}.example", f"user{k}", "Maildir")
        for folder in ("", ".Spam", ".Trash"):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(box, folder, sub), exist_ok=True)
        for n in range(messages):
            folder = ".Spam" if n < spam_share else ""
            name = f"17000{n:05d}.M{k}P{n}.bench:2,S"
            sig = f"{k:06x}{n:06x}".ljust(30, "0")
            with open(os.path.join(box, folder, "cur", name), "wb") as fh:
                fh.write(b"From: a@b.example\nSubject: m %d\nX-DSPAM-Result: Innocent\n"
                         b"X-DSPAM-Signature: %s\n\n" % (n, sig.encode()) + body)
        if k % 100 == 99:
            print(f"  generated {k + 1} mailboxes ({time.monotonic() - started:.0f} s)",
                  flush=True)
    open(marker, "w").close()
    return root


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_mem(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) // 1024
    return rss, hwm


def watchdog_snapshot(root: str, mailboxes: int, total: int) -> None:
    """watchdog's DirectorySnapshot over `mailboxes` mailboxes, in a child process."""
    code = (
        "import os, sys, time\n"
        "from watchdog.utils.dirsnapshot import DirectorySnapshot\n"
        f"root = {root!r}\n"
        f"boxes = [os.path.join(root, f'd{{k % 10}}.example', f'user{{k}}', 'Maildir') "
        f"for k in range({mailboxes})]\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) // 1024\n"
        "base = rss()\n"
        "t = time.process_time()\n"
        "snaps = [DirectorySnapshot(b, recursive=True) for b in boxes]\n"
        "cpu = time.process_time() - t\n"
        "again = time.process_time()\n"
        "snaps2 = [DirectorySnapshot(b, recursive=True) for b in boxes]\n"
        "cpu2 = time.process_time() - again\n"
        "rss = rss() - base\n"
        "n = sum(len(s.paths) for s in snaps)\n"
        "print(n, cpu, cpu2, rss)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"watchdog snapshot failed: {out.stderr.strip()[-300:]}")
        return
    n, cpu, cpu2, rss = out.stdout.split()
    scale = total / mailboxes
    print(f"watchdog DirectorySnapshot of {mailboxes} mailboxes ({n} paths): "
          f"{float(cpu):.2f} s CPU first, {float(cpu2):.2f} s CPU per further snapshot, "
          f"{rss} MB resident for two snapshots (PollingObserver holds two while diffing)")
    print(f"  scaled to {total} mailboxes: ~{float(cpu2) * scale:.1f} s CPU per polling "
          f"cycle, ~{int(rss) * scale:.0f} MB resident")


class Child:
    """The watcher process; its per-cycle log lines with the CPU time at each."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        self.cycles: list[tuple[float, float, str]] = []  # (monotonic, cpu, line)
        self.seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "mailboxes," in line:
                with self.seen:
                    self.cycles.append((time.monotonic(), proc_cpu(self.proc.pid),
                                        line.strip()))
                    self.seen.notify_all()
            elif "retrained" not in line:
                print("  child:", line.strip())

    def wait_cycles(self, n: int, timeout: float = 3600.0) -> None:
        with self.seen:
            self.seen.wait_for(lambda: len(self.cycles) >= n, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--idle-cycles", type=int, default=5)
    parser.add_argument("--drags", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/spamsift-watchbench")
    parser.add_argument("--watchdog-mailboxes", type=int, default=100)
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    print(f"tree: {args.mailboxes} mailboxes x {args.messages} messages under {args.dir}")
    started = time.monotonic()
    root = generate(args.dir, args.mailboxes, args.messages)
    print(f"tree ready in {time.monotonic() - started:.0f} s")

    from spamsift.filter.cli import main as filter_main
    from spamsift.filter.engine.store.base import open_store

    home = os.path.join(args.dir, "home")
    if os.path.exists(home):
        import shutil

        shutil.rmtree(home)
    os.makedirs(home)
    config = os.path.join(home, "spamsift.toml")
    with open(config, "w") as fh:
        fh.write(f'storage = "sqlite:///{home}/spamsift.db"\nsyslog = false\n')
    env = {"SPAMSIFT_HOME": home, "SPAMSIFT_CONFIG": config}
    store = open_store(f"sqlite:///{home}/spamsift.db")
    for k in range(args.mailboxes):
        store.uid(f"user{k}@d{k % 10}.example")
    # One real message, stamped by the filter, in the first mailbox's INBOX.
    out = io.BytesIO()
    assert filter_main(["--user", "user0@d0.example", "--stdout", "--deliver=innocent,spam"],
                       stdin=io.BytesIO(HAM), stdout=out, stderr=io.StringIO(),
                       environ=env) == 0
    stamped = out.getvalue()
    sig = next(line.split(b":", 1)[1].strip().decode() for line in stamped.split(b"\n")
               if line.startswith(b"X-DSPAM-Signature:"))
    box = os.path.join(root, "d0.example", "user0", "Maildir")
    for folder in ("", ".Spam"):
        for sub in ("cur", "new"):
            for name in os.listdir(os.path.join(box, folder, sub)):
                if name.startswith("real."):
                    os.unlink(os.path.join(box, folder, sub, name))
    path = os.path.join(box, "cur", "real.1:2,S")
    with open(path, "wb") as fh:
        fh.write(stamped)
    old = time.time() - 3600  # the tree is an hour old: no directory looks just changed
    for folder in ("", ".Spam"):
        for sub in ("cur", "new"):
            os.utime(os.path.join(box, folder, sub), (old, old))

    cmd = [sys.executable, "-m", "spamsift", "watch", "-v", "--interval", str(args.interval),
           root]
    child = Child(cmd, {**os.environ, **env})

    def drag(target: str) -> float:
        """Rename the real message into the folder of `target`; seconds until trained."""
        nonlocal path
        new = os.path.join(box, ".Spam" if target == "spam" else "", "cur",
                           os.path.basename(path))
        moved_at = time.monotonic()
        os.rename(path, new)
        path = new
        while store.signature(sig).trained != target:
            if time.monotonic() - moved_at > args.interval * 4 + 120:
                print(f"drag to {target}: not trained after "
                      f"{time.monotonic() - moved_at:.0f} s")
                break
            time.sleep(0.02)
        return time.monotonic() - moved_at

    try:
        child.wait_cycles(1)
        first = child.cycles[0]
        print(f"first scan (reads every message once): {first[0] - child.started:.1f} s, "
              f"{first[1]:.1f} s CPU (with interpreter start)")
        print(f"  {first[2]}")
        rss, hwm = proc_mem(child.proc.pid)
        print(f"resident after the first scan: {rss} MB (peak {hwm} MB)")
        child.wait_cycles(2 + args.idle_cycles)
        cycles = child.cycles
        idle = [(cycles[i + 1][1] - cycles[i][1]) for i in range(1, 1 + args.idle_cycles)]
        print(f"idle cycles: CPU seconds each {', '.join(f'{c:.2f}' for c in idle)}; "
              f"mean {sum(idle) / len(idle):.3f} s (target < 0.5 s)")
        print(f"  {cycles[2][2]}")
        rss, hwm = proc_mem(child.proc.pid)
        print(f"resident: {rss} MB, peak {hwm} MB (target < 200 MB)")
        latencies = []
        for n in range(args.drags * 2):
            time.sleep(args.interval * ((n * 0.37) % 1))  # at varying points of a cycle
            latencies.append(drag("spam" if n % 2 == 0 else "innocent"))
        print(f"drag -> retrain (into .Spam, out again): "
              f"{', '.join(f'{x:.2f}' for x in latencies)} s; max {max(latencies):.2f} s "
              f"(target < interval {args.interval:g} + 2 s)")
        stats = store.stats(store.uid("user0@d0.example"))
        print(f"after {len(latencies)} drags: signature trained {store.signature(sig).trained!r}, "
              f"user0 spam_misclassified {stats.spam_misclassified}, "
              f"innocent_misclassified {stats.innocent_misclassified} (a drag back takes the "
              "report back)")
        # A restart: SIGTERM saves the scanner state; a drag while down; start again.
        child.stop()
        target = "innocent" if store.signature(sig).trained == "spam" else "spam"
        new = os.path.join(box, ".Spam" if target == "spam" else "", "cur",
                           os.path.basename(path))
        os.rename(path, new)  # moved while no watcher runs
        path = new
        moved_at = time.monotonic()
        child = Child(cmd, {**os.environ, **env})
        while store.signature(sig).trained != target and time.monotonic() - moved_at < 600:
            time.sleep(0.02)
        caught_up = time.monotonic() - moved_at
        child.wait_cycles(1)
        first = child.cycles[0]
        print(f"restart with the saved scanner state: first scan {first[0] - child.started:.2f}"
              f" s, {first[1]:.2f} s CPU (with interpreter start); the drag made while down "
              f"trained {caught_up:.2f} s after the start")
        print(f"  {first[2]}")
    finally:
        child.stop()
        store.close()
    if args.watchdog_mailboxes:
        watchdog_snapshot(root, min(args.watchdog_mailboxes, args.mailboxes), args.mailboxes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
