"""The storage contract: the one file every backend (memory, SQLite, MySQL) implements.

Model: bogofilter's ``datastore.h``. Everything is batch-first: a message costs one `lookup`
(one ``SELECT ... IN``) and one `commit` (one transaction holding the token upserts, the
statistics counters, the per-day history, the signature and the source address). The
stored signature record (`Signature`, with its packed format) is in signature.py.

`Store` is the union of six roles, each a small Protocol saying who uses it: `Scoring`,
`Accounts`, `Reports`, `WatchState`, `LearnedRecords` and `Maintenance` (the first two with
their read-only parts, `Counts` and `Profiles`). Type a caller or a wrapper (a cache in front
of a store, a view of one) against the role it serves, not the whole `Store`: `AgentStore` is
what an `agent.Agent` uses.

Conventions every backend keeps:

* Token ids are unsigned 64-bit ints (`tokenizer.token_id`); a backend may store them signed.
* Counts never go below zero: a delta that would make one negative leaves it at 0.
* A token whose deltas are all negative is never inserted (decrementing nothing is nothing).
* Token weights (`Batch.weights`, the logistic model's) are plain floats: ``weight + delta``,
  never clamped, and a weight delta inserts the row when it is missing (counts 0) and
  refreshes its date. Purge rules look at counts and dates only, so a row holding just a
  weight is dropped by the hapax rules once it is old, like any rare token.
* `commit` is atomic. When the batch carries a `SignatureUpdate` whose ``expected`` state does not
  match the stored one, nothing is written and `ConflictError` is raised (compare-and-set:
  this is what makes retraining exactly-once across processes and cluster nodes). The same
  holds for each `WatchUpdate` in `Batch.watch` (the watchers' record of where a message was
  last seen), so a watcher's training and its record change together or not at all, and for
  each `LearnedChange` in `Batch.learned` that takes a learning away (the record of what
  corpus training learned, so a correction of it happens once).
* Failures raise `StorageUnavailableError` (cannot connect, locked too long) or
  `CorruptDatabaseError` (damaged, not ours); a backend never recreates data silently.

`Protocol` is only imported for type checkers: `typing` costs ~10 ms to import, a third of
the inline filter's budget.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable
    from typing import Protocol

    from spamsift.filter.engine.store.signature import Signature
else:
    Protocol = object

STAT_FIELDS = (
    "spam_learned", "innocent_learned",
    "spam_misclassified", "innocent_misclassified",
    "spam_corpusfed", "innocent_corpusfed",
    "spam_classified", "innocent_classified",
)

CLASSES = ("spam", "innocent")

# SQL for `Store.daily_totals` over spamsift_stats_daily.
DAILY_MESSAGES = ("spam_learned + innocent_learned + spam_classified + innocent_classified"
                  " - spam_corpusfed - innocent_corpusfed")
DAILY_ERRORS = "spam_misclassified + innocent_misclassified"


class Stats:
    """A user's DSPAM counters (`STAT_FIELDS`), all >= 0."""

    __slots__ = STAT_FIELDS
    spam_learned: int
    innocent_learned: int
    spam_misclassified: int
    innocent_misclassified: int
    spam_corpusfed: int
    innocent_corpusfed: int
    spam_classified: int
    innocent_classified: int

    def __init__(self, *values: int) -> None:
        values = values or (0,) * len(STAT_FIELDS)
        for name, value in zip(STAT_FIELDS, values):
            setattr(self, name, int(value))

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, f) for f in STAT_FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stats) and self.as_tuple() == other.as_tuple()

    def __repr__(self) -> str:
        return "Stats(" + ", ".join(f"{f}={getattr(self, f)}" for f in STAT_FIELDS) + ")"


class SignatureUpdate:
    """Compare-and-set of a stored signature's training state (used by retraining).

    Applies only while the stored `trained` equals `expected`; then sets `trained`, `counter`
    and replaces the packed data (`Signature.pack`, whose applied deltas changed).
    """

    __slots__ = ("id", "expected", "trained", "counter", "data")

    def __init__(self, id: str, expected: str, trained: str, counter: str, data: bytes) -> None:
        self.id = id
        self.expected = expected
        self.trained = trained
        self.counter = counter
        self.data = data


class WatchUpdate:
    """Compare-and-set of a message's recorded class in the watcher state.

    The row is (uid, `key`) of ``spamsift_watch_messages``: `key` is the message's signature
    or ``sha256:`` digest (`maildir.message_key`), `klass` "spam" or "innocent", `at` unix
    time. `expected` is the class the row must hold for the update to apply: a class, None
    (the row must not exist yet) or `ANY` (set unconditionally: an administrator's move).
    """

    __slots__ = ("key", "expected", "klass", "at")
    ANY = "*"

    def __init__(self, key: str, expected: str | None, klass: str, at: int) -> None:
        self.key = key
        self.expected = expected
        self.klass = klass
        self.at = int(at)

    def __repr__(self) -> str:
        return f"WatchUpdate({self.key[:20]!r}, {self.expected!r} -> {self.klass!r})"


class LearnedChange:
    """A change of the record of what corpus training learned (``spamsift_learned_messages``).

    The row is (uid, `key`, `klass`): message `key` (`mailfolders.message_key`) learned as
    `klass` ("spam" or "innocent"), `copies` times (the same bytes can be learned twice), with
    the logistic model's steps of those learnings summed (`step`, 0.0 without the model).
    `copies` is added and `step` added to the row, which is inserted when missing (stamped
    `at`, unix time); a row left with no copies is deleted. A negative `copies` is a
    compare-and-set: it applies only while the row holds at least that many copies, else
    `ConflictError` (so one correction of a learned message happens exactly once).
    """

    __slots__ = ("key", "klass", "copies", "step", "at")

    def __init__(self, key: str, klass: str, copies: int, step: float, at: int) -> None:
        self.key = key
        self.klass = klass
        self.copies = copies
        self.step = step
        self.at = int(at)

    def __repr__(self) -> str:
        return f"LearnedChange({self.key[:20]!r}, {self.klass!r}, {self.copies:+d})"


class Batch:
    """Everything one message writes, applied by `Store.commit` in one transaction.

    `tokens` maps token id -> [spam delta, innocent delta]. `stats` maps a `STAT_FIELDS` name to
    a delta; the same deltas go into the per-day history row for `day` (YYYY-MM-DD). `sources`
    maps an IP to [spam delta, innocent delta]. `watch` holds watcher-state updates, each a
    compare-and-set checked before anything is written. `weights` maps token id -> weight
    delta (the logistic model; added unclamped, see the module docstring). `learned` holds
    changes of the record of what corpus training learned (`LearnedChange`).
    """

    __slots__ = ("tokens", "stats", "day", "new_signature", "signature_update", "sources",
                 "watch", "weights", "learned")

    def __init__(self, day: str) -> None:
        self.tokens: dict[int, list[int]] = {}
        self.stats: dict[str, int] = {}
        self.day = day
        self.new_signature: Signature | None = None
        self.signature_update: SignatureUpdate | None = None
        self.sources: dict[str, list[int]] = {}
        self.watch: list[WatchUpdate] = []
        self.weights: dict[int, float] = {}
        self.learned: list[LearnedChange] = []

    def add_weight(self, token: int, delta: float) -> None:
        self.weights[token] = self.weights.get(token, 0.0) + delta

    def add_token(self, token: int, spam: int, innocent: int) -> None:
        entry = self.tokens.get(token)
        if entry is None:
            self.tokens[token] = [spam, innocent]
        else:
            entry[0] += spam
            entry[1] += innocent

    def add_stat(self, field: str, delta: int) -> None:
        self.stats[field] = self.stats.get(field, 0) + delta

    def add_source(self, ip: str, spam: int, innocent: int) -> None:
        entry = self.sources.setdefault(ip, [0, 0])
        entry[0] += spam
        entry[1] += innocent

    def is_empty(self) -> bool:
        return not (self.tokens or any(self.stats.values()) or self.new_signature
                    or self.signature_update or self.sources or self.watch
                    or any(self.weights.values()) or self.learned)


class Counts(Protocol):
    """What scoring a message reads: token counts and weights, and the user's counters.

    The reads of `Scoring`; a read-only view (evaluate's folds) serves this alone."""

    def lookup(self, uid: int, tokens: Collection[int]) -> dict[int, tuple[int, int]]:
        """(spam_hits, innocent_hits) of those `tokens` the user has; absent ones are left out."""
        ...

    def weights(self, uid: int, tokens: Collection[int]) -> dict[int, float]:
        """The logistic model's weights of those `tokens` the user has a row for (one query;
        absent ones are left out and weigh 0.0)."""
        ...

    def counts_and_weights(self, uid: int, tokens: Collection[int]
                           ) -> tuple[dict[int, tuple[int, int]], dict[int, float]]:
        """`lookup` and `weights` of the same tokens in one query: what scoring a message with
        the logistic model reads."""
        ...

    def counts_and_weights_of(self, uids: Collection[int], tokens: Collection[int]
                              ) -> dict[int, tuple[dict[int, tuple[int, int]],
                                                   dict[int, float]]]:
        """`counts_and_weights` of several users in one query: uid -> (counts, weights), an
        entry for every uid asked (groups: a member and the group data its message reads)."""
        ...

    def stats(self, uid: int) -> Stats:
        """The user's counters; all zero for a user with none."""
        ...


class Scoring(Counts, Protocol):
    """What scoring and learning a message reads and writes: token counts and weights, the
    counters, signatures, and the transaction every write of a store goes through.

    Used by `agent.Agent` (classify, learn, retrain), corpus training
    (`trainer.learner.CorpusLearner`) and the daemon's group commit."""

    def has_tokens(self, uid: int) -> bool:
        """Whether the user has any token row (one indexed probe)."""
        ...

    def signature(self, signature_id: str) -> Signature | None:
        """A stored signature by id, whoever owns it (the caller checks `Signature.uid`)."""
        ...

    def commit(self, uid: int, batch: Batch) -> None:
        """Apply `batch` atomically (see the module docstring for the rules). A new signature
        whose id is stored already raises `DuplicateSignatureError` and writes nothing."""
        ...

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        """Apply every (uid, batch) of `items`, in order, in one transaction: all or none.
        A page that several batches change is written once (the daemon's group commit)."""
        ...


class Profiles(Protocol):
    """A user's id, name and preferences: what `agent.Agent` asks of `Accounts`."""

    def uid(self, username: str, create: bool = True) -> int | None:
        """The numeric id of a user, creating one when `create`; None if unknown."""
        ...

    def username(self, uid: int) -> str | None:
        """The name of a numeric id, or None."""
        ...

    def preferences(self, uid: int) -> dict[str, str]:
        """The user's stored preferences (site-wide defaults live in the configuration)."""
        ...


class Accounts(Profiles, Protocol):
    """Users and their preferences.

    Used by `Agent.user` (every message), ``spamsift prefs``, the reports (names, the
    ``stats --reset`` snapshot) and purging (per-user retention preferences)."""

    def users(self) -> list[tuple[int, str]]:
        """All (uid, name) pairs, ordered by name."""
        ...

    def set_preference(self, uid: int, key: str, value: str | None) -> None:
        """Set a preference, or delete it when `value` is None."""
        ...


class AgentStore(Counts, Profiles, Protocol):
    """Exactly what an `agent.Agent` calls on its store. A wrapper handed to an Agent in
    place of a store (the corpus learner's write-behind cache, the watchers' state carrier,
    evaluate's fold view, reclassify's leave-one-out view) implements this, and mypy holds
    it to it."""

    def signature(self, signature_id: str) -> Signature | None:
        """As `Scoring.signature` (a retrain loads the signature it corrects)."""
        ...

    def commit(self, uid: int, batch: Batch) -> None:
        """As `Scoring.commit`."""
        ...

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        """As `Scoring.commit_group` (what a group member's message writes to the member
        and to a group's data together, filter/engine/groups.py)."""
        ...


class Reports(Protocol):
    """Reads over every user at once, each one query however many users there are.

    Used by the trainer's report, ``stats`` and ``sources`` commands."""

    def sources(self, uid: int | None = None,
                since: str | None = None) -> Iterable[tuple[int, str, int, int]]:
        """(uid, ip, spam_hits, innocent_hits) rows, for one user or all, ordered by uid and
        ip; with `since` (YYYY-MM-DD) only addresses last seen on or after that day."""
        ...

    def all_stats(self) -> dict[int, Stats]:
        """Every user's counters in one query (reports over thousands of users)."""
        ...

    def daily_stats(self, since: str) -> list[tuple[int, str, tuple[int, ...]]]:
        """(uid, day, deltas in `STAT_FIELDS` order) of the per-day history from day `since`
        (YYYY-MM-DD) on, ordered by uid and day. Deltas are signed (corrections)."""
        ...

    def daily_totals(self, since: str) -> list[tuple[int, str, int, int]]:
        """(uid, day, messages, errors) per day from `since` on, ordered by uid and day,
        summed by the database: messages = learned + classified - corpus-fed (mail that
        passed the filter, `DAILY_MESSAGES`), errors = misclassified (spam + innocent).
        The report's trends read 30 days of 10,000 users with it; fetching the ten columns
        of `daily_stats` instead took 2 s through PyMySQL."""
        ...

    def preference_values(self, key: str) -> dict[int, str]:
        """uid -> value of one preference for every user that has it."""
        ...


class WatchState(Protocol):
    """The watchers' bulk reads: where each message was last seen, and what the stored
    signatures say. Changes to the record are `WatchUpdate`s in a `Batch`, written by
    `Scoring.commit` together with the training they belong to.

    Used by `watchstate` (the Maildir and IMAP watchers, ``spamsift reclassify --move``)."""

    def watch_states(self, uid: int, keys: Collection[str]) -> dict[str, str]:
        """key -> recorded class ("spam"/"innocent") of those `keys` the user has a watcher
        record for (one query per few hundred keys)."""
        ...

    def signature_states(self, ids: Collection[str]) -> dict[str, tuple[int, str, str]]:
        """id -> (uid, result, trained) of those signature `ids` that are stored, without
        their token data: what a watcher needs to decide about many messages at once."""
        ...


class LearnedRecords(Protocol):
    """The record of what corpus training learned, per message (``spamsift_learned_messages``):
    its bulk read. The record changes by `LearnedChange`s in a `Batch`, written by
    `Scoring.commit` in the transaction of the learning or correction they record.

    Used by ``spamsift reclassify`` (judging each message without its own learning,
    `leaveoneout`, and correcting it with ``--retrain``) and by the watchers (correcting a
    drag of mail training learned, `spamsift.watchers.applier`). A role of its own, not part
    of `WatchState`."""

    def learned_records(self, uid: int, keys: Collection[str]
                        ) -> dict[str, dict[str, tuple[int, float]]]:
        """key -> {class: (copies, summed model step)} of those message `keys` corpus training
        learned for the user (`LearnedChange`; one query per few hundred keys)."""
        ...


class Maintenance(Protocol):
    """Purging old rows, and the schema: creating, upgrading and checking it.

    Used by ``spamsift purge`` (`purging`), ``spamsift db`` and ``spamsift doctor``."""

    def purge_step(self, rule, limit: int, cursor: tuple | None) -> tuple[int, tuple | None]:
        """Delete at most `limit` rows matching `rule` (a `purging.Rule`) after `cursor`, in
        one short transaction; (rows deleted, cursor for the next step or None when done).
        Rows are visited in one pass: a row skipped once is not read again."""
        ...

    def purge_count(self, rule) -> int:
        """How many rows `rule` would delete now (for --dry-run)."""
        ...

    def initialize(self) -> list[str]:
        """Create or upgrade the schema (idempotent); what was done, one line each."""
        ...

    def check(self) -> list[str]:
        """What is wrong with the database, one line each; empty when all is well
        (`schema_problems` and `write_problems` together)."""
        ...

    def schema_problems(self) -> list[str]:
        """What is wrong with the database itself: tables, columns, schema version."""
        ...

    def write_problems(self) -> list[str]:
        """What keeps this process from writing the database."""
        ...


class Store(Scoring, Accounts, Reports, WatchState, LearnedRecords, Maintenance,
            Protocol):
    """A storage backend: every role. Instances are used by one thread; open one per process
    or thread."""

    url: str
    # Whether `open_store(url)` opens a connection of its own to this same data, for another
    # thread or process to write beside this one (bulk training's writer thread). False for
    # memory stores: ``memory://`` opens an empty one, ``memory://NAME`` this very object.
    reopenable: bool

    def close(self) -> None:
        ...


# The registry: scheme -> module path of a backend exposing
# `open(url, timeout, create) -> Store`.
# Backends are imported only when chosen, so the filter never loads PyMySQL for SQLite.
BACKENDS = {
    "sqlite": "spamsift.filter.engine.store.sqlite",
    "memory": "spamsift.filter.engine.store.memory",
    "mysql": "spamsift.filter.engine.store.mysql",
    "mysql+datafile": "spamsift.filter.engine.store.mysql",  # DSPAM's mysql.data file
}


def open_store(url: str, timeout: float = 10.0, create: bool = True) -> Store:
    """Open the backend named by `url` (``sqlite:///path``, ``memory://``, ``mysql://...``).
    Without `create`, a backend that would make a new database (a SQLite file that does not
    exist) raises NoDatabaseError instead."""
    from importlib import import_module

    from spamsift.filter.engine.errors import ConfigError

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in BACKENDS:
        raise ConfigError(f"unknown storage URL {url!r}: use one of "
                          + ", ".join(f"{s}://" for s in BACKENDS))
    try:
        module = import_module(BACKENDS[scheme])
    except ImportError as exc:
        raise ConfigError(f"storage backend {scheme!r} is not available: {exc}") from None
    return module.open(url, timeout, create)  # type: ignore[no-any-return]
