"""DSPAM's groups (filter/engine/groups.py): configuration, GroupConfig import, membership,
and each type's effect on classification and on exactly what is written and unlearned."""

from __future__ import annotations

import itertools

import pytest

from spamsift.filter.engine import config, groups
from spamsift.filter.engine.agent import Agent
from spamsift.filter.engine.errors import ConfigError
from spamsift.filter.engine.groups import Group
from spamsift.filter.engine.store.base import open_store
from spamsift.filter.engine.tokenizer import token_id

HAM = [f"From: Bob <bob{n}@example.com>\nSubject: lunch {n}\n\nHello Alice, lunch at noon "
       f"tomorrow in the garden? Regards, Bob {n}\n".encode() for n in range(60)]
SPAM = [f"From: Deals <deals{n}@promo.biz>\nSubject: cheap pills {n}\n\nBuy cheap pills "
        f"now, limited offer, casino winner click {n}\n".encode() for n in range(60)]
PROBE = (b"From: Offers <win@promo.biz>\nSubject: cheap pills\n\nBuy cheap pills now, "
         b"casino winner, limited offer\n")
MEMBER = "new@example.org"


def make_agent(group_list=(), store=None, **settings) -> Agent:
    counter = itertools.count()
    base = config.Settings({}).replace(**settings) if settings else config.Settings({})
    return Agent(base.with_groups(tuple(group_list)), store or open_store("memory://"),
                 clock=lambda: 1764000000.0, make_id=lambda: f"{next(counter):030x}")


def teach(agent: Agent, user: str, spam: int = 40, ham: int = 40) -> None:
    ctx = agent.user(user)
    for raw in SPAM[:spam]:
        agent.learn(ctx, raw, "spam")
    for raw in HAM[:ham]:
        agent.learn(ctx, raw, "innocent")


def rows(agent: Agent, user: str) -> dict[tuple[int, int], tuple[int, int, float]]:
    """Every token row of `user`: (uid, token) -> (spam, innocent, weight)."""
    uid = agent.store.uid(user, create=False)
    return {key: (r[0], r[1], r[3]) for key, r in agent.store.tokens.items() if key[0] == uid}


def probe_counts(agent: Agent, user: str) -> dict[int, tuple[int, int]]:
    freq = agent.tokenizer(agent.settings).tokenize(PROBE)
    uid = agent.store.uid(user, create=False)
    return agent.store.lookup(uid, [token_id(t) for t in freq])


# -- configuration -----------------------------------------------------------------------------
def test_groups_load_from_toml_and_survive_per_user_settings(tmp_path):
    path = tmp_path / "spamsift.toml"
    path.write_text('training_mode = "teft"\n\n[groups.site]\ntype = "merged"\n'
                    'members = ["*@Example.ORG", "-ceo@example.org"]\n\n'
                    '[groups.world]\ntype = "global"\nmembers = ["*"]\n')
    settings = config.load(str(path), {}, use_cache=False)
    assert settings.groups == (Group("site", "merged", ("*@example.org", "-ceo@example.org")),
                               Group("world", "global", ("*",)))
    assert settings.for_user({"training_mode": "toe"}).groups == settings.groups
    assert settings.replace(whitelist=False).groups == settings.groups


@pytest.mark.parametrize("table, message", [
    ('[groups.site]\ntype = "pooled"\nmembers = ["*"]\n', "type must be one of"),
    ('[groups.site]\ntype = "merged"\nmembers = []\n', "non-empty list"),
    ('[groups.site]\ntype = "merged"\nmembers = ["a b"]\n', "member 'a b'"),
    ('[groups."../x"]\ntype = "merged"\nmembers = ["*"]\n', "the group's name"),
    ('[groups.site]\ntype = "merged"\nmembers = ["*"]\nweight = 2\n', "unknown key"),
    ('[groups.site]\ntype = "merged"\nmembers = ["*@"]\n', "names no valid domain"),
])
def test_bad_groups_are_configuration_errors(tmp_path, table, message):
    path = tmp_path / "spamsift.toml"
    path.write_text(table)
    with pytest.raises(ConfigError, match=message):
        config.load(str(path), {}, use_cache=False)


def test_member_patterns_and_exclusions():
    g = Group("site", "merged", ("*@example.org", "bob", "-ceo@example.org", "-*@lab.org",
                                 "x@lab.org"))
    assert g.includes("ann@example.org") and g.includes("bob")
    assert not g.includes("ceo@example.org") and not g.includes("x@lab.org")
    assert not g.includes("ann@example.com") and not g.includes("example.org")
    everyone = Group("world", "global", ("*", "-spamtrap"))
    assert everyone.includes("anyone@anywhere.net") and not everyone.includes("spamtrap")
    assert Group("c", "classification", ("a", "b", "*@x.org", "-b")).named_members() == ("a",)


def test_membership_one_per_type_and_never_a_group_itself():
    site = Group("site", "merged", ("*",))
    other = Group("other", "merged", ("*",))
    world = Group("world", "global", ("*",))
    c1 = Group("c1", "classification", ("a", "b"))
    c2 = Group("c2", "classification", ("a", "c"))
    m = groups.membership((site, other, world, c1, c2), "a")
    assert m.merged is site and m.global_ is world and m.classification == (c1, c2)
    assert [name for _g, name in m.peers(m.classification, "a")] == ["b", "c"]
    assert not groups.membership((site, world), "site")   # a group's data is nobody's member
    assert not groups.membership((site, world), "world")
    assert not groups.membership((c1,), "z")


def test_dspam_groupconfig_imports_every_type_and_member_form():
    text = """# DSPAM GroupConfig
sales:shared:alice,bob
office:shared,managed:carol@example.org,dave@example.org
site:merged:*,-ceo@example.org,-*@lab.example.org
branch:merged:*@branch.example.org
peers:classification:erin,frank
antivirus:inoculation:gina,hank,ivan
global:classification:*globaluser
mixed:classification:jill,kate,*trainer
"""
    imported = {g.name: g for g in groups.import_groupconfig(text)}
    assert imported["sales"] == Group("sales", "shared", ("alice", "bob"))
    assert imported["office"].type == "shared"
    assert imported["site"] == Group("site", "merged",
                                     ("*", "-ceo@example.org", "-*@lab.example.org"))
    assert imported["branch"].members == ("*@branch.example.org",)
    assert imported["peers"] == Group("peers", "classification", ("erin", "frank"))
    assert imported["antivirus"] == Group("antivirus", "inoculation", ("gina", "hank", "ivan"))
    # A classification member written *user is a global user: its own data, a global group.
    assert imported["globaluser"] == Group("globaluser", "global", ("*",))
    assert "global" not in imported
    assert imported["trainer"] == Group("trainer", "global", ("jill", "kate"))
    assert imported["mixed"] == Group("mixed", "classification", ("jill", "kate"))
    # What it imported loads back from TOML unchanged.
    toml = "\n".join(g.as_toml() for g in imported.values())
    import tomllib

    assert groups.parse(tomllib.loads(toml)["groups"], "x") == tuple(imported.values())


@pytest.mark.parametrize("line, message", [
    ("site:pooled:*", "unknown group type"),
    ("site:merged", "name:type:members"),
    ("site:merged:*trainer", "belongs in a classification"),
    ("site:merged:a b", "member 'a b'"),
])
def test_bad_groupconfig_lines_are_errors(line, message):
    with pytest.raises(ConfigError, match=message):
        groups.import_groupconfig(line)
