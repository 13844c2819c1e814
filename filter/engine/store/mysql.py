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
"""

from __future__ import annotations

import builtins
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT

from spamsift.filter.engine.errors import (ConfigError, ConflictError, CorruptDatabaseError,
                                  StorageError, StorageUnavailableError)
from spamsift.filter.engine.store.base import STAT_FIELDS, Batch, Signature, Stats

SCHEMA_VERSION = "3"  # 2: dspam_token_data.weight (the logistic model); 3: learned messages
LOOKUP_CHUNK = 10000         # token ids per SELECT: ~210 KB of SQL, max_allowed_packet >= 1 MB
INSERT_CHUNK = 5000          # rows per INSERT: ~250 KB
KEY_CHUNK = 500              # message keys / signature ids per IN (...) of the watcher's reads
RETRIES = 5                  # deadlock / lock wait timeout retries per commit
_RETRY_CODES = (1205, 1213)  # ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK
_GONE_CODES = (2003, 2006, 2013, 2055, 1045, 1044, 1049)  # cannot reach / not allowed / no db
_NO_TABLE = 1146             # ER_NO_SUCH_TABLE
_NO_COLUMN = 1054            # ER_BAD_FIELD_ERROR


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


def open(url: str, timeout: float) -> MySQLStore:  # noqa: A001 - the registry's entry point
    return MySQLStore(parse_url(url), timeout, url)


def token_lists(tokens, size: int = LOOKUP_CHUNK):
    """Token ids as SQL IN-list texts, each holding ids of one half of the 64-bit range only.

    MariaDB 10.11 stops using the (uid, token) index for a long IN list that mixes ids below
    and above 2^63 (the literals are then of different types) and reads every row of the
    user instead: 6 s a message on a 1.2M-row table, measured. Lists of one kind use it.
    """
    low = sorted(int(t) for t in tokens if int(t) < 1 << 63)
    high = sorted(int(t) for t in tokens if int(t) >= 1 << 63)
    for ids in (low, high):
        for i in range(0, len(ids), size):
            yield ",".join(map(str, ids[i:i + size]))


def _code(exc: BaseException) -> int:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0


def _translate(exc: BaseException) -> StorageError:
    code = _code(exc)
    if isinstance(exc, pymysql.IntegrityError):
        return StorageError(f"MySQL: {exc.args[-1] if exc.args else exc}")
    if code == _NO_TABLE:
        return CorruptDatabaseError(f"spamsift tables missing ({exc.args[-1]}): run "
                                    "'spamsift db init'")
    if code == _NO_COLUMN:  # an older schema, e.g. 1 without the weight column
        return CorruptDatabaseError(f"spamsift schema is older than this spamsift "
                                    f"({exc.args[-1]}): run 'spamsift db init'")
    return StorageUnavailableError(f"MySQL: {exc.args[-1] if exc.args else exc}")


class MySQLStore:
    """The `Store` contract on a MySQL/MariaDB database."""

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

    # -- plumbing ------------------------------------------------------------------------
    def _read(self, sql_text: str, params=()) -> tuple:
        try:
            with self.db.cursor() as cur:
                cur.execute(sql_text, params)
                rows = cur.fetchall()
            self.db.commit()  # end the read transaction: no snapshot is kept open
            return rows
        except pymysql.MySQLError as exc:
            self._rollback()
            raise _translate(exc) from None

    def _rollback(self) -> None:
        try:
            self.db.rollback()
        except pymysql.MySQLError:
            pass

    # -- users ---------------------------------------------------------------------------
    def uid(self, username: str, create: bool = True) -> int | None:
        rows = self._read("SELECT uid FROM dspam_virtual_uids WHERE username = %s", (username,))
        if rows or not create:
            return rows[0][0] if rows else None
        try:
            with self.db.cursor() as cur:
                cur.execute("INSERT IGNORE INTO dspam_virtual_uids (username) VALUES (%s)",
                            (username,))
            self.db.commit()
        except pymysql.MySQLError as exc:
            self._rollback()
            raise _translate(exc) from None
        return self.uid(username, create=False)

    def username(self, uid: int) -> str | None:
        rows = self._read("SELECT username FROM dspam_virtual_uids WHERE uid = %s", (uid,))
        return rows[0][0] if rows else None

    def users(self) -> list[tuple[int, str]]:
        return [(r[0], r[1]) for r in self._read(
            "SELECT uid, username FROM dspam_virtual_uids ORDER BY username")]

    # -- reading -------------------------------------------------------------------------
    def lookup(self, uid: int, tokens) -> dict[int, tuple[int, int]]:
        found: dict[int, tuple[int, int]] = {}
        try:
            with self.db.cursor() as cur:
                # Ids are ints we computed: formatting them is safe and halves the
                # client-side cost of escaping thousands of parameters.
                for in_list in token_lists(tokens):
                    cur.execute("SELECT token, spam_hits, innocent_hits FROM dspam_token_data "
                                f"WHERE uid = %s AND token IN ({in_list})", (uid,))
                    for token, spam, innocent in cur.fetchall():
                        found[int(token)] = (int(spam), int(innocent))
            self.db.commit()
        except pymysql.MySQLError as exc:
            self._rollback()
            raise _translate(exc) from None
        return found

    def weights(self, uid: int, tokens) -> dict[int, float]:
        found: dict[int, float] = {}
        try:
            with self.db.cursor() as cur:
                for in_list in token_lists(tokens):
                    cur.execute("SELECT token, weight FROM dspam_token_data WHERE uid = %s "
                                f"AND token IN ({in_list}) AND weight <> 0", (uid,))
                    for token, weight in cur.fetchall():
                        found[int(token)] = float(weight)
            self.db.commit()
        except pymysql.MySQLError as exc:
            self._rollback()
            raise _translate(exc) from None
        return found

    def counts_and_weights(self, uid: int, tokens):
        counts: dict[int, tuple[int, int]] = {}
        weights: dict[int, float] = {}
        try:
            with self.db.cursor() as cur:
                for in_list in token_lists(tokens):
                    cur.execute("SELECT token, spam_hits, innocent_hits, weight FROM "
                                f"dspam_token_data WHERE uid = %s AND token IN ({in_list})",
                                (uid,))
                    for token, spam, innocent, weight in cur.fetchall():
                        token = int(token)
                        counts[token] = (int(spam), int(innocent))
                        if weight:
                            weights[token] = float(weight)
            self.db.commit()
        except pymysql.MySQLError as exc:
            self._rollback()
            raise _translate(exc) from None
        return counts, weights

    def stats(self, uid: int) -> Stats:
        rows = self._read(f"SELECT {', '.join(STAT_FIELDS)} FROM dspam_stats WHERE uid = %s",
                          (uid,))
        return Stats(*rows[0]) if rows else Stats()

    def has_tokens(self, uid: int) -> bool:
        return bool(self._read("SELECT 1 FROM dspam_token_data WHERE uid = %s LIMIT 1", (uid,)))

    def signature(self, signature_id: str) -> Signature | None:
        rows = self._read(f"SELECT {Signature.COLUMNS} FROM dspam_signature_data "
                          "WHERE signature = %s", (signature_id,))
        return Signature.from_row(signature_id, rows[0]) if rows else None

    def preferences(self, uid: int) -> dict[str, str]:
        return dict(self._read(
            "SELECT preference, value FROM dspam_preferences WHERE uid = %s", (uid,)))

    def sources(self, uid: int | None = None, since: str | None = None):
        where: list[str] = []
        params: list[object] = []
        if uid is not None:
            where.append("uid = %s")
            params.append(uid)
        if since is not None:
            where.append("last_seen >= %s")
            params.append(since)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        return [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in self._read(
            "SELECT uid, ip, spam_hits, innocent_hits FROM spamsift_sources"
            + clause + " ORDER BY uid, ip", tuple(params))]

    def all_stats(self) -> dict[int, Stats]:
        return {int(r[0]): Stats(*r[1:]) for r in self._read(
            f"SELECT uid, {', '.join(STAT_FIELDS)} FROM dspam_stats", ())}

    def daily_stats(self, since: str) -> list[tuple[int, str, tuple[int, ...]]]:
        return [(int(r[0]), str(r[1]), tuple(int(v) for v in r[2:])) for r in self._read(
            f"SELECT uid, day, {', '.join(STAT_FIELDS)} FROM spamsift_stats_daily "
            "WHERE day >= %s ORDER BY uid, day", (since,))]

    def daily_totals(self, since: str) -> list[tuple[int, str, int, int]]:
        from spamsift.filter.engine.store.base import DAILY_ERRORS, DAILY_MESSAGES

        # One row per user with the days packed into a string: PyMySQL converts every field
        # in Python, and 231,000 rows x 4 fields took 0.8 s to fetch against 0.17 s for
        # 10,000 packed rows (10,000 users x 30 days on the 2-core reference machine).
        self._read("SET SESSION group_concat_max_len = 16777216")
        out = []
        for uid, packed in self._read(
                f"SELECT uid, GROUP_CONCAT(CONCAT_WS(' ', day, {DAILY_MESSAGES}, "
                f"{DAILY_ERRORS}) ORDER BY day SEPARATOR ',') FROM spamsift_stats_daily "
                "WHERE day >= %s GROUP BY uid ORDER BY uid", (since,)):
            uid = int(uid)
            text = packed.decode() if isinstance(packed, bytes) else packed
            for item in text.split(","):
                day, messages, errors = item.split(" ")
                out.append((uid, day, int(messages), int(errors)))
        return out

    def preference_values(self, key: str) -> dict[int, str]:
        return {int(r[0]): r[1] for r in self._read(
            "SELECT uid, value FROM dspam_preferences WHERE preference = %s", (key,))}

    def watch_states(self, uid: int, keys) -> dict[str, str]:
        keys = list(keys)
        found: dict[str, str] = {}
        for i in range(0, len(keys), KEY_CHUNK):
            chunk = keys[i:i + KEY_CHUNK]
            found.update((str(k), str(c)) for k, c in self._read(
                "SELECT message_key, folder_class FROM spamsift_watch_messages WHERE uid = %s "
                f"AND message_key IN ({','.join(['%s'] * len(chunk))})", (uid, *chunk)))
        return found

    def learned_records(self, uid: int, keys) -> dict[str, dict[str, tuple[int, float]]]:
        keys = list(keys)
        found: dict[str, dict[str, tuple[int, float]]] = {}
        for i in range(0, len(keys), KEY_CHUNK):
            chunk = keys[i:i + KEY_CHUNK]
            for key, klass, copies, step in self._read(
                    "SELECT message_key, learned_class, copies, step FROM "
                    "spamsift_learned_messages WHERE uid = %s AND message_key IN "
                    f"({','.join(['%s'] * len(chunk))}) AND copies > 0", (uid, *chunk)):
                found.setdefault(str(key), {})[str(klass)] = (int(copies), float(step))
        return found

    def signature_states(self, ids) -> dict[str, tuple[int, str, str]]:
        ids = list(ids)
        found: dict[str, tuple[int, str, str]] = {}
        for i in range(0, len(ids), KEY_CHUNK):
            chunk = ids[i:i + KEY_CHUNK]
            for sig_id, uid, result, trained in self._read(
                    "SELECT signature, uid, result, trained FROM dspam_signature_data "
                    f"WHERE signature IN ({','.join(['%s'] * len(chunk))})", tuple(chunk)):
                found[str(sig_id)] = (int(uid), result, trained)
        return found

    # -- writing -------------------------------------------------------------------------
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
            raise _translate(exc) from None

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
            except ConflictError:
                self._rollback()
                raise
            except pymysql.MySQLError as exc:
                self._rollback()
                if _code(exc) in _RETRY_CODES and attempt < RETRIES:
                    continue  # the whole batch again: InnoDB rolled back our statements
                raise _translate(exc) from None

    def _write(self, cur, uid: int, batch: Batch) -> None:
        day = batch.day
        update = batch.signature_update
        if update is not None:
            cur.execute("UPDATE dspam_signature_data SET trained = %s, counter = %s, data = %s "
                        "WHERE signature = %s AND uid = %s AND trained = %s",
                        (update.trained, update.counter, update.data, update.id, uid,
                         update.expected))
            if cur.rowcount != 1:
                raise ConflictError(f"signature {update.id} changed under us")
        # Watcher state, in key order (two watchers lock rows in the same order). Under READ
        # COMMITTED the conditional UPDATE reads the latest committed row and locks it, so
        # of two watchers making the same change exactly one matches.
        for watch in sorted(batch.watch, key=lambda w: w.key):
            if watch.expected == watch.ANY:
                cur.execute("INSERT INTO spamsift_watch_messages (uid, message_key, "
                            "folder_class, updated_at) VALUES (%s, %s, %s, %s) ON DUPLICATE "
                            "KEY UPDATE folder_class = VALUES(folder_class), updated_at = "
                            "VALUES(updated_at)", (uid, watch.key, watch.klass, watch.at))
                continue
            if watch.expected is None:
                cur.execute("INSERT IGNORE INTO spamsift_watch_messages (uid, message_key, "
                            "folder_class, updated_at) VALUES (%s, %s, %s, %s)",
                            (uid, watch.key, watch.klass, watch.at))
            else:
                cur.execute("UPDATE spamsift_watch_messages SET folder_class = %s, "
                            "updated_at = %s WHERE uid = %s AND message_key = %s AND "
                            "folder_class = %s",
                            (watch.klass, watch.at, uid, watch.key, watch.expected))
            if cur.rowcount != 1:
                raise ConflictError(f"watch state of {watch.key[:40]} changed under us")
        if batch.learned:
            self._write_learned(cur, uid, batch)
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
        sig = batch.new_signature
        if sig is not None:
            cur.execute("INSERT INTO dspam_signature_data (uid, signature, data, length, "
                        "created_on, created_at, result, trained, counter, source_ip) VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (uid, sig.id, sig.pack(), len(sig.tokens), day, sig.created,
                         sig.result, sig.trained, sig.counter, sig.source_ip))
        for ip, (spam, innocent) in sorted(batch.sources.items()):
            cur.execute("INSERT INTO spamsift_sources (uid, ip, spam_hits, innocent_hits, "
                        "last_seen) VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                        "spam_hits = GREATEST(CAST(spam_hits AS SIGNED) + %s, 0), "
                        "innocent_hits = GREATEST(CAST(innocent_hits AS SIGNED) + %s, 0), "
                        "last_seen = VALUES(last_seen)",
                        (uid, ip, max(spam, 0), max(innocent, 0), day, spam, innocent))

    @staticmethod
    def _write_learned(cur, uid: int, batch: Batch) -> None:
        """`Batch.learned`: takings first, each a compare-and-set (a locking UPDATE under
        READ COMMITTED, so of two correctors exactly one matches), then the additions."""
        for change in sorted(batch.learned, key=lambda c: (c.key, c.klass)):
            if change.copies >= 0:
                continue
            cur.execute("UPDATE spamsift_learned_messages SET copies = copies + %s, "
                        "step = step + %s WHERE uid = %s AND message_key = %s AND "
                        "learned_class = %s AND copies >= %s",
                        (change.copies, change.step, uid, change.key, change.klass,
                         -change.copies))
            if cur.rowcount != 1:
                raise ConflictError(f"learned record of {change.key[:40]} changed under us")
            cur.execute("DELETE FROM spamsift_learned_messages WHERE uid = %s AND "
                        "message_key = %s AND learned_class = %s AND copies <= 0",
                        (uid, change.key, change.klass))
        added = sorted((c.key, c.klass, c.copies, c.step, c.at) for c in batch.learned
                       if c.copies > 0)
        for i in range(0, len(added), INSERT_CHUNK):
            part = added[i:i + INSERT_CHUNK]
            cur.execute("INSERT INTO spamsift_learned_messages (uid, message_key, "
                        "learned_class, copies, step, learned_at) VALUES "
                        + ",".join(["(%s, %s, %s, %s, %s, %s)"] * len(part))
                        + " ON DUPLICATE KEY UPDATE copies = copies + VALUES(copies), "
                        "step = step + VALUES(step)",
                        [v for key, klass, n, step, at in part
                         for v in (uid, key, klass, n, step, at)])

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

    # -- purging -------------------------------------------------------------------------
    # Purge walks the date index (last_hit, created_on, last_seen) from the oldest row,
    # keyset-paginated on (date, primary key): each batch starts where the last one ended,
    # so rows that are old but do not match (a busy token under the hapax rule) are read
    # once, not once per batch as a repeated "DELETE ... ORDER BY last_hit LIMIT n" would.
    _PURGE_KEYS = {"dspam_token_data": ("last_hit", "uid", "token"),
                   "dspam_signature_data": ("created_on", "signature"),
                   "spamsift_sources": ("last_seen", "uid", "ip"),
                   "spamsift_watch_messages": ("updated_at", "uid", "message_key")}

    def _purge_where(self, rule) -> tuple[str, list]:
        date = self._PURGE_KEYS[rule.table][0]
        where = f"{date} < %s AND ({rule.condition})"
        params: list = [rule.before]
        if rule.uids is not None:
            where += " AND uid IN (" + ",".join(str(int(u)) for u in rule.uids) + ")"
        return where, params

    @staticmethod
    def _after(keys: tuple[str, ...], cursor: tuple) -> tuple[str, list]:
        """(k1, k2, ...) > cursor, spelled out so that the range optimizer uses the index."""
        clauses, params = [], []
        for n in range(len(keys)):
            equal = [f"{k} = %s" for k in keys[:n]]
            clauses.append("(" + " AND ".join(equal + [f"{keys[n]} > %s"]) + ")")
            params += list(cursor[:n]) + [cursor[n]]
        return "(" + " OR ".join(clauses) + ")", params

    def purge_step(self, rule, limit: int, cursor):
        keys = self._PURGE_KEYS[rule.table]
        where, params = self._purge_where(rule)
        where_rule, rule_params = where, list(params)
        if cursor is not None:
            after, more = self._after(keys, cursor)
            where += " AND " + after
            params += more
        rows = self._read(f"SELECT {', '.join(keys)} FROM {rule.table} WHERE {where} "
                          f"ORDER BY {', '.join(keys)} LIMIT {int(limit)}", params)
        if not rows:
            return 0, None
        # Each DELETE repeats the rule: a row a delivery or a training touched since the
        # SELECT no longer matches it and must stay (deleting it lost those new hits).
        still = f" AND {where_rule}"
        for attempt in range(RETRIES + 1):
            deleted = 0
            try:
                with self.db.cursor() as cur:
                    if rule.table == "dspam_signature_data":
                        marks = ",".join(["%s"] * len(rows))
                        deleted += cur.execute(
                            f"DELETE FROM dspam_signature_data WHERE signature IN ({marks})"
                            + still, [*(r[1] for r in rows), *rule_params])
                    else:
                        by_uid: dict[int, list] = {}
                        for row in rows:
                            by_uid.setdefault(row[1], []).append(row[2])
                        for uid, keys_of_uid in by_uid.items():
                            if rule.table == "dspam_token_data":
                                for in_list in token_lists(keys_of_uid):
                                    deleted += cur.execute(
                                        "DELETE FROM dspam_token_data WHERE uid = %s "
                                        f"AND token IN ({in_list})" + still,
                                        (uid, *rule_params))
                            else:
                                column = ("ip" if rule.table == "spamsift_sources"
                                          else "message_key")
                                marks = ",".join(["%s"] * len(keys_of_uid))
                                deleted += cur.execute(
                                    f"DELETE FROM {rule.table} WHERE uid = %s AND "
                                    f"{column} IN ({marks})" + still,
                                    [uid, *keys_of_uid, *rule_params])
                self.db.commit()
                break
            except pymysql.MySQLError as exc:
                self._rollback()
                if _code(exc) in _RETRY_CODES and attempt < RETRIES:
                    continue  # a delivery holds the rows: try this batch again
                raise _translate(exc) from None
        last = rows[-1]
        return deleted, (tuple(str(v) if i == 0 else v for i, v in enumerate(last))
                         if len(rows) == limit else None)

    def purge_count(self, rule) -> int:
        where, params = self._purge_where(rule)
        return int(self._read(f"SELECT count(*) FROM {rule.table} WHERE {where}", params)[0][0])

    # -- administration ------------------------------------------------------------------
    def initialize(self) -> list[str]:
        """Create missing tables (idempotent) and record the schema version."""
        from spamsift import sql

        done = []
        try:
            with self.db.cursor() as cur:
                cur.execute("SHOW TABLES")
                existing = {r[0] for r in cur.fetchall()}
                for statement in sql.statements("mysql"):
                    cur.execute(statement)
                for table in sql.tables("mysql"):
                    if table not in existing:
                        done.append(f"created {table}")
                # Schema 1 -> 2: the logistic model's weight column (idempotent).
                cur.execute("SELECT count(*) FROM information_schema.columns WHERE "
                            "table_schema = DATABASE() AND table_name = 'dspam_token_data' "
                            "AND column_name = 'weight'")
                if not cur.fetchone()[0]:
                    cur.execute("ALTER TABLE dspam_token_data ADD COLUMN weight DOUBLE "
                                "NOT NULL DEFAULT 0 AFTER last_hit")
                    done.append("added dspam_token_data.weight")
                cur.execute("INSERT INTO spamsift_meta (name, value) VALUES "
                            "('schema_version', %s) ON DUPLICATE KEY UPDATE value = "
                            "VALUES(value)", (SCHEMA_VERSION,))
            self.db.commit()
        except pymysql.MySQLError as exc:
            self._rollback()
            raise _translate(exc) from None
        return done

    def check(self) -> list[str]:
        """What is wrong with this database: missing tables or columns, engine, version, and
        what keeps this account from writing it."""
        return self.schema_problems() + self.write_problems()

    def schema_problems(self) -> list[str]:
        """Missing tables or columns, engines other than InnoDB, the schema version."""
        from spamsift import sql

        problems = []
        database = self.params.get("database")
        rows = self._read("SELECT table_name, column_name FROM information_schema.columns "
                          "WHERE table_schema = %s", (database,))
        have: dict[str, set[str]] = {}
        for table, column in rows:
            have.setdefault(table, set()).add(column)
        for table, columns in sql.tables("mysql").items():
            if table not in have:
                problems.append(f"table {table} is missing (run 'spamsift db init')")
                continue
            missing = [c for c in columns if c not in have[table]]
            if missing:
                problems.append(f"table {table} lacks columns {', '.join(missing)}")
        engines = self._read("SELECT table_name, engine FROM information_schema.tables "
                             "WHERE table_schema = %s", (database,))
        for table, engine in engines:
            if table in sql.tables("mysql") and (engine or "").lower() != "innodb":
                problems.append(f"table {table} uses {engine}, not InnoDB (no transactions)")
        if "spamsift_meta" in have:
            version = self._read("SELECT value FROM spamsift_meta WHERE name = "
                                 "'schema_version'")
            if not version:
                problems.append("no schema version recorded (run 'spamsift db init')")
            elif version[0][0] != SCHEMA_VERSION:
                problems.append(f"schema version {version[0][0]}, this spamsift uses "
                                f"{SCHEMA_VERSION}")
        return problems

    def write_problems(self) -> list[str]:
        """Whether this account may write: privileges are checked when a statement runs,
        even one that changes no row (a missing table is schema_problems' to say)."""
        try:
            with self.db.cursor() as cur:
                cur.execute("UPDATE dspam_token_data SET spam_hits = spam_hits WHERE 1 = 0")
            self._rollback()
        except pymysql.MySQLError as exc:
            self._rollback()
            if _code(exc) == _NO_TABLE:
                return []
            return [f"cannot write dspam_token_data as {self.params.get('user')}: "
                    f"{exc.args[-1]}"]
        return []

    def close(self) -> None:
        try:
            self.db.close()
        except pymysql.MySQLError:
            pass
