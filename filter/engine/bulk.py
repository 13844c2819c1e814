"""Corpus training in bulk: many messages, few transactions.

`Agent.learn` writes one transaction per message, which is right for one message and far too
slow for a user's whole mailbox (59 messages/s into SQLite, one fsync each). `CorpusLearner`
counts what a run of messages contributes in memory and writes it as one `Batch` every
`flush_every` messages, with exactly the per-message semantics of `Agent.learn(source=
"corpus")`: each distinct token of a message +1 in its class, ``<class>_learned`` and
``<class>_corpusfed`` +1, the source address counted.

Tokens are counted by their text and hashed to ids only at a flush: a run of 2,000 messages
has ~1.3 million token occurrences but ~150,000 distinct tokens, and hashing was half the cost
of a message (0.9 of 1.8 ms on the SpamAssassin corpus).

A flush is written by a writer thread on a connection of its own while the next messages are
tokenized: SQLite and the MySQL client release the GIL while the database works, so on the
2-core reference machine the writes overlap the tokenizing instead of adding to it. At most
one flush waits for the writer, which bounds memory to about two flushes' tokens.

With the ``logistic`` algorithm enabled for the user, each message is learned on its own
(`Agent.learn`): the model's gradient step depends on the message's score under everything
learned before it, which counting in bulk cannot give. The agent then works on a `WriteBehind`
store: what it commits is kept in memory, seen by its next lookups, and written as one
transaction every `flush_every` messages (one transaction per message: 53 messages/s on the
SpamAssassin corpus).

With `jobs`, helper processes do the tokenizing (`spamsift.filter.engine.tokenpool`): for the bulk
counts they also count and hash a chunk's tokens, for the logistic model they hand back each
message's tokens, learned here in the order they were read. The store ends up the same.

Messages spamsift stamped itself are recognised (`unstamp`): the Subject tag and the
``!DSPAM:id!`` body tag are removed before tokenizing, and a message whose signature this user
still has is not learned twice: if its signature already counts it as the same class it is
skipped, otherwise it is corrected through the signature (`Agent.retrain`), exactly as a
user's report would be.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter

from spamsift.filter.engine.errors import SignatureError
from spamsift.filter.engine.maildir import signature_of
from spamsift.filter.engine.tokenizer import parse_top_headers
from spamsift.filter.engine.tokenpool import TokenPool, Tokenized, counts_by_id, default_jobs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spamsift.filter.engine.store.base import Store

# Messages handed to a helper process at a time (`tokenpool`), for counting (a helper returns
# one id -> count table per chunk) and for the logistic model's per-message learning (a helper
# returns every message's tokens).
CHUNK_COUNTS = 500
CHUNK_MESSAGES = 25

# What `CorpusLearner.add` did with a message.
LEARNED, KNOWN, CORRECTED = "learned", "known", "corrected"

_BODY_TAG = re.compile(rb"\r?\n?!DSPAM:[A-Za-z0-9,]{1,127}!")


def unstamp(raw: bytes, settings) -> bytes:
    """The message without what spamsift's own stamp put into tokenized text.

    Our ``<prefix>-*`` headers are never tokenized, but the Subject tag and the body tag are
    text; learning them would teach the filter its own verdict instead of the mail's content.
    Only a message carrying our Result header is touched."""
    from spamsift.filter.engine.mime import split_head_body

    # The one header splitter: a private one took the first CRLFCRLF anywhere, after an
    # earlier LFLF had ended the header block, and so "unstamped" body text.
    head_end = len(split_head_body(raw)[0])
    head = raw[:head_end]
    marker = ("\n" + settings.header_prefix + "-Result:").lower().encode("latin-1", "replace")
    if marker not in b"\n" + head.lower():
        return raw
    tag = settings.spam_subject.encode("utf-8", "replace")
    if tag:
        head = re.sub(rb"(?im)^(subject:[ \t]*)" + re.escape(tag) + rb"[ \t]?", rb"\1", head)
    body = raw[head_end:]
    if b"!DSPAM:" in body:
        body = _BODY_TAG.sub(b"", body)
    return head + body


_NOT_CACHED = (-1, -1)  # a sentinel, told apart by identity


class WriteBehind:
    """A store wrapper for one user's training run: commits are merged in memory and written
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

    Only plain learning is held back (token counts, weights, counters, sources); a commit that
    carries a signature or a compare-and-set first flushes and then goes to the store as is,
    so its checks see everything learned before it."""

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

    def __init__(self, store, empty_uid: int | None = None) -> None:
        """`empty_uid`: a user known to have no token rows yet (a new user's bootstrap). Until
        the cache is first dropped, what it lacks for that user is known to be absent, and
        the store is not asked at all."""
        self.store = store
        self.url = store.url
        self.pairs = {}
        self._reset()
        self.forget()
        self.cache_uid = self.complete_uid = empty_uid

    def _reset(self) -> None:
        self.uid_pending: int | None = None
        self.tokens: dict[int, list[int]] = {}
        self.weights_pending: dict[int, float] = {}
        self.stats_pending: dict[str, int] = {}
        self.sources: dict[str, list[int]] = {}
        self.day = ""

    def forget(self) -> None:
        """Drop the read cache (the store changed behind this wrapper)."""
        self.cache_uid = None
        self.complete_uid = None
        self.known = {}
        self.known_weights = {}
        self.known_stats = None

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def _cache_for(self, uid: int) -> None:
        if uid != self.cache_uid:
            self.forget()
            self.cache_uid = uid

    def lookup(self, uid: int, tokens) -> dict[int, tuple[int, int]]:
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

    def weights(self, uid: int, tokens) -> dict[int, float]:
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

    def counts_and_weights(self, uid: int, tokens):
        """As `Store.counts_and_weights`: one store query for the tokens whose counts or weight
        are not cached; while the cache is complete for `uid`, the cache itself."""
        self._cache_for(uid)
        known, known_weights = self.known, self.known_weights
        if uid == self.complete_uid:
            return known, known_weights
        tokens = list(tokens)
        missing = [t for t in tokens if t not in known or t not in known_weights]
        if missing:
            found, found_weights = self.store.counts_and_weights(uid, missing)
            self._cache_counts(uid, missing, found)
            self._cache_weights(uid, missing, found_weights)
        return ({t: row for t in tokens if (row := known[t]) is not None},
                {t: w for t in tokens if (w := known_weights[t])})

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

    def stats(self, uid: int):
        self._cache_for(uid)
        if self.known_stats is None:
            self.known_stats = self.store.stats(uid)
            if uid == self.uid_pending:
                for field, delta in self.stats_pending.items():
                    setattr(self.known_stats, field,
                            max(getattr(self.known_stats, field) + delta, 0))
        from spamsift.filter.engine.store.base import STAT_FIELDS, Stats

        return Stats(*(getattr(self.known_stats, f) for f in STAT_FIELDS))

    def commit(self, uid: int, batch) -> None:
        if (batch.new_signature is not None or batch.signature_update is not None
                or batch.watch or (self.uid_pending not in (None, uid))):
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
        for field, delta in batch.stats.items():
            self.stats_pending[field] = self.stats_pending.get(field, 0) + delta
            if stats is not None:
                setattr(stats, field, max(getattr(stats, field) + delta, 0))
        for ip, (ds, di) in batch.sources.items():
            entry = self.sources.setdefault(ip, [0, 0])
            entry[0] += ds
            entry[1] += di

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
        uid = self.uid_pending
        self._reset()
        self.store.commit(uid, batch)


class CorpusLearner:
    """Feeds one user's messages of known class into the store in bulk."""

    def __init__(self, agent, user: str, flush_every: int = 2000,
                 background: bool = True, jobs: int | None = 0, chunk: int = 0) -> None:
        """`background`: write flushes from a writer thread (not for memory:// stores, which
        a second connection would not see). `jobs`: helper processes that tokenize
        (`tokenpool`; 0: tokenize in this process; None: `tokenpool.default_jobs`), handed
        `chunk` messages at a time (0: `CHUNK_COUNTS` or `CHUNK_MESSAGES`)."""
        self.agent = agent
        self.store = agent.store
        self.ctx = agent.user(user, create=True)
        self.settings = self.ctx.settings
        self.tokenizer = agent.tokenizer(self.settings)
        self.flush_every = flush_every
        self.pending = 0
        # Token text -> messages, per class (counted here), and token id -> messages (counted
        # by helper processes).
        self.counts: dict[str, Counter[str]] = {"spam": Counter(), "innocent": Counter()}
        self.id_counts: dict[str, Counter[int]] = {"spam": Counter(), "innocent": Counter()}
        self.messages = {"spam": 0, "innocent": 0}
        self.sources: dict[str, list[int]] = {}
        self.commits = 0
        self._writer_store: Store | None = None
        from spamsift.filter.engine import logistic

        # The logistic model learns message by message (see the module docstring).
        self.per_message = logistic.enabled(self.settings.algorithm)
        if self.per_message:
            from spamsift.filter.engine.agent import Agent

            fresh = not self.store.has_tokens(self.ctx.uid)
            self._held = WriteBehind(self.store, self.ctx.uid if fresh else None)
            self._learning_agent = Agent(agent.settings, self._held, clock=agent.clock)
        self.background = background and not self.per_message and self.store.reopenable
        self._writer: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._pool: TokenPool | None = None
        self._chunk: list[tuple[str, bytes]] = []
        if jobs is None:
            jobs = default_jobs(self.per_message)
        if jobs > 0:
            self._pool = TokenPool(self.settings, jobs)
            self.chunk_size = chunk or (CHUNK_MESSAGES if self.per_message else CHUNK_COUNTS)

    def add(self, raw: bytes, klass: str) -> str:
        """Count one message as `klass`; LEARNED, KNOWN or CORRECTED."""
        settings = self.settings
        sig_id = signature_of(raw, settings.header_prefix + "-Signature")
        if sig_id is not None:
            done = self._known(sig_id, klass)
            if done is not None:
                return done
            raw = unstamp(raw, settings)
        elif b"!DSPAM:" in raw:
            raw = unstamp(raw, settings)
        if self._pool is not None:
            self._chunk.append((klass, raw))
            if len(self._chunk) >= self.chunk_size:
                self._submit()
            return LEARNED
        if self.per_message:
            self._learn_one(raw, klass)
            return LEARNED
        headers = parse_top_headers(raw)
        freq = self.tokenizer.tokenize(raw, headers)
        self.counts[klass].update(freq.keys())
        self.messages[klass] += 1
        if settings.track_sources:
            from spamsift.filter.engine.sources import first_external_ip

            ip = first_external_ip(headers, settings.local_mx)
            if ip:
                entry = self.sources.setdefault(ip, [0, 0])
                entry[0 if klass == "spam" else 1] += 1
        self.pending += 1
        if self.pending >= self.flush_every:
            self._write_out(wait=False)
        return LEARNED

    def _learn_one(self, raw: bytes, klass: str, tokenized: Tokenized | None = None) -> None:
        self._learning_agent.learn(self.ctx, raw, klass, tokenized=tokenized)
        self.pending += 1
        if self.pending >= self.flush_every:
            self.pending = 0
            self._held.flush()

    def _submit(self) -> None:
        """Hand the chunk read so far to the helpers, and take in what comes due."""
        assert self._pool is not None  # only with helpers
        chunk, self._chunk = self._chunk, []
        if self.per_message:
            self._take(self._pool.tokenize(chunk))
        else:
            self._take(self._pool.count(chunk))

    def _take(self, result) -> None:
        """Learn what helpers returned for a chunk, in the order it was read."""
        if result is None:
            return
        if self.per_message:
            for klass, tokenized in result:
                self._learn_one(b"", klass, tokenized)
            return
        counts, messages, sources = result
        for klass, counted in counts.items():
            self.id_counts[klass].update(counted)
        for klass, n in messages.items():
            self.messages[klass] += n
            self.pending += n
        for ip, (spam, innocent) in sources.items():
            entry = self.sources.setdefault(ip, [0, 0])
            entry[0] += spam
            entry[1] += innocent
        if self.pending >= self.flush_every:
            self._write_out(wait=False)

    def _drain(self) -> None:
        """Take in every message handed to helpers or waiting for a chunk."""
        if self._pool is None:
            return
        if self._chunk:
            self._submit()
        for result in self._pool.drain():
            self._take(result)

    def _known(self, sig_id: str, klass: str) -> str | None:
        sig = self.store.signature(sig_id)
        if sig is None or sig.uid != self.ctx.uid:
            return None  # purged, or another user's copy: learn the content as corpus
        if sig.trained == klass:
            return KNOWN
        if self.per_message:
            self._drain()
            self._held.flush()  # the correction's checks see everything learned before it
        try:
            self.agent.retrain(self.ctx.name, sig_id, klass)
        except SignatureError:
            return None
        finally:
            if self.per_message:
                self._held.forget()  # the correction went to the store directly
        return CORRECTED

    def flush(self, wait: bool = True) -> None:
        """Write what was counted since the last flush as one transaction.

        With the writer thread, the write may still run when this returns (`wait` False);
        `flush()` from outside waits until everything is written and raises what the writer
        raised. Messages handed to helper processes are taken in first."""
        self._drain()
        self._write_out(wait)

    def _write_out(self, wait: bool) -> None:
        if self.per_message:
            self.pending = 0
            self._held.flush()
            return
        if self.pending:
            counts = (self.counts, self.id_counts)
            messages, sources = self.messages, self.sources
            self.pending = 0
            self.counts = {"spam": Counter(), "innocent": Counter()}
            self.id_counts = {"spam": Counter(), "innocent": Counter()}
            self.messages = {"spam": 0, "innocent": 0}
            self.sources = {}
            self._join()
            if self.background:
                self._writer = threading.Thread(target=self._write_guarded, name="bulk-writer",
                                                args=(counts, messages, sources), daemon=True)
                self._writer.start()
            else:
                self._write(self.store, counts, messages, sources)
        if wait:
            self._join()

    def _join(self) -> None:
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _write_guarded(self, counts, messages, sources) -> None:
        from spamsift.filter.engine.store.base import open_store

        try:
            store = self._writer_store
            if store is None:
                store = self._writer_store = open_store(self.store.url,
                                                        self.settings.storage_timeout)
            self._write(store, counts, messages, sources)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by _join
            self._failure = exc

    def abandon(self) -> None:
        """After an interrupt: drop everything counted since the last flush, and close.

        An interrupt can strike in the middle of a message (between its token counts and its
        counters, say): writing what was pending would store that message half learned. So
        only whole flushes stay, as after a crash. A write already under way is waited for
        (its transaction is whole either way); helpers are stopped at once."""
        self.pending = 0
        self._chunk = []
        if self.per_message:
            self._held._reset()
            self._held.forget()
        else:
            self.counts = {"spam": Counter(), "innocent": Counter()}
            self.id_counts = {"spam": Counter(), "innocent": Counter()}
            self.messages = {"spam": 0, "innocent": 0}
            self.sources = {}
        try:
            self._join()
        finally:
            if self._pool is not None:
                self._pool.close(True)
            if self._writer_store is not None:
                self._writer_store.close()
                self._writer_store = None

    def close(self) -> None:
        """Learn what is still under way, wait for the writer, and close its connection and
        the helpers (at once, when this fails or is interrupted)."""
        failed = True
        try:
            self.flush()
            failed = False
        finally:
            if self._pool is not None:
                self._pool.close(failed)
            store = self._writer_store
            if store is not None:
                store.close()
                self._writer_store = None

    def _write(self, store, counts, messages, sources) -> None:
        from spamsift.filter.engine.store.base import Batch

        batch = Batch(time.strftime("%Y-%m-%d", time.localtime(self.agent.clock())))
        # What was counted here by token text joins what helpers counted by id; then one
        # (spam, innocent) row per id, as tuples: nothing adds to these entries after this.
        by_text, by_id = counts
        for klass, counter in by_text.items():
            if counter:
                by_id[klass].update(counts_by_id(counter))
                counter.clear()  # the texts are not needed any more: free them before the write
        tokens = {tid: (n, 0) for tid, n in by_id["spam"].items()}
        get = tokens.get
        for tid, n in by_id["innocent"].items():
            entry = get(tid)
            tokens[tid] = (0, n) if entry is None else (entry[0], n)
        for id_counter in by_id.values():
            id_counter.clear()
        batch.tokens = tokens  # type: ignore[assignment]
        for klass, n in messages.items():
            if n:
                batch.add_stat(klass + "_learned", n)
                batch.add_stat(klass + "_corpusfed", n)
        batch.sources = sources
        uid = self.ctx.uid
        assert uid is not None  # created in __init__
        store.commit(uid, batch)
        self.commits += 1
