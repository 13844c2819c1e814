"""DSPAM's groups (filter/engine/groups.py): configuration, GroupConfig import, membership,
and each type's effect on classification and on exactly what is written and unlearned."""

from __future__ import annotations

import itertools
import json
import os

import pytest

from spamsift.filter.engine import config, groups
from spamsift.filter.engine.agent import Agent
from spamsift.filter.engine.errors import ConfigError, ForeignSignatureError
from spamsift.filter.engine.groups import Group
from spamsift.filter.engine.store.base import open_store
from spamsift.filter.engine.store.signature import Signature
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


# -- merged ------------------------------------------------------------------------------------
def test_merged_group_counts_are_added_and_nothing_is_written_to_the_group():
    agent = make_agent([Group("site", "merged", ("*",))])
    teach(agent, "site")
    alone = make_agent()
    alone.store = agent.store  # the same data, no groups
    assert not alone.process(alone.user(MEMBER), PROBE, classify_only=True).is_spam
    site_before = rows(agent, "site")
    site_stats = agent.store.stats(agent.store.uid("site"))
    outcome = agent.process(agent.user(MEMBER), PROBE)
    assert outcome.is_spam
    assert rows(agent, "site") == site_before  # not one token of the member's mail
    after = agent.store.stats(agent.store.uid("site"))
    assert after.spam_learned == site_stats.spam_learned
    # ... but the verdict it decided is counted on the group.
    assert after.spam_classified == site_stats.spam_classified + 1
    # The member learned the message as spam, in its own rows only.
    member = agent.store.uid(MEMBER, create=False)
    assert all(s == 1 and i == 0 for s, i in probe_counts(agent, MEMBER).values())
    sig = agent.store.signature(outcome.signature)
    assert sig.token_uid == member and sig.trained == "spam"


def test_correcting_a_merged_verdict_undoes_exactly_the_members_own_training():
    agent = make_agent([Group("site", "merged", ("*",))])
    teach(agent, "site")
    for raw in HAM[40:45]:
        agent.process(agent.user(MEMBER), raw)
    member_before = rows(agent, MEMBER)
    site_before = rows(agent, "site")
    outcome = agent.process(agent.user(MEMBER), PROBE)
    assert outcome.is_spam
    agent.retrain(MEMBER, outcome.signature, "innocent")
    after = rows(agent, MEMBER)
    # Every token the message added to spam is gone again, and each was added to innocent
    # at least once (test-conditional training may add more passes).
    for key, (spam, innocent, _w) in after.items():
        before = member_before.get(key, (0, 0, 0.0))
        assert spam == before[0]
        assert innocent >= before[1]
    assert rows(agent, "site") == site_before  # the group's data is never unlearned
    # The same correction again changes nothing (a drag seen twice).
    again = agent.retrain(MEMBER, outcome.signature, "innocent")
    assert again.action == "unchanged" and rows(agent, MEMBER) == after


def test_the_groups_own_training_never_touches_a_member():
    agent = make_agent([Group("site", "merged", ("*",))])
    teach(agent, "site", spam=20, ham=20)
    for raw in HAM[40:43] + SPAM[40:43]:
        agent.process(agent.user(MEMBER), raw)
    member_before = rows(agent, MEMBER)
    outcome = agent.process(agent.user("site"), HAM[50])
    agent.retrain("site", outcome.signature, "spam" if not outcome.is_spam else "innocent")
    assert rows(agent, MEMBER) == member_before


# -- global ------------------------------------------------------------------------------------
def test_a_global_group_classifies_for_an_immature_member_only():
    agent = make_agent([Group("world", "global", ("*",))])
    teach(agent, "world")
    outcome = agent.process(agent.user(MEMBER), PROBE)
    assert outcome.is_spam  # the member alone knows nothing: the global group decided
    world = agent.store.stats(agent.store.uid("world"))
    assert world.spam_classified == 1
    assert rows(agent, "world") and probe_counts(agent, MEMBER)
    # A mature member (DSPAM: 1,000 innocent and 250 spam learned) is on its own.
    from spamsift.filter.engine.store.base import Batch

    mature = agent.store.uid("mature@example.org")
    batch = Batch("2026-11-24")
    batch.add_stat("innocent_learned", groups.GLOBAL_INNOCENT)
    batch.add_stat("spam_learned", groups.GLOBAL_SPAM)
    agent.store.commit(mature, batch)
    assert not agent.process(agent.user("mature@example.org"), PROBE).is_spam
    # ... unless it never trains (NOTRAIN): then the global group is what it has.
    ctx = agent.user("mature@example.org")
    assert agent.process(ctx, PROBE, mode="notrain").is_spam


def test_a_global_decision_is_corrected_from_the_members_data_only():
    agent = make_agent([Group("world", "global", ("*",))])
    teach(agent, "world")
    world_before = rows(agent, "world")
    outcome = agent.process(agent.user(MEMBER), PROBE)
    agent.retrain(MEMBER, outcome.signature, "innocent")
    assert rows(agent, "world") == world_before
    assert all(s == 0 for s, _i in probe_counts(agent, MEMBER).values())


# -- classification ----------------------------------------------------------------------------
def test_an_unsure_member_asks_its_peers_and_a_spam_answer_wins():
    peers = Group("peers", "classification", ("anna", MEMBER))
    agent = make_agent([peers], unsure_band=[-1000.0, 0.0])  # every innocent verdict unsure
    teach(agent, "anna")
    outcome = agent.process(agent.user(MEMBER), PROBE)
    assert outcome.is_spam and outcome.score >= 0
    sig = agent.store.signature(outcome.signature)
    assert sig.trained == "spam"  # the member learned it as spam
    assert all(s == 1 for s, _i in probe_counts(agent, MEMBER).values())
    assert agent.store.stats(agent.store.uid("peers")).spam_classified == 1
    # A member sure of its innocent verdict asks nobody.
    sure = make_agent([peers], unsure_band=[-0.001, 0.0])
    sure.store = agent.store
    assert not sure.process(sure.user(MEMBER), HAM[0], classify_only=True).is_spam


def test_a_peer_answering_innocent_changes_nothing():
    peers = Group("peers", "classification", ("anna", MEMBER))
    agent = make_agent([peers], unsure_band=[-1000.0, 0.0])
    teach(agent, "anna")
    outcome = agent.process(agent.user(MEMBER), HAM[0])
    assert not outcome.is_spam
    assert agent.store.uid("peers", create=False) is None  # no verdict decided, nothing kept


# -- inoculation -------------------------------------------------------------------------------
def test_a_spam_report_inoculates_the_other_members_once():
    av = Group("av", "inoculation", ("anna", "ben", MEMBER))
    agent = make_agent([av], test_conditional_training=False)
    for user in ("anna", "ben"):
        teach(agent, user, spam=0, ham=3)
    outcome = agent.process(agent.user(MEMBER), PROBE)
    assert not outcome.is_spam
    anna_before = probe_counts(agent, "anna")
    agent.retrain(MEMBER, outcome.signature, "spam")
    for peer in ("anna", "ben"):
        got = probe_counts(agent, peer)
        # DSPAM's inoculation: a token rare in both classes +5, others +2.
        assert got and all(s in (2, 5) for s, _i in got.values())
        assert agent.store.stats(agent.store.uid(peer)).spam_corpusfed == 1
    assert agent.store.stats(agent.store.uid("av")).spam_classified == 1
    after = {p: probe_counts(agent, p) for p in ("anna", "ben")}
    # Taking the report back leaves the peers' inoculation (theirs now), and reporting it
    # again does not inoculate a second time.
    agent.retrain(MEMBER, outcome.signature, "innocent")
    agent.retrain(MEMBER, outcome.signature, "spam")
    assert {p: probe_counts(agent, p) for p in ("anna", "ben")} == after
    assert agent.store.signature(outcome.signature).flags & Signature.INOCULATED
    assert anna_before != after["anna"]


def test_an_innocent_report_inoculates_nobody():
    av = Group("av", "inoculation", ("anna", MEMBER))
    agent = make_agent([av])
    teach(agent, "anna", spam=0, ham=3)
    teach(agent, MEMBER)
    outcome = agent.process(agent.user(MEMBER), PROBE)
    assert outcome.is_spam
    before = rows(agent, "anna")
    agent.retrain(MEMBER, outcome.signature, "innocent")
    assert rows(agent, "anna") == before


# -- shared ------------------------------------------------------------------------------------
def test_shared_members_train_one_dictionary_with_private_signatures():
    office = Group("office", "shared", ("anna", "ben"))
    agent = make_agent([office])
    teach(agent, "anna")  # trains the group's dictionary
    assert not rows(agent, "anna") and rows(agent, "office")
    assert agent.store.stats(agent.store.uid("office")).spam_learned == 40
    assert agent.store.stats(agent.store.uid("anna")).spam_learned == 40
    outcome = agent.process(agent.user("ben"), PROBE)
    assert outcome.is_spam  # ben reads what anna taught
    sig = agent.store.signature(outcome.signature)
    office_uid = agent.store.uid("office")
    assert sig.uid == agent.store.uid("ben") and sig.token_uid == office_uid
    with pytest.raises(ForeignSignatureError):
        agent.retrain("anna", outcome.signature, "innocent")
    before = probe_counts(agent, "office")
    agent.retrain("ben", outcome.signature, "innocent")
    after = probe_counts(agent, "office")
    for token, (spam, _innocent) in after.items():
        assert spam == before[token][0] - 1  # exactly the one spam count ben's message added
    assert not rows(agent, "ben")
    ben = agent.store.stats(agent.store.uid("ben"))
    assert (ben.spam_learned, ben.innocent_learned, ben.innocent_misclassified) == (0, 1, 1)


def test_a_shared_signature_is_corrected_in_the_group_after_the_member_left():
    office = Group("office", "shared", ("anna", "ben"))
    agent = make_agent([office])
    teach(agent, "anna")
    outcome = agent.process(agent.user("ben"), PROBE)
    before = probe_counts(agent, "office")
    gone = make_agent([])  # the configuration no longer has the group
    gone.store = agent.store
    gone.retrain("ben", outcome.signature, "innocent")
    after = probe_counts(agent, "office")
    assert all(after[t][0] == before[t][0] - 1 for t in after)
    assert not rows(agent, "ben")


def test_sqlite_and_mysql_take_a_merged_member_as_memory_does(tmp_path):
    """The same merged run on SQLite gives the member the same rows as on the memory store."""
    results = []
    for url in ("memory://", f"sqlite:///{tmp_path}/g.db"):
        agent = make_agent([Group("site", "merged", ("*",))], store=open_store(url))
        teach(agent, "site", spam=20, ham=20)
        outcome = agent.process(agent.user(MEMBER), PROBE)
        agent.retrain(MEMBER, outcome.signature, "innocent")
        member = agent.store.uid(MEMBER, create=False)
        freq = agent.tokenizer(agent.settings).tokenize(PROBE)
        results.append((outcome.is_spam, agent.store.lookup(member, [token_id(t) for t in freq]),
                        agent.store.stats(agent.store.uid("site")).spam_classified))
    assert results[0] == results[1]
    assert os.path.exists(tmp_path / "g.db")


# -- commands ----------------------------------------------------------------------------------
@pytest.fixture
def site(tmp_path, monkeypatch):
    """A configuration with groups on a SQLite home, `site` trained, one member's message
    decided by the merged group."""
    home = tmp_path / "home"
    home.mkdir()
    conf = tmp_path / "spamsift.toml"
    conf.write_text(f'home = "{home}"\n\n[groups.site]\ntype = "merged"\nmembers = ["*"]\n\n'
                    '[groups.office]\ntype = "shared"\nmembers = ["anna", "ben"]\n\n'
                    '[groups.av]\ntype = "inoculation"\nmembers = ["anna", "carl"]\n')
    monkeypatch.setenv("SPAMSIFT_CONFIG", str(conf))
    for name in ("SPAMSIFT_HOME", "SPAMSIFT_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    settings = config.load(str(conf), use_cache=False)
    agent = make_agent(settings.groups, store=open_store(settings.storage_url))
    teach(agent, "site")
    assert agent.process(agent.user(MEMBER), PROBE).is_spam
    agent.store.close()
    return conf


def test_groups_command_lists_members_and_what_each_decided(site, capsys):
    from spamsift.filter.admin import groups_main

    assert groups_main(["--config", str(site)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("site (merged; members *): decided 1 verdicts (1 spam, 0 innocent); "
                      "its data: 40 spam, 40 innocent learned")
    assert out[1].startswith("office (shared; members anna,ben): no data yet")
    assert groups_main(["--json", "--config", str(site)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["decided_spam"] == 1 and listed[0]["members"] == ["*"]
    assert groups_main(["show", "anna", "--config", str(site)]) == 0
    assert capsys.readouterr().out.split("\n")[:3] == ["office (shared)", "site (merged)",
                                                       "av (inoculation)"]


def test_groups_import_prints_tables_the_configuration_loads(tmp_path, capsys):
    from spamsift.filter.admin import groups_main

    source = tmp_path / "group"
    source.write_text("site:merged:*,-ceo@example.org\nglobal:classification:*trainer\n"
                      "office:shared,managed:anna,ben\n")
    assert groups_main(["import", str(source)]) == 0
    conf = tmp_path / "spamsift.toml"
    conf.write_text(capsys.readouterr().out)
    loaded = config.load(str(conf), {}, use_cache=False).groups
    assert loaded == (Group("site", "merged", ("*", "-ceo@example.org")),
                      Group("trainer", "global", ("*",)),
                      Group("office", "shared", ("anna", "ben")))
    source.write_text("site:pooled:*\n")
    assert groups_main(["import", str(source)]) == 78
    assert groups_main(["import", str(tmp_path / "missing")]) == 66


def test_stats_and_report_show_each_group(site, capsys):
    from spamsift.trainer import report, stats

    assert stats.main(["--groups", "site"], caller=_root()) == 0
    out = capsys.readouterr().out
    assert "Group site (merged; members *): decided 1 verdicts" in out
    assert report.main(["--json"]) == 0
    groups_json = json.loads(capsys.readouterr().out)["groups"]
    assert [(g["name"], g["decided"]) for g in groups_json] == [("site", 1), ("office", 0),
                                                                ("av", 0)]


def _root():
    from spamsift.filter.engine.users import Caller

    return Caller(0, "root")


def test_train_refuses_a_shared_member(site, tmp_path, capsys):
    from spamsift.trainer import train

    (tmp_path / "m.eml").write_bytes(HAM[0])
    (tmp_path / "index").write_text("ham m.eml\n")
    assert train.main(["--user", "ben", "--quiet", str(tmp_path / "index")]) == 64
    assert "train --user office" in capsys.readouterr().err


def test_evaluate_estimates_a_new_user_with_and_without_a_group(site, tmp_path, capsys):
    from spamsift.trainer import evaluate

    entries = []
    for k, raw in enumerate(SPAM[40:52] + HAM[40:52]):
        (tmp_path / f"{k}.eml").write_bytes(raw)
        entries.append(f"{'spam' if k < 12 else 'ham'} {k}.eml\n")
    (tmp_path / "index").write_text("".join(entries))
    before = _site_rows(site)
    assert evaluate.main(["--user", "newbie", "--group", "site", "--json", "--folds", "0",
                          "--quiet", str(tmp_path / "index")]) == 0
    result = json.loads(capsys.readouterr().out)
    alone, grouped = result["replay"], result["replay_with_group"]
    assert grouped["spam_misclassified"] < alone["spam_misclassified"]
    assert _site_rows(site) == before  # the group's data is read, never written
    assert evaluate.main(["--user", "newbie", "--group", "office", "--folds", "0", "--quiet",
                          str(tmp_path / "index")]) == 64


def _site_rows(conf):
    settings = config.load(str(conf), use_cache=False)
    store = open_store(settings.storage_url)
    try:
        uid = store.uid("site", create=False)
        return store.stats(uid), store.has_tokens(uid)
    finally:
        store.close()


# -- drags -------------------------------------------------------------------------------------
def test_drags_with_groups_in_place_train_exactly_once():
    """A shared member's drags through the watcher pipeline (`watchers.applier.Applier`):
    each move changes the group's dictionary once, a repeat changes nothing, and the drag
    into Spam inoculates the inoculation group's other member once, however often it is
    undone and done again."""
    from spamsift.watchers.applier import Applier
    from spamsift.watchers.decide import INNOCENT, SPAM

    office = Group("office", "shared", ("anna", "ben"))
    av = Group("av", "inoculation", ("ben", "carl"))
    agent = make_agent([office, av], test_conditional_training=False)
    teach(agent, "anna", spam=5, ham=40)
    teach(agent, "carl", spam=0, ham=3)
    ham_like = (b"From: Bob <bob@example.com>\nSubject: lunch\n\nHello Alice, lunch at noon "
                b"tomorrow in the garden? casino winner\n")
    outcome = agent.process(agent.user("ben"), ham_like)
    assert not outcome.is_spam
    ben = agent.store.uid("ben")
    freq = agent.tokenizer(agent.settings).tokenize(ham_like)
    ids = [token_id(t) for t in freq]
    office_uid = agent.store.uid("office")

    def office_counts():
        return agent.store.lookup(office_uid, ids)

    def carl_counts():
        return agent.store.lookup(agent.store.uid("carl"), ids)

    learned = office_counts()
    applier = Applier(agent.settings, agent.store, clock=lambda: 1764000000.0)
    assert applier.apply("ben", ben, outcome.signature, {SPAM}).action == "retrained"
    as_spam = office_counts()
    for t in ids:
        assert as_spam[t][0] == learned.get(t, (0, 0))[0] + 1
        assert as_spam[t][1] == learned.get(t, (0, 0))[1] - 1
    inoculated = carl_counts()
    assert all(inoculated[t][0] in (2, 5) for t in ids)
    assert applier.apply("ben", ben, outcome.signature, {SPAM}).action == "nothing"
    assert office_counts() == as_spam and carl_counts() == inoculated
    assert applier.apply("ben", ben, outcome.signature, {INNOCENT}).action == "retrained"
    assert office_counts() == learned
    assert applier.apply("ben", ben, outcome.signature, {SPAM}).action == "retrained"
    assert office_counts() == as_spam and carl_counts() == inoculated
    assert not rows(agent, "ben")  # a shared member's tokens are the group's
    assert agent.store.watch_states(ben, [outcome.signature]) == {outcome.signature: SPAM}


def test_the_daemon_path_queues_single_commits_and_writes_group_commits_at_once(site):
    """Through the filter's seams as the daemon uses them: a member's message no group
    decided goes to the writer's queue (`commit_inbound`); one the merged group decided is
    written at once, member and group in one transaction."""
    import io

    from spamsift.filter import cli

    settings = config.load(str(site), use_cache=False)
    store = open_store(settings.storage_url)
    queued = []
    for raw in (HAM[0], PROBE):
        out = io.BytesIO()
        assert cli.main(["--user", "zoe@example.org", "--stdout"], stdin=io.BytesIO(raw),
                        stdout=out, stderr=io.StringIO(), store=store,
                        commit_inbound=lambda uid, batch: queued.append((uid, batch))) == 0
    assert len(queued) == 1 and queued[0][1].new_signature is not None
    assert b"X-DSPAM-Result: Spam" in out.getvalue()
    site_uid = store.uid("site", create=False)
    assert store.stats(site_uid).spam_classified == 2  # the fixture's member, and zoe
    zoe = store.uid("zoe@example.org", create=False)
    assert store.stats(zoe).spam_learned == 1
    store.close()
