"""DSPAM's groups: which other data a user's classification reads, and whom it asks.

A group is a site-wide configuration table (``[groups.NAME]``, `parse`) with a type and member
patterns; `membership` says which groups apply to one user. The types (DSPAM reference §5.6):

* ``merged``: the group's token counts, totals and model weights are added to the member's
  when a message is scored; nothing the member does is written to the group.
* ``global``: while the member is immature (fewer than `GLOBAL_INNOCENT` innocent or
  `GLOBAL_SPAM` spam learned) or in NOTRAIN, the group's data classifies the message.
* ``classification``: when the member is unsure of an innocent verdict, the other named
  members are asked; a spam answer wins and the member learns the message as spam.
* ``inoculation``: a member's spam report inoculates the other named members
  (``--source=inoculation`` rules) with the message.
* ``shared``: the members' tokens, totals and model weights are the group's (one dictionary);
  signatures, statistics and quarantines stay each member's own.

A group's own data is a user of the group's name (`spamsift train --user NAME`). Group
names are never members of any group: the data a group contributes must not read itself.

Member patterns: ``user``, ``*`` (everyone), ``*@domain``, and exclusions ``-user`` and
``-*@domain``, which win over every inclusion. Only named members (``user``) are asked by a
classification group or inoculated by an inoculation group: a pattern has no list to ask.
At most one group of each of the types shared, merged and global applies to a user (the
first in the configuration that includes them); every matching classification and
inoculation group applies.

`import_groupconfig` reads DSPAM's ``GroupConfig`` (``name:type:member,member``).
"""

from __future__ import annotations

from spamsift.filter.engine.errors import ConfigError, InvalidUserError

TYPES = ("shared", "merged", "global", "classification", "inoculation")
ONE_PER_USER = ("shared", "merged", "global")

# DSPAM's maturity for consulting a global group (agent: "< 1000 innocent or < 250 spam").
GLOBAL_INNOCENT = 1000
GLOBAL_SPAM = 250


class Group:
    """One configured group: `name` (its data's user name), `type`, member patterns."""

    __slots__ = ("name", "type", "members")

    def __init__(self, name: str, type: str, members: tuple[str, ...]) -> None:  # noqa: A002
        self.name = name
        self.type = type
        self.members = members

    def __repr__(self) -> str:
        return f"Group({self.name!r}, {self.type!r}, {list(self.members)!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Group) and (self.name, self.type, self.members)
                == (other.name, other.type, other.members))

    def includes(self, user: str) -> bool:
        """Whether `user` (a canonical name) is a member: some pattern includes it and no
        exclusion does."""
        included = False
        for pattern in self.members:
            if pattern.startswith("-"):
                if _matches(pattern[1:], user):
                    return False
            elif not included and _matches(pattern, user):
                included = True
        return included

    def named_members(self) -> tuple[str, ...]:
        """The members named one by one (not through a pattern), exclusions applied."""
        return tuple(p for p in self.members
                     if not p.startswith(("-", "*")) and self.includes(p))

    def as_toml(self) -> str:
        """This group as a ``[groups.NAME]`` table."""
        import json

        members = ", ".join(json.dumps(m) for m in self.members)
        return f'[groups.{self.name}]\ntype = "{self.type}"\nmembers = [{members}]\n'


def _matches(pattern: str, user: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*@"):
        return user.rpartition("@")[2] == pattern[2:] and "@" in user
    return pattern == user


class Membership:
    """The groups that apply to one user, by type (None or () when none does)."""

    __slots__ = ("shared", "merged", "global_", "classification", "inoculation")

    def __init__(self, shared: Group | None = None, merged: Group | None = None,
                 global_: Group | None = None, classification: tuple[Group, ...] = (),
                 inoculation: tuple[Group, ...] = ()) -> None:
        self.shared = shared
        self.merged = merged
        self.global_ = global_
        self.classification = classification
        self.inoculation = inoculation

    def __bool__(self) -> bool:
        return bool(self.shared or self.merged or self.global_ or self.classification
                    or self.inoculation)

    def all(self) -> list[Group]:
        one = [g for g in (self.shared, self.merged, self.global_) if g is not None]
        return one + list(self.classification) + list(self.inoculation)

    def peers(self, groups: tuple[Group, ...], user: str) -> list[tuple[Group, str]]:
        """(group, member) of each named member of `groups` other than `user`, each member
        once (the first group naming it)."""
        seen = {user}
        out = []
        for group in groups:
            for member in group.named_members():
                if member not in seen:
                    seen.add(member)
                    out.append((group, member))
        return out


NO_GROUPS = Membership()


def membership(groups: tuple[Group, ...], user: str) -> Membership:
    """Which of the configured `groups` apply to `user`."""
    if not groups or any(g.name == user for g in groups):
        return NO_GROUPS  # a group's own data is nobody's member
    found: dict[str, list[Group]] = {t: [] for t in TYPES}
    for group in groups:
        if group.includes(user):
            found[group.type].append(group)
    if not any(found.values()):
        return NO_GROUPS
    return Membership(next(iter(found["shared"]), None), next(iter(found["merged"]), None),
                      next(iter(found["global"]), None), tuple(found["classification"]),
                      tuple(found["inoculation"]))


def immature(spam_learned: int, innocent_learned: int) -> bool:
    """Whether a user's own data is too young to classify alone (global groups)."""
    return innocent_learned < GLOBAL_INNOCENT or spam_learned < GLOBAL_SPAM


# -- configuration ---------------------------------------------------------------------------
def _member(pattern: object, where: str) -> str:
    """A member pattern, checked and in canonical form."""
    from spamsift.filter.engine import users

    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: a member must be a non-empty string, not {pattern!r}")
    negated = pattern.startswith("-")
    body = pattern[1:] if negated else pattern
    if body == "*":
        return pattern
    if body.startswith("*@"):
        domain = body[2:]
        try:
            users.validate("x@" + domain)
        except InvalidUserError:
            raise ConfigError(f"{where}: {pattern!r} names no valid domain") from None
        return ("-" if negated else "") + "*@" + domain.lower()
    try:
        return ("-" if negated else "") + users.validate(body)
    except InvalidUserError as exc:
        raise ConfigError(f"{where}: member {pattern!r}: {exc}") from None


def parse(tables: object, origin: str) -> tuple[Group, ...]:
    """The ``[groups.NAME]`` tables of a configuration, checked, in file order."""
    from spamsift.filter.engine import users

    if not isinstance(tables, dict):
        raise ConfigError(f"{origin}: groups must be tables, [groups.NAME]")
    out = []
    for name, table in tables.items():
        where = f"{origin}: [groups.{name}]"
        try:
            canonical = users.validate(str(name))
        except InvalidUserError as exc:
            # Its data is stored under its name, so the name is a user name like any other.
            raise ConfigError(f"{where}: the group's name: {exc}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with type and members")
        unknown = sorted(set(table) - {"type", "members"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (type, members)")
        kind = table.get("type")
        if kind not in TYPES:
            raise ConfigError(f"{where}: type must be one of {', '.join(TYPES)}, "
                              f"not {kind!r}")
        members = table.get("members", [])
        if not isinstance(members, list) or not members:
            raise ConfigError(f"{where}: members must be a non-empty list of patterns")
        out.append(Group(canonical, str(kind),
                         tuple(_member(m, where) for m in members)))
    names = [g.name for g in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{origin}: two groups named alike after canonical forms")
    return tuple(out)


# -- DSPAM's GroupConfig ---------------------------------------------------------------------
def import_groupconfig(text: str, origin: str = "GroupConfig") -> tuple[Group, ...]:
    """DSPAM's GroupConfig lines (``name:type:member,member,...``; ``#`` comments) as groups.

    ``shared,managed`` is shared (spamsift's quarantines are always the members' own). A
    classification member written ``*user`` is a global user: it becomes a global group named
    after that user (whose data DSPAM kept under that name), of the line's other members, or
    of everyone when the line names none.
    """
    tables: dict[str, dict[str, object]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{origin}:{number}"
        parts = line.split(":")
        if len(parts) != 3:
            raise ConfigError(f"{where}: expected name:type:members, not {line[:60]!r}")
        name, kind, member_text = (p.strip() for p in parts)
        kind = kind.lower().split(",")[0]  # "shared,managed"
        if kind not in ("shared", "merged", "classification", "inoculation"):
            raise ConfigError(f"{where}: unknown group type {parts[1]!r}")
        members = [m.strip() for m in member_text.split(",") if m.strip()]
        global_users = [m[1:] for m in members if m.startswith("*") and m != "*"
                        and not m.startswith("*@")]
        plain = [m for m in members if m[1:] not in global_users or not m.startswith("*")]
        if kind == "classification" and global_users:
            for global_user in global_users:
                tables[global_user] = {"type": "global", "members": plain or ["*"]}
            plain = [m for m in plain if m not in ("*",)]
            if len(plain) < 2:
                continue  # nobody left to ask one another
        elif global_users:
            raise ConfigError(f"{where}: *user (a global user) belongs in a classification "
                              "group")
        if name in tables:
            raise ConfigError(f"{where}: group {name!r} defined twice")
        tables[name] = {"type": kind, "members": plain}
    return parse(tables, origin)


# -- what a group contributed ------------------------------------------------------------------
class Contribution:
    """What one group did, from its own data's counters: `decided_spam` and
    `decided_innocent` count the verdicts it decided (a merged, global or classification
    group's verdict that differed from the member's own data; an inoculation group's spam
    reports it spread, as spam); `spam_learned` and `innocent_learned` are its data's totals
    (a shared group's: everything its members learned). All 0 when it has no data yet."""

    __slots__ = ("group", "uid", "decided_spam", "decided_innocent", "spam_learned",
                 "innocent_learned")

    def __init__(self, group: Group, uid: int | None, stats) -> None:
        self.group = group
        self.uid = uid
        shared = group.type == "shared"  # its counters are its members' messages
        self.decided_spam = 0 if shared or stats is None else stats.spam_classified
        self.decided_innocent = 0 if shared or stats is None else stats.innocent_classified
        self.spam_learned = stats.spam_learned if stats is not None else 0
        self.innocent_learned = stats.innocent_learned if stats is not None else 0

    @property
    def decided(self) -> int:
        return self.decided_spam + self.decided_innocent

    def as_dict(self) -> dict[str, object]:
        return {"name": self.group.name, "type": self.group.type,
                "members": list(self.group.members), "has_data": self.uid is not None,
                "decided": self.decided, "decided_spam": self.decided_spam,
                "decided_innocent": self.decided_innocent, "spam_learned": self.spam_learned,
                "innocent_learned": self.innocent_learned}

    def line(self) -> str:
        """One line for people: type, members, what it decided or holds."""
        members = ",".join(self.group.members)
        if self.group.type == "shared":
            what = (f"one dictionary: {self.spam_learned} spam, {self.innocent_learned} "
                    "innocent learned")
        elif self.group.type == "inoculation":
            what = f"spread {self.decided_spam} spam reports"
        else:
            what = (f"decided {self.decided} verdicts ({self.decided_spam} spam, "
                    f"{self.decided_innocent} innocent); its data: {self.spam_learned} spam, "
                    f"{self.innocent_learned} innocent learned")
        if self.uid is None and self.group.type not in ("classification", "inoculation"):
            what = "no data yet (spamsift train --user " + self.group.name + ")"
        return f"{self.group.name} ({self.group.type}; members {members}): {what}"


def contributions(store, configured: tuple[Group, ...]) -> list[Contribution]:
    """What each configured group contributed, read from its data's counters (one query for
    every user's counters)."""
    every = store.all_stats() if configured else {}
    out = []
    for group in configured:
        uid = store.uid(group.name, create=False)
        out.append(Contribution(group, uid, every.get(uid) if uid is not None else None))
    return out
