"""Corpus training in bulk: many messages, few transactions.

`Agent.learn` writes one transaction per message, which is right for one message and far too
slow for a user's whole mailbox (59 messages/s into SQLite, one fsync each). `CorpusLearner`
counts what a run of messages contributes in memory and writes it as one `Batch` every
`flush_every` messages (`learning.CorpusCounts`), with exactly the per-message semantics of
`Agent.learn(source="corpus")`: each distinct token of a message +1 in its class,
``<class>_learned`` and ``<class>_corpusfed`` +1, the source address counted.

A flush is written by a writer thread on a connection of its own while the next messages are
tokenized: SQLite and the MySQL client release the GIL while the database works, so on the
2-core reference machine the writes overlap the tokenizing instead of adding to it. At most
one flush waits for the writer, which bounds memory to about two flushes' tokens.

With the ``logistic`` algorithm enabled for the user, each message is learned on its own
(`Agent.learn_tokenized`): the model's gradient step depends on the message's score under
everything learned before it, which counting in bulk cannot give. The agent then works on a
`writebehind.WriteBehind` store: what it commits is kept in memory, seen by its next lookups,
and written as one transaction every `flush_every` messages.

With `jobs`, helper processes do the tokenizing (`spamsift.filter.engine.tokenpool`): for the bulk
counts they also count and hash a chunk's tokens, for the logistic model they hand back each
message's tokens, learned here in the order they were read. The store ends up the same.

Every message learned is recorded with its key (`mailfolders.message_key` of the bytes as
read: the signature, else a digest), its class and, with the logistic model, its step
(``spamsift_learned_messages``, `store.base.LearnedChange`), in the same transaction as its
counts: ``spamsift reclassify`` judges each message without what it contributed, and corrects
what was learned from a misfiled one exactly once.

Messages spamsift stamped itself are recognised (`message.unstamp`): the Subject tag and the
``!DSPAM:id!`` body tag are removed before tokenizing, and a message whose signature this user
still has is not learned twice: if its signature already counts it as the same class it is
skipped, otherwise it is corrected through the signature (`Agent.retrain`), exactly as a
user's report would be.
"""

from __future__ import annotations

import threading

from collections import deque

from spamsift.filter.engine.days import day_of
from spamsift.filter.engine.errors import SignatureError
from spamsift.filter.engine.learning import CorpusCounts, Tokenized
from spamsift.filter.engine.mailfolders import digest_key, signature_of
from spamsift.filter.engine.message import unstamp
from spamsift.filter.engine.store.base import LearnedChange
from spamsift.filter.engine.tokenpool import TokenPool, default_jobs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spamsift.filter.engine.store.base import Store

# Messages handed to a helper process at a time (`tokenpool`), for counting (a helper returns
# one `CorpusCounts` per chunk) and for the logistic model's per-message learning (a helper
# returns every message's tokens).
CHUNK_COUNTS = 500
CHUNK_MESSAGES = 25

# What `CorpusLearner.add` did with a message.
LEARNED, KNOWN, CORRECTED = "learned", "known", "corrected"


class CorpusLearner:
    """Feeds one user's messages of known class into the store in bulk."""

    def __init__(self, agent, user: str, flush_every: int = 2000,
                 background: bool = True, jobs: int | None = 0, chunk: int = 0) -> None:
        """`background`: write flushes from a writer thread on a connection of its own (not
        for a store that reopening its URL would not reach: memory://). `jobs`: helper processes that tokenize
        (`tokenpool`; 0: tokenize in this process; None: `tokenpool.default_jobs`), handed
        `chunk` messages at a time (0: `CHUNK_COUNTS` or `CHUNK_MESSAGES`)."""
        self.agent = agent
        self.store = agent.store
        self.ctx = agent.user(user, create=True)
        self.settings = self.ctx.settings
        self.flush_every = flush_every
        self.pending = 0  # messages learned or counted since the last flush
        self.counts = CorpusCounts()  # since the last flush, in this process and by helpers
        # The record of each message counted in `counts` (the logistic path's ride in the
        # agent's commits), and the keys of each chunk handed to helpers, oldest first.
        self.records: list[LearnedChange] = []
        self._chunk_keys: deque[list[tuple[str, str]]] = deque()
        self._keys: list[tuple[str, str]] = []  # (key, class) of the chunk being filled
        self.commits = 0
        self._writer_store: Store | None = None
        from spamsift.filter.engine import logistic

        # The logistic model learns message by message (see the module docstring).
        self.per_message = logistic.enabled(self.settings.algorithm)
        if self.per_message:
            from spamsift.filter.engine.agent import Agent
            from spamsift.filter.engine.writebehind import WriteBehind

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
        key = sig_id or digest_key(raw)  # of the bytes as read: what reclassify meets
        if sig_id is not None:
            done = self._known(sig_id, klass)
            if done is not None:
                return done
            raw = unstamp(raw, settings)
        elif b"!DSPAM:" in raw:
            raw = unstamp(raw, settings)
        if self._pool is not None:
            self._chunk.append((klass, raw))
            self._keys.append((key, klass))
            if len(self._chunk) >= self.chunk_size:
                self._submit()
            return LEARNED
        if self.per_message:
            self._learn_one(self._learning_agent.tokenize(self.ctx, raw), klass, key)
            return LEARNED
        self.counts.add(klass, self.agent.tokenize(self.ctx, raw))
        self._record(key, klass)
        self.pending += 1
        if self.pending >= self.flush_every:
            self._write_out(wait=False)
        return LEARNED

    def _record(self, key: str, klass: str) -> None:
        """Record that the bulk counts hold message `key` as `klass`."""
        self.records.append(LearnedChange(key, klass, 1, 0.0, int(self.agent.clock())))

    def _learn_one(self, message: Tokenized, klass: str, key: str) -> None:
        self._learning_agent.learn_tokenized(self.ctx, message, klass, record=key)
        self.pending += 1
        if self.pending >= self.flush_every:
            self.pending = 0
            self._held.flush()

    def _submit(self) -> None:
        """Hand the chunk read so far to the helpers, and take in what comes due."""
        assert self._pool is not None  # only with helpers
        chunk, self._chunk = self._chunk, []
        self._chunk_keys.append(self._keys)
        self._keys = []
        if self.per_message:
            self._take(self._pool.tokenize(chunk))
        else:
            self._take(self._pool.count(chunk))

    def _take(self, result) -> None:
        """Learn what helpers returned for a chunk, in the order it was read."""
        if not result:  # None or []: no chunk came due (a chunk is never empty)
            return
        keys = self._chunk_keys.popleft()  # results come back in submission order
        if self.per_message:
            for (klass, message), (key, _klass) in zip(result, keys):
                self._learn_one(message, klass, key)
            return
        for key, klass in keys:
            self._record(key, klass)
        self.counts.merge(result)
        self.pending += result.total
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
            counts, self.counts = self.counts, CorpusCounts()
            records, self.records = self.records, []
            self.pending = 0
            self._join()
            if self.background:
                self._writer = threading.Thread(target=self._write_guarded, name="bulk-writer",
                                                args=(counts, records), daemon=True)
                self._writer.start()
            else:
                self._write(self.store, counts, records)
        if wait:
            self._join()

    def _join(self) -> None:
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _write_guarded(self, counts: CorpusCounts, records: list[LearnedChange]) -> None:
        from spamsift.filter.engine.store.base import open_store

        try:
            store = self._writer_store
            if store is None:
                store = self._writer_store = open_store(self.store.url,
                                                        self.settings.storage_timeout)
            self._write(store, counts, records)
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
        self._keys = []
        self._chunk_keys.clear()
        self.records = []
        if self.per_message:
            self._held.discard()
            self._held.forget()
        else:
            self.counts = CorpusCounts()
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

    def _write(self, store: Store, counts: CorpusCounts, records: list[LearnedChange]) -> None:
        uid = self.ctx.uid
        assert uid is not None  # created in __init__
        batch = counts.batch(day_of(self.agent.clock()))
        batch.learned = records
        store.commit(uid, batch)
        self.commits += 1
