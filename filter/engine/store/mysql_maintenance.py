"""MySQL / MariaDB maintenance: creating and upgrading the schema, checking it, purging.

Functions of an open `mysql.MySQLStore`, which delegates its `Maintenance` methods here. A module
of its own so that the inline filter, which opens the store on every message and never
purges or checks, does not load it.
"""

from __future__ import annotations

import pymysql

from spamsift.filter.engine.store.mysql_txn import (NO_TABLE, RETRIES, RETRY_CODES,
                                                    SCHEMA_VERSION, error_code, token_lists,
                                                    translate)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object


class OpenMySQL(Protocol):
    """What these functions use of an open `mysql.MySQLStore` (which passes itself)."""

    db: pymysql.connections.Connection
    params: dict

    def _query(self, sql_text: str, params=()) -> tuple: ...

    def _rollback(self) -> None: ...

    def _purge_where(self, rule) -> tuple[str, list]: ...


def initialize(store: OpenMySQL) -> list[str]:
    """Create missing tables (idempotent) and record the schema version."""
    from spamsift import sql

    done = []
    try:
        with store.db.cursor() as cur:
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
            # The purge's index on learned records (added after schema 3; idempotent).
            if "spamsift_learned_messages" in existing and not _has_index(
                    cur, "spamsift_learned_messages", "id_learned_at"):
                cur.execute("ALTER TABLE spamsift_learned_messages "
                            "ADD KEY id_learned_at (learned_at)")
                done.append("added index spamsift_learned_messages.id_learned_at")
            cur.execute("INSERT INTO spamsift_meta (name, value) VALUES "
                        "('schema_version', %s) ON DUPLICATE KEY UPDATE value = "
                        "VALUES(value)", (SCHEMA_VERSION,))
        store.db.commit()
    except pymysql.MySQLError as exc:
        store._rollback()
        raise translate(exc) from None
    return done


# Whether the current database's `table` has index `index` (a count).
_INDEX_COUNT = ("SELECT count(*) FROM information_schema.statistics WHERE "
                "table_schema = DATABASE() AND table_name = %s AND index_name = %s")


def _has_index(cur, table: str, index: str) -> bool:
    cur.execute(_INDEX_COUNT, (table, index))
    return bool(cur.fetchone()[0])


def schema_problems(store: OpenMySQL) -> list[str]:
    """Missing tables or columns, engines other than InnoDB, the schema version."""
    from spamsift import sql

    problems = []
    database = store.params.get("database")
    rows = store._query("SELECT table_name, column_name FROM information_schema.columns "
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
    engines = store._query("SELECT table_name, engine FROM information_schema.tables "
                           "WHERE table_schema = %s", (database,))
    for table, engine in engines:
        if table in sql.tables("mysql") and (engine or "").lower() != "innodb":
            problems.append(f"table {table} uses {engine}, not InnoDB (no transactions)")
    if "spamsift_learned_messages" in have and not store._query(
            _INDEX_COUNT, ("spamsift_learned_messages", "id_learned_at"))[0][0]:
        problems.append("index id_learned_at on spamsift_learned_messages is missing, so each "
                        "purge batch sorts the old records (run 'spamsift db init')")
    if "spamsift_meta" in have:
        version = store._query("SELECT value FROM spamsift_meta WHERE name = "
                               "'schema_version'")
        if not version:
            problems.append("no schema version recorded (run 'spamsift db init')")
        elif version[0][0] != SCHEMA_VERSION:
            problems.append(f"schema version {version[0][0]}, this spamsift uses "
                            f"{SCHEMA_VERSION}")
    return problems


def write_problems(store: OpenMySQL) -> list[str]:
    """Whether this account may write: privileges are checked when a statement runs,
    even one that changes no row (a missing table is schema_problems' to say)."""
    try:
        with store.db.cursor() as cur:
            cur.execute("UPDATE dspam_token_data SET spam_hits = spam_hits WHERE 1 = 0")
        store._rollback()
    except pymysql.MySQLError as exc:
        store._rollback()
        if error_code(exc) == NO_TABLE:
            return []
        return [f"cannot write dspam_token_data as {store.params.get('user')}: "
                f"{exc.args[-1]}"]
    return []


# Purge walks the date index (last_hit, created_on, last_seen) from the oldest row,
# keyset-paginated on (date, primary key): each batch starts where the last one ended,
# so rows that are old but do not match (a busy token under the hapax rule) are read
# once, not once per batch as a repeated "DELETE ... ORDER BY last_hit LIMIT n" would.
PURGE_KEYS = {"dspam_token_data": ("last_hit", "uid", "token"),
              "dspam_signature_data": ("created_on", "signature"),
              "spamsift_sources": ("last_seen", "uid", "ip"),
              "spamsift_watch_messages": ("updated_at", "uid", "message_key"),
              # id_learned_at: (learned_at, then the primary key) serves this order.
              "spamsift_learned_messages": ("learned_at", "uid", "message_key")}


def _after(keys: tuple[str, ...], cursor: tuple) -> tuple[str, list]:
    """(k1, k2, ...) > cursor, spelled out so that the range optimizer uses the index."""
    clauses, params = [], []
    for n in range(len(keys)):
        equal = [f"{k} = %s" for k in keys[:n]]
        clauses.append("(" + " AND ".join(equal + [f"{keys[n]} > %s"]) + ")")
        params += list(cursor[:n]) + [cursor[n]]
    return "(" + " OR ".join(clauses) + ")", params


def purge_step(store: OpenMySQL, rule, limit: int, cursor) -> tuple[int, tuple | None]:
    keys = PURGE_KEYS[rule.table]
    where, params = store._purge_where(rule)
    where_rule, rule_params = where, list(params)
    if cursor is not None:
        after, more = _after(keys, cursor)
        where += " AND " + after
        params += more
    rows = store._query(f"SELECT {', '.join(keys)} FROM {rule.table} WHERE {where} "
                        f"ORDER BY {', '.join(keys)} LIMIT {int(limit)}", params)
    if not rows:
        return 0, None
    # Each DELETE repeats the rule: a row a delivery or a training touched since the
    # SELECT no longer matches it and must stay (deleting it lost those new hits).
    still = f" AND {where_rule}"
    for attempt in range(RETRIES + 1):
        deleted = 0
        try:
            with store.db.cursor() as cur:
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
            store.db.commit()
            break
        except pymysql.MySQLError as exc:
            store._rollback()
            if error_code(exc) in RETRY_CODES and attempt < RETRIES:
                continue  # a delivery holds the rows: try this batch again
            raise translate(exc) from None
    last = rows[-1]
    return deleted, (tuple(str(v) if i == 0 else v for i, v in enumerate(last))
                     if len(rows) == limit else None)
