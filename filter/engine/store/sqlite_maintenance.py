"""SQLite maintenance: creating and upgrading the schema, checking it, purging.

Functions of an open `sqlite.SQLiteStore`, which delegates its `Maintenance` methods here. A module
of its own so that the inline filter, which opens the store on every message and never
purges or checks, does not load it.
"""

from __future__ import annotations

import os

import _sqlite3 as sqlite3

from spamsift.filter.engine.errors import CorruptDatabaseError, StorageUnavailableError
from spamsift.filter.engine.store.sqlite_txn import SCHEMA_VERSION, WriteLock, translate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object


# The page size of a new database. Token ids are random 64-bit hashes, so a learned message's
# tokens land on as many different pages as it has tokens (up to the table's size), and each
# dirty page is one WAL frame of this size. Filtering 200 held-out corpus messages through the
# real filter on a database trained on 2,000 (issue #18; /tmp figures, same rows vacuumed to
# each size): WAL bytes per message 4096: 2,414 KB, 2048: 1,358 KB, 1024: 778 KB, 512:
# 472 KB; a TRUNCATE checkpoint of the 200 messages' WAL 867 / 842 / 522 / 353 ms; filter
# CPU per message 18.0 / 14.9 / 14.5 / 15.8 ms (deeper B-trees cost the smallest pages their
# gain); file size 17.4 / 17.2 / 17.9 / 18.2 MB. 1024 writes a third and checkpoints at
# 60%, with no slower reads. `spamsift db compact` converts an existing database.
PAGE_SIZE = 1024


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
    # Takes effect only while the file is empty (before the first table): a database another
    # process created meanwhile keeps its own.
    db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
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


def compact(store: OpenSQLite) -> tuple[int, int, int, int]:
    """Rewrite the whole file at `PAGE_SIZE` without its free pages (VACUUM): (page size,
    bytes) before and after. Needs the database to itself: leaving WAL mode fails while any
    other process (the daemon, a delivery, a watcher) has it open, and nothing else can read
    or write it while this runs."""
    db = store.db
    before = (db.execute("PRAGMA page_size").fetchone()[0], os.path.getsize(store.path))
    db.execute("PRAGMA busy_timeout = 0")  # never queue behind mail: say busy instead
    try:
        # A page size changes only by a VACUUM outside WAL mode; a TRUNCATE checkpoint first,
        # so the rollback journal mode starts from a file holding everything.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        mode = db.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
        if mode != "delete":
            raise sqlite3.OperationalError("database is locked")
        try:
            db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            db.execute("VACUUM")
        finally:
            _back_to_wal(store)
    except sqlite3.Error as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StorageUnavailableError(
                f"{store.path}: in use by another process (stop the daemon, the watchers and "
                "deliveries for the while, then run it again)") from None
        raise translate(exc, store.path) from None
    return (*before, db.execute("PRAGMA page_size").fetchone()[0], os.path.getsize(store.path))


def _back_to_wal(store: OpenSQLite) -> None:
    """WAL mode again. A process that opened the file while it was in rollback mode keeps the
    switch from happening (it needs the file to itself), and SQLite then just answers the old
    mode: try for a few seconds, then say so, rather than leave deliveries on a rollback
    journal (where a writer blocks every reader)."""
    import time

    for _ in range(50):
        try:
            if store.db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)
    raise StorageUnavailableError(
        f"{store.path}: left in rollback-journal mode because another process opened it "
        "meanwhile; run 'spamsift db compact' again when nothing else has it open")


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
    mode = store._query("PRAGMA journal_mode", ())[0][0]
    if mode != "wal" and store.path != ":memory:":
        problems.append(f"journal mode {mode}, not wal: a writer blocks every reader (fix: "
                        "'spamsift db compact' when nothing else has the file open)")
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
              "spamsift_watch_messages": ("uid", "message_key"),
              "spamsift_learned_messages": ("uid", "message_key", "learned_class")}


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
