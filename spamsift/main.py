"""The ``spamsift`` command: a table of subcommands, each imported only when it runs.

This is the top of the dependency graph: it names the applications (filter, trainer,
watchers) and nothing imports it. Called as ``dspam`` (a symlink) or with DSPAM flags and no
subcommand, it is the filter, so existing maildroprc lines and aliases keep working.
"""

import posix  # not os: the per-message path avoids os's import cost (see spamsift.filter.client)
import sys

# name -> (module, function, one-line help). Modules are imported on use only: the inline
# filter must not pay for the trainer's rich or the watcher's watchdog.
COMMANDS = {
    "filter": ("spamsift.filter.cli", "main",
               "classify/train one message (DSPAM's command line)"),
    "config": ("spamsift.filter.admin", "config_main", "print the effective configuration"),
    "prefs": ("spamsift.filter.admin", "prefs_main", "show or set a user's preferences"),
    "groups": ("spamsift.filter.admin", "groups_main",
               "DSPAM's groups: list, show a user's, import a GroupConfig"),
    "daemon": ("spamsift.filter.daemon", "main", "serve `spamsift filter` from a resident process"),
    "db": ("spamsift.filter.admin", "db_main",
           "create/upgrade the schema (init) or check a database"),
    "doctor": ("spamsift.filter.doctor", "main", "what keeps this uid's deliveries from being "
               "filtered, with the fixes"),
    "setup": ("spamsift.filter.setup", "main", "make a privilege-separated node (user, home, "
              "database, units, maildroprc, aliases)"),
    "purge": ("spamsift.trainer.purge", "main",
              "delete stale tokens and signatures in small batches"),
    "train": ("spamsift.trainer.train", "main",
              "bootstrap a user from existing mail (Maildir, mbox, MH, IMAP...)"),
    "evaluate": ("spamsift.trainer.evaluate", "main", "estimate a user's accuracy before go-live"),
    "reclassify": ("spamsift.trainer.reclassify", "main", "find (and move) mail the filter now "
                   "places in the other class"),
    "watch": ("spamsift.watchers.cli", "main", "learn from mail users move into and out of .Spam"),
    "report": ("spamsift.trainer.report", "main", "accuracy report (terminal UI, --json, --csv)"),
    "stats": ("spamsift.trainer.stats", "main", "DSPAM's dspam_stats lines"),
    "sources": ("spamsift.trainer.sources", "main", "top spam source addresses and networks"),
}


def usage() -> str:
    lines = ["usage: spamsift COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_m, _f, text) in COMMANDS.items()]
    lines += ["", "'spamsift COMMAND --help' describes a command. With DSPAM flags and no "
              "command (or run as 'dspam'), spamsift is the filter."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    invoked = sys.argv[0].rsplit("/", 1)[-1] if sys.argv else ""
    if invoked == "dspam" or (argv and argv[0].startswith("--") and argv[0] not in
                              ("--help", "--version")):
        argv = ["filter", *argv]
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0 if argv else 64
    if argv[0] == "--version":
        from spamsift import __version__

        print(f"spamsift {__version__}")
        return 0
    entry = COMMANDS.get(argv[0])
    if entry is None:
        sys.stderr.write(f"spamsift: unknown command {argv[0][:40]!r}\n" + usage())
        return 64
    if argv[0] == "filter":
        return _filter(argv[1:])
    from importlib import import_module

    return _admin(argv[0], getattr(import_module(entry[0]), entry[1]), argv[1:])


def _admin(name: str, command, argv: list[str]) -> int:
    """Run an administrator's command; standard output that cannot be written (closed, a
    full disk, a reader that went away) is one line and exit 74, not a traceback."""
    import os

    from spamsift.filter.engine.exitcodes import IOERR

    if sys.stdout is None:
        # Descriptor 1 closed: a command that prints nothing (watch, a quiet train) still
        # runs; one that prints fails as on a broken pipe.
        sys.stdout = _ClosedOutput()  # type: ignore[assignment]
    try:
        code = int(command(argv))
        sys.stdout.flush()  # a full disk says so now, not at interpreter exit
        return code
    except OSError as exc:
        if not _stdout_failed(exc):
            raise
        if isinstance(sys.stdout, _ClosedOutput):
            why = "it is closed"
        else:
            why = exc.strerror or str(exc)
            # Nothing more can go there: the interpreter's flush at exit would fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"spamsift {name}: cannot write to standard output: {why}", file=sys.stderr)
        return IOERR


def _stdout_failed(exc: OSError) -> bool:
    """Whether `exc` came from writing standard output (not from a file a command opened)."""
    import errno

    return isinstance(exc, BrokenPipeError) or (
        exc.errno in (errno.ENOSPC, errno.EBADF, errno.EIO, errno.EPIPE)
        and getattr(exc, "filename", None) is None)


def _filter(argv: list[str]) -> int:
    """The per-message path: the daemon when one runs, else the engine in this process."""
    import io

    from spamsift.filter import client

    # A closed descriptor leaves sys.stdin / sys.stdout None: read it as an empty message
    # (a training call naming --signature needs none; anything else is exit 65) and make
    # writing the message fail as writing to a broken pipe does (exit 75, retried).
    stdin = sys.stdin.buffer if sys.stdin is not None else io.BytesIO()
    stdout = sys.stdout.buffer if sys.stdout is not None else _ClosedOutput()
    stderr = sys.stderr if sys.stderr is not None else io.StringIO()
    done = client.run(argv, client.environment(), stdin, stdout, stderr)
    if not isinstance(done, client.Fallback):
        if _fast_exit_ok():
            _exit_now(done)
        return done
    from spamsift.filter import cli

    if done.stdin is not None:
        stdin = io.BytesIO(done.stdin)
    if _fast_exit_ok():
        cli.FAST_EXIT = True
        _exit_now(int(cli.main(argv, stdin=stdin, stdout=stdout, stderr=stderr)))
    return int(cli.main(argv, stdin=stdin, stdout=stdout, stderr=stderr))


class _ClosedOutput:
    """Standard output when file descriptor 1 is closed."""

    def write(self, data) -> int:
        raise OSError(9, "standard output is closed")

    def flush(self) -> None:
        pass


def _fast_exit_ok() -> bool:
    """Only the real console process may skip interpreter shutdown, never a caller's."""
    return bool(sys.argv) and sys.argv[0].rsplit("/", 1)[-1] in ("spamsift", "dspam")


def _exit_now(code: int) -> None:
    """Flush what belongs to the message and leave without closing the database."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        if sys.stderr is not None:
            sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 75  # stdout could not be written: the MTA must retry
    posix._exit(code)
