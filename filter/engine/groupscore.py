"""The agent's group parts (DSPAM's groups, filter/engine/groups.py, in the message flow).

`GroupParts` is a base of `agent.Agent`: which groups a user is in and whose data they train
(a shared group's), the scoring of a merged or global group's member, a classification
group's peers asked about an unsure message, a member's spam report inoculating the
inoculation groups' members, and the commit of what a message writes for several uids at
once. Without groups none of it runs but `_join_groups` (which finds none), `_items` and
`_commit_items` (one item, written as before groups).
"""

from __future__ import annotations

from spamsift.filter.engine import groups, logistic, training
from spamsift.filter.engine.context import Scored
from spamsift.filter.engine.store.base import Batch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from spamsift.filter.engine.classifier import Verdict
    from spamsift.filter.engine.context import UserContext
    from spamsift.filter.engine.learning import Tokenized
    from spamsift.filter.engine.store.base import AgentStore
    from spamsift.filter.engine.store.signature import Signature


class GroupParts:
    """The group methods of `agent.Agent` (see the module docstring)."""

    settings: Any
    store: AgentStore
    commit_inbound: Callable[[int, Batch], None]
    _group_uids: dict[str, int]

    if TYPE_CHECKING:  # what `agent.Agent` provides
        def _day(self) -> str: ...

        @staticmethod
        def _apply(batch: Batch, id_list, applied, klass: str, sign: int) -> None: ...

        @staticmethod
        def _verdict(settings, message: Tokenized, counts: dict[int, tuple[int, int]],
                     spam_learned: int, innocent_learned: int, weights: dict[int, float],
                     feats: list[int], model: bool) -> Verdict: ...

        @staticmethod
        def _whitelisted(settings, message: Tokenized,
                         counts: dict[int, tuple[int, int]]) -> bool: ...

    def _join_groups(self, ctx: UserContext, create: bool) -> None:
        """Put the groups that apply to `ctx`'s user into it (and a shared group's data)."""
        membership = groups.membership(getattr(self.settings, "groups", ()), ctx.name)
        if not membership:
            return
        ctx.groups = membership
        if membership.shared is not None and ctx.uid is not None:
            shared = self.group_uid(membership.shared.name, create)
            if shared is not None:
                ctx.data_uid = shared

    def group_uid(self, name: str, create: bool = False) -> int | None:
        """The uid of a group's own data (None: it has none yet and `create` is false)."""
        uid = self._group_uids.get(name)
        if uid is None:
            uid = self.store.uid(name, create)
            if uid is not None:
                self._group_uids[name] = uid
        return uid

    def _data_uid_of(self, name: str, uid: int) -> int:
        """Whose token data user `name` (`uid`) reads and trains: a shared group's, or own."""
        shared = groups.membership(getattr(self.settings, "groups", ()), name).shared
        if shared is None:
            return uid
        return self.group_uid(shared.name, create=True) or uid

    def _commit_items(self, items: list[tuple[int, Batch]], inbound: bool = False) -> None:
        """Write (uid, batch) items in one transaction (one item: as before groups, through
        `commit_inbound` for inbound mail, which the daemon queues to its writer). The acting
        user's item is always first: the watchers' record rides with it. Several items are
        written at once by this process's store, not queued: the member's and the group's
        rows (a shared group, a decided verdict's counter) must change together."""
        if len(items) == 1:
            (self.commit_inbound if inbound else self.store.commit)(*items[0])
        else:
            self.store.commit_group(items)

    @staticmethod
    def _items(uid: int, data_uid: int | None, batch: Batch) -> list[tuple[int, Batch]]:
        """`batch` of user `uid` as commit items: when the user's token data is a shared
        group's (`data_uid`), the tokens and weights go to the group, whose totals count the
        same messages (a copy of the statistics); signature, statistics and sources stay the
        user's."""
        if data_uid is None or data_uid == uid:
            return [(uid, batch)]
        data = Batch(batch.day)
        data.tokens, batch.tokens = batch.tokens, {}
        data.weights, batch.weights = batch.weights, {}
        data.stats = dict(batch.stats)
        return [(uid, batch), (data_uid, data)]

    def _score_in_groups(self, ctx: UserContext, message: Tokenized, mode: str | None,
                         consult: bool, model: bool, feats: list[int]) -> Scored:
        """`score` for a member of a merged or global group: the member's rows, the merged
        group's and a consulted global group's are read in one query."""
        from spamsift.filter.engine.store.base import Stats

        settings = ctx.settings
        member = ctx.groups
        own = ctx.data_uid
        stats = self.store.stats(own) if own is not None else Stats()
        merged = self.group_uid(member.merged.name) if member.merged is not None else None
        consulted = None
        if consult and member.global_ is not None and (
                (mode or settings.training_mode) == training.NOTRAIN
                or groups.immature(stats.spam_learned, stats.innocent_learned)):
            consulted = self.group_uid(member.global_.name)
        uids = [u for u in (own, merged, consulted) if u is not None]
        keys = (logistic.read_ids(settings.algorithm, feats) if model
                else list(message.ids.values()))
        rows = self.store.counts_and_weights_of(uids, keys) if uids else {}
        counts, weights = rows[own] if own is not None else ({}, {})
        alone = self._verdict(settings, message, counts, stats.spam_learned,
                              stats.innocent_learned, weights, feats, model)
        verdict = alone
        if merged is not None and merged != own:
            group_counts, group_weights = rows[merged]
            totals = self.store.stats(merged)
            verdict = self._verdict(settings, message, _summed(counts, group_counts),
                                    stats.spam_learned + totals.spam_learned,
                                    stats.innocent_learned + totals.innocent_learned,
                                    _summed_weights(weights, group_weights), feats, model)
        scored = Scored(message, counts, stats, verdict,
                        self._whitelisted(settings, message, counts))
        if verdict is not alone:
            scored.alone = alone
        if consulted is not None and consulted != own:
            global_counts, global_weights = rows[consulted]
            totals = self.store.stats(consulted)
            scored.consulted = self._verdict(settings, message, global_counts,
                                             totals.spam_learned, totals.innocent_learned,
                                             global_weights, feats, model)
        return scored

    def _group_verdict(self, ctx: UserContext, scored: Scored
                       ) -> tuple[Verdict, groups.Group | None]:
        """The verdict groups make of a scored message, and the group that decided it (None:
        the member's own data would have said the same)."""
        verdict = scored.verdict
        member = ctx.groups
        if scored.consulted is not None:
            # DSPAM: an immature user's global group classifies.
            if scored.consulted.is_spam != verdict.is_spam:
                return scored.consulted, member.global_
            return scored.consulted, None
        decided = None
        if scored.alone is not None and scored.alone.is_spam != verdict.is_spam:
            decided = member.merged
        if member.classification and not verdict.is_spam and _unsure(ctx.settings, verdict):
            answer = self._ask_peers(ctx, scored.message)
            if answer is not None:
                return answer
        return verdict, decided

    def _ask_peers(self, ctx: UserContext, message: Tokenized
                   ) -> tuple[Verdict, groups.Group] | None:
        """Ask the other named members of the user's classification groups (at most
        `MAX_PEERS`, in one query); the most confident spam answer, or None."""
        settings = ctx.settings
        asked: dict[int, groups.Group] = {}
        for group, name in ctx.groups.peers(ctx.groups.classification, ctx.name):
            uid = self.store.uid(name, create=False)
            if uid is None:
                continue
            data = self._data_uid_of(name, uid)
            if data != ctx.data_uid and data not in asked:
                asked[data] = group
                if len(asked) >= MAX_PEERS:
                    break
        if not asked:
            return None
        model = logistic.enabled(settings.algorithm)
        feats = logistic.features(message.ids.values()) if model else []
        rows = self.store.counts_and_weights_of(
            list(asked),
            logistic.read_ids(settings.algorithm, feats) if model else list(message.ids.values()))
        best: tuple[Verdict, groups.Group] | None = None
        for uid, group in asked.items():
            counts, weights = rows[uid]
            totals = self.store.stats(uid)
            verdict = self._verdict(settings, message, counts, totals.spam_learned,
                                    totals.innocent_learned, weights, feats, model)
            if verdict.is_spam and (best is None or verdict.score > best[0].score):
                best = (verdict, group)
        return best

    def _decision(self, group: groups.Group, klass: str) -> tuple[int, Batch]:
        """The item counting one verdict `group` decided (as `klass`): its own
        ``<klass>_classified`` counter, which its report shows (docs/groups.md)."""
        uid = self.group_uid(group.name, create=True)
        assert uid is not None  # created
        batch = Batch(self._day())
        batch.add_stat(klass + "_classified", 1)
        return uid, batch

    def _weights_view(self, ctx: UserContext, feats: list[int]) -> dict[int, float]:
        """The model weights `ctx`'s messages are scored with: a merged group's added."""
        uid = ctx.data_uid
        assert uid is not None
        merged = (self.group_uid(ctx.groups.merged.name)
                  if ctx.groups.merged is not None else None)
        if merged is None or merged == uid:
            return self.store.weights(uid, feats)
        rows = self.store.counts_and_weights_of((uid, merged), feats)
        return _summed_weights(rows[uid][1], rows[merged][1])

    def _counts_view(self, ctx: UserContext, id_list: list[int]
                     ) -> tuple[dict[int, tuple[int, int]], tuple[int, int]]:
        """The counts `ctx`'s messages are scored with (a merged group's added), and the
        merged group's (spam, innocent) learned totals ((0, 0) without one)."""
        uid = ctx.data_uid
        assert uid is not None
        merged = (self.group_uid(ctx.groups.merged.name)
                  if ctx.groups.merged is not None else None)
        if merged is None or merged == uid:
            return self.store.lookup(uid, id_list), (0, 0)
        rows = self.store.counts_and_weights_of((uid, merged), id_list)
        totals = self.store.stats(merged)
        return (_summed(rows[uid][0], rows[merged][0]),
                (totals.spam_learned, totals.innocent_learned))

    def _inoculations(self, ctx: UserContext, sig: Signature,
                      id_list: list[int]) -> list[tuple[int, Batch]]:
        """What a member's spam report writes for the other named members of their
        inoculation groups: the message learned as spam by DSPAM's inoculation rule
        (`training.inoculation`), each distinct token dictionary once, and one count on each
        group that spread it."""
        targets: dict[int, int] = {}  # data uid -> member uid
        spreading: list[groups.Group] = []
        for group, name in ctx.groups.peers(ctx.groups.inoculation, ctx.name):
            uid = self.store.uid(name, create=True)
            assert uid is not None  # created
            data = self._data_uid_of(name, uid)
            if data != sig.token_uid and data not in targets:
                targets[data] = uid
                if group not in spreading:
                    spreading.append(group)
        if not targets:
            return []
        rows = self.store.counts_and_weights_of(list(targets), id_list)
        items: list[tuple[int, Batch]] = []
        for data, uid in targets.items():
            counts = rows[data][0]
            applied, counters = training.inoculation(
                "spam", [counts.get(i, (0, 0)) for i in id_list])
            batch = Batch(self._day())
            self._apply(batch, id_list, applied, "spam", +1)
            for counter in counters:
                batch.add_stat(counter, 1)
            items += self._items(uid, data, batch)
        for group in spreading:
            items.append(self._decision(group, "spam"))
        return items


MAX_PEERS = 20  # members a classification group asks about one message, at most


def _unsure(settings, verdict: Verdict) -> bool:
    """Whether a member is unsure of `verdict`: its score is in the unsure band, or, with no
    band, DSPAM's confidence below 0.65."""
    band = settings.unsure_band
    if band:
        return band[0] <= verdict.score < band[1]
    return verdict.confidence < 0.65


def _summed(own: dict[int, tuple[int, int]], more: dict[int, tuple[int, int]]
            ) -> dict[int, tuple[int, int]]:
    """Per-token (spam, innocent) counts of both tables added."""
    total = dict(own)
    get = total.get
    for token, (spam, innocent) in more.items():
        mine = get(token)
        total[token] = (spam, innocent) if mine is None else (mine[0] + spam,
                                                              mine[1] + innocent)
    return total


def _summed_weights(own: dict[int, float], more: dict[int, float]) -> dict[int, float]:
    total = dict(own)
    for token, weight in more.items():
        total[token] = total.get(token, 0.0) + weight
    return total
