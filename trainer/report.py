"""``spamsift report``: the accuracy report, as a rich table, a live terminal UI, JSON or CSV.

A global summary (users, opted-in users, messages filtered today / 7 days / all time, overall
accuracy) and one line per user with DSPAM's figures (`spamsift.trainer.report_data` defines them),
the training left until the user's data is mature, the date of the last reported error, and a
sparkline of daily accuracy over the window (30 days). ``--watch`` keeps the screen up to date
and takes keys to sort and filter (`spamsift.trainer.report_tui`); ``--json`` and ``--csv`` print
the same data for monitoring and never import rich.

Trust: a trusted OS user (root, ``trusted_users``) sees every user, or those named with
``--user``; anyone else sees only their own line (DSPAM's rule for dspam_stats).
"""

from __future__ import annotations

import argparse
import sys

from spamsift.filter.engine import config, exitcodes, users
from spamsift.filter.engine.errors import SpamsiftError, UsageError, command_failed
from spamsift.trainer import report_data
from spamsift.trainer.report_data import SORTS, Report
from spamsift.trainer.report_render import (plain_table, select, summary_text, user_table,
                                            view_of, view_title)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rich.console import Console

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift report",
        description="Accuracy report: DSPAM's figures per user (TP, TN, FP, FN, corpus-fed, "
                    "spam hit rate, ham strike rate, overall accuracy), training left until "
                    "mature, last error and a 30-day trend. Untrusted users see their own line.")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--watch", action="store_true",
                     help="live terminal UI; keys: a/f/n/m/t/l sort (accuracy, false "
                          "positives, name, messages, training left, last error), s next "
                          "sort, r reverse, / filter by name or @domain, d next domain, "
                          "c clear, arrows/PgUp/PgDn scroll, u refresh, q quit")
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--csv", action="store_true", help="print one CSV line per user")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between refreshes with --watch (default 5)")
    parser.add_argument("--sort", choices=tuple(SORTS), default="name",
                        help="order of the users: " + "; ".join(f"{k}: {v}"
                                                                for k, v in SORTS.items()))
    parser.add_argument("--reverse", action="store_true", help="reverse the order")
    parser.add_argument("--domain", help="only users of this domain ('local': no domain)")
    parser.add_argument("--match", help="only users whose name contains this text")
    parser.add_argument("--below", type=float, metavar="PCT",
                        help="only users whose accuracy is under PCT percent")
    parser.add_argument("--min-messages", type=int, default=0, metavar="N",
                        help="only users with at least N messages filtered")
    parser.add_argument("--limit", type=int, metavar="N", help="show the first N users only")
    parser.add_argument("--days", type=int, default=report_data.TREND_DAYS,
                        help="days of history for the trend and last error (default 30)")
    parser.add_argument("--user", nargs="+", default=[], metavar="NAME",
                        help="only these users")
    parser.add_argument("--width", type=int, help="render for this many columns")
    parser.add_argument("--config", help="configuration file")
    parser.add_argument("--storage", help="storage URL (default: the configuration's)")
    return parser


def visible_users(args_users: list[str], settings, caller: users.Caller) -> set[str] | None:
    """The user names this caller may see (None: everyone). Raises PermissionDeniedError."""
    names = [users.validate(n) for n in args_users]
    users.authorize(caller, names, settings.trusted_users)
    if users.is_trusted(caller, settings.trusted_users):
        return set(names) or None
    return {users.validate(caller.name)}


def open_for(args, settings):
    from spamsift.filter.engine.store.base import open_store

    return open_store(args.storage or settings.storage_url, settings.storage_timeout,
                      create=False)


def main(argv: list[str] | None = None, caller: users.Caller | None = None,
         console: Console | None = None, clock: float | None = None) -> int:
    """`caller` (who asks), `console` (where the table goes) and `clock` are test seams."""
    args = build_parser().parse_args(argv)
    try:
        if args.days < 1 or args.interval <= 0 or (args.limit is not None and args.limit < 0):
            raise UsageError("--days and --interval must be positive, --limit not negative")
        if args.days > report_data.MAX_DAYS:
            raise UsageError(f"--days: at most {report_data.MAX_DAYS:,} (a century)")
        settings = config.load(args.config)
        only = visible_users(args.user, settings, caller or users.this_process())
        if args.watch:
            from spamsift.trainer import report_tui

            def load_fresh(history: bool) -> Report:
                # A store of its own each time: the UI loads from a thread of its own.
                fresh = open_for(args, settings)
                try:
                    return report_data.load(fresh, settings, only, args.days, clock, history)
                finally:
                    fresh.close()

            return report_tui.run(load_fresh, args, console)
        store = open_for(args, settings)
        try:
            report = report_data.load(store, settings, only, args.days, clock)
        finally:
            store.close()
    except SpamsiftError as exc:
        return command_failed("report", exc)
    rows = select(report, args)
    if args.json:
        import json

        # Compact: json's C encoder only runs without indent (10,000 users: 0.2 s against 3 s).
        return report_data.write_out(sys.stdout, json.dumps(
            report_data.as_json(report, rows, view_of(args)), separators=(",", ":")) + "\n")
    if args.csv:
        import io

        text = io.StringIO()
        report_data.write_csv(rows, text)
        return report_data.write_out(sys.stdout, text.getvalue())
    if console is None:
        from rich.console import Console

        console = Console(width=args.width) if args.width else Console()
    console.print(summary_text(report))
    for contribution in report.groups:  # DSPAM's groups (docs/groups.md)
        console.print("Group " + contribution.line(), markup=False, highlight=False)
    title = view_title(args, len(rows))
    if console.is_terminal or console.record:
        console.print(user_table(rows, report, console.width, title), crop=False)
    else:
        return report_data.write_out(console.file,
                                     plain_table(rows, report, console.width, title))
    return exitcodes.OK


