"""Transactions on the SQLite file and what their errors mean: what the store
(sqlite.py) and its maintenance (sqlite_maintenance.py) share, so neither imports the other
back.
"""

from __future__ import annotations

import _sqlite3 as sqlite3

from spamsift.filter.engine.errors import (CorruptDatabaseError, StorageError,
                                           StorageUnavailableError)

SCHEMA_VERSION = 3  # 2: dspam_token_data.weight (the logistic model); 3: learned messages


class WriteLock:
    """``with WriteLock(db):`` -- BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

    The write lock is taken up front (see the module docstring). A class, not
    contextlib.contextmanager: the filter opens this store on every message and contextlib
    would be one more import at its start."""

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def translate(exc: sqlite3.Error, path: str) -> StorageError:
    """The `StorageError` that says what `exc`, raised on the database at `path`, means."""
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageError(f"{path}: {text}")  # a constraint, not a damaged file
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text
                                                      or "unable to open" in text
                                                      or "readonly" in text or "disk" in text):
        return StorageUnavailableError(f"{path}: {text}")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return CorruptDatabaseError(f"{path}: {text}")
    if "malformed" in text or "not a database" in text:
        return CorruptDatabaseError(f"{path}: {text}")
    return StorageUnavailableError(f"{path}: {text}")
