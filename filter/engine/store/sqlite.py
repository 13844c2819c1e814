"""SQLite backend: one database file for every user, WAL, busy timeout, batched statements.

WAL lets the many short-lived filter processes read while one writes; ``synchronous=NORMAL``
in WAL mode syncs at checkpoints rather than every commit, which keeps a message's commit at
well under a millisecond while a crash can lose at most the last transactions, never
corrupt the file. Each `commit` is ``BEGIN IMMEDIATE`` ... ``COMMIT``: taking the write lock
up front means two writers wait for each other (busy timeout) instead of deadlocking on a
read-to-write upgrade. SQLite on NFS is unsafe (its locks are advisory and NFS's are not
reliable): use MySQL on a shared store.

The reads and compare-and-sets it shares with MySQL are in sqlstore.py; creating, checking
and purging the database in sqlite_maintenance.py.
"""

from __future__ import annotations

import os
from itertools import chain, islice

# The C module itself: the `sqlite3` package adds only datetime adapters (which spamsift does
# not use) and costs ~2 ms more of a standalone filter's start (its datetime import).
import _sqlite3 as sqlite3

from spamsift.filter.engine.config import sqlite_path
from spamsift.filter.engine.errors import (ConfigError, CorruptDatabaseError, NoDatabaseError,
                                           StorageUnavailableError)
from spamsift.filter.engine.store.base import STAT_FIELDS, Batch
from spamsift.filter.engine.store.sqlite_txn import SCHEMA_VERSION, WriteLock, translate
from spamsift.filter.engine.store.sqlstore import SQLStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from spamsift.filter.engine.store.base import Store

# Checkpoint the WAL into the database once it is this large. Why by hand: the inline filter
# ends its process without closing (see spamsift.filter.cli.FAST_EXIT), and a database whose last
# user did not close is "recovered" by the next opener, which forgets how much of the WAL was
# already checkpointed; SQLite's own PASSIVE autocheckpoint then never lets the WAL restart
# and it grew by megabytes per message. A TRUNCATE checkpoint empties the file instead. Every
# 4 MB (about ten messages) keeps recovery cheap and spreads the copy over several messages.
CHECKPOINT_BYTES = 4 << 20
_CHUNK = 30000  # host parameters per IN (...): below SQLite's 32766 limit
_BULK_ROWS = 2000  # token rows from which a commit writes them as JSON statements
_JSON_ROWS = 50000  # rows per JSON statement: bounds the transient lists and text
_SIGN = 1 << 63
_WRAP = 1 << 64


def _to_db(token: int) -> int:
    """A token id as SQLite stores it: signed (see the schema)."""
    return token - _WRAP if token >= _SIGN else token


def open(url: str, timeout: float, create: bool = True) -> SQLiteStore:  # noqa: A001
    """``sqlite:///abs/path.db`` (or ``sqlite:////abs/path.db``), ``sqlite://rel/path.db``
    (the registry's entry point). Without `create`, a file that does not exist is
    NoDatabaseError, not a new database."""
    path = sqlite_path(url)
    if not path.strip("/"):
        # sqlite3 would open a private temporary database, lost with the process.
        raise ConfigError(f"storage URL {url!r} names no database file: use sqlite:///PATH")
    if not create and not os.path.exists(path):
        raise NoDatabaseError(f"no database at {path} (the first filtered message or "
                              "'spamsift db init' creates it)")
    return SQLiteStore(path, timeout)


class SQLiteStore(SQLStore):
    """The `Store` contract on one SQLite file."""

    MARK = "?"
    WATCH_SET = ("INSERT INTO spamsift_watch_messages (uid, message_key, folder_class, "
                 "updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (uid, message_key) DO "
                 "UPDATE SET folder_class = ?3, updated_at = ?4")
    WATCH_INSERT_NEW = ("INSERT INTO spamsift_watch_messages (uid, message_key, folder_class, "
                        "updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (uid, message_key) DO "
                        "NOTHING")
    LEARNED_ADD = ("ON CONFLICT (uid, message_key, learned_class) DO UPDATE SET "
                   "copies = copies + excluded.copies, step = step + excluded.step")
    INTEGRITY_ERROR = sqlite3.IntegrityError
    reopenable = True

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.url = "sqlite://" + path
        try:
            if path != ":memory:":
                folder = os.path.dirname(os.path.abspath(path))
                if not os.path.isdir(folder):
                    os.makedirs(folder, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                from spamsift.filter.engine.store import sqlite_maintenance

                sqlite_maintenance.create(self)
            elif version < SCHEMA_VERSION:
                from spamsift.filter.engine.store import sqlite_maintenance

                sqlite_maintenance.upgrade(self)
            elif version > SCHEMA_VERSION:
                raise CorruptDatabaseError(
                    f"{path}: schema version {version} is newer than this spamsift ({SCHEMA_VERSION})")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA wal_autocheckpoint = 0")  # see CHECKPOINT_BYTES
            # A page cache that holds a daemon's working set (it grows only as pages are
            # read). A memory map was tried too and made one-shot filter processes slower
            # (median 63.0 vs 58.2 ms on 80 corpus messages), so reads stay read() calls.
            self.db.execute("PRAGMA cache_size = -65536")
            self.timeout_ms = int(timeout * 1000)
        except sqlite3.Error as exc:
            raise translate(exc, path) from None
        except OSError as exc:
            raise StorageUnavailableError(f"{path}: {exc.strerror}") from None

    # -- the dialect (sqlstore.py) -------------------------------------------------------
    def _query(self, sql_text: str, params=()) -> list[tuple]:
        try:
            return self.db.execute(sql_text, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    def _token_row_lists(self, uids: Sequence[int], tokens, columns: str,
                         condition: str) -> Iterator[list[tuple]]:
        ids = [_to_db(t) for t in tokens]
        step = _CHUNK - len(uids)
        try:
            for i in range(0, len(ids), step):
                chunk = ids[i:i + step]
                yield self.db.execute(
                    f"SELECT token, {columns} FROM dspam_token_data WHERE "
                    f"{self._uids_are(uids)} AND token IN ({','.join('?' * len(chunk))})"
                    f"{condition}",
                    [*uids, *chunk]).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    @staticmethod
    def _from_db(token: int) -> int:
        return token + _WRAP if token < 0 else token

    @staticmethod
    def _duplicate_key(exc: Exception) -> bool:
        return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CONSTRAINT_PRIMARYKEY",
                                                        "SQLITE_CONSTRAINT_UNIQUE")

    def _execute(self, sql_text: str, params: tuple) -> int:
        """Run one statement of an open transaction; the rows it matched."""
        return self.db.execute(sql_text, params).rowcount

    # -- users ---------------------------------------------------------------------------
    def uid(self, username: str, create: bool = True) -> int | None:
        try:
            row = self.db.execute("SELECT uid FROM dspam_virtual_uids WHERE username = ?",
                                  (username,)).fetchone()
            if row is None and create:
                self.db.execute("INSERT OR IGNORE INTO dspam_virtual_uids (username) VALUES (?)",
                                (username,))
                row = self.db.execute("SELECT uid FROM dspam_virtual_uids WHERE username = ?",
                                      (username,)).fetchone()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None
        return None if row is None else row[0]

    # Names are read as bytes and decoded with replacement: one name that is not UTF-8
    # (migrated DSPAM data) made every report fail ("Could not decode to UTF-8 column").
    def username(self, uid: int) -> str | None:
        row = self._query("SELECT CAST(username AS BLOB) FROM dspam_virtual_uids "
                          "WHERE uid = ?", (uid,))
        return bytes(row[0][0]).decode("utf-8", "replace") if row else None

    def users(self) -> list[tuple[int, str]]:
        return [(r[0], bytes(r[1]).decode("utf-8", "replace")) for r in self._query(
            "SELECT uid, CAST(username AS BLOB) FROM dspam_virtual_uids ORDER BY username",
            ())]

    def set_preference(self, uid: int, key: str, value: str | None) -> None:
        try:
            if value is None:
                self.db.execute("DELETE FROM dspam_preferences WHERE uid = ? AND preference = ?",
                                (uid, key))
            else:
                self.db.execute(
                    "INSERT INTO dspam_preferences (uid, preference, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (uid, preference) DO UPDATE SET value = excluded.value",
                    (uid, key, value))
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    # -- reports -------------------------------------------------------------------------
    def daily_totals(self, since: str) -> list[tuple[int, str, int, int]]:
        from spamsift.filter.engine.store.base import DAILY_ERRORS, DAILY_MESSAGES

        return self._query(f"SELECT uid, day, {DAILY_MESSAGES}, {DAILY_ERRORS} FROM "
                           "spamsift_stats_daily WHERE day >= ? ORDER BY uid, day", (since,))

    # -- maintenance: sqlite_maintenance.py, imported only when one of these is called (the
    # per-message filter never does) ----------------------------------------------------
    def purge_step(self, rule, limit: int, cursor):
        from spamsift.filter.engine.store import sqlite_maintenance

        return sqlite_maintenance.purge_step(self, rule, limit, cursor)

    def initialize(self) -> list[str]:
        from spamsift.filter.engine.store import sqlite_maintenance

        return sqlite_maintenance.initialize(self)

    def check(self) -> list[str]:
        return self.schema_problems() + self.write_problems()

    def schema_problems(self) -> list[str]:
        from spamsift.filter.engine.store import sqlite_maintenance

        return sqlite_maintenance.schema_problems(self)

    def write_problems(self) -> list[str]:
        from spamsift.filter.engine.store import sqlite_maintenance

        return sqlite_maintenance.write_problems(self)

    def compact(self) -> tuple[int, int, int, int]:
        """Rewrite the file at the current page size: (page size, bytes) before and after."""
        from spamsift.filter.engine.store import sqlite_maintenance

        return sqlite_maintenance.compact(self)

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the whole WAL into the database and empty it (waits for readers)."""
        try:
            return tuple(self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    # -- writing -------------------------------------------------------------------------
    def commit(self, uid: int, batch: Batch) -> None:
        self.commit_group([(uid, batch)])

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        db = self.db
        try:
            with WriteLock(db):
                for uid, batch in items:
                    self._write(uid, batch)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        try:
            if os.path.getsize(self.path + "-wal") < CHECKPOINT_BYTES:
                return
        except OSError:
            return
        try:
            # Never wait for readers here: mail is being delivered. A busy checkpoint is
            # simply left to a later message.
            self.db.execute("PRAGMA busy_timeout = 0")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass
        finally:
            try:
                self.db.execute(f"PRAGMA busy_timeout = {self.timeout_ms}")
            except sqlite3.Error:
                pass

    def _write(self, uid: int, batch: Batch) -> None:
        db, day = self.db, batch.day
        self._write_compare_and_sets(self._execute, uid, batch)
        if batch.learned:
            self._write_learned(self._execute, uid, batch)
        tokens, weights = batch.tokens, batch.weights
        if (len(tokens) + len(weights) >= _BULK_ROWS
                and min((min(d) for d in tokens.values()), default=0) >= 0):
            # One statement over a JSON array instead of one step per row: the sqlite3 module
            # releases the GIL around every step, and on bulk.py's writer thread each
            # re-acquire waited out the tokenizing thread's switch interval, so the writer
            # crawled and training waited for it (2.5 s of a 10 s corpus run). One step runs
            # the whole upsert without the GIL. Counts only grow here, so nothing is clamped.
            # Rows are (id, spam, innocent, weight), and only where something is added. Bulk
            # corpus batches have no weights: their rows come straight from the counts, since
            # building the union of the keys for nothing took 747 -> 622 msg/s.
            # Rows are made _JSON_ROWS at a time, never all at once: a list of a flush's
            # 400,000 rows was ~50 MB of a training run's peak.
            rows: Iterator[tuple[int, int, int, float]]
            if weights:
                # Rows of the counted tokens, then of tokens with a weight alone; no union
                # of the keys built first (0.62 -> 0.20 s for 400,000 rows).
                weight = weights.get
                rows = (r for r in chain(
                    ((_to_db(t), d[0], d[1], weight(t, 0.0)) for t, d in tokens.items()),
                    ((_to_db(t), 0, 0, w) for t, w in weights.items() if t not in tokens))
                    if r[1] or r[2] or r[3])
            else:
                rows = ((_to_db(t), d[0], d[1], 0) for t, d in tokens.items() if d[0] or d[1])
            import json  # only for bulk-sized batches: the per-message path does without

            while part := list(islice(rows, _JSON_ROWS)):
                db.execute(
                    "INSERT INTO dspam_token_data (uid, token, spam_hits, innocent_hits, "
                    "last_hit, weight) SELECT ?1, r.value ->> 0, r.value ->> 1, "
                    "r.value ->> 2, ?2, r.value ->> 3 FROM json_each(?3) AS r WHERE true "
                    "ORDER BY 2 ON CONFLICT (uid, token) DO UPDATE SET "
                    "spam_hits = spam_hits + excluded.spam_hits, "
                    "innocent_hits = innocent_hits + excluded.innocent_hits, "
                    "last_hit = excluded.last_hit, weight = weight + excluded.weight",
                    (uid, day, json.dumps(part)))
        else:
            self._write_tokens(uid, day, batch)
        self._write_counters(uid, day, batch)

    def _write_tokens(self, uid: int, day: str, batch: Batch) -> None:
        db = self.db
        grow, shrink = [], []
        # A growing token's weight delta rides in its count upsert: writing the weights in a
        # statement of their own cost 0.9 ms more a message (median process() on a 2,000-
        # message database: 15.1 ms that way, 14.2 ms so; graham+burton alone 12.3 ms).
        weights = dict(batch.weights)
        for token in sorted(batch.tokens):
            spam, innocent = batch.tokens[token]
            if spam > 0 or innocent > 0:
                grow.append((uid, _to_db(token), spam, innocent, day, weights.pop(token, 0.0)))
            elif spam < 0 or innocent < 0:
                shrink.append((spam, innocent, day, uid, _to_db(token)))
        if grow:
            db.executemany(
                "INSERT INTO dspam_token_data (uid, token, spam_hits, innocent_hits, last_hit, "
                "weight) VALUES (?1, ?2, max(?3, 0), max(?4, 0), ?5, ?6) ON CONFLICT (uid, token) "
                "DO UPDATE SET spam_hits = max(spam_hits + ?3, 0), "
                "innocent_hits = max(innocent_hits + ?4, 0), last_hit = ?5, "
                "weight = weight + ?6", grow)
        if shrink:
            db.executemany(
                "UPDATE dspam_token_data SET spam_hits = max(spam_hits + ?1, 0), "
                "innocent_hits = max(innocent_hits + ?2, 0), last_hit = ?3 "
                "WHERE uid = ?4 AND token = ?5", shrink)
        rest = [(uid, _to_db(t), day, weights[t]) for t in sorted(weights) if weights[t]]
        if rest:
            db.executemany(
                "INSERT INTO dspam_token_data (uid, token, spam_hits, innocent_hits, last_hit, "
                "weight) VALUES (?1, ?2, 0, 0, ?3, ?4) ON CONFLICT (uid, token) DO UPDATE SET "
                "weight = weight + ?4, last_hit = ?3", rest)

    def _write_counters(self, uid: int, day: str, batch: Batch) -> None:
        db = self.db
        deltas = [batch.stats.get(f, 0) for f in STAT_FIELDS]
        if any(deltas):
            cols = ", ".join(STAT_FIELDS)
            marks = ", ".join(f"max(?{i + 3}, 0)" for i in range(len(STAT_FIELDS)))
            sets = ", ".join(f"{f} = max({f} + ?{i + 3}, 0)" for i, f in enumerate(STAT_FIELDS))
            db.execute(f"INSERT INTO dspam_stats (uid, {cols}) VALUES (?1, {marks}) "
                       f"ON CONFLICT (uid) DO UPDATE SET {sets}", [uid, None, *deltas])
            # The history keeps signed deltas per day: a correction on a later day is a
            # negative entry there, so per-day sums stay true to what happened that day.
            plain = ", ".join(f"?{i + 3}" for i in range(len(STAT_FIELDS)))
            dsets = ", ".join(f"{f} = {f} + ?{i + 3}" for i, f in enumerate(STAT_FIELDS))
            db.execute(f"INSERT INTO spamsift_stats_daily (uid, day, {cols}) VALUES (?1, ?2, {plain}) "
                       f"ON CONFLICT (uid, day) DO UPDATE SET {dsets}", [uid, day, *deltas])
        if batch.new_signature is not None:
            self._insert_signature(self._execute, uid, day, batch.new_signature)
        for ip, (spam, innocent) in batch.sources.items():
            db.execute(
                "INSERT INTO spamsift_sources (uid, ip, spam_hits, innocent_hits, last_seen) "
                "VALUES (?1, ?2, max(?3, 0), max(?4, 0), ?5) ON CONFLICT (uid, ip) DO UPDATE SET "
                "spam_hits = max(spam_hits + ?3, 0), innocent_hits = max(innocent_hits + ?4, 0), "
                "last_seen = ?5", (uid, ip, spam, innocent, day))

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass


if TYPE_CHECKING:
    def _is_a_store(store: SQLiteStore) -> Store:  # mypy checks the whole contract here
        return store
