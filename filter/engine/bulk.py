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
learned before it, which counting in bulk cannot give. That path runs at the speed of
`Agent.learn` (one transaction per message).

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

from filter.engine.errors import SignatureError
from filter.engine.tokenizer import blake2b as _blake2b, parse_top_headers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from filter.engine.store.base import Store

# What `CorpusLearner.add` did with a message.
LEARNED, KNOWN, CORRECTED = "learned", "known", "corrected"

_BODY_TAG = re.compile(rb"\r?\n?!DSPAM:[A-Za-z0-9,]{1,127}!")


def _header_end(raw: bytes) -> int:
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(sep)
        if at >= 0:
            return at
    return len(raw)


def stamp_signature(raw: bytes, header_prefix: str) -> str | None:
    """The signature in the message's own ``<prefix>-Signature`` header, if it has one."""
    from filter.engine.message import Message

    value = Message(raw).get_header(header_prefix + "-Signature")
    if not value:
        return None
    sig = value.split()[0].decode("latin-1", "replace") if value.split() else ""
    if 0 < len(sig) <= 127 and sig.isascii() and all(c.isalnum() or c == "," for c in sig):
        return sig
    return None


def unstamp(raw: bytes, settings) -> bytes:
    """The message without what spamsift's own stamp put into tokenized text.

    Our ``<prefix>-*`` headers are never tokenized, but the Subject tag and the body tag are
    text; learning them would teach the filter its own verdict instead of the mail's content.
    Only a message carrying our Result header is touched."""
    head_end = _header_end(raw)
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


class CorpusLearner:
    """Feeds one user's messages of known class into the store in bulk."""

    def __init__(self, agent, user: str, flush_every: int = 2000,
                 background: bool = True) -> None:
        """`background`: write flushes from a writer thread (not for memory:// stores, which
        a second connection would not see)."""
        self.agent = agent
        self.store = agent.store
        self.ctx = agent.user(user, create=True)
        self.settings = self.ctx.settings
        self.tokenizer = agent.tokenizer(self.settings)
        self.flush_every = flush_every
        self.pending = 0
        self.counts: dict[str, Counter[str]] = {"spam": Counter(), "innocent": Counter()}
        self.messages = {"spam": 0, "innocent": 0}
        self.sources: dict[str, list[int]] = {}
        self.commits = 0
        self._writer_store: Store | None = None
        from filter.engine import logistic

        # The logistic model learns message by message (see the module docstring).
        self.per_message = logistic.enabled(self.settings.algorithm)
        self.background = (background and not self.per_message
                           and not self.store.url.startswith("memory"))
        self._writer: threading.Thread | None = None
        self._failure: BaseException | None = None

    def add(self, raw: bytes, klass: str) -> str:
        """Count one message as `klass`; LEARNED, KNOWN or CORRECTED."""
        settings = self.settings
        sig_id = stamp_signature(raw, settings.header_prefix)
        if sig_id is not None:
            done = self._known(sig_id, klass)
            if done is not None:
                return done
            raw = unstamp(raw, settings)
        elif b"!DSPAM:" in raw:
            raw = unstamp(raw, settings)
        if self.per_message:
            self.agent.learn(self.ctx, raw, klass)
            return LEARNED
        headers = parse_top_headers(raw)
        freq = self.tokenizer.tokenize(raw, headers)
        self.counts[klass].update(freq.keys())
        self.messages[klass] += 1
        if settings.track_sources:
            from filter.engine.sources import first_external_ip

            ip = first_external_ip(headers, settings.local_mx)
            if ip:
                entry = self.sources.setdefault(ip, [0, 0])
                entry[0 if klass == "spam" else 1] += 1
        self.pending += 1
        if self.pending >= self.flush_every:
            self.flush(wait=False)
        return LEARNED

    def _known(self, sig_id: str, klass: str) -> str | None:
        sig = self.store.signature(sig_id)
        if sig is None or sig.uid != self.ctx.uid:
            return None  # purged, or another user's copy: learn the content as corpus
        if sig.trained == klass:
            return KNOWN
        try:
            self.agent.retrain(self.ctx.name, sig_id, klass)
        except SignatureError:
            return None
        return CORRECTED

    def flush(self, wait: bool = True) -> None:
        """Write what was counted since the last flush as one transaction.

        With the writer thread, the write may still run when this returns (`wait` False, as
        `add` calls it); `flush()` from outside waits until everything is written and raises
        what the writer raised."""
        if self.pending:
            counts, messages, sources = self.counts, self.messages, self.sources
            self.pending = 0
            self.counts = {"spam": Counter(), "innocent": Counter()}
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
        from filter.engine.store.base import open_store

        try:
            store = self._writer_store
            if store is None:
                store = self._writer_store = open_store(self.store.url,
                                                        self.settings.storage_timeout)
            self._write(store, counts, messages, sources)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by _join
            self._failure = exc

    def close(self) -> None:
        """Wait for the writer and close its connection."""
        try:
            self.flush()
        finally:
            store = self._writer_store
            if store is not None:
                store.close()
                self._writer_store = None

    def _write(self, store, counts, messages, sources) -> None:
        from filter.engine.store.base import Batch

        batch = Batch(time.strftime("%Y-%m-%d", time.localtime(self.agent.clock())))
        # token_id inlined (its call costs a third of it over a million tokens), and tuples
        # rather than lists: nothing adds to these entries after this.
        digest, number = _blake2b, int.from_bytes
        tokens = {number(digest(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                         "little"): (n, 0) for text, n in counts["spam"].items()}
        get = tokens.get
        for text, n in counts["innocent"].items():
            tid = number(digest(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                         "little")
            entry = get(tid)
            tokens[tid] = (0, n) if entry is None else (entry[0], n)
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
