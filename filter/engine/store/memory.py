"""Memory backend: the reference implementation of the contract, for tests and evaluation.

``memory://`` opens a fresh, empty store; ``memory://NAME`` opens the store of that name shared
within the process (so a test can open it twice, as two filter runs would).
"""

from __future__ import annotations

from spamsift.filter.engine.errors import ConflictError, DuplicateSignatureError
from spamsift.filter.engine.store.base import STAT_FIELDS, Batch, Stats
from spamsift.filter.engine.store.signature import Signature

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spamsift.filter.engine.store.base import Store

_NAMED: dict[str, MemoryStore] = {}


def open(url: str, timeout: float = 0.0,  # noqa: A001 - registry entry point
         create: bool = True) -> MemoryStore:
    """``memory://`` or ``memory://NAME``; `timeout` and `create` have nothing to govern."""
    name = url.split("://", 1)[1]
    if not name:
        return MemoryStore()
    if name not in _NAMED:
        _NAMED[name] = MemoryStore(url)
    return _NAMED[name]


class MemoryStore:
    """The `Store` contract in dictionaries."""

    reopenable = False  # see `Store.reopenable`

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.uids: dict[str, int] = {}
        # (uid, token) -> [spam, innocent, day, weight]
        self.tokens: dict[tuple[int, int], list] = {}
        self.stat_rows: dict[int, list[int]] = {}
        self.daily: dict[tuple[int, str], list[int]] = {}
        self.signatures: dict[str, tuple[int, str, Signature]] = {}  # id -> (uid, day, sig)
        self.prefs: dict[tuple[int, str], str] = {}
        self.source_rows: dict[tuple[int, str], list] = {}
        self.watch_rows: dict[tuple[int, str], tuple[str, int]] = {}  # -> (class, updated_at)
        # (uid, key, class) -> [copies, step, learned_at]
        self.learned_rows: dict[tuple[int, str, str], list] = {}

    def uid(self, username: str, create: bool = True) -> int | None:
        if username not in self.uids and create:
            self.uids[username] = len(self.uids) + 1
        return self.uids.get(username)

    def username(self, uid: int) -> str | None:
        return next((n for n, u in self.uids.items() if u == uid), None)

    def users(self) -> list[tuple[int, str]]:
        return sorted(((u, n) for n, u in self.uids.items()), key=lambda r: r[1])

    def lookup(self, uid: int, tokens) -> dict[int, tuple[int, int]]:
        found = {}
        for token in tokens:
            row = self.tokens.get((uid, token))
            if row is not None:
                found[token] = (row[0], row[1])
        return found

    def weights(self, uid: int, tokens) -> dict[int, float]:
        found = {}
        for token in tokens:
            row = self.tokens.get((uid, token))
            if row is not None and row[3]:
                found[token] = row[3]
        return found

    def counts_and_weights(self, uid: int, tokens):
        tokens = list(tokens)
        return self.lookup(uid, tokens), self.weights(uid, tokens)

    def counts_and_weights_of(self, uids, tokens):
        tokens = list(tokens)
        return {uid: self.counts_and_weights(uid, tokens) for uid in uids}

    def stats(self, uid: int) -> Stats:
        return Stats(*self.stat_rows.get(uid, [0] * len(STAT_FIELDS)))

    def has_tokens(self, uid: int) -> bool:
        return any(key[0] == uid for key in self.tokens)

    def signature(self, signature_id: str) -> Signature | None:
        entry = self.signatures.get(signature_id)
        if entry is None:
            return None
        sig = entry[2]
        packed = sig.pack()
        tokens, freqs, applied = Signature.unpack_data(packed)
        return Signature(sig.id, sig.uid, sig.created, sig.result, sig.trained, sig.counter,
                         sig.source_ip, tokens, freqs, applied, Signature.unpack_model(packed),
                         *Signature.unpack_groups(packed))

    def preferences(self, uid: int) -> dict[str, str]:
        return {k: v for (u, k), v in self.prefs.items() if u == uid}

    def set_preference(self, uid: int, key: str, value: str | None) -> None:
        if value is None:
            self.prefs.pop((uid, key), None)
        else:
            self.prefs[(uid, key)] = value

    def sources(self, uid: int | None = None, since: str | None = None):
        return sorted((u, ip, r[0], r[1]) for (u, ip), r in self.source_rows.items()
                      if (uid is None or u == uid) and (since is None or r[2] >= since))

    def all_stats(self) -> dict[int, Stats]:
        return {uid: Stats(*row) for uid, row in self.stat_rows.items()}

    def daily_stats(self, since: str) -> list[tuple[int, str, tuple[int, ...]]]:
        return sorted((uid, day, tuple(row)) for (uid, day), row in self.daily.items()
                      if day >= since)

    def daily_totals(self, since: str) -> list[tuple[int, str, int, int]]:
        f = {name: i for i, name in enumerate(STAT_FIELDS)}
        out = []
        for uid, day, d in self.daily_stats(since):
            messages = sum(d[f[n]] for n in ("spam_learned", "innocent_learned",
                                               "spam_classified", "innocent_classified"))
            messages -= d[f["spam_corpusfed"]] + d[f["innocent_corpusfed"]]
            out.append((uid, day, messages,
                        d[f["spam_misclassified"]] + d[f["innocent_misclassified"]]))
        return out

    def preference_values(self, key: str) -> dict[int, str]:
        return {u: v for (u, k), v in self.prefs.items() if k == key}

    def watch_states(self, uid: int, keys) -> dict[str, str]:
        found = {}
        for key in keys:
            row = self.watch_rows.get((uid, key))
            if row is not None:
                found[key] = row[0]
        return found

    def learned_records(self, uid: int, keys) -> dict[str, dict[str, tuple[int, float]]]:
        found: dict[str, dict[str, tuple[int, float]]] = {}
        for key in keys:
            for klass in ("spam", "innocent"):
                row = self.learned_rows.get((uid, key, klass))
                if row is not None:
                    found.setdefault(key, {})[klass] = (row[0], row[1])
        return found

    def signature_states(self, ids) -> dict[str, tuple[int, str, str]]:
        found = {}
        for sig_id in ids:
            entry = self.signatures.get(sig_id)
            if entry is not None:
                found[sig_id] = (entry[0], entry[2].result, entry[2].trained)
        return found

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        import copy

        # The undo copies what the batches can change: the token, source and learned-record
        # rows they name (a copy of every token row made a group member's commit cost 0.5 s
        # on half the SpamAssassin corpus), the other tables whole (small; their rows are
        # replaced or are short lists).
        named: dict[str, set[tuple]] = {
            "tokens": {(uid, t) for uid, batch in items for t in (*batch.tokens, *batch.weights)},
            "source_rows": {(uid, ip) for uid, batch in items for ip in batch.sources},
            "learned_rows": {(uid, change.key, change.klass) for uid, batch in items
                             for change in batch.learned},
        }
        rows = {name: {key: copy.copy(getattr(self, name).get(key)) for key in keys}
                for name, keys in named.items()}
        saved = {name: copy.deepcopy(getattr(self, name))
                 for name in ("stat_rows", "daily")}
        saved.update((name, dict(getattr(self, name)))
                     for name in ("signatures", "watch_rows"))
        try:
            for uid, batch in items:
                self.commit(uid, batch)
        except BaseException:
            for name, value in saved.items():
                setattr(self, name, value)
            for name, old_rows in rows.items():
                table = getattr(self, name)
                for key, row in old_rows.items():
                    if row is None:
                        table.pop(key, None)
                    else:
                        table[key] = row
            raise

    def commit(self, uid: int, batch: Batch) -> None:
        update = batch.signature_update
        if update is not None:
            entry = self.signatures.get(update.id)
            if entry is None or entry[0] != uid or entry[2].trained != update.expected:
                raise ConflictError(f"signature {update.id} changed under us")
        for watch in batch.watch:
            recorded = self.watch_rows.get((uid, watch.key))
            if watch.expected != watch.ANY and (recorded[0] if recorded else None) != watch.expected:
                raise ConflictError(f"watch state of {watch.key[:40]} changed under us")
        taken: dict[tuple[int, str, str], int] = {}
        for change in batch.learned:
            if change.copies < 0:
                row = self.learned_rows.get((uid, change.key, change.klass))
                ident = (uid, change.key, change.klass)
                taken[ident] = taken.get(ident, 0) - change.copies
                if row is None or row[0] < taken[ident]:
                    raise ConflictError(f"learned record of {change.key[:40]} changed under us")
        sig = batch.new_signature
        if sig is not None and sig.id in self.signatures:
            raise DuplicateSignatureError(f"signature {sig.id} exists already")
        # Validation is done: from here on nothing can fail, so the batch is atomic.
        if update is not None:
            old = self.signatures[update.id][2]
            tokens, freqs, applied = Signature.unpack_data(update.data)
            self.signatures[update.id] = (uid, self.signatures[update.id][1], Signature(
                old.id, old.uid, old.created, old.result, update.trained, update.counter,
                old.source_ip, tokens, freqs, applied, Signature.unpack_model(update.data),
                *Signature.unpack_groups(update.data)))
        for token, (spam, innocent) in batch.tokens.items():
            row = self.tokens.get((uid, token))
            if row is None:
                if spam > 0 or innocent > 0:
                    self.tokens[(uid, token)] = [max(spam, 0), max(innocent, 0), batch.day, 0.0]
            elif spam or innocent:
                row[0] = max(row[0] + spam, 0)
                row[1] = max(row[1] + innocent, 0)
                row[2] = batch.day
        for token, delta in batch.weights.items():
            if not delta:
                continue
            row = self.tokens.get((uid, token))
            if row is None:
                self.tokens[(uid, token)] = [0, 0, batch.day, delta]
            else:
                row[3] += delta
                row[2] = batch.day
        deltas = [batch.stats.get(f, 0) for f in STAT_FIELDS]
        if any(deltas):
            row = self.stat_rows.setdefault(uid, [0] * len(STAT_FIELDS))
            day = self.daily.setdefault((uid, batch.day), [0] * len(STAT_FIELDS))
            for i, d in enumerate(deltas):
                row[i] = max(row[i] + d, 0)
                day[i] += d
        if batch.new_signature is not None:
            self.signatures[batch.new_signature.id] = (uid, batch.day, batch.new_signature)
        for watch in batch.watch:
            self.watch_rows[(uid, watch.key)] = (watch.klass, watch.at)
        for change in batch.learned:
            ident = (uid, change.key, change.klass)
            row = self.learned_rows.setdefault(ident, [0, 0.0, change.at])
            row[0] += change.copies
            row[1] += change.step
            if row[0] <= 0:
                del self.learned_rows[ident]
        for ip, (spam, innocent) in batch.sources.items():
            row = self.source_rows.setdefault((uid, ip), [0, 0, batch.day])
            row[0] = max(row[0] + spam, 0)
            row[1] = max(row[1] + innocent, 0)
            row[2] = batch.day

    def _purge_rows(self, rule):
        from spamsift.filter.engine.purging import PREDICATES

        matches = PREDICATES[rule.name]
        if rule.table == "dspam_token_data":
            for (uid, token), (spam, innocent, day, _weight) in sorted(self.tokens.items()):
                if (day < rule.before and (rule.uids is None or uid in rule.uids)
                        and matches(spam, innocent)):
                    yield (uid, token), self.tokens
        elif rule.table == "dspam_signature_data":
            for sig_id, (uid, day, _sig) in sorted(self.signatures.items()):
                if day < rule.before and (rule.uids is None or uid in rule.uids):
                    yield sig_id, self.signatures
        elif rule.table == "spamsift_watch_messages":
            before = int(rule.before)
            for (uid, key), (_klass, at) in sorted(self.watch_rows.items()):
                if (at < before and key not in self.signatures
                        and (rule.uids is None or uid in rule.uids)):
                    yield (uid, key), self.watch_rows
        elif rule.table == "spamsift_learned_messages":
            before = int(rule.before)
            for ident, (_copies, _step, at) in sorted(self.learned_rows.items()):
                if at < before and (rule.uids is None or ident[0] in rule.uids):
                    yield ident, self.learned_rows
        else:
            for (uid, ip), row in sorted(self.source_rows.items()):
                if row[2] < rule.before and (rule.uids is None or uid in rule.uids):
                    yield (uid, ip), self.source_rows

    def purge_step(self, rule, limit: int, cursor):
        doomed = [(k, table) for k, table in self._purge_rows(rule)][:limit]
        for key, table in doomed:
            del table[key]
        return len(doomed), (doomed[-1][0] if len(doomed) == limit else None)

    def purge_count(self, rule) -> int:
        return sum(1 for _ in self._purge_rows(rule))

    def initialize(self) -> list[str]:
        return []

    def check(self) -> list[str]:
        return []

    def schema_problems(self) -> list[str]:
        return []

    def write_problems(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


if TYPE_CHECKING:
    def _is_a_store(store: MemoryStore) -> Store:  # mypy checks the whole contract here
        return store
