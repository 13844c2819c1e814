"""``spamsift reclassify``: after training, find the mail the filter now places elsewhere.

Every message in the user's Maildir++ folders (spam folders and the rest; ignored folders are
skipped) is classified with the user's current data, read-only (`Agent.process` with
``classify_only``: nothing is learned, no signature written). Messages whose verdict differs
from their folder's class are listed; that is all, unless ``--move`` is given.

With ``--move`` each listed message is renamed into the other class's folder (INBOX, or the
first of `spam_folders`, created the Maildir++ way when missing) under the same file name, so
its flags and its place in ``new/`` or ``cur/`` are kept. ``rename(2)`` within one Maildir is
atomic: the message is in one folder or the other, never both or neither. Before each move the
new place is recorded in the watcher state (`watchstate.record_placement`), so a watcher does
not take the administrator's move for a user's drag and train on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from spamsift.filter.engine import config, exitcodes, users
from spamsift.filter.engine import mailfolders
from spamsift.filter.engine.errors import SpamsiftError, UsageError, command_failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift reclassify",
        description="List (and with --move, move) the messages of a user's Maildir++ that "
                    "the filter now classifies differently from the folder they are in.")
    parser.add_argument("maildir", metavar="MAILDIR")
    parser.add_argument("--user", required=True)
    parser.add_argument("--move", action="store_true",
                        help="move them between the INBOX and the spam folder (default: only "
                             "list them)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--config", help="configuration file")
    return parser


class Finding:
    __slots__ = ("folder", "sub", "name", "klass", "verdict", "probability", "subject", "raw")

    def __init__(self, folder, sub, name, klass, verdict, probability, subject, raw) -> None:
        self.folder = folder
        self.sub = sub
        self.name = name
        self.klass = klass
        self.verdict = verdict
        self.probability = probability
        self.subject = subject
        self.raw = raw

    def as_dict(self) -> dict:
        return {"folder": self.folder.name or "INBOX", "file": f"{self.sub}/{self.name}",
                "folder_class": self.klass, "verdict": self.verdict,
                "probability": round(self.probability, 4), "subject": self.subject}


def _subject(raw: bytes) -> str:
    from spamsift.filter.engine.mime import decode_header_value
    from spamsift.filter.engine.tokenizer import parse_top_headers

    for name, value in parse_top_headers(raw[:65536]):
        if name.lower() == "subject":
            return " ".join(decode_header_value(value).split())[:60]
    return ""


def scan(agent, ctx, root: str, settings):
    """(findings, messages looked at, unreadable) for the Maildir at `root`."""
    from spamsift.filter.engine.message import unstamp

    findings, seen, unreadable = [], 0, 0
    for folder in mailfolders.folders(root, settings.spam_folders, settings.ignored_folders):
        if folder.kind == mailfolders.IGNORED:
            continue
        for sub, name in mailfolders.message_files(folder.path):
            try:  # no symlink followed, regular files only (see spamsift.trainer.corpus._read)
                raw = mailfolders.read_message(os.path.join(folder.path, sub, name))
            except OSError:
                unreadable += 1
                continue
            seen += 1
            if settings.max_message_size and len(raw) > settings.max_message_size:
                continue
            outcome = agent.process(ctx, unstamp(raw, settings), classify_only=True)
            verdict = "spam" if outcome.is_spam else "innocent"
            if verdict != folder.kind:
                findings.append(Finding(folder, sub, name, folder.kind, verdict,
                                        outcome.probability, _subject(raw), raw))
    return findings, seen, unreadable


def _spam_folder(root: str, settings) -> str:
    """The path of the spam folder to move into, created (Maildir++) when missing."""
    for name in settings.spam_folders:
        path = os.path.join(root, name if name.startswith(".") else "." + name)
        if mailfolders.is_maildir(path):
            return path
    first = settings.spam_folders[0] if settings.spam_folders else ".Spam"
    path = os.path.join(root, first if first.startswith(".") else "." + first)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    open(os.path.join(path, "maildirfolder"), "a").close()  # Courier's folder marker
    return path


def move(store, uid: int, root: str, finding: Finding, settings,
         bases: dict[str, set[str]] | None = None) -> str:
    """Record, then rename one message into its new class's folder; what happened.
    `bases`: the base names of each target folder, listed once for a whole run."""
    from spamsift.filter.engine.watchstate import record_placement

    target = _spam_folder(root, settings) if finding.verdict == "spam" else root
    src = os.path.join(finding.folder.path, finding.sub, finding.name)
    dst = os.path.join(target, finding.sub, finding.name)
    base = mailfolders.base_name(finding.name)
    # IMAP servers index a folder's files by base name (flags change the rest): a second file
    # with the same base, in new/ or cur/, would hide one of them or confuse the index.
    if bases is None:
        bases = {}
    if target not in bases:
        bases[target] = {mailfolders.base_name(n)
                         for _sub, n in mailfolders.message_files(target)}
    if base in bases[target]:
        return "target exists"
    key = mailfolders.message_key(finding.raw, settings.header_prefix + "-Signature")
    record_placement(store, uid, key, finding.verdict)
    try:
        os.rename(src, dst)
    except OSError as exc:
        # Not moved: the record goes back to where the message still is, or a watcher would
        # compare a later move of it with a class it never had.
        record_placement(store, uid, key, finding.klass)
        if isinstance(exc, FileNotFoundError):
            return "vanished"
        return f"not moved: {exc.strerror or exc}"
    bases[target].add(base)
    return "moved"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
        user = users.acting_for(args.user, settings)
        root = args.maildir.rstrip("/") or "/"
        if not mailfolders.is_maildir(root):
            raise UsageError(f"{root}: not a Maildir (no cur/ and new/)")
        from spamsift.trainer.corpus import is_subfolder

        if is_subfolder(root):
            # Its spam folder would be made inside it (.Spam/.Spam), where no IMAP server
            # shows the mail moved there.
            raise UsageError(f"{root}: a folder of a Maildir; give the Maildir itself")
        from spamsift.filter.engine.agent import Agent
        from spamsift.filter.engine.store.base import open_store

        store = open_store(settings.storage_url, settings.storage_timeout)
        try:
            uid = store.uid(user, create=False)
            if uid is None:
                raise UsageError(f"{user} has no training data yet: run 'spamsift train' first")
            agent = Agent(settings, store)
            ctx = agent.user(user, create=False)
            findings, seen, unreadable = scan(agent, ctx, root, settings)
            results = []
            bases: dict[str, set[str]] = {}
            for finding in findings:
                entry = finding.as_dict()
                if args.move:
                    entry["action"] = move(store, uid, root, finding, settings, bases)
                results.append(entry)
        finally:
            store.close()
        report = {"user": user, "maildir": root, "messages": seen, "unreadable": unreadable,
                  "misplaced": len(findings), "moved": sum(1 for r in results
                                                           if r.get("action") == "moved"),
                  "dry_run": not args.move, "findings": results}
        if args.json:
            json.dump(report, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            _render(report)
    except (SpamsiftError, OSError) as exc:
        return command_failed("reclassify", exc)
    return exitcodes.OK


def _render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if report["findings"]:
        table = Table(title=f"{report['user']}: messages the filter places in the other class")
        for column in ("folder", "file", "now", "probability", "subject"):
            table.add_column(column, overflow="fold")
        if not report["dry_run"]:
            table.add_column("action")
        for r in report["findings"]:
            row = [r["folder"], r["file"], r["verdict"], f"{r['probability']:.4f}", r["subject"]]
            if not report["dry_run"]:
                row.append(r["action"])
            table.add_row(*row)
        console.print(table)
    verb = "moved" if not report["dry_run"] else "would move (dry run; --move to move)"
    count = report["moved"] if not report["dry_run"] else report["misplaced"]
    console.print(f"{report['messages']} messages checked, {report['misplaced']} in the other "
                  f"class; {verb}: {count}"
                  + (f"; {report['unreadable']} unreadable" if report["unreadable"] else ""))
