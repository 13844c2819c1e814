"""``spamsift doctor``: what keeps this uid's deliveries and reports from being filtered.

Run it as each uid that matters -- root, a delivery uid (``vmail``), Courier's alias user
(``daemon``) -- since what fails is what that uid can do: read the configuration, reach the
daemon, or else write the database (its folder, ``-wal`` and ``-shm`` included), act for other
users, run the programs maildroprc and the aliases name. One line per problem, each with its
fix; exit 65 (DATAERR) when there is any, 0 when there is none. ``--verbose`` also prints what
was checked and found right.

The traps it was written for: a database trained as root that deliveries cannot write (mail
then passes through unfiltered, exit 0); a ``-shm`` that SQLite recreated read-only; a stopped
daemon; aliases that run as a uid that can neither reach the daemon nor write the database.
"""

from __future__ import annotations

import argparse
import os
import sys

from spamsift.filter.engine import exitcodes

ALIAS_FILES = ("/etc/courier/aliasdir/.courier-spam-default",
               "/etc/courier/aliasdir/.courier-fp-default")
MAILDROPRC = "/etc/maildroprc"


class Findings:
    def __init__(self, verbose: bool, out) -> None:
        self.verbose = verbose
        self.out = out
        self.problems = 0
        self.no_daemon = "the daemon does not serve this uid"  # why deliveries are in-process

    def problem(self, what: str, fix: str) -> None:
        self.problems += 1
        print(f"problem: {what} (fix: {fix})", file=self.out)

    def ok(self, what: str) -> None:
        if self.verbose:
            print(f"ok: {what}", file=self.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift doctor",
        description="Check what this uid's deliveries and reports need: the configuration, the "
                    "daemon, write access to the database, trust, and the programs maildroprc "
                    "and the Courier aliases run. One line per problem with its fix; exit 65 "
                    "when there is any.")
    parser.add_argument("--config", help="configuration file (default: as the filter finds it)")
    parser.add_argument("--maildroprc", default=MAILDROPRC,
                        help=f"the maildroprc to check (default {MAILDROPRC}; skipped when "
                             "absent)")
    parser.add_argument("--alias", action="append", metavar="FILE",
                        help="a Courier alias file to check (default: the system-wide "
                             "aliasdir ones, when present)")
    parser.add_argument("--verbose", "-v", action="store_true", help="also print what is right")
    return parser


def main(argv: list[str] | None = None, out=None) -> int:
    args = build_parser().parse_args(argv)
    found = Findings(args.verbose, out or sys.stdout)
    uid = os.geteuid()
    from spamsift.filter.engine import users

    caller = users.caller_for_uid(uid)
    found.ok(f"running as {caller.name} (uid {uid})")
    settings = _configuration(args, found)
    if settings is not None:
        daemon_serves = _daemon(settings, found)
        _database(settings, found, needed=not daemon_serves)
        _trust(settings, caller, found)
        _passthrough(settings, found)
    _programs(args, found)
    if found.problems:
        return exitcodes.DATAERR
    print("ok", file=found.out)
    return exitcodes.OK


def _configuration(args, found: Findings):
    from spamsift.filter.engine import config
    from spamsift.filter.engine.errors import SpamsiftError

    path = args.config or os.environ.get("SPAMSIFT_CONFIG") or config.DEFAULT_CONFIG_PATH
    if os.path.exists(path) and not os.access(path, os.R_OK):
        found.problem(f"{path}: not readable by this uid, so its deliveries run without it",
                      "make it readable (mode 0644, owned and writable by root alone)")
        return None
    try:
        settings = config.load(args.config)
    except SpamsiftError as exc:
        found.problem(f"configuration: {exc}", "correct the file; `spamsift config` shows "
                      "what is in effect")
        return None
    found.ok(f"configuration {settings.origin or '(defaults)'}; storage {settings.storage_url}")
    return settings


def _daemon(settings, found: Findings) -> bool:
    """Whether a daemon serves this uid's deliveries (so they need no write access)."""
    from spamsift.filter import client

    path = os.environ.get("SPAMSIFT_SOCKET", client.DEFAULT_SOCKET)
    if not path or not os.path.exists(path):
        found.ok(f"no daemon socket at {path or '(disabled)'}: deliveries filter in-process")
        found.no_daemon = f"no daemon serves this uid (no socket at {path or '(disabled)'})"
        return False
    import io

    err = io.StringIO()
    out = io.BytesIO()
    environ = {k: v for k, v in os.environ.items() if k in client.PASSED_ENV}
    environ["SPAMSIFT_SOCKET"] = path
    result = client.run(["--version"], environ, io.BytesIO(b""), out, err, count=False)
    if isinstance(result, client.Fallback):
        lines = err.getvalue().strip().splitlines()
        why = (lines[-1].removeprefix("spamsift: ").removesuffix("; filtering in-process")
               if lines else f"daemon at {path} did not answer")
        found.no_daemon = why
        found.problem(f"{why}: this uid's deliveries filter in-process",
                      "start it (systemctl start spamsift-daemon), or give it the "
                      "configuration this uid uses")
        return False
    found.ok(f"the daemon at {path} answers ({out.getvalue().decode().strip()})")
    return True


def _database(settings, found: Findings, needed: bool) -> None:
    from spamsift.filter.engine.errors import (CorruptDatabaseError, SpamsiftError,
                                               StorageUnavailableError)
    from spamsift.filter.engine.store.base import open_store

    try:
        store = open_store(settings.storage_url, settings.storage_timeout, create=False)
    except SpamsiftError as exc:
        # A database file this uid may not open is the daemon's to open; a damaged one, or a
        # server that does not answer, fails the daemon's deliveries as well.
        server = not settings.storage_url.lower().startswith(("sqlite:", "memory:"))
        if isinstance(exc, CorruptDatabaseError):
            found.problem(f"the database cannot be used ({exc}): every delivery passes mail "
                          "through unfiltered", "restore a damaged database from a backup; one "
                          "that a newer spamsift made needs that spamsift")
        elif server and isinstance(exc, StorageUnavailableError):
            found.problem(f"the database cannot be reached ({exc}): every delivery passes mail "
                          "through unfiltered", "start the database server, or correct storage "
                          "(host, port, account, database) in the configuration")
        elif needed:
            found.problem(f"{found.no_daemon}, and it cannot open the database ({exc}): its "
                          "deliveries pass mail through unfiltered", "start the daemon (the "
                          "spamsift user owns the database), or make the database writable "
                          "by this uid")
        else:
            found.ok(f"database not opened by this uid ({exc}): the daemon does it")
        return
    writes: list[str] = []
    try:
        schema = store.schema_problems()
        writes = store.write_problems()
    except SpamsiftError as exc:
        schema = [str(exc)]
    finally:
        store.close()
    for problem in schema:
        found.problem(problem, "spamsift db init (as the database's owner)")
    for problem in writes:
        if not needed:
            found.ok(f"{problem} -- not needed: the daemon writes")
        else:
            found.problem(f"{found.no_daemon}, and {problem}: its deliveries pass mail "
                          "through unfiltered", "start the daemon (the spamsift user owns "
                          "the database), or make the database, its folder, -wal and -shm "
                          "writable by this uid")
    if not schema and not writes:
        found.ok(f"database {settings.storage_url}: schema current, writable by this uid")


def _trust(settings, caller, found: Findings) -> None:
    from spamsift.filter.engine import users

    if users.is_trusted(caller, settings.trusted_users):
        found.ok(f"{caller.name} is trusted (may act for other users)")
    elif caller.name in ("courier", "daemon", "mail", "vmail"):
        found.problem(f"{caller.name} is not in trusted_users: as the system-wide aliases' or "
                      "virtual mailboxes' user it cannot act for other users (exit 77)",
                      f'add "{caller.name}" to trusted_users in a root-owned configuration')
    else:
        found.ok(f"{caller.name} is not trusted: it may act for itself only")


def _passthrough(settings, found: Findings) -> None:
    from spamsift.filter.engine import passlog

    folder = os.path.join(settings.home, passlog.FOLDER)
    if os.access(folder, os.W_OK | os.X_OK):
        found.ok(f"{folder}: this uid can count mail it passes through unfiltered")
    else:
        found.problem(f"{folder}: this uid cannot count mail it passes through unfiltered "
                      "(it only goes to syslog)", "spamsift db init (makes it, mode 1733)")


def _programs(args, found: Findings) -> None:
    """The spamsift and spamc programs maildroprc and the alias files name: this uid must be
    able to run them, or every delivery through them fails or skips filtering."""
    import re
    import shlex

    if os.path.exists(args.maildroprc):
        try:
            with open(args.maildroprc, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as exc:
            found.problem(f"{args.maildroprc}: {exc.strerror}", "make it readable by maildrop")
            text = ""
        for name in ("SPAMSIFT", "SPAMC"):
            m = re.search(rf'(?m)^{name}="([^"]*)"', text)
            if m:
                _runnable(m.group(1), f"{args.maildroprc}: {name}", found,
                          optional=name == "SPAMC")
    for alias in args.alias or [f for f in ALIAS_FILES if os.path.exists(f)]:
        try:
            with open(alias, encoding="utf-8", errors="replace") as fh:
                lines = [line.strip() for line in fh if line.strip().startswith("|")]
        except OSError as exc:
            found.problem(f"{alias}: {exc.strerror}", "make it readable by Courier")
            continue
        for line in lines:
            try:
                words = shlex.split(line[1:])
                # Courier passes no SPAMSIFT_* through: a line may set them first, as
                # `| SPAMSIFT_CONFIG=/etc/spamsift.toml /usr/local/bin/spamsift ...`.
                while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                    words.pop(0)
                program = words[0]
            except (ValueError, IndexError):
                found.problem(f"{alias}: cannot read the command {line!r}", "fix its quoting")
                continue
            _runnable(program, alias, found)


def _runnable(program: str, where: str, found: Findings, optional: bool = False) -> None:
    if os.access(program, os.X_OK):
        found.ok(f"{where}: {program} can be run by this uid")
    elif optional and not os.path.exists(program):
        found.ok(f"{where}: {program} is not installed (optional)")
    else:
        found.problem(f"{where}: {program} cannot be run by this uid",
                      "install spamsift where every delivery uid can run it (see "
                      "docs/install.md), and name that path")
