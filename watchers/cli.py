"""``spamsift watch ROOT...``: learn from mail users move into and out of spam folders.

Maildir roots are watched by `spamsift.watchers.maildir` (polling, NFS-safe); ``imap://`` and
``imaps://`` URLs are handed to the IMAP watcher (`spamsift.watchers.imap.main`, same arguments).

Exit codes (`spamsift.filter.engine.exitcodes`): 0 done (``--once``) or stopped by SIGTERM/SIGINT;
64 bad command line or a root that is not a directory; 75 storage unavailable at start;
77 run by an OS user not in ``trusted_users`` (the watcher reads and trains every user's mail);
78 bad configuration.
"""

from __future__ import annotations

import argparse
import sys

from spamsift.filter.engine import exitcodes
from spamsift.filter.engine.errors import SpamsiftError, UsageError, command_failed


class OneLineParser(argparse.ArgumentParser):
    """argparse for the watch commands (Maildir and IMAP): a bad command line is one line
    and exit 64, not argparse's usage dump and exit 2."""

    def error(self, message: str):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="spamsift watch",
        description="Watch Maildir++ mailboxes under each ROOT (found by watch_path_template, "
                    "default %d/%u/Maildir -> user u@d) and retrain mail that users drag into "
                    "or out of spam folders, exactly once. Never writes to a mailbox. With "
                    "imap:// or imaps:// URLs instead of ROOTs, follows one IMAP account (the "
                    "IMAP options below).")
    parser.add_argument("roots", nargs="+", metavar="ROOT",
                        help="directory holding mailboxes (or imap://... for the IMAP watcher)")
    parser.add_argument("--once", action="store_true",
                        help="one scan, train what it found (at watch_rate), exit (for cron)")
    parser.add_argument("--interval", type=float, metavar="S",
                        help="seconds between scans (default: watch_interval)")
    parser.add_argument("--template", metavar="T",
                        help="mailbox path under ROOT (default: watch_path_template)")
    parser.add_argument("--rate", type=float, metavar="N",
                        help="trainings per second at most (default: watch_rate; 0: no limit)")
    parser.add_argument("--inotify", action="store_true",
                        help="also wake on inotify events (local filesystems; polling stays)")
    parser.add_argument("--full-scan", action="store_true",
                        help="ignore (and do not write) the saved scanner state: read every "
                             "message once, as on a first start")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="log every line to stderr too, idle scans included (syslog "
                             "always has what happened, and an hourly heartbeat when idle)")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    from spamsift.watchers.imap import add_imap_options

    add_imap_options(parser, parser.add_argument_group("for imap:// and imaps:// URLs"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # IMAP URLs go to the IMAP watcher before parsing: it has options of its own
        # (--password-file, --cafile, --user, ...) and refuses Maildir roots beside a URL.
        if any(a.lower().startswith(("imap://", "imaps://")) for a in argv):
            from importlib import import_module

            return int(import_module("spamsift.watchers.imap").main(argv))
        args = build_parser().parse_args(argv)
        from spamsift.watchers.imap import IMAP_ONLY

        given = [name for name in IMAP_ONLY if getattr(args, name, None)]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} is for imap:// URLs, not "
                             "Maildir roots")
        return _watch(args)
    except SpamsiftError as exc:
        return command_failed("watch", exc)
    except KeyboardInterrupt:
        return exitcodes.OK


def serve_metrics(address: str | None, settings):
    """An engine.metrics.Metrics served on `address` (None: no metrics). UsageError for an
    address that is not HOST:PORT or cannot be bound."""
    if not address:
        return None
    from spamsift.filter.engine.metrics import Metrics

    import os

    from spamsift.filter.client import DEFAULT_SOCKET

    try:
        metrics = Metrics(settings.home, os.environ.get("SPAMSIFT_SOCKET", DEFAULT_SOCKET))
        metrics.serve(address)
    except (UsageError, OSError) as exc:
        raise UsageError(f"--metrics: {exc}") from None
    return metrics


def state_path(settings, roots: list[str]) -> str:
    """Where the scanner state of these roots and this template is kept: in the home, so
    a start lists only the folders that changed since the last save instead of reading
    every message (31 s for the 1,000 x 1,000 benchmark tree)."""
    import os
    from hashlib import sha256

    name = "\0".join(sorted(os.path.abspath(r) for r in roots) + [settings.watch_path_template])
    return os.path.join(settings.home, f"watch-{sha256(name.encode()).hexdigest()[:16]}.state")


def _watch(args) -> int:
    import os
    import signal

    from spamsift.filter.engine import config, log, users
    from spamsift.filter.engine.store.base import open_store
    from spamsift.watchers.inotify import InotifyWaker
    from spamsift.watchers.maildir import Watcher

    settings = config.load(args.config)
    changes: dict[str, object] = {}
    if args.interval is not None:
        changes["watch_interval"] = args.interval
    if args.rate is not None:
        changes["watch_rate"] = args.rate
    if args.template:
        changes["watch_path_template"] = args.template
    if changes:
        settings = settings.replace(**changes)
    caller = users.this_process()
    if not users.is_trusted(caller, settings.trusted_users):
        print(f"spamsift watch: {caller.name} is not a trusted user (trusted_users)",
              file=sys.stderr)
        return exitcodes.NOPERM
    for root in args.roots:
        if not os.path.isdir(root):
            raise UsageError(f"{root}: not a directory")

    def say(line: str) -> None:
        log.info(line, settings.syslog)
        if args.verbose:
            print(f"spamsift watch: {line}", file=sys.stderr, flush=True)

    import threading

    stopping = threading.Event()  # sleeps wait on it, so SIGTERM ends a sleep at once

    def sleep(seconds: float) -> None:
        stopping.wait(seconds)

    store = open_store(settings.storage_url, settings.storage_timeout)
    watcher = None
    try:
        watcher = Watcher(settings, store, args.roots, sleep=sleep, log=say,
                          state_file=None if args.full_scan else state_path(settings, args.roots))
        watcher.heartbeat.verbose = args.verbose
        watcher.metrics = serve_metrics(args.metrics, settings)
        if args.once:
            watcher.cycle(until=None)
            watcher.save_state()
            return exitcodes.OK

        def stop(_signum, _frame) -> None:
            stopping.set()
            if watcher.wake is not None:
                watcher.wake.event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if args.inotify:
            watcher.wake = InotifyWaker()
        say(f"watching {', '.join(args.roots)} every {settings.watch_interval:g} s "
            f"({settings.watch_path_template}, at most {settings.watch_rate:g} trainings/s)")
        watcher.run(settings.watch_interval, stop=stopping.is_set,
                    reopen=lambda: open_store(settings.storage_url, settings.storage_timeout))
        watcher.save_state()
        say("stopped")
        return exitcodes.OK
    finally:
        (watcher.store if watcher is not None else store).close()
