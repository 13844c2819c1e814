"""Waking the Maildir watcher early on local filesystems (``spamsift watch --inotify``).

Only a wake-up: the polling scan stays the source of truth, because inotify does not see the
changes other NFS clients make. watchdog stays at this edge (imported when asked for).
"""

from __future__ import annotations

import os


class InotifyWaker:
    """Wakes the loop early when a watched mailbox changes (local filesystems only).

    watchdog's inotify observer, one recursive watch per mailbox; only a wake-up signal: the
    next scan finds what changed."""

    def __init__(self) -> None:
        import threading

        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.event = threading.Event()
        waker = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                # A file being written in a folder's tmp/ is not mail yet.
                src = os.fsdecode(event.src_path)
                if os.path.basename(os.path.dirname(src)) != "tmp":
                    waker.event.set()

        self.handler = Handler()
        self.observer = Observer()
        self.observer.daemon = True
        self.watches: dict = {}
        self.observer.start()

    def watch(self, paths: list[str]) -> None:
        for path in set(self.watches) - set(paths):
            try:
                self.observer.unschedule(self.watches.pop(path))
            except (KeyError, OSError):
                pass
        for path in set(paths) - set(self.watches):
            try:
                self.watches[path] = self.observer.schedule(self.handler, path, recursive=True)
            except OSError:
                pass  # out of inotify watches, or gone: polling still covers it

    def wait(self, timeout: float) -> bool:
        """Sleep until a change (True) or `timeout` (False)."""
        woken = self.event.wait(timeout)
        self.event.clear()
        return woken

    def stop(self) -> None:
        self.observer.stop()
