"""A store wrapper that holds one user's learning in memory and writes it in one transaction.

`Agent.learn` writes one transaction per message, which is right for one message and far too
slow for a user's whole mailbox (one transaction per message: 53 messages/s on the
SpamAssassin corpus). The corpus trainer's per-message path (the ``logistic`` model, whose
step depends on everything learned before) runs its agent on a `WriteBehind` instead.
"""

from __future__ import annotations

from spamsift.filter.engine.store.passthrough import PassThrough

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

    from spamsift.filter.engine.store.base import Batch, Stats, Store

_NOT_CACHED = (-1, -1)  # a sentinel, told apart by identity


class WriteBehind(PassThrough):
    """An `AgentStore` for one user's training run: commits are merged in memory and written
    by `flush` as one transaction; reads see the store plus what is pending.

    Reads are cached: a token's counts and weight are read from the store once and kept up to
    date with every commit made through this wrapper, so the run queries only tokens it has
    not met yet (a corpus repeats most of its tokens). With `empty_uid` nothing is read at
    all. SpamAssassin corpus, SQLite: 148 -> 182 messages/s with the cache, 200 with
    `empty_uid`; writing the flushes from a thread as well gained nothing measurable (30-34 s
    either way, 30 MB more), nor on MariaDB (default algorithms, one helper: 35.6 / 35.2 s
    without, 36.7 / 40.6 s with, in alternating runs: PyMySQL builds its statements in
    Python, on the GIL the learning needs, and after the cache is dropped every read waits
    for the write anyway). What other processes write for the user meanwhile is not seen
    until the cache is dropped (every CACHE_TOKENS tokens, and after a commit that bypasses
    it); it changes nothing that is stored, only the scores the run trains from.

    Only plain learning is held back (token counts, weights, counters, sources, records of
    learned messages); a commit that carries a signature or a compare-and-set first flushes
    and then goes to the store as is, so its checks see everything learned before it."""

    CACHE_TOKENS = 600_000  # ~80 MB of cached rows (~130 B each); dropped at a flush beyond this

    # One tuple object per distinct (spam, innocent) pair in the cache: most tokens share a
    # handful of small pairs ((0, 1), (1, 0), ...), and a tuple of its own is 56 bytes a token.
    pairs: dict[tuple[int, int], tuple[int, int]]

    # The read cache (`forget` empties it): the user it holds, that user again when what it
    # lacks is known to be absent, and per token its counts (None: no row) and weight.
    cache_uid: int | None
    complete_uid: int | None
    known: dict[int, tuple[int, int] | None]
    known_weights: dict[int, float]
    known_stats: Stats | None

    def __init__(self, store: Store, empty_uid: int | None = None) -> None:
        """`empty_uid`: a user known to have no token rows yet (a new user's bootstrap). Until
        the cache is first dropped, what it lacks for that user is known to be absent, and
        the store is not asked at all."""
        super().__init__(store)
        self.store: Store = store
        self.pairs = {}
        self.discard()
        self.forget()
        self.cache_uid = self.complete_uid = empty_uid

    def discard(self) -> None:
        """Drop what is pending, unwritten (an interrupted run keeps only whole flushes)."""
        self.uid_pending: int | None = None
        self.tokens: dict[int, list[int]] = {}
        self.weights_pending: dict[int, float] = {}
        self.stats_pending: dict[str, int] = {}
        self.sources: dict[str, list[int]] = {}
        self.learned: list = []  # `LearnedChange`s: what corpus training learned, per message
        self.day = ""

    def forget(self) -> None:
        """Drop the read cache (the store changed behind this wrapper)."""
        self.cache_uid = None
        self.complete_uid = None
        self.known = {}
        self.known_weights = {}
        self.known_stats = None

    def _cache_for(self, uid: int) -> None:
        if uid != self.cache_uid:
            self.forget()
            self.cache_uid = uid

    def lookup(self, uid: int, tokens: Collection[int]) -> dict[int, tuple[int, int]]:
        """As `Store.lookup`; while the cache is complete for `uid`, the cache itself (a
        superset: every row of the user), for reading only."""
        self._cache_for(uid)
        known = self.known
        if uid == self.complete_uid:
            # Absent here is absent in the store: nothing to fetch and nothing to copy
            # (copying the message's rows out was 7% of a logistic training run).
            return known  # type: ignore[return-value]
        tokens = list(tokens)
        missing = [t for t in tokens if t not in known]
        if missing:
            self._cache_counts(uid, missing, self.store.lookup(uid, missing))
        return {t: row for t in tokens if (row := known[t]) is not None}

    def weights(self, uid: int, tokens: Collection[int]) -> dict[int, float]:
        """As `Store.weights`; while the cache is complete for `uid`, the cache itself."""
        self._cache_for(uid)
        known = self.known_weights
        if uid == self.complete_uid:
            return known
        tokens = list(tokens)
        missing = [t for t in tokens if t not in known]
        if missing:
            self._cache_weights(uid, missing, self.store.weights(uid, missing))
        return {t: w for t in tokens if (w := known[t])}

    def counts_and_weights(self, uid: int, tokens: Collection[int]
                           ) -> tuple[dict[int, tuple[int, int]], dict[int, float]]:
        """As `Store.counts_and_weights`: one store query for the tokens whose counts or weight
        are not cached; while the cache is complete for `uid`, the cache itself."""
        self._cache_for(uid)
        known, known_weights = self.known, self.known_weights
        if uid == self.complete_uid:
            return known, known_weights  # type: ignore[return-value]  # as in lookup
        tokens = list(tokens)
        missing = [t for t in tokens if t not in known or t not in known_weights]
        if missing:
            found, found_weights = self.store.counts_and_weights(uid, missing)
            self._cache_counts(uid, missing, found)
            self._cache_weights(uid, missing, found_weights)
        return ({t: row for t in tokens if (row := known[t]) is not None},
                {t: w for t in tokens if (w := known_weights[t])})

    def counts_and_weights_of(self, uids: Collection[int], tokens: Collection[int]
                              ) -> dict[int, tuple[dict[int, tuple[int, int]],
                                                   dict[int, float]]]:
        """As `Store.counts_and_weights_of` (a group member's training reads the group's
        data beside the member's): the cached or pending user's through `counts_and_weights`;
        the others straight from the store in one query (nothing of theirs is pending or
        cached)."""
        tokens = list(tokens)
        held = (self.cache_uid, self.uid_pending)
        asked = list(dict.fromkeys(uids))
        others = [uid for uid in asked if uid not in held]
        found = self.store.counts_and_weights_of(others, tokens) if others else {}
        for uid in asked:
            if uid in held:
                found[uid] = self.counts_and_weights(uid, tokens)
        return found

    def _cache_counts(self, uid: int, tokens: list[int], found) -> None:
        """Cache the counts of `tokens` not cached yet: the store's rows `found` plus what is
        pending for them."""
        known = self.known
        pending = self.tokens if uid == self.uid_pending else {}
        for t in tokens:
            if t in known:
                continue
            row = found.get(t)
            d = pending.get(t)
            if d is not None:
                s, i = row or (0, 0)
                row = (max(s + d[0], 0), max(i + d[1], 0))
            known[t] = row

    def _cache_weights(self, uid: int, tokens: list[int], found) -> None:
        """As `_cache_counts`, for weights."""
        known = self.known_weights
        pending = self.weights_pending if uid == self.uid_pending else {}
        for t in tokens:
            if t not in known:
                known[t] = found.get(t, 0.0) + pending.get(t, 0.0)

    def stats(self, uid: int) -> Stats:
        self._cache_for(uid)
        if self.known_stats is None:
            self.known_stats = self.store.stats(uid)
            if uid == self.uid_pending:
                for field, delta in self.stats_pending.items():
                    setattr(self.known_stats, field,
                            max(getattr(self.known_stats, field) + delta, 0))
        from spamsift.filter.engine.store.base import STAT_FIELDS, Stats  # noqa: F811

        return Stats(*(getattr(self.known_stats, f) for f in STAT_FIELDS))

    def commit(self, uid: int, batch: Batch) -> None:
        if (batch.new_signature is not None or batch.signature_update is not None
                or batch.watch or any(c.copies < 0 for c in batch.learned)
                or (self.uid_pending not in (None, uid))):
            self.flush()
            self.store.commit(uid, batch)
            self.forget()
            return
        self._cache_for(uid)
        self.uid_pending = uid
        self.day = batch.day
        tokens, known = self.tokens, self.known
        pending_get, known_get = tokens.get, known.get
        absent = (0, 0)
        # While the cache is complete, a token it lacks has no row: it is cached from now on.
        complete = uid == self.complete_uid
        uncached = absent if complete else _NOT_CACHED
        share = self.pairs.setdefault
        for t, delta in batch.tokens.items():
            ds, di = delta
            entry = pending_get(t)
            if entry is None:
                tokens[t] = delta  # the batch's own list: nothing else holds the batch now
            else:
                entry[0] += ds
                entry[1] += di
            row = known_get(t, uncached)
            if row is not _NOT_CACHED:
                s, i = row or absent
                s += ds
                i += di
                pair = (s if s > 0 else 0, i if i > 0 else 0)
                known[t] = share(pair, pair)
        weights, known_weights = self.weights_pending, self.known_weights
        for t, w in batch.weights.items():
            weights[t] = weights.get(t, 0.0) + w
            if complete:
                known_weights[t] = known_weights.get(t, 0.0) + w
            elif t in known_weights:
                known_weights[t] += w
        stats = self.known_stats
        for field, change in batch.stats.items():
            self.stats_pending[field] = self.stats_pending.get(field, 0) + change
            if stats is not None:
                setattr(stats, field, max(getattr(stats, field) + change, 0))
        for ip, (spam, innocent) in batch.sources.items():
            entry = self.sources.setdefault(ip, [0, 0])
            entry[0] += spam
            entry[1] += innocent
        self.learned.extend(batch.learned)

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        """As `Store.commit_group`, after what is pending: nothing of it is held back."""
        self.flush()
        self.store.commit_group(items)
        self.forget()

    def flush(self) -> None:
        if len(self.known) + len(self.known_weights) > self.CACHE_TOKENS:
            self.forget()
        if self.uid_pending is None:
            return
        from spamsift.filter.engine.store.base import Batch

        batch = Batch(self.day)
        batch.tokens = self.tokens
        batch.weights = self.weights_pending
        batch.stats = self.stats_pending
        batch.sources = self.sources
        batch.learned = self.learned
        uid = self.uid_pending
        self.discard()
        self.store.commit(uid, batch)
