"""SQLite backend: one database file for every user, WAL, busy timeout, batched statements.

WAL lets the many short-lived filter processes read while one writes; ``synchronous=NORMAL``
in WAL mode syncs at checkpoints rather than every commit, which keeps a message's commit at
well under a millisecond while a crash can lose at most the last transactions, never
corrupt the file. Each `commit` is ``BEGIN IMMEDIATE`` ... ``COMMIT``: taking the write lock
up front means two writers wait for each other (busy timeout) instead of deadlocking on a
read-to-write upgrade. SQLite on NFS is unsafe (its locks are advisory and NFS's are not
reliable): use MySQL on a shared store.
"""

from __future__ import annotations

import os
from itertools import chain, islice

# The C module itself: the `sqlite3` package adds only datetime adapters (which spamsift does
# not use) and costs ~2 ms more of a standalone filter's start (its datetime import).
import _sqlite3 as sqlite3

from spamsift.filter.engine.config import sqlite_path
from spamsift.filter.engine.errors import (ConfigError, ConflictError, CorruptDatabaseError,
                                  StorageError, StorageUnavailableError)
from spamsift.filter.engine.store.base import STAT_FIELDS, Batch, Signature, Stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

SCHEMA_VERSION = 3  # 2: dspam_token_data.weight (the logistic model); 3: learned messages
# Checkpoint the WAL into the database once it is this large. Why by hand: the inline filter
# ends its process without closing (see spamsift.filter.cli.FAST_EXIT), and a database whose last
# user did not close is "recovered" by the next opener, which forgets how much of the WAL was
# already checkpointed; SQLite's own PASSIVE autocheckpoint then never lets the WAL restart
# and it grew by megabytes per message. A TRUNCATE checkpoint empties the file instead. Every
# 4 MB (about ten messages) keeps recovery cheap and spreads the copy over several messages.
CHECKPOINT_BYTES = 4 << 20
_CHUNK = 30000  # host parameters per IN (...): below SQLite's 32766 limit
_KEY_CHUNK = 500  # message keys / signature ids per IN (...) of the watcher's bulk reads
_BULK_ROWS = 2000  # token rows from which a commit writes them as JSON statements
_JSON_ROWS = 50000  # rows per JSON statement: bounds the transient lists and text
_SIGN = 1 << 63
_WRAP = 1 << 64


class _WriteLock:
    """``with _WriteLock(db):`` -- BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

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


def _to_db(token: int) -> int:
    return token - _WRAP if token >= _SIGN else token


def _from_db(token: int) -> int:
    return token + _WRAP if token < 0 else token


def open(url: str, timeout: float) -> SQLiteStore:  # noqa: A001 - the registry's entry point
    """``sqlite:///abs/path.db`` (or ``sqlite:////abs/path.db``), ``sqlite://rel/path.db``."""
    path = sqlite_path(url)
    if not path.strip("/"):
        # sqlite3 would open a private temporary database, lost with the process.
        raise ConfigError(f"storage URL {url!r} names no database file: use sqlite:///PATH")
    return SQLiteStore(path, timeout)


def _translate(exc: sqlite3.Error, path: str) -> StorageError:
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


class SQLiteStore:
    """The `Store` contract on one SQLite file."""

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
                self._create()
            elif version < SCHEMA_VERSION:
                self._upgrade()
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
            raise _translate(exc, path) from None
        except OSError as exc:
            raise StorageUnavailableError(f"{path}: {exc.strerror}") from None

    def _create(self) -> None:
        from spamsift import sql

        with _WriteLock(self.db):
            # Re-check under the write lock: another process may have created it meanwhile.
            if self.db.execute("PRAGMA user_version").fetchone()[0] != 0:
                self.db.execute("ROLLBACK")
                return
            names = [r[0] for r in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            if names:
                raise CorruptDatabaseError(
                    f"{self.path}: holds tables ({', '.join(names[:3])}) but is not a spamsift "
                    "database; refusing to touch it")
            for statement in sql.read("sqlite", "schema.sql").split(";\n"):
                if statement.strip() and not statement.strip().startswith("PRAGMA"):
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode = WAL")

    def _upgrade(self) -> None:
        """Schema 1 -> 2: add the weight column; 2 -> 3: add spamsift_learned_messages (under
        the write lock, once)."""
        from spamsift import sql

        with _WriteLock(self.db):
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                return
            if version == 1:
                self.db.execute("ALTER TABLE dspam_token_data ADD COLUMN "
                                "weight REAL NOT NULL DEFAULT 0")
            for statement in sql.statements("sqlite"):
                if statement.split()[:3] == ["CREATE", "TABLE", "spamsift_learned_messages"]:
                    self.db.execute(statement.replace("CREATE TABLE", "CREATE TABLE IF NOT "
                                                      "EXISTS", 1))
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
            raise _translate(exc, self.path) from None
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

    def _query(self, sql_text: str, params: tuple) -> list[tuple]:
        try:
            return self.db.execute(sql_text, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    # -- reading -------------------------------------------------------------------------
    def lookup(self, uid: int, tokens) -> dict[int, tuple[int, int]]:
        ids = [_to_db(t) for t in tokens]
        found: dict[int, tuple[int, int]] = {}
        try:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for token, spam, innocent in self.db.execute(
                        "SELECT token, spam_hits, innocent_hits FROM dspam_token_data "
                        f"WHERE uid = ? AND token IN ({marks})", [uid, *chunk]):
                    found[_from_db(token)] = (spam, innocent)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        return found

    def weights(self, uid: int, tokens) -> dict[int, float]:
        ids = [_to_db(t) for t in tokens]
        found: dict[int, float] = {}
        try:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for token, weight in self.db.execute(
                        "SELECT token, weight FROM dspam_token_data "
                        f"WHERE uid = ? AND token IN ({marks}) AND weight <> 0", [uid, *chunk]):
                    found[_from_db(token)] = weight
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        return found

    def counts_and_weights(self, uid: int, tokens):
        ids = [_to_db(t) for t in tokens]
        counts: dict[int, tuple[int, int]] = {}
        weights: dict[int, float] = {}
        try:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for token, spam, innocent, weight in self.db.execute(
                        "SELECT token, spam_hits, innocent_hits, weight FROM dspam_token_data "
                        f"WHERE uid = ? AND token IN ({marks})", [uid, *chunk]):
                    token = _from_db(token)
                    counts[token] = (spam, innocent)
                    if weight:
                        weights[token] = weight
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        return counts, weights

    def stats(self, uid: int) -> Stats:
        rows = self._query(f"SELECT {', '.join(STAT_FIELDS)} FROM dspam_stats WHERE uid = ?",
                           (uid,))
        return Stats(*rows[0]) if rows else Stats()

    def has_tokens(self, uid: int) -> bool:
        return bool(self._query("SELECT 1 FROM dspam_token_data WHERE uid = ? LIMIT 1", (uid,)))

    def signature(self, signature_id: str) -> Signature | None:
        rows = self._query(f"SELECT {Signature.COLUMNS} FROM dspam_signature_data "
                          "WHERE signature = ?", (signature_id,))
        return Signature.from_row(signature_id, rows[0]) if rows else None

    def preferences(self, uid: int) -> dict[str, str]:
        return dict(self._query(
            "SELECT preference, value FROM dspam_preferences WHERE uid = ?", (uid,)))

    def sources(self, uid: int | None = None, since: str | None = None):
        where: list[str] = []
        params: list[object] = []
        if uid is not None:
            where.append("uid = ?")
            params.append(uid)
        if since is not None:
            where.append("last_seen >= ?")
            params.append(since)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        return [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in self._query(
            "SELECT uid, ip, spam_hits, innocent_hits FROM spamsift_sources"
            + clause + " ORDER BY uid, ip", tuple(params))]

    def all_stats(self) -> dict[int, Stats]:
        return {int(r[0]): Stats(*r[1:]) for r in self._query(
            f"SELECT uid, {', '.join(STAT_FIELDS)} FROM dspam_stats", ())}

    def daily_stats(self, since: str) -> list[tuple[int, str, tuple[int, ...]]]:
        return [(int(r[0]), str(r[1]), tuple(int(v) for v in r[2:])) for r in self._query(
            f"SELECT uid, day, {', '.join(STAT_FIELDS)} FROM spamsift_stats_daily "
            "WHERE day >= ? ORDER BY uid, day", (since,))]

    def daily_totals(self, since: str) -> list[tuple[int, str, int, int]]:
        from spamsift.filter.engine.store.base import DAILY_ERRORS, DAILY_MESSAGES

        return self._query(f"SELECT uid, day, {DAILY_MESSAGES}, {DAILY_ERRORS} FROM "
                           "spamsift_stats_daily WHERE day >= ? ORDER BY uid, day", (since,))

    def preference_values(self, key: str) -> dict[int, str]:
        return {int(r[0]): r[1] for r in self._query(
            "SELECT uid, value FROM dspam_preferences WHERE preference = ?", (key,))}

    def watch_states(self, uid: int, keys) -> dict[str, str]:
        keys = list(keys)
        found: dict[str, str] = {}
        for i in range(0, len(keys), _KEY_CHUNK):
            chunk = keys[i:i + _KEY_CHUNK]
            found.update(self._query(
                "SELECT message_key, folder_class FROM spamsift_watch_messages WHERE uid = ? "
                f"AND message_key IN ({','.join('?' * len(chunk))})", (uid, *chunk)))
        return found

    def learned_records(self, uid: int, keys) -> dict[str, dict[str, tuple[int, float]]]:
        keys = list(keys)
        found: dict[str, dict[str, tuple[int, float]]] = {}
        for i in range(0, len(keys), _KEY_CHUNK):
            chunk = keys[i:i + _KEY_CHUNK]
            for key, klass, copies, step in self._query(
                    "SELECT message_key, learned_class, copies, step FROM "
                    "spamsift_learned_messages WHERE uid = ? AND message_key IN "
                    f"({','.join('?' * len(chunk))}) AND copies > 0", (uid, *chunk)):
                found.setdefault(key, {})[klass] = (int(copies), float(step))
        return found

    def signature_states(self, ids) -> dict[str, tuple[int, str, str]]:
        ids = list(ids)
        found: dict[str, tuple[int, str, str]] = {}
        for i in range(0, len(ids), _KEY_CHUNK):
            chunk = ids[i:i + _KEY_CHUNK]
            for sig_id, uid, result, trained in self._query(
                    "SELECT signature, uid, result, trained FROM dspam_signature_data "
                    f"WHERE signature IN ({','.join('?' * len(chunk))})", tuple(chunk)):
                found[sig_id] = (int(uid), result, trained)
        return found

    # -- writing -------------------------------------------------------------------------
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
            raise _translate(exc, self.path) from None

    def commit(self, uid: int, batch: Batch) -> None:
        self.commit_group([(uid, batch)])

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        db = self.db
        try:
            with _WriteLock(db):
                for uid, batch in items:
                    self._write(uid, batch)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
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

    # SQLite has no last_hit index (see the schema): purge walks the primary key instead, one
    # pass over the table whatever the ages, and deletes each batch by key.
    _PURGE_KEYS = {"dspam_token_data": ("uid", "token"), "dspam_signature_data": ("signature",),
                   "spamsift_sources": ("uid", "ip"),
                   "spamsift_watch_messages": ("uid", "message_key")}

    def _purge_where(self, rule) -> tuple[str, list]:
        from spamsift.filter.engine.purging import DATE_COLUMN

        where = f"{DATE_COLUMN[rule.table]} < ? AND ({rule.condition})"
        params: list = [rule.before]
        if rule.uids is not None:
            where += f" AND uid IN ({','.join('?' * len(rule.uids))})"
            params += list(rule.uids)
        return where, params

    def purge_step(self, rule, limit: int, cursor):
        keys = self._PURGE_KEYS[rule.table]
        where, params = self._purge_where(rule)
        # The DELETE repeats the rule: a row a delivery or a training touched since the
        # SELECT no longer matches it and must stay (deleting it lost those new hits).
        still, still_params = where, list(params)
        if cursor is not None:
            where += f" AND ({', '.join(keys)}) > ({', '.join('?' * len(keys))})"
            params += list(cursor)
        rows = self._query(f"SELECT {', '.join(keys)} FROM {rule.table} WHERE {where} "
                           f"ORDER BY {', '.join(keys)} LIMIT {int(limit)}", tuple(params))
        if not rows:
            return 0, None
        match = " AND ".join(f"{k} = ?" for k in keys)
        try:
            with _WriteLock(self.db):
                deleted = self.db.executemany(
                    f"DELETE FROM {rule.table} WHERE {match} AND {still}",
                    [(*row, *still_params) for row in rows]).rowcount
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        return deleted, (tuple(rows[-1]) if len(rows) == limit else None)

    def purge_count(self, rule) -> int:
        where, params = self._purge_where(rule)
        return self._query(f"SELECT count(*) FROM {rule.table} WHERE {where}",
                           tuple(params))[0][0]

    def initialize(self) -> list[str]:
        """Create tables the file lacks (a new file got them all when it was opened)."""
        from spamsift import sql

        done = []
        have = {r[0] for r in self._query("SELECT name FROM sqlite_master", ())}
        for statement in sql.statements("sqlite"):
            words = statement.split()
            if words[:2] == ["CREATE", "TABLE"] and words[2] not in have:
                self._query(statement, ())
                done.append(f"created {words[2]}")
            elif words[:2] == ["CREATE", "INDEX"] and words[2] not in have:
                self._query(statement, ())
        return done

    def check(self) -> list[str]:
        return self.schema_problems() + self.write_problems()

    def schema_problems(self) -> list[str]:
        """What is wrong with the database itself: integrity, tables, columns, version."""
        from spamsift import sql

        problems = [f"integrity: {row[0]}" for row in self._query("PRAGMA quick_check", ())
                    if row[0] != "ok"]
        for table, columns in sql.tables("sqlite").items():
            have = [row[1] for row in self._query(f'PRAGMA table_info("{table}")', ())]
            if not have:
                problems.append(f"table {table} is missing")
            elif [c for c in columns if c not in have]:
                problems.append(f"table {table} lacks columns "
                                + ", ".join(c for c in columns if c not in have))
        version = self._query("PRAGMA user_version", ())[0][0]
        if version != SCHEMA_VERSION:
            problems.append(f"schema version {version}, this spamsift uses {SCHEMA_VERSION}")
        return problems

    def write_problems(self) -> list[str]:
        """What keeps this process from writing the database (a delivery that cannot write
        passes mail through unfiltered): the file, its folder (SQLite makes -wal and -shm
        there), an existing -wal or -shm, and the write lock itself."""
        who = f"uid {os.geteuid()}"
        problems = []
        folder = os.path.dirname(os.path.abspath(self.path))
        for path in (self.path, self.path + "-wal", self.path + "-shm"):
            if os.path.exists(path) and not os.access(path, os.W_OK):
                problems.append(f"{path}: not writable by {who} (fix: the spamsift user owns "
                                "the database; deliveries go through the daemon)")
        if not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"{folder}: {who} cannot create files here (SQLite's -wal and "
                            "-shm)")
        if not problems:
            try:
                with _WriteLock(self.db):
                    pass
            except sqlite3.Error as exc:
                problems.append(f"{self.path}: cannot take the write lock as {who}: {exc}")
        return problems

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the whole WAL into the database and empty it (waits for readers)."""
        try:
            return tuple(self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    def _write(self, uid: int, batch: Batch) -> None:
        db, day = self.db, batch.day
        update = batch.signature_update
        if update is not None:
            cur = db.execute(
                "UPDATE dspam_signature_data SET trained = ?, counter = ?, data = ? "
                "WHERE signature = ? AND uid = ? AND trained = ?",
                (update.trained, update.counter, update.data, update.id, uid, update.expected))
            if cur.rowcount != 1:
                raise ConflictError(f"signature {update.id} changed under us")
        for watch in sorted(batch.watch, key=lambda w: w.key):
            if watch.expected == watch.ANY:
                cur = db.execute(
                    "INSERT INTO spamsift_watch_messages (uid, message_key, folder_class, "
                    "updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (uid, message_key) DO "
                    "UPDATE SET folder_class = ?3, updated_at = ?4",
                    (uid, watch.key, watch.klass, watch.at))
            elif watch.expected is None:
                cur = db.execute(
                    "INSERT INTO spamsift_watch_messages (uid, message_key, folder_class, "
                    "updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (uid, message_key) DO NOTHING",
                    (uid, watch.key, watch.klass, watch.at))
            else:
                cur = db.execute(
                    "UPDATE spamsift_watch_messages SET folder_class = ?, updated_at = ? "
                    "WHERE uid = ? AND message_key = ? AND folder_class = ?",
                    (watch.klass, watch.at, uid, watch.key, watch.expected))
            if cur.rowcount != 1:
                raise ConflictError(f"watch state of {watch.key[:40]} changed under us")
        if batch.learned:
            self._write_learned(uid, batch)
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

    def _write_learned(self, uid: int, batch: Batch) -> None:
        """`Batch.learned`: takings first, each a compare-and-set, then the additions."""
        db = self.db
        for change in sorted(batch.learned, key=lambda c: (c.key, c.klass)):
            if change.copies >= 0:
                continue
            cur = db.execute(
                "UPDATE spamsift_learned_messages SET copies = copies + ?1, step = step + ?2 "
                "WHERE uid = ?3 AND message_key = ?4 AND learned_class = ?5 "
                "AND copies >= -?1", (change.copies, change.step, uid, change.key,
                                      change.klass))
            if cur.rowcount != 1:
                raise ConflictError(f"learned record of {change.key[:40]} changed under us")
            db.execute("DELETE FROM spamsift_learned_messages WHERE uid = ? AND message_key = ? "
                       "AND learned_class = ? AND copies <= 0", (uid, change.key, change.klass))
        added = [(uid, c.key, c.klass, c.copies, c.step, c.at) for c in batch.learned
                 if c.copies > 0]
        if added:
            db.executemany(
                "INSERT INTO spamsift_learned_messages (uid, message_key, learned_class, "
                "copies, step, learned_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (uid, "
                "message_key, learned_class) DO UPDATE SET copies = copies + ?4, "
                "step = step + ?5", added)

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
        sig = batch.new_signature
        if sig is not None:
            db.execute(
                "INSERT INTO dspam_signature_data (uid, signature, data, length, created_on, "
                "created_at, result, trained, counter, source_ip) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (uid, sig.id, sig.pack(), len(sig.tokens), day, sig.created, sig.result,
                 sig.trained, sig.counter, sig.source_ip))
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
