"""``spamsift purge``: delete stale tokens, signatures, source addresses, the watchers' records
and the records of what training learned, in small batches.

Each rule of `spamsift.filter.engine.purging` runs as a series of short transactions of
`purge_batch` rows with `purge_pause` seconds between them, so deliveries waiting for the same
rows get them within one batch. A batch that fails on a lock is retried after a growing pause
instead of giving up. Run it on one node of a cluster only (see docs/cluster.md); two purges
would not corrupt anything, only do the work twice.
"""

from __future__ import annotations

import argparse
import sys
import time

from spamsift.filter.engine import config, exitcodes, purging, users
from spamsift.filter.engine.errors import SpamsiftError, StorageUnavailableError, command_failed

LOCK_RETRIES = 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift purge",
        description="Delete stale tokens, signatures, source addresses and records (the "
                    "watchers', what training learned) by DSPAM's purge "
                    "rules (ages from the configuration: purge_*), in small batches.")
    parser.add_argument("--dry-run", action="store_true",
                        help="only count what each rule would delete")
    parser.add_argument("--batch", type=int, help="rows per batch (default purge_batch)")
    parser.add_argument("--pause", type=float,
                        help="seconds between batches (default purge_pause)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (for cron)")
    parser.add_argument("--config")
    return parser


def _step_with_retries(store, rule, batch: int, cursor, pause: float, say):
    for attempt in range(LOCK_RETRIES):
        try:
            return store.purge_step(rule, batch, cursor)
        except StorageUnavailableError as exc:
            if attempt == LOCK_RETRIES - 1:
                raise
            wait = min(30.0, pause + 0.5 * 2 ** attempt)
            say(f"{rule.name}: {exc}; retrying in {wait:.1f} s")
            time.sleep(wait)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)
    from rich.table import Table

    from spamsift.filter.engine.store.base import open_store

    console = Console(stderr=True, quiet=args.quiet)
    out = Console()
    try:
        settings = config.load(args.config)
        caller = users.this_process()
        if not users.is_trusted(caller, settings.trusted_users):
            print(f"spamsift purge: {caller.name} is not a trusted user", file=sys.stderr)
            return exitcodes.NOPERM
        changes = {k: v for k, v in (("purge_batch", args.batch), ("purge_pause", args.pause))
                   if v is not None}
        settings = settings.replace(**changes)  # checked like the file's values
        batch, pause = settings.purge_batch, settings.purge_pause
        store = open_store(settings.storage_url, settings.storage_timeout)
        try:
            rules = purging.plan(settings, store)
            table = Table(title="spamsift purge" + (" (dry run)" if args.dry_run else ""))
            for column in ("rule", "older than", "rows", "seconds"):
                table.add_column(column, justify="right" if column != "rule" else "left")
            grand = 0
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=True) as progress:
                for rule in rules:
                    started = time.monotonic()
                    total = store.purge_count(rule)
                    if args.dry_run:
                        table.add_row(rule.name, rule.before, str(total), "")
                        grand += total
                        continue
                    task = progress.add_task(rule.name, total=total or None)
                    deleted, cursor = 0, None
                    while True:
                        n, cursor = _step_with_retries(store, rule, batch, cursor, pause,
                                                       console.print)
                        deleted += n
                        progress.update(task, completed=deleted)
                        if cursor is None:
                            break
                        if pause:
                            time.sleep(pause)
                    progress.remove_task(task)
                    grand += deleted
                    table.add_row(rule.name, rule.before, str(deleted),
                                  f"{time.monotonic() - started:.1f}")
            table.add_row("total", "", str(grand), "", style="bold")
            out.print(table)
        finally:
            store.close()
    except SpamsiftError as exc:
        return command_failed("purge", exc)
    return exitcodes.OK
