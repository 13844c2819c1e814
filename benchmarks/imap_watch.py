"""Benchmark: the IMAP parts against a real, private Dovecot on loopback (tests/imapserver.py):
reading a folder for training, the watcher's first sync, an idle poll cycle, and the time
from an IMAP MOVE into Junk to the finished retrain, with IDLE and with polling only.

Usage: python benchmarks/imap_watch.py [--messages N] [--drags D]

Needs dovecot (apt-get install dovecot-imapd) and openssl. Messages are stamped by the real
filter for a trained user, so the watcher sees signed mail as in production.
"""

from __future__ import annotations

import argparse
import os
import resource
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages in INBOX")
    parser.add_argument("--drags", type=int, default=5, help="timed drags per mode")
    args = parser.parse_args(argv)

    import imapclient
    import imapserver
    from watchsite import HAM, Site

    from spamsift.filter.engine import imapurl
    from spamsift.trainer import imap_source
    from spamsift.watchers.imap import ImapWatcher

    server = imapserver.start_dovecot()
    tmp = tempfile.TemporaryDirectory(prefix="spamsift-bench-")
    try:
        user, password = server.new_user()
        site = Site(Path(tmp.name))
        site.train(user)
        ctx = ssl.create_default_context(cafile=server.cert)
        client = imapclient.IMAPClient(server.host, port=server.tls_port, ssl=True,
                                       ssl_context=ctx)
        client.login(user, password)
        client.create_folder("Junk")
        started = time.perf_counter()
        sigs = []
        for n in range(args.messages):
            stamped = site.filter(user, HAM.format(user=user, n=n).encode())
            client.append("INBOX", stamped.replace(b"\n", b"\r\n"))
            if n < 2 * args.drags:
                sigs.append(_signature(stamped))
        print(f"setup: {args.messages} messages filtered and appended in "
              f"{time.perf_counter() - started:.1f} s")
        access = imapurl.ImapAccess(imapurl.PasswordSource(
            environ={imapurl.PASSWORD_ENV: password}, interactive=False), ca_file=server.cert)
        url = imapurl.parse_url(f"imaps://{user}@{server.host}:{server.tls_port}/")

        # 1. Reading the folder for training.
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        count = sum(1 for _ in imap_source.imap_messages(url.with_folder("INBOX"), access))
        seconds = time.perf_counter() - started
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"imap_source: {count} messages in {seconds:.2f} s = {count / seconds:,.0f} "
              f"msg/s; peak RSS grew {max(0, rss1 - rss0) / 1024:.1f} MB")

        # 2. The watcher's first sync (every UID's signature header) and an idle poll.
        state = os.path.join(tmp.name, "state.json")
        w = ImapWatcher(site.settings(), site.store, url, access, state_path=state,
                        idle=False)
        cpu, wall = time.process_time(), time.perf_counter()
        report = w.cycle()
        print(f"first sync: {report.new_uids} UIDs in {time.perf_counter() - wall:.2f} s "
              f"wall, {time.process_time() - cpu:.2f} s CPU; trained {report.trained or 0}")
        idle = []
        for _ in range(10):
            cpu, wall = time.process_time(), time.perf_counter()
            w.cycle()
            idle.append((time.process_time() - cpu, time.perf_counter() - wall))
        print(f"idle poll cycle: {statistics.median(c for c, _ in idle) * 1000:.1f} ms CPU, "
              f"{statistics.median(t for _, t in idle) * 1000:.1f} ms wall (median of 10)")
        w.close()

        # 3. MOVE into Junk -> retrained: with IDLE (poll 300 s away) and polling every 2 s.
        for mode, idle_on, interval in (("IDLE", True, 300.0), ("poll 2 s", False, 2.0)):
            w = ImapWatcher(site.settings(), site.store, url, access, state_path=state,
                            idle=idle_on)
            stop = threading.Event()
            runner = threading.Thread(target=w.run, args=(interval, stop.is_set), daemon=True)
            runner.start()
            time.sleep(1.0)  # connected, IDLE in effect
            times = []
            for _ in range(args.drags):
                sig = sigs.pop()
                client.select_folder("INBOX")
                uid = client.search(["HEADER", "X-DSPAM-Signature", sig])
                moved = time.perf_counter()
                client.move(uid, "Junk")
                client.unselect_folder()
                while site.store.signature(sig).trained != "spam":
                    if time.perf_counter() - moved > 60:
                        raise SystemExit(f"{mode}: not retrained within 60 s")
                    time.sleep(0.01)
                times.append(time.perf_counter() - moved)
            stop.set()
            w.wake.set()
            runner.join(timeout=10)
            w.close()
            print(f"drag -> retrained ({mode}): median {statistics.median(times):.2f} s, "
                  f"max {max(times):.2f} s over {len(times)} drags")
        client.logout()
        site.close()
    finally:
        imapserver.stop_dovecot(server)
        tmp.cleanup()
    return 0


def _signature(raw: bytes) -> str:
    for line in raw.split(b"\n\n", 1)[0].split(b"\n"):
        if line.lower().startswith(b"x-dspam-signature:"):
            return line.split(b":", 1)[1].strip().decode()
    raise SystemExit("the filter did not stamp a message")


if __name__ == "__main__":
    sys.exit(main())
