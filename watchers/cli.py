"""``spamsift watch ROOT...`` and ``spamsift watch imap://...``: learn from mail users move
into and out of spam folders.

Maildir roots are watched by `spamsift.watchers.maildir` (polling, NFS-safe); ``imap://`` and
``imaps://`` URLs go to the IMAP watcher (`spamsift.watchers.imap`, `imap_main`: same
arguments, plus its own options). Both front ends are here, sharing the configuration
overrides, the log line's way out (`_say`), the signal handling and the error handling.

Exit codes (`spamsift.filter.engine.exitcodes`): 0 done (``--once``) or stopped by SIGTERM/SIGINT;
64 bad command line or a root that is not a directory; 75 storage unavailable at start;
77 run by an OS user not in ``trusted_users`` (the watcher reads and trains every user's mail)
or, for IMAP, a refused login; 78 bad configuration or, for IMAP, an untrusted certificate.
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
    add_imap_options(parser, parser.add_argument_group("for imap:// and imaps:// URLs"))
    return parser


def build_imap_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="spamsift watch",
        description="Follow an IMAP account's INBOX and spam folders and retrain mail its user "
                    "drags into or out of a spam folder, exactly once. Never changes the "
                    "mailbox. One account per process.")
    parser.add_argument("urls", nargs="+", metavar="URL",
                        help="imaps://USER@HOST[:PORT]/ (or imap://, STARTTLS required); a "
                             "folder in the URL is followed instead of INBOX")
    parser.add_argument("--once", action="store_true",
                        help="one cycle, train what it found, exit (for cron)")
    parser.add_argument("--interval", type=float, metavar="S",
                        help="seconds between polls (default: watch_interval); with IDLE a "
                             "change wakes it at once")
    parser.add_argument("--rate", type=float, metavar="N",
                        help="trainings per second at most (default: watch_rate; 0: no limit)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="log lines to stderr too (they always go to syslog)")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    # Maildir-only options of `spamsift watch`, refused here with a clear line.
    parser.add_argument("--template", help=argparse.SUPPRESS)
    parser.add_argument("--inotify", action="store_true", help=argparse.SUPPRESS)
    add_imap_options(parser)
    return parser


IMAP_ONLY = ("user", "no_idle", "all_folders", "state", "password_file", "cafile",
             "imap_insecure")


def add_imap_options(parser, group=None) -> None:
    """The options only the IMAP watcher takes (`IMAP_ONLY`), in `group` (default: the
    parser) and imapurl's own group: also listed, and refused for Maildir roots, by
    `spamsift watch --help`."""
    from spamsift.filter.engine import imapurl

    group = group or parser
    group.add_argument("--user", help="IMAP: the spamsift user (default: the URL's user "
                                      "name)")
    group.add_argument("--no-idle", action="store_true", help="IMAP: poll only, never IDLE")
    group.add_argument("--all-folders", action="store_true",
                       help="IMAP: follow every folder not in ignored_folders, not only "
                            "INBOX and the spam folders")
    group.add_argument("--state", metavar="FILE",
                       help="IMAP: cursor file (default: HOME/imap-watch/USER-DIGEST.json)")
    imapurl.add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # IMAP URLs go to the IMAP watcher before parsing: it has options of its own
    # (--password-file, --cafile, --user, ...) and refuses Maildir roots beside a URL.
    if any(a.lower().startswith(("imap://", "imaps://")) for a in argv):
        return imap_main(argv)
    return _command(lambda: _watch(build_parser().parse_args(argv)))


def imap_main(argv: list[str] | None = None, client_factory=None) -> int:
    """``spamsift watch imap://...``; `client_factory` is ``imapclient.IMAPClient`` (a seam
    for tests)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return _command(lambda: _watch_imap(build_imap_parser().parse_args(argv), client_factory))


def _command(run) -> int:
    """`run()`'s exit code; a SpamsiftError is one line on stderr and its code, ^C a stop."""
    try:
        return int(run())
    except SpamsiftError as exc:
        return command_failed("watch", exc)
    except KeyboardInterrupt:
        return exitcodes.OK


def _settings(args, template: str | None = None):
    """The configuration with this command line's overrides."""
    from spamsift.filter.engine import config

    settings = config.load(args.config)
    changes: dict[str, object] = {}
    if args.interval is not None:
        changes["watch_interval"] = args.interval
    if args.rate is not None:
        changes["watch_rate"] = args.rate
    if template:
        changes["watch_path_template"] = template
    return settings.replace(**changes) if changes else settings


def _say(settings, verbose: bool):
    """Where a watcher's lines go: syslog (facility mail) always, stderr too with -v."""
    from spamsift.filter.engine import log

    def say(line: str) -> None:
        log.info(line, settings.syslog)
        if verbose:
            print(f"spamsift watch: {line}", file=sys.stderr, flush=True)

    return say


def _stop_on_signals(*events) -> None:
    """SIGTERM and SIGINT set `events`: the loop ends after its current step, and a wait on
    one of them (the sleep between cycles) ends at once."""
    import signal

    def stop(_signum, _frame) -> None:
        for event in events:
            event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


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
    import threading

    from spamsift.filter.engine import users
    from spamsift.filter.engine.store.base import open_store
    from spamsift.watchers.inotify import InotifyWaker
    from spamsift.watchers.maildir import Watcher

    given = [name for name in IMAP_ONLY if getattr(args, name, None)]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} is for imap:// URLs, not "
                         "Maildir roots")
    settings = _settings(args, args.template)
    caller = users.this_process()
    if not users.is_trusted(caller, settings.trusted_users):
        print(f"spamsift watch: {caller.name} is not a trusted user (trusted_users)",
              file=sys.stderr)
        return exitcodes.NOPERM
    for root in args.roots:
        if not os.path.isdir(root):
            raise UsageError(f"{root}: not a directory")
    say = _say(settings, args.verbose)
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
        if args.inotify:
            watcher.wake = InotifyWaker()
        _stop_on_signals(stopping, *([watcher.wake.event] if watcher.wake else []))
        say(f"watching {', '.join(args.roots)} every {settings.watch_interval:g} s "
            f"({settings.watch_path_template}, at most {settings.watch_rate:g} trainings/s)")
        watcher.run(settings.watch_interval, stop=stopping.is_set,
                    reopen=lambda: open_store(settings.storage_url, settings.storage_timeout))
        watcher.save_state()
        say("stopped")
        return exitcodes.OK
    finally:
        (watcher.store if watcher is not None else store).close()


def _watch_imap(args, client_factory) -> int:
    import threading

    from spamsift.filter.engine import imapurl, users
    from spamsift.filter.engine.store.base import open_store
    from spamsift.watchers.cursors import default_state_path
    from spamsift.watchers.imap import ImapWatcher

    if args.template or args.inotify:
        raise UsageError("--template and --inotify are for Maildir roots, not imap:// URLs")
    if not all(imapurl.is_imap_url(u) for u in args.urls):
        raise UsageError("give either Maildir roots or imap:// URLs, not both")
    if len(args.urls) != 1:
        raise UsageError("one imap:// URL per process (run one watcher per account)")
    url = imapurl.parse_url(args.urls[0])
    settings = _settings(args)
    user = users.acting_for(args.user or url.user, settings)
    say = _say(settings, args.verbose)
    access = imapurl.access_from_args(args)
    state = args.state or default_state_path(settings.home, url, user)
    store = open_store(settings.storage_url, settings.storage_timeout)
    watcher = ImapWatcher(settings, store, url, access, user, state_path=state,
                          all_folders=args.all_folders, idle=not (args.once or args.no_idle),
                          client_factory=client_factory, log=say)
    watcher.heartbeat.verbose = args.verbose
    try:
        watcher.metrics = serve_metrics(args.metrics, settings)
        if args.once:
            watcher.cycle()
            return exitcodes.OK
        watcher.connect()  # a wrong password or certificate ends the command here, clearly
        stopping = threading.Event()
        _stop_on_signals(stopping, watcher.wake)
        say(f"watching {watcher.account} for {user} every {settings.watch_interval:g} s"
            f"{'' if args.no_idle else ' (IDLE where the server has it)'}")
        watcher.run(settings.watch_interval, stop=stopping.is_set)
        say("stopped")
        return exitcodes.OK
    finally:
        watcher.close()
        store.close()
