"""`PassThrough`: an `AgentStore` that hands every call to the store it wraps.

The wrappers an `agent.Agent` is given in place of a store -- the corpus learner's
write-behind cache, the watchers' state carrier, reclassify's leave-one-out view -- each
change a few of its methods. They subclass this and override exactly those; the rest is
passed through here, once, method by method (no ``__getattr__``: mypy holds every wrapper to
`AgentStore`, and a method outside it fails loudly instead of reaching the store)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

    from spamsift.filter.engine.store.base import AgentStore, Batch, Stats
    from spamsift.filter.engine.store.signature import Signature


class PassThrough:
    """Every `AgentStore` method, handed to `store`."""

    def __init__(self, store: AgentStore) -> None:
        self.store = store

    def uid(self, username: str, create: bool = True) -> int | None:
        return self.store.uid(username, create)

    def username(self, uid: int) -> str | None:
        return self.store.username(uid)

    def preferences(self, uid: int) -> dict[str, str]:
        return self.store.preferences(uid)

    def signature(self, signature_id: str) -> Signature | None:
        return self.store.signature(signature_id)

    def stats(self, uid: int) -> Stats:
        return self.store.stats(uid)

    def lookup(self, uid: int, tokens: Collection[int]) -> dict[int, tuple[int, int]]:
        return self.store.lookup(uid, tokens)

    def weights(self, uid: int, tokens: Collection[int]) -> dict[int, float]:
        return self.store.weights(uid, tokens)

    def counts_and_weights(self, uid: int, tokens: Collection[int]
                           ) -> tuple[dict[int, tuple[int, int]], dict[int, float]]:
        return self.store.counts_and_weights(uid, tokens)

    def counts_and_weights_of(self, uids: Collection[int], tokens: Collection[int]
                              ) -> dict[int, tuple[dict[int, tuple[int, int]],
                                                   dict[int, float]]]:
        return self.store.counts_and_weights_of(uids, tokens)

    def commit(self, uid: int, batch: Batch) -> None:
        self.store.commit(uid, batch)

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        self.store.commit_group(items)
