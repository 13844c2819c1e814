"""The exception tree: each class says when it is raised and which exit code it maps to."""

from __future__ import annotations

from spamsift.filter.engine import exitcodes


class SpamsiftError(Exception):
    """Base of every error spamsift raises on purpose; `exit_code` is what a command returns."""

    exit_code = exitcodes.SOFTWARE


class UsageError(SpamsiftError):
    """Raised for a bad command line: unknown flag, bad value, conflicting options."""

    exit_code = exitcodes.USAGE


class ConfigError(SpamsiftError):
    """Raised when the configuration file is unreadable, not TOML, or holds a bad key or value."""

    exit_code = exitcodes.CONFIG


class InvalidUserError(SpamsiftError):
    """Raised when a user name could smuggle a path or SQL (``../x``, ``a/b``, control bytes)."""

    exit_code = exitcodes.DATAERR


class PermissionDeniedError(SpamsiftError):
    """Raised when an untrusted OS user asks to act for another user."""

    exit_code = exitcodes.NOPERM


class MessageError(SpamsiftError):
    """Raised when the input is not a message at all (empty input)."""

    exit_code = exitcodes.DATAERR


class SignatureError(SpamsiftError):
    """Base for retraining requests that cannot be honoured."""

    exit_code = exitcodes.DATAERR


class MissingSignatureError(SignatureError):
    """Raised when a retraining request carries no signature (no header, no tag, no flag)."""


class UnknownSignatureError(SignatureError):
    """Raised when a signature id is not stored (never issued, expired or purged)."""


class ForeignSignatureError(SignatureError):
    """Raised when a signature exists but belongs to another user than the one named."""


class StorageError(SpamsiftError):
    """Base for storage failures; the inline filter turns these into a pass-through."""

    exit_code = exitcodes.TEMPFAIL


class StorageUnavailableError(StorageError):
    """Raised when the database cannot be reached or opened (locked too long, server down)."""


class CorruptDatabaseError(StorageError):
    """Raised when the database exists but is damaged or not ours; it is never recreated silently."""


class DuplicateSignatureError(StorageError):
    """Raised when a signature id is stored already (another process inserted it first).

    Raised by every backend for the same race, so callers catch the class, never the text."""


class NoDatabaseError(SpamsiftError):
    """Raised when a command that only reads (report, stats, sources, db check) finds no
    database where the configuration says: it must not create an empty one and report on it
    (a mistyped path or home then looked like a site without mail)."""

    exit_code = exitcodes.NOINPUT


class ConflictError(StorageError):
    """Raised when a compare-and-set on a signature's trained class lost a race.

    The transaction was rolled back; the caller re-reads and decides again.
    """


def command_failed(command: str, exc: BaseException) -> int:
    """Say `exc` as the one-line error of ``spamsift COMMAND`` on stderr; its exit code.

    A SpamsiftError says what it is; an OSError (a file or folder named on the command line
    that cannot be read) names the path and maps to NOINPUT."""
    import sys

    if isinstance(exc, OSError):
        print(f"spamsift {command}: {exc.filename or ''}: {exc.strerror or exc}",
              file=sys.stderr)
        return exitcodes.NOINPUT
    print(f"spamsift {command}: {exc}", file=sys.stderr)
    return exc.exit_code if isinstance(exc, SpamsiftError) else exitcodes.SOFTWARE
