"""The per-message flow shared by the filter, the trainer and the watchers.

`Agent.process` classifies an inbound message and trains it by the user's mode; `Agent.learn`
feeds a message of known class (corpus, inoculation); `Agent.retrain` corrects an earlier
classification from its signature. Each call reads in one batch and writes in one
`Store.commit`, so a message is either wholly recorded or not at all.
"""

from __future__ import annotations

import time
from array import array

from spamsift.filter.engine import classifier, logistic, training
from spamsift.filter.engine.context import WHITELISTED, Outcome, Scored, UserContext
from spamsift.filter.engine.days import day_of
from spamsift.filter.engine.errors import ConflictError, UnknownSignatureError
from spamsift.filter.engine.groupscore import GroupParts
from spamsift.filter.engine.learning import Tokenized, source_relays, tokenize
from spamsift.filter.engine.signatures import load_owned, new_id
from spamsift.filter.engine.store.base import Batch, LearnedChange, SignatureUpdate
from spamsift.filter.engine.store.signature import Signature
from spamsift.filter.engine.tokenizer import Tokenizer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spamsift.filter.engine.classifier import Verdict
    from spamsift.filter.engine.store.base import AgentStore

CAS_RETRIES = 5

__all__ = ["WHITELISTED", "Agent", "Outcome", "Scored", "UserContext"]


def _class_delta(klass: str, sign: int) -> tuple[int, int]:
    """(spam, innocent) deltas that add `sign` to `klass`."""
    return (sign, 0) if klass == "spam" else (0, sign)


def _label(klass: str) -> str:
    return "Spam" if klass == "spam" else "Innocent"


class Agent(GroupParts):
    """Classifies, learns and retrains messages for users of one store (its group parts:
    `groupscore.GroupParts`)."""

    def __init__(self, settings, store: AgentStore, clock=time.time, make_id=new_id,
                 commit_inbound=None) -> None:
        """`commit_inbound(uid, batch)`, when given, replaces ``store.commit`` for what
        `process` writes: the daemon queues it to a writer thread and answers at once."""
        self.settings = settings
        self.store = store
        self.clock = clock
        self.make_id = make_id
        self.commit_inbound = commit_inbound or store.commit
        self._tokenizers: dict[tuple, Tokenizer] = {}
        self._group_uids: dict[str, int] = {}

    # -- helpers -------------------------------------------------------------------------
    def user(self, name: str, create: bool = True) -> UserContext:
        uid = self.store.uid(name, create)
        prefs = self.store.preferences(uid) if uid is not None else {}
        ctx = UserContext(name, uid, prefs, self.settings.for_user(prefs))
        self._join_groups(ctx, create)
        return ctx

    def tokenizer(self, settings) -> Tokenizer:
        key = (settings.tokenizer, settings.ignore_headers, settings.header_prefix)
        tok = self._tokenizers.get(key)
        if tok is None:
            tok = self._tokenizers[key] = Tokenizer(*key)
        return tok

    def _day(self) -> str:
        return day_of(self.clock())

    def tokenize(self, ctx: UserContext, raw: bytes) -> Tokenized:
        """`raw` as this user's settings tokenize it (`learning.tokenize`)."""
        settings = ctx.settings
        return tokenize(self.tokenizer(settings), raw, source_relays(settings))

    def score(self, ctx: UserContext, message: Tokenized, mode: str | None = None,
              consult: bool = True) -> Scored:
        """Score a tokenized message for the user (nothing is written). With groups, a merged
        group's data is added and (`consult`) a global group is consulted for a user in
        `mode` (default: the user's) whose data is immature."""
        settings = ctx.settings
        ids = message.ids
        model = logistic.enabled(settings.algorithm)
        feats: list[int] = logistic.features(ids.values()) if model else []
        if ctx.groups.merged is not None or (consult and ctx.groups.global_ is not None):
            return self._score_in_groups(ctx, message, mode, consult, model, feats)
        weights: dict[int, float] = {}
        uid = ctx.data_uid
        if uid is None:
            counts: dict[int, tuple[int, int]] = {}
            from spamsift.filter.engine.store.base import Stats

            stats = Stats()
        elif model:
            # Counts and weights in one query (the features are the tokens and the bias).
            # Two queries took 2.90 ms a message against 1.75 for one on a SQLite database
            # of the whole SpamAssassin corpus (927,000 rows), 11.95 against 8.08 on MariaDB.
            counts, weights = self.store.counts_and_weights(
                uid, logistic.read_ids(settings.algorithm, feats))
            stats = self.store.stats(uid)
        else:
            counts = self.store.lookup(uid, ids.values())
            stats = self.store.stats(uid)
        verdict = self._verdict(settings, message, counts, stats.spam_learned,
                                stats.innocent_learned, weights, feats, model)
        return Scored(message, counts, stats, verdict, self._whitelisted(settings, message,
                                                                         counts))

    @staticmethod
    def _verdict(settings, message: Tokenized, counts: dict[int, tuple[int, int]],
                 spam_learned: int, innocent_learned: int, weights: dict[int, float],
                 feats: list[int], model: bool) -> Verdict:
        """The classifier's verdict on `message` from these counts, totals and weights."""
        bayesian = logistic.bayesian(settings.algorithm)
        verdict = classifier.classify(message.freq, message.ids, counts, spam_learned,
                                      innocent_learned, bayesian or ("graham",),
                                      settings.processor_bias, settings.same_counts)
        if model and bayesian:
            feats = feats + logistic.reputation(message.freq, message.ids, counts)
        if model:
            logistic.apply(verdict, logistic.margin(feats, weights),
                           verdict.score if bayesian else 0.0, feats, not bayesian)
        return verdict

    @staticmethod
    def _whitelisted(settings, message: Tokenized, counts: dict[int, tuple[int, int]]) -> bool:
        """Whether the sender's whitelist entry in `counts` overrides the verdict."""
        if settings.whitelist:
            sender = next((t for t in message.freq if t.startswith("wl:")), None)
            if sender is not None:
                spam, innocent = counts.get(message.ids[sender], (0, 0))
                return (innocent > settings.whitelist_threshold
                        and spam <= innocent // 15)
        return False

    # -- inbound -------------------------------------------------------------------------
    def process(self, ctx: UserContext, raw: bytes, mode: str | None = None,
                classify_only: bool = False) -> Outcome:
        """Classify an inbound message and, unless told not to, train it by the mode."""
        message = self.tokenize(ctx, raw)
        scored = self.score(ctx, message, mode)
        freq, ids, counts, stats = message.freq, message.ids, scored.counts, scored.stats
        verdict = scored.verdict
        shown, decided = verdict, None  # the verdict the outcome shows; a group deciding it
        if ctx.groups and not scored.whitelisted:
            shown, decided = self._group_verdict(ctx, scored)
        outcome = self.outcome(ctx, scored, shown)
        klass = "innocent" if scored.whitelisted or not shown.is_spam else "spam"
        result = outcome.result
        mode = mode or ctx.settings.training_mode
        if classify_only or mode == training.NOTRAIN or ctx.uid is None:
            return outcome
        mode = training.effective_mode(mode, stats.spam_learned, stats.innocent_learned)
        if decided is not None and decided.type == "classification" and mode == training.TOE:
            mode = training.TEFT  # DSPAM retrains a member its classification group overruled
        tokens = list(freq)
        id_list = [ids[t] for t in tokens]
        hits = [sum(counts.get(i, (0, 0))) for i in id_list]
        wl_index = next((k for k, t in enumerate(tokens) if t.startswith("wl:")), None)
        applied, counters = training.inbound(mode, klass, hits, shown.confidence, wl_index)

        source_ip = message.source_ip
        batch = self._learning(source_ip, klass, id_list, applied, counters)
        model = (0.0, 0.0)
        flags = 0
        if verdict.model is not None:
            z, base, feats = verdict.model
            step = 0.0
            if klass + "_learned" in counters:  # the mode learns it (TEFT, TUM), not TOE
                step = self._train_model(batch, feats, z, base, klass)
            model = (step, base)
            # which reputation features a correction trains (and takes `step` back from)
            flags = logistic.reputation_flags(feats)
        sig_id = self.make_id()
        data_uid = ctx.data_uid if ctx.data_uid != ctx.uid else 0
        batch.new_signature = Signature(
            sig_id, ctx.uid, int(self.clock()), result.lower(), klass if counters else "",
            ",".join(counters), source_ip, array("Q", id_list),
            bytes(min(freq[t], 255) for t in tokens), bytes(applied), model, data_uid or 0,
            flags)
        items = self._items(ctx.uid, ctx.data_uid, batch)
        if decided is not None:
            items.append(self._decision(decided, klass))
        self._commit_items(items, inbound=True)
        outcome.signature = sig_id
        outcome.action = "learned" if any(applied) else "classified"
        return outcome

    @staticmethod
    def outcome(ctx: UserContext, scored: Scored, shown: Verdict | None = None) -> Outcome:
        """What a scored message's classification says (`Outcome`, nothing written): the
        verdict `shown` (default the scored one; a group's that decided it, say)."""
        verdict, whitelisted = scored.verdict, scored.whitelisted
        shown = verdict if shown is None else shown
        result = "Whitelisted" if whitelisted else _label("spam" if shown.is_spam
                                                          else "innocent")
        outcome = Outcome(ctx.name, result, shown.probability, shown.confidence,
                          None, shown.factors)
        outcome.score = shown.score
        if whitelisted:
            # Below every other message, and below 0 as an Innocent result must be: the
            # sender, not the words, decided (a spam verdict it overrode stays visible in
            # how far from -WHITELISTED it is).
            outcome.score = min(verdict.score, 0.0) - WHITELISTED
        else:
            band = ctx.settings.unsure_band
            outcome.unsure = bool(band) and band[0] <= outcome.score < band[1]
        return outcome

    def _learning(self, source_ip: str, klass: str, id_list: list[int], applied,
                  counters: list[str]) -> Batch:
        """The batch that counts a message as `klass`: tokens, counters, source address."""
        batch = Batch(self._day())
        self._apply(batch, id_list, applied, klass, +1)
        for counter in counters:
            batch.add_stat(counter, 1)
        if source_ip:
            batch.add_source(source_ip, *_class_delta(klass, +1))
        return batch

    @staticmethod
    def _train_model(batch: Batch, feats: list[int], z: float, base: float,
                     klass: str) -> float:
        """Train the logistic model toward `klass` in `batch`; the step applied (times
        `logistic.rate` for each feature)."""
        step = logistic.train(z, base, logistic.weight_count(feats), klass == "spam")
        if step:
            for f in feats:
                batch.add_weight(f, step)
            for f in logistic.REPUTATION_SET.intersection(feats):
                batch.add_weight(f, step * (logistic.REPUTATION_RATE - 1.0))
        return step

    @staticmethod
    def _apply(batch: Batch, id_list, applied, klass: str, sign: int) -> None:
        tokens = batch.tokens
        spam = klass == "spam"
        if not tokens:
            # A new batch (every caller's case): built in one comprehension, 0.47 -> 0.38 ms
            # a message. Two of a message's tokens with one id (a 64-bit hash collision)
            # would have to add up: then it is built again entry by entry, below.
            if spam:
                made = {t: [sign * a, 0] for t, a in zip(id_list, applied) if a}
            else:
                made = {t: [0, sign * a] for t, a in zip(id_list, applied) if a}
            if len(made) == len(applied) - applied.count(0):
                batch.tokens = made
                return
        for token, amount in zip(id_list, applied):
            if amount:
                entry = tokens.get(token)
                if entry is None:
                    tokens[token] = [sign * amount, 0] if spam else [0, sign * amount]
                else:
                    entry[0 if spam else 1] += sign * amount

    # -- known class ---------------------------------------------------------------------
    def learn(self, ctx: UserContext, raw: bytes, klass: str, source: str = "corpus",
              signature_id: str | None = None) -> Outcome:
        """Learn a whole message as `klass` ("corpus" or "inoculation"), no decrements."""
        return self.learn_tokenized(ctx, self.tokenize(ctx, raw), klass, source, signature_id)

    def learn_tokenized(self, ctx: UserContext, message: Tokenized, klass: str,
                        source: str = "corpus", signature_id: str | None = None,
                        record: str | None = None) -> Outcome:
        """`learn` a message tokenized already (by a helper process, say). `record`: the
        message's key (`mailfolders.message_key`), to record in the same commit that corpus
        training learned it, with the model's step (`store.base.LearnedChange`)."""
        if ctx.uid is None:
            ctx = self.user(ctx.name, create=True)
        uid = ctx.uid
        assert uid is not None  # created above
        data_uid = ctx.data_uid
        assert data_uid is not None
        source_ip = message.source_ip
        freq = message.freq
        tokens = list(freq)
        id_list = [message.ids[t] for t in tokens]
        verdict = None
        if logistic.enabled(ctx.settings.algorithm):
            # The model trains beside the Bayes score, so it needs the message scored.
            scored = self.score(ctx, message, consult=False)
            verdict, counts = scored.verdict, scored.counts
        if source == "inoculation":
            if verdict is None:
                counts = self.store.lookup(data_uid, id_list)
            applied, counters = training.inoculation(klass, [counts.get(i, (0, 0))
                                                             for i in id_list])
        else:
            applied, counters = training.corpus(klass, len(id_list))
        batch = self._learning(source_ip, klass, id_list, applied, counters)
        model = (0.0, 0.0)
        if verdict is not None and verdict.model is not None:
            z, base, feats = verdict.model
            # Corpus learning leaves the reputation features alone: its record keeps the
            # step, not the message's reputation, so a correction could not take it back.
            feats = logistic.without_reputation(feats)
            model = (self._train_model(batch, feats, z, base, klass), base)
        if record is not None:
            batch.learned.append(LearnedChange(record, klass, 1, model[0], int(self.clock())))
        if signature_id is not None:
            batch.new_signature = Signature(
                signature_id, uid, int(self.clock()), klass, klass, ",".join(counters),
                source_ip, array("Q", id_list), bytes(min(freq[t], 255) for t in tokens),
                bytes(applied), model, data_uid if data_uid != uid else 0)
        self._commit_items(self._items(uid, data_uid, batch))
        return Outcome(ctx.name, _label(klass), 1.0 if klass == "spam" else 0.0, 1.0,
                       signature_id, action="learned")

    # -- corrections ---------------------------------------------------------------------
    def correct_learned(self, ctx: UserContext, message: Tokenized, key: str, old: str,
                        target: str, old_step: float, model=None, watch=()) -> float:
        """Correct one corpus learning of message `key` (tokenized as it was learned) from
        class `old` to `target`, through its record (`store.base.LearnedChange`): exactly
        what learning it as corpus added is taken back and added to `target`, and the record
        moves with it, in one commit that also carries `watch` (`WatchUpdate`s).

        `old_step` is the logistic model step the learning applied (taken back from every
        feature); `model` the (z without that step, Bayes score, features) the message scored
        without its learning (`Verdict.model` of a leave-one-out score), from which the model
        trains toward `target`. Raises `ConflictError` when the record no longer holds a
        learning of `key` as `old` (corrected already, by another process or an earlier run).
        Returns the model step toward `target` (recorded with the learning).
        """
        uid = ctx.uid
        assert uid is not None  # a record exists only for a user with data
        id_list = [message.ids[t] for t in message.freq]
        ones = bytes(b"\x01" * len(id_list))
        batch = Batch(self._day())
        self._apply(batch, id_list, ones, old, -1)
        self._apply(batch, id_list, ones, target, +1)
        for counter in training.corpus(old, 0)[1]:
            batch.add_stat(counter, -1)
        for counter in training.corpus(target, 0)[1]:
            batch.add_stat(counter, 1)
        if message.source_ip:
            batch.add_source(message.source_ip, *_class_delta(old, -1))
            batch.add_source(message.source_ip, *_class_delta(target, +1))
        step = 0.0
        if model is not None:
            z, base, feats = model
            feats = logistic.without_reputation(feats)  # as corpus learning trained it
            for f in feats:
                batch.add_weight(f, -old_step)
            step = self._train_model(batch, feats, z, base, target)
        elif old_step:
            for f in logistic.features(id_list):
                batch.add_weight(f, -old_step)
        now = int(self.clock())
        batch.learned = [LearnedChange(key, old, -1, -old_step, now),
                         LearnedChange(key, target, 1, step, now)]
        batch.watch.extend(watch)
        self.store.commit(uid, batch)
        return step

    def retrain(self, user: str | None, signature_id: str, klass: str | None,
                unlearn: bool = False) -> Outcome:
        """Correct a classification: undo what its signature applied, learn `klass`.

        With `unlearn`, only undo. `user` None means the signature's owner (trusted callers).
        Retries when another process changed the same signature meanwhile.
        """
        uid = None
        if user is not None:
            uid = self.store.uid(user, create=False)
            if uid is None:
                raise UnknownSignatureError(f"user {user} has no data, so no signature "
                                            f"{signature_id[:40]!r}")
        for _attempt in range(CAS_RETRIES):
            sig = load_owned(self.store, signature_id, uid)
            name = user or self.store.username(sig.uid) or str(sig.uid)
            ctx = UserContext(name, sig.uid, {}, self.settings)
            ctx.prefs = self.store.preferences(sig.uid)
            ctx.settings = self.settings.for_user(ctx.prefs)
            self._join_groups(ctx, create=False)
            # What this message changed is what its signature says, whatever the groups
            # are now: a shared group's tokens stay the group's.
            ctx.data_uid = sig.token_uid
            try:
                return self._retrain_once(ctx, sig, klass, unlearn)
            except ConflictError:
                continue
        raise ConflictError(f"signature {signature_id[:40]} kept changing; try again")

    def _retrain_once(self, ctx: UserContext, sig: Signature, klass: str | None,
                      unlearn: bool) -> Outcome:
        old = sig.trained
        if unlearn:
            if not old or (klass is not None and old != klass):
                return Outcome(ctx.name, _label(klass or old or "innocent"),
                               signature=sig.id, action="unchanged")
            target = ""
        else:
            assert klass is not None
            if old == klass:
                return Outcome(ctx.name, _label(klass), signature=sig.id, action="unchanged")
            target = klass
        id_list = list(sig.tokens)
        batch = Batch(self._day())
        if old:
            self._apply(batch, id_list, sig.applied, old, -1)
        for counter in filter(None, sig.counter.split(",")):
            batch.add_stat(counter, -1)
        if sig.source_ip and old:
            batch.add_source(sig.source_ip, *_class_delta(old, -1))
        # The logistic model: take back the step this message applied, then (below) train
        # toward the true class from the weights without it, beside the same Bayes score.
        old_step, base = sig.model
        feats = logistic.features(id_list) + logistic.flagged_reputation(sig.flags)
        if old_step:
            for f in feats:
                batch.add_weight(f, -old_step * logistic.rate(f))
        model = (0.0, base)
        if target and logistic.enabled(ctx.settings.algorithm):
            weights = self._weights_view(ctx, feats)
            z = logistic.margin(feats, weights) - old_step * logistic.weight_count(feats)
            model = (self._train_model(batch, feats, z, base, target), base)
        applied = bytearray(len(id_list))
        counters: list[str] = []
        if target:
            applied = bytearray(b"\x01" * len(id_list))
            counters = training.correction(target, sig.result)
            self._test_conditional(ctx, sig, id_list, target, batch, applied, counters)
            self._apply(batch, id_list, applied, target, +1)
            for counter in counters:
                batch.add_stat(counter, 1)
            if sig.source_ip:
                batch.add_source(sig.source_ip, *_class_delta(target, +1))
        flags = sig.flags
        spread: list[tuple[int, Batch]] = []
        if (target == "spam" and ctx.groups.inoculation
                and not flags & Signature.INOCULATED):
            spread = self._inoculations(ctx, sig, id_list)
            flags |= Signature.INOCULATED  # a report inoculates once, however often repeated
        new = Signature(sig.id, sig.uid, sig.created, sig.result, target, ",".join(counters),
                        sig.source_ip, sig.tokens, sig.freqs, bytes(applied), model,
                        sig.data_uid, flags)
        batch.signature_update = SignatureUpdate(sig.id, old, target, new.counter, new.pack())
        self._commit_items(self._items(sig.uid, sig.token_uid, batch) + spread)
        return Outcome(ctx.name, _label(target or old), signature=sig.id,
                       action="retrained" if target else "unlearned", reclassified=True)

    def _test_conditional(self, ctx: UserContext, sig: Signature, id_list: list[int],
                          target: str, batch: Batch, applied: bytearray,
                          counters: list[str]) -> None:
        """Add passes (as corpus: no more decrements) until the message scores as `target`."""
        settings = ctx.settings
        stats = self.store.stats(sig.uid)
        if not training.wants_more_passes(target, stats.innocent_learned
                                          + stats.innocent_classified,
                                          settings.test_conditional_training):
            return
        totals = stats if sig.token_uid == sig.uid else self.store.stats(sig.token_uid)
        counts, (group_spam, group_innocent) = self._counts_view(ctx, id_list)
        ts = totals.spam_learned + group_spam + batch.stats.get("spam_learned", 0)
        ti = totals.innocent_learned + group_innocent + batch.stats.get("innocent_learned", 0)
        ts += 1 if target == "spam" else 0
        ti += 1 if target == "innocent" else 0
        freq = {i: f for i, f in zip(id_list, sig.freqs)}
        spam_side = target == "spam"
        for _pass in range(training.TCT_PASSES):
            current = {}
            for token, amount in zip(id_list, applied):
                s, i = counts.get(token, (0, 0))
                ds, di = batch.tokens.get(token, (0, 0))
                if spam_side:
                    current[token] = (max(s + ds + amount, 0), max(i + di, 0))
                else:
                    current[token] = (max(s + ds, 0), max(i + di + amount, 0))
            verdict = classifier.classify(freq, None, current, ts, ti,
                                          logistic.bayesian(settings.algorithm) or ("graham",),
                                          settings.processor_bias, settings.same_counts)
            if verdict.is_spam == spam_side or _pass == training.TCT_PASSES - 1:
                return
            for k in range(len(applied)):
                if applied[k] < training.MAX_APPLIED:
                    applied[k] += 1
