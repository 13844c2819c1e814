"""The one learning pipeline: a message is tokenized once into a `Tokenized`, which is then
either learned on its own (`Agent.learn_tokenized`: one transaction, a signature, the
logistic model's step) or counted with a run of others (`CorpusCounts`: one `Batch` for the
whole run, the corpus bootstrap's fast path).

Every way of learning goes through here, in one process or in helper processes
(`tokenpool`): the corpus trainer, the watchers, evaluation's cross-validation and the inline
filter. So what a message contributes, its source address included, is defined once.
"""

from __future__ import annotations

from collections import Counter

from spamsift.filter.engine.tokenizer import Tokenizer, parse_top_headers, token_ids

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spamsift.filter.engine.store.base import Batch

CLASSES = ("spam", "innocent")


class Tokenized:
    """A message as the agent learns and scores it: token -> frequency in first-seen order,
    token -> id, and the source address ('' when sources are not tracked or the message
    names none).

    The ids are computed when first asked for: counting a corpus (`CorpusCounts`) hashes each
    distinct token of a whole run once instead. Helper processes send these back to the
    training process with the ids, hashed there."""

    __slots__ = ("freq", "_ids", "source_ip")

    def __init__(self, freq: dict[str, int], ids: dict[str, int] | None, source_ip: str) -> None:
        self.freq = freq
        self._ids = ids
        self.source_ip = source_ip

    @property
    def ids(self) -> dict[str, int]:
        if self._ids is None:
            self._ids = token_ids(self.freq)
        return self._ids

    def __reduce__(self):
        return (Tokenized, (self.freq, self.ids, self.source_ip))


def tokenize(tokenizer: Tokenizer, raw: bytes, local_mx: tuple[str, ...] | None) -> Tokenized:
    """`raw` tokenized, its tokens hashed, and its source address found (`local_mx`: the
    site's own relays; None when sources are not tracked). The headers are parsed once, for
    both; the ids are hashed when asked for (`Tokenized.ids`)."""
    headers = parse_top_headers(raw)
    freq = tokenizer.tokenize(raw, headers)
    ip = ""
    if local_mx is not None:
        from spamsift.filter.engine.sources import first_external_ip

        ip = first_external_ip(headers, local_mx) or ""
    return Tokenized(freq, None, ip)


def source_relays(settings) -> tuple[str, ...] | None:
    """The `local_mx` argument of `tokenize` for these settings."""
    return tuple(settings.local_mx) if settings.track_sources else None


def _added(into: dict[int, int], more: dict[int, int]) -> dict[int, int]:
    """`into` with `more` added to it; `more` itself when `into` is empty (a table of 150,000
    ids is not copied: a copy raised a helper's peak by 7 MB)."""
    if not into:
        return more
    get = into.get
    for key, n in more.items():
        into[key] = get(key, 0) + n
    return into


class CorpusCounts:
    """What a run of messages of known class contributes, counted in memory.

    Per class, the messages each token occurs in (each distinct token of a message counts
    once, exactly as `Agent.learn` as corpus counts it), the messages, and per source address
    the (spam, innocent) messages it sent. Tokens are counted by their text and hashed once
    per distinct token when the counts are hashed (`hashed`, `batch`, `rows`): a run of 2,000
    messages has ~1.3 million token occurrences but ~150,000 distinct tokens, and hashing was
    half the cost of a message.

    Helper processes count a chunk each and send it back hashed; `merge` adds them up. Counts
    are sums, so the order of merging changes nothing."""

    __slots__ = ("by_text", "by_id", "messages", "sources")

    def __init__(self) -> None:
        self.by_text: dict[str, Counter[str]] = {k: Counter() for k in CLASSES}
        self.by_id: dict[str, dict[int, int]] = {k: {} for k in CLASSES}
        self.messages = dict.fromkeys(CLASSES, 0)
        self.sources: dict[str, list[int]] = {}

    def __getstate__(self):
        return (self.by_text, self.by_id, self.messages, self.sources)

    def __setstate__(self, state) -> None:
        self.by_text, self.by_id, self.messages, self.sources = state

    @property
    def total(self) -> int:
        """Messages counted."""
        return sum(self.messages.values())

    def add(self, klass: str, message: Tokenized) -> None:
        """Count one message as `klass`."""
        self.by_text[klass].update(message.freq.keys())
        self.messages[klass] += 1
        if message.source_ip:
            entry = self.sources.setdefault(message.source_ip, [0, 0])
            entry[0 if klass == "spam" else 1] += 1

    def hashed(self) -> CorpusCounts:
        """These counts with every token counted by id (the texts dropped): what a helper
        sends back, smaller than texts and hashed where the CPU is free."""
        for klass, counter in self.by_text.items():
            if counter:
                ids = token_ids(counter)
                self.by_id[klass] = _added(self.by_id[klass],
                                           {ids[text]: n for text, n in counter.items()})
                counter.clear()  # the texts are not needed any more: free them now
        return self

    def merge(self, other: CorpusCounts) -> None:
        """Add `other`'s counts to these (`other` is used up: its tables may be taken over)."""
        for klass in CLASSES:
            if other.by_text[klass]:
                self.by_text[klass].update(other.by_text[klass])
            self.by_id[klass] = _added(self.by_id[klass], other.by_id[klass])
            self.messages[klass] += other.messages[klass]
        for ip, (spam, innocent) in other.sources.items():
            entry = self.sources.setdefault(ip, [0, 0])
            entry[0] += spam
            entry[1] += innocent

    def rows(self) -> dict[int, tuple[int, int]]:
        """Token id -> (spam, innocent) messages; the counts are emptied (a run's counts are
        large, and nothing adds to them after this)."""
        self.hashed()
        spam, innocent = self.by_id["spam"], self.by_id["innocent"]
        rows = {tid: (n, 0) for tid, n in spam.items()}
        get = rows.get
        for tid, n in innocent.items():
            entry = get(tid)
            rows[tid] = (0, n) if entry is None else (entry[0], n)
        spam.clear()
        innocent.clear()
        return rows

    def batch(self, day: str) -> Batch:
        """These counts as one `Batch` learned as corpus (``<class>_learned`` and
        ``<class>_corpusfed`` per message, the source addresses); the counts are emptied."""
        from spamsift.filter.engine.store.base import Batch

        batch = Batch(day)
        batch.tokens = self.rows()  # type: ignore[assignment]  # (s, i) tuples, never added to
        for klass, n in self.messages.items():
            if n:
                batch.add_stat(klass + "_learned", n)
                batch.add_stat(klass + "_corpusfed", n)
        batch.sources = self.sources
        return batch
