"""What the two SQL backends (sqlite.py, mysql.py) do alike, written once.

`SQLStore` holds the reads whose SQL differs only in the placeholder, the compare-and-sets and
the signature insert of a commit, and the WHERE clause of a purge rule. A backend subclasses
it and supplies its dialect:

* `MARK`, its placeholder (``?`` or ``%s``);
* `_query(sql, params)`, one statement's rows, its errors translated to `StorageError`;
* `_token_row_lists(uids, tokens, columns, condition)`, the rows of many tokens of one user
  or several (how ids are stored and how many fit in one statement are the backend's; the
  uids' condition is `_uids_are`), and `_from_db`, which
  turns a stored id back into the unsigned 64-bit token id;
* `WATCH_SET` and `WATCH_INSERT_NEW`, its upserts of a watcher record, `LEARNED_ADD`, the
  upsert clause of a record of what corpus training learned, and `INTEGRITY_ERROR` with
  `_duplicate_key`, to tell a signature inserted twice.

What differs beyond that (token upserts, transactions, purge walks, the schema) stays in the
backend's own module.
"""

from __future__ import annotations

from spamsift.filter.engine.errors import ConflictError, DuplicateSignatureError
from spamsift.filter.engine.store.base import STAT_FIELDS, Batch, Stats
from spamsift.filter.engine.store.signature import Signature

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Sequence

    # Runs one statement and says how many rows it matched.
    Execute = Callable[[str, tuple], int]

KEY_CHUNK = 500  # message keys / signature ids per IN (...) of the watcher's bulk reads
LEARNED_ROWS = 1000  # records of learned messages per INSERT: 6,000 parameters


class SQLStore:
    """The `Store` methods both SQL backends implement with the same statements."""

    MARK: str
    WATCH_SET: str         # (uid, key, class, at): insert, or overwrite the class
    WATCH_INSERT_NEW: str  # (uid, key, class, at): insert, or nothing when the row exists
    # What follows INSERT INTO spamsift_learned_messages ... VALUES ...: on a row that exists
    # already, add the new row's copies and step to it.
    LEARNED_ADD: str
    INTEGRITY_ERROR: type[Exception]

    # -- the dialect (see the module docstring) -------------------------------------------
    def _query(self, sql_text: str, params: Sequence = ()) -> Sequence[tuple]:
        raise NotImplementedError

    def _token_row_lists(self, uids: Sequence[int], tokens: Iterable[int], columns: str,
                         condition: str) -> Iterable[Sequence[tuple]]:
        """The rows (stored token id, *`columns`) of the `uids`' `tokens` that match
        `condition` (SQL beginning with `` AND``, or empty), a list per statement; the
        statement's parameters are the `uids`, in `_uids_are`."""
        raise NotImplementedError

    def _uids_are(self, uids: Sequence[int]) -> str:
        """The WHERE condition on the uid column for `uids` (one placeholder each)."""
        if len(uids) == 1:
            return f"uid = {self.MARK}"
        return f"uid IN ({', '.join([self.MARK] * len(uids))})"

    @staticmethod
    def _from_db(token: int) -> int:
        raise NotImplementedError

    @staticmethod
    def _duplicate_key(exc: Exception) -> bool:
        """Whether `exc`, an `INTEGRITY_ERROR`, says a unique key exists already."""
        raise NotImplementedError

    # -- scoring ---------------------------------------------------------------------------
    # Rows come a statement's list at a time, so the inner loops are plain loops over rows:
    # a generator handing out single rows made the Python side of a 300,000-row lookup
    # 74 -> 95 ms.
    def lookup(self, uid: int, tokens) -> dict[int, tuple[int, int]]:
        from_db = self._from_db
        found: dict[int, tuple[int, int]] = {}
        for rows in self._token_row_lists((uid,), tokens, "spam_hits, innocent_hits", ""):
            for token, spam, innocent in rows:
                found[from_db(token)] = (spam, innocent)
        return found

    def weights(self, uid: int, tokens) -> dict[int, float]:
        from_db = self._from_db
        found: dict[int, float] = {}
        for rows in self._token_row_lists((uid,), tokens, "weight", " AND weight <> 0"):
            for token, weight in rows:
                found[from_db(token)] = weight
        return found

    def counts_and_weights(self, uid: int, tokens):
        from_db = self._from_db
        counts: dict[int, tuple[int, int]] = {}
        weights: dict[int, float] = {}
        for rows in self._token_row_lists((uid,), tokens, "spam_hits, innocent_hits, weight", ""):
            for token, spam, innocent, weight in rows:
                token = from_db(token)
                counts[token] = (spam, innocent)
                if weight:
                    weights[token] = weight
        return counts, weights

    def counts_and_weights_of(self, uids: Collection[int], tokens: Collection[int]
                              ) -> dict[int, tuple[dict[int, tuple[int, int]],
                                                   dict[int, float]]]:
        asked = [int(uid) for uid in dict.fromkeys(uids)]
        found: dict[int, tuple[dict[int, tuple[int, int]], dict[int, float]]] = {
            uid: ({}, {}) for uid in asked}
        if not asked:
            return found
        from_db = self._from_db
        for rows in self._token_row_lists(asked, tokens,
                                          "uid, spam_hits, innocent_hits, weight", ""):
            for token, uid, spam, innocent, weight in rows:
                counts, weights = found[int(uid)]
                token = from_db(token)
                counts[token] = (spam, innocent)
                if weight:
                    weights[token] = weight
        return found

    def stats(self, uid: int) -> Stats:
        rows = self._query(f"SELECT {', '.join(STAT_FIELDS)} FROM dspam_stats "
                           f"WHERE uid = {self.MARK}", (uid,))
        return Stats(*rows[0]) if rows else Stats()

    def has_tokens(self, uid: int) -> bool:
        return bool(self._query(f"SELECT 1 FROM dspam_token_data WHERE uid = {self.MARK} "
                                "LIMIT 1", (uid,)))

    def signature(self, signature_id: str) -> Signature | None:
        rows = self._query(f"SELECT {Signature.COLUMNS} FROM dspam_signature_data "
                           f"WHERE signature = {self.MARK}", (signature_id,))
        return Signature.from_row(signature_id, rows[0]) if rows else None

    # -- accounts --------------------------------------------------------------------------
    def preferences(self, uid: int) -> dict[str, str]:
        return dict(self._query("SELECT preference, value FROM dspam_preferences "
                                f"WHERE uid = {self.MARK}", (uid,)))

    # -- reports ---------------------------------------------------------------------------
    def sources(self, uid: int | None = None, since: str | None = None):
        where: list[str] = []
        params: list[object] = []
        if uid is not None:
            where.append(f"uid = {self.MARK}")
            params.append(uid)
        if since is not None:
            where.append(f"last_seen >= {self.MARK}")
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
            f"WHERE day >= {self.MARK} ORDER BY uid, day", (since,))]

    def preference_values(self, key: str) -> dict[int, str]:
        return {int(r[0]): r[1] for r in self._query(
            f"SELECT uid, value FROM dspam_preferences WHERE preference = {self.MARK}", (key,))}

    # -- watch state -----------------------------------------------------------------------
    def watch_states(self, uid: int, keys: Collection[str]) -> dict[str, str]:
        keys = list(keys)
        found: dict[str, str] = {}
        for i in range(0, len(keys), KEY_CHUNK):
            chunk = keys[i:i + KEY_CHUNK]
            found.update((str(k), str(c)) for k, c in self._query(
                "SELECT message_key, folder_class FROM spamsift_watch_messages WHERE uid = "
                f"{self.MARK} AND message_key IN ({','.join([self.MARK] * len(chunk))})",
                (uid, *chunk)))
        return found

    def signature_states(self, ids: Collection[str]) -> dict[str, tuple[int, str, str]]:
        ids = list(ids)
        found: dict[str, tuple[int, str, str]] = {}
        for i in range(0, len(ids), KEY_CHUNK):
            chunk = ids[i:i + KEY_CHUNK]
            for sig_id, uid, result, trained in self._query(
                    "SELECT signature, uid, result, trained FROM dspam_signature_data "
                    f"WHERE signature IN ({','.join([self.MARK] * len(chunk))})", tuple(chunk)):
                found[str(sig_id)] = (int(uid), result, trained)
        return found

    # -- learned records -------------------------------------------------------------------
    def learned_records(self, uid: int, keys: Collection[str]
                        ) -> dict[str, dict[str, tuple[int, float]]]:
        keys = list(keys)
        found: dict[str, dict[str, tuple[int, float]]] = {}
        for i in range(0, len(keys), KEY_CHUNK):
            chunk = keys[i:i + KEY_CHUNK]
            for key, klass, copies, step in self._query(
                    "SELECT message_key, learned_class, copies, step FROM "
                    f"spamsift_learned_messages WHERE uid = {self.MARK} AND message_key IN "
                    f"({','.join([self.MARK] * len(chunk))}) AND copies > 0", (uid, *chunk)):
                found.setdefault(str(key), {})[str(klass)] = (int(copies), float(step))
        return found

    # -- writing: the parts of a commit that are the same SQL ------------------------------
    def _write_compare_and_sets(self, execute: Execute, uid: int, batch: Batch) -> None:
        """Apply the signature update and the watch updates of `batch`, each only when the
        stored state is the expected one; `ConflictError` (the caller rolls back) when not.
        They come first in a commit, so a lost race writes nothing at all."""
        m = self.MARK
        update = batch.signature_update
        if update is not None and execute(
                f"UPDATE dspam_signature_data SET trained = {m}, counter = {m}, data = {m} "
                f"WHERE signature = {m} AND uid = {m} AND trained = {m}",
                (update.trained, update.counter, update.data, update.id, uid,
                 update.expected)) != 1:
            raise ConflictError(f"signature {update.id} changed under us")
        # In key order, so two watchers lock rows in the same order. Under MySQL's READ
        # COMMITTED the conditional UPDATE reads the latest committed row and locks it, so of
        # two watchers making the same change exactly one matches.
        for watch in sorted(batch.watch, key=lambda w: w.key):
            params = (uid, watch.key, watch.klass, watch.at)
            if watch.expected == watch.ANY:
                execute(self.WATCH_SET, params)  # unconditional: nothing to compare
                continue
            if watch.expected is None:
                matched = execute(self.WATCH_INSERT_NEW, params)
            else:
                matched = execute(
                    f"UPDATE spamsift_watch_messages SET folder_class = {m}, updated_at = {m} "
                    f"WHERE uid = {m} AND message_key = {m} AND folder_class = {m}",
                    (watch.klass, watch.at, uid, watch.key, watch.expected))
            if matched != 1:
                raise ConflictError(f"watch state of {watch.key[:40]} changed under us")

    def _write_learned(self, execute: Execute, uid: int, batch: Batch) -> None:
        """`Batch.learned`: the takings first, each a compare-and-set (a locking UPDATE, so of
        two correctors exactly one matches; `ConflictError` when the row holds fewer copies
        than taken), in key order; then the additions, one upsert per `LEARNED_ROWS`."""
        m = self.MARK
        for change in sorted(batch.learned, key=lambda c: (c.key, c.klass)):
            if change.copies >= 0:
                continue
            if execute(
                    f"UPDATE spamsift_learned_messages SET copies = copies + {m}, "
                    f"step = step + {m} WHERE uid = {m} AND message_key = {m} AND "
                    f"learned_class = {m} AND copies >= {m}",
                    (change.copies, change.step, uid, change.key, change.klass,
                     -change.copies)) != 1:
                raise ConflictError(f"learned record of {change.key[:40]} changed under us")
            execute(f"DELETE FROM spamsift_learned_messages WHERE uid = {m} AND "
                    f"message_key = {m} AND learned_class = {m} AND copies <= 0",
                    (uid, change.key, change.klass))
        added = sorted((c.key, c.klass, c.copies, c.step, c.at) for c in batch.learned
                       if c.copies > 0)
        row = "(" + ", ".join([m] * 6) + ")"
        for i in range(0, len(added), LEARNED_ROWS):
            part = added[i:i + LEARNED_ROWS]
            execute("INSERT INTO spamsift_learned_messages (uid, message_key, learned_class, "
                    "copies, step, learned_at) VALUES " + ", ".join([row] * len(part))
                    + " " + self.LEARNED_ADD,
                    tuple(v for key, klass, n, step, at in part
                          for v in (uid, key, klass, n, step, at)))

    def _insert_signature(self, execute: Execute, uid: int, day: str, sig: Signature) -> None:
        """Insert `sig`; `DuplicateSignatureError` when its id is stored already (two
        watchers deriving the same id, say); other constraint failures stay the backend's."""
        try:
            execute("INSERT INTO dspam_signature_data (uid, signature, data, length, "
                    "created_on, created_at, result, trained, counter, source_ip) VALUES ("
                    + ", ".join([self.MARK] * 10) + ")",
                    (uid, sig.id, sig.pack(), len(sig.tokens), day, sig.created, sig.result,
                     sig.trained, sig.counter, sig.source_ip))
        except self.INTEGRITY_ERROR as exc:
            if self._duplicate_key(exc):
                raise DuplicateSignatureError(f"signature {sig.id} exists already") from None
            raise

    # -- maintenance -----------------------------------------------------------------------
    def _purge_where(self, rule) -> tuple[str, list]:
        """The rows `rule` deletes, as SQL and its parameters."""
        from spamsift.filter.engine.purging import DATE_COLUMN

        where = f"{DATE_COLUMN[rule.table]} < {self.MARK} AND ({rule.condition})"
        if rule.uids is not None:
            where += " AND uid IN (" + ",".join(str(int(u)) for u in rule.uids) + ")"
        return where, [rule.before]

    def purge_count(self, rule) -> int:
        where, params = self._purge_where(rule)
        return int(self._query(f"SELECT count(*) FROM {rule.table} WHERE {where}",
                               tuple(params))[0][0])
