"""Scoring a message by what the filter knows without it: leave-one-out.

A message training learned agrees with its folder, whatever it is: once learned as innocent,
a spam left in the INBOX has each of its tokens counted innocent once more, and the logistic
model took a step toward innocent on every one of its features. `Without` is a read-only view
of one user's store that takes one message's own part back out of what the agent reads, so
``spamsift reclassify`` judges each message as if it had never been learned:

* **Bayes** (exact): corpus training added ``copies`` to the learned class's count of each
  distinct token of the message and to ``<class>_learned``; the view subtracts them. The
  message is tokenized again with the same settings (the tokenizer is deterministic), so the
  ids are the ones that were counted. For a message learned under a signature (the filter's
  TEFT, a watcher's learning) the signature's own token ids and applied amounts are used.
* **The logistic model** (the recorded step, an approximation): learning a message added one
  step to the weight of every one of its features (`logistic.train`), recorded with the
  message (`store.base.LearnedChange.step`, `Signature.model`). The view subtracts that step
  from every feature's weight. What the message changed in the steps of the messages learned
  after it (each step depends on the weights before it) stays: undoing it would mean training
  again without the message. Measured, that overshoots (`spamsift.trainer.reclassify.
  judging_settings`: one message's margin was 4.65 as learned, 2.85 in a model trained
  without it, -4.00 with its step taken back), so reclassify takes its verdict from the
  Bayesian algorithms and uses the model's part only to retrain (docs/benchmarks.md#reclassify).

Nothing is written through the view.
"""

from __future__ import annotations

from spamsift.filter.engine import logistic
from spamsift.filter.engine.store.passthrough import PassThrough

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

    from spamsift.filter.engine.store.base import AgentStore, Batch, Stats


class Without(PassThrough):
    """A read-only `AgentStore`: a store's data minus the part of the message left out
    (`leave_out`), for the reads `Agent.score` makes; the rest of `AgentStore` reads through,
    and a write is a bug."""

    def __init__(self, store: AgentStore) -> None:
        super().__init__(store)
        self._stats: dict[int, Stats] = {}  # read once: nothing is written during a scan
        self.keep()
        self._prefetched_uid: int | None = None
        self._covered: frozenset[int] = frozenset()
        self._prefetched: dict[int, tuple[int, int]] = {}

    def keep(self) -> None:
        """Leave nothing out (a message training never learned)."""
        self.klass = ""
        self.amounts: dict[int, int] = {}
        self.counters: dict[str, int] = {}
        self.step = 0.0
        self.features: frozenset[int] = frozenset()
        self.data_uid: int | None = None

    def leave_out(self, klass: str, amounts: dict[int, int], counters: dict[str, int],
                  step: float, tokens: Collection[int] | None = None,
                  data_uid: int | None = None) -> None:
        """Leave out a learning as `klass`: `amounts` (token id -> how much was added to the
        class's count), what was added to `counters` (``<klass>_learned``, ...), and the
        model `step` added to the weight of each of the message's `tokens` (default: those
        of `amounts`; with any reputation features a signature records, which took
        `logistic.rate` steps) and the bias. `data_uid`: whose data the learning went to (a shared
        group's, `Signature.token_uid`); None: every uid read (one user's data)."""
        self.data_uid = data_uid
        self.klass = klass
        self.amounts = amounts
        self.counters = counters
        self.step = step
        self.features = (frozenset(amounts if tokens is None else tokens) | {logistic.BIAS}
                         if step else frozenset())

    def prefetch(self, uid: int, tokens: Collection[int]) -> None:
        """Read `uid`'s counts of `tokens` (a chunk's messages' together) in one lookup;
        `lookup` then serves them from memory until `forget`. A scan reads every message's
        tokens and most recur across messages (the Received lines, the common words): one
        lookup a message was 17.5 of 46 s of reclassifying 3,000 corpus messages (profiled,
        graham burton). The caller forgets before anything is written through the store."""
        covered = frozenset(tokens)
        found = self.store.lookup(uid, covered)  # a failed read leaves the view reading through
        self._prefetched_uid, self._covered, self._prefetched = uid, covered, found

    def reread_stats(self) -> None:
        """Read the totals from the store again at the next `stats`: after a write through
        the store (a correction moves a message from one class's totals to the other's)."""
        self._stats = {}

    def forget(self) -> None:
        """Drop what `prefetch` read: later lookups read the store."""
        self._prefetched_uid = None
        self._covered = frozenset()
        self._prefetched = {}

    def _lookup(self, uid: int, tokens: Collection[int]) -> dict[int, tuple[int, int]]:
        """The store's counts of `tokens`, from what was prefetched where it covers them."""
        if uid != self._prefetched_uid:
            return self.store.lookup(uid, tokens)
        found: dict[int, tuple[int, int]] = {}
        missing = []
        get, covered = self._prefetched.get, self._covered
        for token in tokens:
            row = get(token)
            if row is not None:
                found[token] = row
            elif token not in covered:
                missing.append(token)
        if missing:
            found.update(self.store.lookup(uid, missing))
        return found

    # -- what Agent.user and Agent.score read --------------------------------------------
    def uid(self, username: str, create: bool = True) -> int | None:
        return self.store.uid(username, False)

    def stats(self, uid: int) -> Stats:
        from spamsift.filter.engine.store.base import STAT_FIELDS, Stats

        stats = self._stats.get(uid)
        if stats is None:
            stats = self._stats[uid] = self.store.stats(uid)
        out = Stats(*(getattr(stats, f) for f in STAT_FIELDS))
        if not self._holds(uid):
            return out
        for field, n in self.counters.items():
            setattr(out, field, max(getattr(out, field) - n, 0))
        return out

    def _counts(self, found: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        amounts = self.amounts
        if not amounts:
            return found
        spam = self.klass == "spam"
        for token, amount in amounts.items():
            row = found.get(token)
            if row is None or not amount:
                continue
            s, i = row
            row = (max(s - amount, 0), i) if spam else (s, max(i - amount, 0))
            if row == (0, 0):
                del found[token]  # as a store does not have a token no message holds
            else:
                found[token] = row
        return found

    def _weights(self, tokens: Collection[int], found: dict[int, float]) -> dict[int, float]:
        if not self.step:
            return found
        step, features, rate = self.step, self.features, logistic.rate
        for token in tokens:
            if token in features:
                found[token] = found.get(token, 0.0) - step * rate(token)
        return found

    def _holds(self, uid: int) -> bool:
        """Whether `uid`'s data holds the learning left out."""
        return self.data_uid is None or uid == self.data_uid

    def lookup(self, uid: int, tokens: Collection[int]) -> dict[int, tuple[int, int]]:
        found = self._lookup(uid, tokens)
        return self._counts(found) if self._holds(uid) else found

    def weights(self, uid: int, tokens: Collection[int]) -> dict[int, float]:
        tokens = list(tokens)
        found = self.store.weights(uid, tokens)
        return self._weights(tokens, found) if self._holds(uid) else found

    def counts_and_weights(self, uid: int, tokens: Collection[int]
                           ) -> tuple[dict[int, tuple[int, int]], dict[int, float]]:
        tokens = list(tokens)
        counts, weights = self.store.counts_and_weights(uid, tokens)
        if not self._holds(uid):
            return counts, weights
        return self._counts(counts), self._weights(tokens, weights)

    def counts_and_weights_of(self, uids: Collection[int], tokens: Collection[int]
                              ) -> dict[int, tuple[dict[int, tuple[int, int]],
                                                   dict[int, float]]]:
        """As the store's; the learning left out of the data that holds it (`data_uid`: a
        merged or global group's data read beside a member's never held the member's
        message)."""
        tokens = list(tokens)
        found = self.store.counts_and_weights_of(uids, tokens)
        for uid, (counts, weights) in found.items():
            if self._holds(uid):
                found[uid] = (self._counts(counts), self._weights(tokens, weights))
        return found

    def commit(self, uid: int, batch: Batch) -> None:
        raise AssertionError("a leave-one-out view only scores")

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        raise AssertionError("a leave-one-out view only scores")


def model_without(settings, store: AgentStore, ctx, message, klass: str, copies: int,
                  step: float):
    """The logistic model's (z, Bayes score, features) for `message` of user `ctx` scored
    without its corpus learning as `klass` (`copies` times, model steps summing to `step`):
    what `Agent.correct_learned` trains the model toward the message's true class from.
    None when the user's algorithms leave the model out (only the step is taken back)."""
    from spamsift.filter.engine import training
    from spamsift.filter.engine.agent import Agent

    if not logistic.enabled(ctx.settings.algorithm):
        return None
    view = Without(store)
    view.leave_out(klass, dict.fromkeys(message.ids.values(), copies),
                   dict.fromkeys(training.corpus(klass, 0)[1], copies), step,
                   data_uid=ctx.uid)
    verdict = Agent(settings, view).score(ctx, message).verdict
    return verdict.model
