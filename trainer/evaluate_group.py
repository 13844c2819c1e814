"""``spamsift evaluate --group NAME``: the replay as a new member of a merged or global group,
whose data is read from the site's store and never written."""

from __future__ import annotations

from contextlib import contextmanager

from spamsift.filter.engine.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def as_member(settings, name: str) -> Iterator[tuple[object, object]]:
    """(settings making every user a member of group `name` alone, a store to replay on in
    which the group's data is the site's), while the site's store is open."""
    from spamsift.filter.engine import users as users_mod
    from spamsift.filter.engine.groups import Group
    from spamsift.filter.engine.store.base import open_store

    name = users_mod.validate(name)
    group = next((g for g in settings.groups if g.name == name), None)
    if group is None or group.type not in ("merged", "global"):
        raise UsageError(f"--group {name}: not a merged or global group of the configuration")
    source = open_store(settings.storage_url, settings.storage_timeout, create=False)
    try:
        member = Group(group.name, group.type, ("*",))
        yield settings.with_groups((member,)), group_view(source, name)
    finally:
        source.close()


def group_view(source, group_name: str):
    """A private memory store in which group `group_name`'s data is read from `source` (the
    site's store) and never written: a replay as a new member of the group."""
    from spamsift.filter.engine.store.memory import MemoryStore

    real = source.uid(group_name, create=False)
    if real is None:
        raise UsageError(f"group {group_name} has no data yet (spamsift train --user "
                         f"{group_name})")

    class GroupView(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.group = self.uid(group_name)

        def counts_and_weights_of(self, uids, tokens):
            tokens = list(tokens)
            out = super().counts_and_weights_of([u for u in uids if u != self.group], tokens)
            if self.group in uids:
                out[self.group] = source.counts_and_weights(real, tokens)
            return out

        def counts_and_weights(self, uid, tokens):
            if uid == self.group:
                return source.counts_and_weights(real, tokens)
            return super().counts_and_weights(uid, tokens)

        def lookup(self, uid, tokens):
            return source.lookup(real, tokens) if uid == self.group else super().lookup(
                uid, tokens)

        def weights(self, uid, tokens):
            return source.weights(real, tokens) if uid == self.group else super().weights(
                uid, tokens)

        def stats(self, uid):
            return source.stats(real) if uid == self.group else super().stats(uid)

        def commit(self, uid, batch) -> None:
            if uid != self.group:  # the group's own counters (verdicts decided) stay real
                super().commit(uid, batch)

    return GroupView()
