"""IMAP IDLE as the IMAP watcher's wake-up: a change in a followed folder starts a cycle at once.

Where the server has IDLE, the watcher runs one `Idler` per followed folder (up to its
`MAX_IDLERS`), each on a connection of its own, so a drag is trained within about a second
(0.45 s measured by benchmarks/imap_watch.py) instead of at the next poll. Only a wake-up: the
polling cycle finds what changed, and still runs as the source of truth.
"""

from __future__ import annotations

import threading
import time

# RFC 2177: servers may drop an IDLE after 30 minutes of it; renew before that.
IDLE_RENEW = 25 * 60.0
# How often an idler looks at its stop flag while idling (bounds the shutdown delay).
IDLE_TICK = 1.0


class Idler(threading.Thread):
    """Holds IDLE on one folder over its own connection (`connect()`, a logged-in client) and
    sets `wake` when the server reports a change. Ends when stopped or when its connection
    fails (then `wake` is set too: the next cycle starts a new one)."""

    def __init__(self, folder: str, connect, wake: threading.Event, log) -> None:
        super().__init__(name=f"imap-idle {folder}", daemon=True)
        self.folder = folder
        self.connect = connect
        self.wake = wake
        self.log = log
        self.stopping = threading.Event()
        self.ready = threading.Event()  # set once IDLE is in effect (tests wait for it)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        client = None
        try:
            client = self.connect()
            client.select_folder(self.folder, readonly=True)
            while not self.stopping.is_set():
                client.idle()
                self.ready.set()
                renew_at = time.monotonic() + IDLE_RENEW
                changed = False
                while not self.stopping.is_set() and time.monotonic() < renew_at:
                    responses = client.idle_check(timeout=IDLE_TICK)
                    if any(isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS",
                                                                           b"RECENT")
                           for r in responses):
                        changed = True
                        break
                client.idle_done()
                if changed:
                    self.wake.set()
        except Exception as exc:  # noqa: BLE001 - any failure ends this wake-up source only
            if not self.stopping.is_set():
                self.log(f"IDLE on {self.folder} ended ({exc}); polling covers it")
                self.wake.set()
        finally:
            self.ready.set()
            if client is not None:
                try:
                    client.logout()
                except Exception:  # noqa: BLE001
                    pass
