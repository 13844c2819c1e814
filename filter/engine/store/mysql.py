"""MySQL / MariaDB backend (PyMySQL): one shared database for the nodes of a cluster.

Chosen by ``storage = "mysql://user:pass@host:port/db"`` (``?ssl=1&ssl_ca=FILE`` for TLS) or, for an existing DSPAM
installation, ``storage = "mysql+datafile:///etc/dspam/mysql.data"`` (DSPAM's five lines: host
or socket path, port, user, password, database).

Per message: one ``SELECT ... IN (...)`` for the token counts (chunked far below
max_allowed_packet), and one transaction holding one multi-row ``INSERT ... ON DUPLICATE KEY
UPDATE`` with each token's own deltas (DSPAM applied one uniform delta to every token, which
lost inoculation weights and occurrence counts). Rows are written in token order, so two
messages lock shared tokens in the same order; deadlocks and lock wait timeouts that happen
anyway are retried. Sessions run at READ COMMITTED, which spares the gap locks that make
concurrent upserts deadlock under REPEATABLE READ. Connect, read and write timeouts are the
configured `storage_timeout`, so delivery never hangs on a dead server.

The reads and compare-and-sets it shares with SQLite are in sqlstore.py; creating, checking
and purging the database in mysql_maintenance.py.
"""

from __future__ import annotations

import builtins
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT

from spamsift.filter.engine.errors import ConfigError, StorageError, StorageUnavailableError
from spamsift.filter.engine.store.base import STAT_FIELDS, Batch
from spamsift.filter.engine.store.mysql_txn import (DUPLICATE_KEY, RETRIES, RETRY_CODES,
                                                    error_code, token_lists, translate)
from spamsift.filter.engine.store.sqlstore import SQLStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from spamsift.filter.engine.store.base import Store

INSERT_CHUNK = 5000          # rows per INSERT: ~250 KB


def parse_datafile(path: str) -> dict:
    """DSPAM's mysql.data: host (or a socket path), port, user, password, database."""
    try:
        # builtins.open: this module's own `open` is the registry's entry point.
        with builtins.open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh.read().splitlines()]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(lines) < 5:
        raise ConfigError(f"{path}: needs five lines: host, port, user, password, database")
    host, port, user, password, database = lines[:5]
    params: dict = {"user": user, "password": password, "database": database}
    if host.startswith("/"):
        params["unix_socket"] = host
    else:
        params["host"] = host or "localhost"
        params["port"] = int(port) if port.isdigit() else 3306
    return params


def parse_url(url: str) -> dict:
    if url.startswith("mysql+datafile://"):
        return parse_datafile(url.split("://", 1)[1])
    shown = _without_password(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        # urllib's own words ("Port could not be cast to integer value as 's'"): usually a
        # password with / # ? @ in it, which must be percent-encoded (%2F %23 %3F %40).
        raise ConfigError(f"storage URL {shown!r} cannot be read ({exc}); percent-encode "
                          "/ # ? @ in the password (%2F %23 %3F %40)") from None
    database = parts.path.lstrip("/")
    if not database:
        raise ConfigError(f"storage URL {shown!r} names no database (mysql://user@host/db)")
    params: dict = {"host": host or "localhost", "port": port or 3306,
                    "user": unquote(parts.username or "root"),
                    "password": unquote(parts.password or ""), "database": database}
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    if query.get("ssl") in ("1", "true", "on", "yes"):
        params["ssl"] = ({"ca": query["ssl_ca"]} if query.get("ssl_ca")
                         else {"check_hostname": True})  # a non-empty dict turns TLS on
    return params


def _without_password(url: str) -> str:
    """`url` for messages: anything between the scheme's // and the last @ that follows a
    colon is a password, and is shown as ***."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    colon = rest.find(":", 0, at) if at > 0 else -1
    if not sep or colon < 0:
        return url
    return f"{scheme}://{rest[:colon]}:***{rest[at:]}"


def open(url: str, timeout: float, create: bool = True) -> MySQLStore:  # noqa: A001
    """The registry's entry point. `create` has no say: a MySQL database is made by its
    administrator (and its tables by 'spamsift db init'), never by opening it."""
    return MySQLStore(parse_url(url), timeout, url)


class MySQLStore(SQLStore):
    """The `Store` contract on a MySQL/MariaDB database."""

    MARK = "%s"
    WATCH_SET = ("INSERT INTO spamsift_watch_messages (uid, message_key, folder_class, "
                 "updated_at) VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE folder_class = "
                 "VALUES(folder_class), updated_at = VALUES(updated_at)")
    WATCH_INSERT_NEW = ("INSERT IGNORE INTO spamsift_watch_messages (uid, message_key, "
                        "folder_class, updated_at) VALUES (%s, %s, %s, %s)")
    LEARNED_ADD = ("ON DUPLICATE KEY UPDATE copies = copies + VALUES(copies), "
                   "step = step + VALUES(step)")
    INTEGRITY_ERROR = pymysql.IntegrityError
    reopenable = True

    def __init__(self, params: dict, timeout: float = 10.0, url: str = "mysql://") -> None:
        self.url = url
        self.params = params
        self.timeout = timeout
        # TLS only when the URL asks for it (?ssl=1[&ssl_ca=FILE]): PyMySQL otherwise
        # builds a TLS context per connection, loading the system CA bundle, 26 ms of
        # every message even when the server has TLS off.
        tls = {} if "ssl" in params else {"ssl_disabled": True}
        try:
            self.db = pymysql.connect(
                **params, **tls, charset="utf8mb4", autocommit=False,
                connect_timeout=max(1, int(timeout)), read_timeout=max(1, int(timeout)),
                write_timeout=max(1, int(timeout)),
                # FOUND_ROWS: an UPDATE reports the rows it matched, so a compare-and-set
                # that writes identical values still counts as applied.
                client_flag=CLIENT.FOUND_ROWS,
                init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        except pymysql.MySQLError as exc:
            raise StorageUnavailableError(
                f"MySQL {params.get('host', params.get('unix_socket'))}: "
                f"{exc.args[-1] if exc.args else exc}") from None

    # -- the dialect (sqlstore.py) -------------------------------------------------------
    def _query(self, sql_text: str, params=()) -> tuple:
        try:
            with self.db.cursor() as cur:
                cur.execute(sql_text, params)
                rows = cur.fetchall()
            self.db.commit()  # end the read transaction: no snapshot is kept open
            return rows
        except pymysql.MySQLError as exc:
            self._rollback()
            raise translate(exc) from None

    def _rollback(self) -> None:
        try:
            self.db.rollback()
        except pymysql.MySQLError:
            pass

    def _token_row_lists(self, uids: Sequence[int], tokens, columns: str,
                         condition: str) -> Iterator[tuple]:
        try:
            with self.db.cursor() as cur:
                # Ids are ints we computed: formatting them is safe and halves the
                # client-side cost of escaping thousands of parameters.
                for in_list in token_lists(tokens):
                    cur.execute(f"SELECT token, {columns} FROM dspam_token_data WHERE "
                                f"{self._uids_are(uids)} AND token IN ({in_list}){condition}",
                                tuple(uids))
                    yield cur.fetchall()
            self.db.commit()
        except pymysql.MySQLError as exc:
            self._rollback()
            raise translate(exc) from None

    @staticmethod
    def _from_db(token: int) -> int:
        return int(token)  # stored as it is: bigint unsigned

    @staticmethod
    def _duplicate_key(exc: Exception) -> bool:
        return error_code(exc) == DUPLICATE_KEY

    # -- users ---------------------------------------------------------------------------
    def uid(self, username: str, create: bool = True) -> int | None:
        rows = self._query("SELECT uid FROM dspam_virtual_uids WHERE username = %s",
                           (username,))
        if rows or not create:
            return rows[0][0] if rows else None
        try:
            with self.db.cursor() as cur:
                cur.execute("INSERT IGNORE INTO dspam_virtual_uids (username) VALUES (%s)",
                            (username,))
            self.db.commit()
        except pymysql.MySQLError as exc:
            self._rollback()
            raise translate(exc) from None
        return self.uid(username, create=False)

    def username(self, uid: int) -> str | None:
        rows = self._query("SELECT username FROM dspam_virtual_uids WHERE uid = %s", (uid,))
        return rows[0][0] if rows else None

    def users(self) -> list[tuple[int, str]]:
        return [(r[0], r[1]) for r in self._query(
            "SELECT uid, username FROM dspam_virtual_uids ORDER BY username")]

    def set_preference(self, uid: int, key: str, value: str | None) -> None:
        try:
            with self.db.cursor() as cur:
                if value is None:
                    cur.execute("DELETE FROM dspam_preferences WHERE uid = %s AND "
                                "preference = %s", (uid, key))
                else:
                    cur.execute("INSERT INTO dspam_preferences (uid, preference, value) "
                                "VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE value = "
                                "VALUES(value)", (uid, key, value))
            self.db.commit()
        except pymysql.MySQLError as exc:
            self._rollback()
            raise translate(exc) from None

    # -- reports -------------------------------------------------------------------------
    def daily_totals(self, since: str) -> list[tuple[int, str, int, int]]:
        from spamsift.filter.engine.store.base import DAILY_ERRORS, DAILY_MESSAGES

        # One row per user with the days packed into a string: PyMySQL converts every field
        # in Python, and 231,000 rows x 4 fields took 0.8 s to fetch against 0.17 s for
        # 10,000 packed rows (10,000 users x 30 days on the 2-core reference machine).
        self._query("SET SESSION group_concat_max_len = 16777216")
        out = []
        for uid, packed in self._query(
                f"SELECT uid, GROUP_CONCAT(CONCAT_WS(' ', day, {DAILY_MESSAGES}, "
                f"{DAILY_ERRORS}) ORDER BY day SEPARATOR ',') FROM spamsift_stats_daily "
                "WHERE day >= %s GROUP BY uid ORDER BY uid", (since,)):
            uid = int(uid)
            text = packed.decode() if isinstance(packed, bytes) else packed
            for item in text.split(","):
                day, messages, errors = item.split(" ")
                out.append((uid, day, int(messages), int(errors)))
        return out

    # -- maintenance: mysql_maintenance.py, imported only when one of these is called (the
    # per-message filter never does) ----------------------------------------------------
    def purge_step(self, rule, limit: int, cursor):
        from spamsift.filter.engine.store import mysql_maintenance

        return mysql_maintenance.purge_step(self, rule, limit, cursor)

    def initialize(self) -> list[str]:
        from spamsift.filter.engine.store import mysql_maintenance

        return mysql_maintenance.initialize(self)

    def check(self) -> list[str]:
        """What is wrong with this database: missing tables or columns, engine, version, and
        what keeps this account from writing it."""
        return self.schema_problems() + self.write_problems()

    def schema_problems(self) -> list[str]:
        from spamsift.filter.engine.store import mysql_maintenance

        return mysql_maintenance.schema_problems(self)

    def write_problems(self) -> list[str]:
        from spamsift.filter.engine.store import mysql_maintenance

        return mysql_maintenance.write_problems(self)

    # -- writing -------------------------------------------------------------------------
    def commit(self, uid: int, batch: Batch) -> None:
        self.commit_group([(uid, batch)])

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        for attempt in range(RETRIES + 1):
            try:
                with self.db.cursor() as cur:
                    for uid, batch in items:
                        self._write(cur, uid, batch)
                self.db.commit()
                return
            except StorageError:  # a lost compare-and-set, a signature stored already
                self._rollback()
                raise
            except pymysql.MySQLError as exc:
                self._rollback()
                if error_code(exc) in RETRY_CODES and attempt < RETRIES:
                    continue  # the whole batch again: InnoDB rolled back our statements
                raise translate(exc) from None

    def _write(self, cur, uid: int, batch: Batch) -> None:
        day = batch.day
        self._write_compare_and_sets(cur.execute, uid, batch)
        if batch.learned:
            self._write_learned(cur.execute, uid, batch)
        grow: list[tuple[int, int, int, float]] = []
        shrink: dict[tuple[int, int], list[int]] = {}
        weights = dict(batch.weights)  # a growing token's weight rides in its count upsert
        for token in sorted(batch.tokens):
            spam, innocent = batch.tokens[token]
            if spam >= 0 and innocent >= 0:
                if spam or innocent:
                    grow.append((token, spam, innocent, weights.pop(token, 0.0)))
            else:
                shrink.setdefault((spam, innocent), []).append(token)
        # Corrections, grouped by their delta pair. A pair with an increase is one clamped
        # upsert per row, so a token that another process inserts meanwhile still gets the
        # increase (an UPDATE-then-INSERT lost it: the UPDATE locks no missing row under READ
        # COMMITTED). Pure decreases only touch rows that exist.
        for (spam, innocent), tokens in sorted(shrink.items()):
            if spam > 0 or innocent > 0:
                rows = [(t, max(spam, 0), max(innocent, 0), weights.pop(t, 0.0))
                        for t in tokens]
                self._insert_tokens(cur, uid, day, rows, deltas=(spam, innocent))
                continue
            for in_list in token_lists(tokens):
                cur.execute(
                    "UPDATE dspam_token_data SET "
                    "spam_hits = GREATEST(CAST(spam_hits AS SIGNED) + %s, 0), "
                    "innocent_hits = GREATEST(CAST(innocent_hits AS SIGNED) + %s, 0), "
                    f"last_hit = %s WHERE uid = %s AND token IN ({in_list})",
                    (spam, innocent, day, uid))
        self._insert_tokens(cur, uid, day, grow)
        rest = [(t, weights[t]) for t in sorted(weights) if weights[t]]
        quoted_day = "'" + day.replace("'", "") + "'"
        for i in range(0, len(rest), INSERT_CHUNK):
            values = ",".join(f"({int(uid)},{int(t)},0,0,{quoted_day},{float(w)!r})"
                              for t, w in rest[i:i + INSERT_CHUNK])
            cur.execute("INSERT INTO dspam_token_data (uid, token, spam_hits, innocent_hits, "
                        f"last_hit, weight) VALUES {values} ON DUPLICATE KEY UPDATE "
                        "weight = weight + VALUES(weight), last_hit = VALUES(last_hit)")
        deltas = [batch.stats.get(f, 0) for f in STAT_FIELDS]
        if any(deltas):
            cols = ", ".join(STAT_FIELDS)
            sets = ", ".join(f"{f} = GREATEST(CAST({f} AS SIGNED) + %s, 0)" for f in STAT_FIELDS)
            cur.execute(f"INSERT INTO dspam_stats (uid, {cols}) VALUES (%s{', %s' * 8}) "
                        f"ON DUPLICATE KEY UPDATE {sets}",
                        [uid, *(max(d, 0) for d in deltas), *deltas])
            dsets = ", ".join(f"{f} = {f} + VALUES({f})" for f in STAT_FIELDS)
            cur.execute(f"INSERT INTO spamsift_stats_daily (uid, day, {cols}) VALUES "
                        f"(%s, %s{', %s' * 8}) ON DUPLICATE KEY UPDATE {dsets}",
                        [uid, day, *deltas])
        if batch.new_signature is not None:
            self._insert_signature(cur.execute, uid, day, batch.new_signature)
        for ip, (spam, innocent) in sorted(batch.sources.items()):
            cur.execute("INSERT INTO spamsift_sources (uid, ip, spam_hits, innocent_hits, "
                        "last_seen) VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                        "spam_hits = GREATEST(CAST(spam_hits AS SIGNED) + %s, 0), "
                        "innocent_hits = GREATEST(CAST(innocent_hits AS SIGNED) + %s, 0), "
                        "last_seen = VALUES(last_seen)",
                        (uid, ip, max(spam, 0), max(innocent, 0), day, spam, innocent))

    @staticmethod
    def _insert_tokens(cur, uid: int, day: str, rows, deltas: tuple[int, int] | None = None):
        """One multi-row upsert (per INSERT_CHUNK rows) with each token's own deltas.

        Without `deltas`, rows carry non-negative deltas that are added. With `deltas` (one
        correction pair for all rows, which may be negative), a new row gets the clamped
        values of the row and an existing one is changed by `deltas`, clamped at zero. Each
        row's last element is its weight delta, added either way.
        """
        if deltas is None:
            tail = ("ON DUPLICATE KEY UPDATE spam_hits = spam_hits + VALUES(spam_hits), "
                    "innocent_hits = innocent_hits + VALUES(innocent_hits), "
                    "last_hit = VALUES(last_hit), weight = weight + VALUES(weight)")
        else:
            tail = (f"ON DUPLICATE KEY UPDATE "
                    f"spam_hits = GREATEST(CAST(spam_hits AS SIGNED) + {int(deltas[0])}, 0), "
                    f"innocent_hits = GREATEST(CAST(innocent_hits AS SIGNED) + "
                    f"{int(deltas[1])}, 0), last_hit = VALUES(last_hit), "
                    f"weight = weight + VALUES(weight)")
        quoted_day = "'" + day.replace("'", "") + "'"
        for i in range(0, len(rows), INSERT_CHUNK):
            values = ",".join(f"({int(uid)},{int(t)},{int(s)},{int(n)},{quoted_day},"
                              f"{float(w)!r})" for t, s, n, w in rows[i:i + INSERT_CHUNK])
            cur.execute("INSERT INTO dspam_token_data (uid, token, spam_hits, innocent_hits, "
                        f"last_hit, weight) VALUES {values} {tail}")

    def close(self) -> None:
        try:
            self.db.close()
        except pymysql.MySQLError:
            pass


if TYPE_CHECKING:
    def _is_a_store(store: MySQLStore) -> Store:  # mypy checks the whole contract here
        return store
