"""SQLite maintenance: creating and upgrading the schema, checking it, purging.

Functions of an open `sqlite.SQLiteStore`, which delegates its `Maintenance` methods here. A module
of its own so that the inline filter, which opens the store on every message and never
purges or checks, does not load it.
"""

from __future__ import annotations

import os

import _sqlite3 as sqlite3

from spamsift.filter.engine.errors import CorruptDatabaseError
from spamsift.filter.engine.store.sqlite_txn import SCHEMA_VERSION, WriteLock, translate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object


class OpenSQLite(Protocol):
    """What these functions use of an open `sqlite.SQLiteStore` (which passes itself)."""

    db: sqlite3.Connection
    path: str

    def _query(self, sql_text: str, params=()) -> list[tuple]: ...

    def _purge_where(self, rule) -> tuple[str, list]: ...


def create(store: OpenSQLite) -> None:
    """Create the schema in an empty file (a file holding other tables is refused)."""
    from spamsift import sql

    db = store.db
    with WriteLock(db):
        # Re-check under the write lock: another process may have created it meanwhile.
        if db.execute("PRAGMA user_version").fetchone()[0] != 0:
            db.execute("ROLLBACK")
            return
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if names:
            raise CorruptDatabaseError(
                f"{store.path}: holds tables ({', '.join(names[:3])}) but is not a spamsift "
                "database; refusing to touch it")
        for statement in sql.read("sqlite", "schema.sql").split(";\n"):
            if statement.strip() and not statement.strip().startswith("PRAGMA"):
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    if store.path != ":memory:":
        db.execute("PRAGMA journal_mode = WAL")


def upgrade(store: OpenSQLite) -> None:
    """Schema 1 -> 2: add the weight column; 2 -> 3: add spamsift_learned_messages (under
    the write lock, once)."""
    from spamsift import sql

    db = store.db
    with WriteLock(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        if version == 1:
            db.execute("ALTER TABLE dspam_token_data ADD COLUMN weight REAL NOT NULL DEFAULT 0")
        for statement in sql.statements("sqlite"):
            if statement.split()[:3] == ["CREATE", "TABLE", "spamsift_learned_messages"]:
                db.execute(statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def initialize(store: OpenSQLite) -> list[str]:
    """Create tables the file lacks (a new file got them all when it was opened)."""
    from spamsift import sql

    done = []
    have = {r[0] for r in store._query("SELECT name FROM sqlite_master", ())}
    for statement in sql.statements("sqlite"):
        words = statement.split()
        if words[:2] == ["CREATE", "TABLE"] and words[2] not in have:
            store._query(statement, ())
            done.append(f"created {words[2]}")
        elif words[:2] == ["CREATE", "INDEX"] and words[2] not in have:
            store._query(statement, ())
    return done


def schema_problems(store: OpenSQLite) -> list[str]:
    """What is wrong with the database itself: integrity, tables, columns, version."""
    from spamsift import sql

    problems = [f"integrity: {row[0]}" for row in store._query("PRAGMA quick_check", ())
                if row[0] != "ok"]
    for table, columns in sql.tables("sqlite").items():
        have = [row[1] for row in store._query(f'PRAGMA table_info("{table}")', ())]
        if not have:
            problems.append(f"table {table} is missing")
        elif [c for c in columns if c not in have]:
            problems.append(f"table {table} lacks columns "
                            + ", ".join(c for c in columns if c not in have))
    version = store._query("PRAGMA user_version", ())[0][0]
    if version != SCHEMA_VERSION:
        problems.append(f"schema version {version}, this spamsift uses {SCHEMA_VERSION}")
    return problems


def write_problems(store: OpenSQLite) -> list[str]:
    """What keeps this process from writing the database (a delivery that cannot write
    passes mail through unfiltered): the file, its folder (SQLite makes -wal and -shm
    there), an existing -wal or -shm, and the write lock itself."""
    who = f"uid {os.geteuid()}"
    problems = []
    folder = os.path.dirname(os.path.abspath(store.path))
    for path in (store.path, store.path + "-wal", store.path + "-shm"):
        if os.path.exists(path) and not os.access(path, os.W_OK):
            problems.append(f"{path}: not writable by {who} (fix: the spamsift user owns "
                            "the database; deliveries go through the daemon)")
    if not os.access(folder, os.W_OK | os.X_OK):
        problems.append(f"{folder}: {who} cannot create files here (SQLite's -wal and -shm)")
    if not problems:
        try:
            with WriteLock(store.db):
                pass
        except sqlite3.Error as exc:
            problems.append(f"{store.path}: cannot take the write lock as {who}: {exc}")
    return problems


# SQLite has no last_hit index (see the schema): purge walks the primary key instead, one
# pass over the table whatever the ages, and deletes each batch by key.
PURGE_KEYS = {"dspam_token_data": ("uid", "token"), "dspam_signature_data": ("signature",),
              "spamsift_sources": ("uid", "ip"),
              "spamsift_watch_messages": ("uid", "message_key")}


def purge_step(store: OpenSQLite, rule, limit: int, cursor) -> tuple[int, tuple | None]:
    keys = PURGE_KEYS[rule.table]
    where, params = store._purge_where(rule)
    # The DELETE repeats the rule: a row a delivery or a training touched since the
    # SELECT no longer matches it and must stay (deleting it lost those new hits).
    still, still_params = where, list(params)
    if cursor is not None:
        where += f" AND ({', '.join(keys)}) > ({', '.join('?' * len(keys))})"
        params += list(cursor)
    rows = store._query(f"SELECT {', '.join(keys)} FROM {rule.table} WHERE {where} "
                        f"ORDER BY {', '.join(keys)} LIMIT {int(limit)}", tuple(params))
    if not rows:
        return 0, None
    match = " AND ".join(f"{k} = ?" for k in keys)
    try:
        with WriteLock(store.db):
            deleted = store.db.executemany(
                f"DELETE FROM {rule.table} WHERE {match} AND {still}",
                [(*row, *still_params) for row in rows]).rowcount
    except sqlite3.Error as exc:
        raise translate(exc, store.path) from None
    return deleted, (tuple(rows[-1]) if len(rows) == limit else None)
