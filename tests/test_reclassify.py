"""`spamsift reclassify` with leave-one-out (issue #20): the record of what training learned,
scoring each message without its own learning, ranked candidates, and ``--move --retrain``
giving the counts of a training on the corrected mailbox, exactly once."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mail import mails
from procs import children_of, state_of

from spamsift.filter.engine import config, mailfolders
from spamsift.filter.engine.agent import Agent
from spamsift.filter.engine.errors import StorageError
from spamsift.filter.engine.leaveoneout import Without
from spamsift.filter.engine.message import unstamp
from spamsift.filter.engine.store.base import open_store
from spamsift.filter.engine.store.memory import MemoryStore
from spamsift.trainer import reclassify, train
from spamsift.trainer.learner import CorpusLearner



def write_maildir(root: Path, inbox, spam) -> dict[str, str]:
    """A Maildir++ with `inbox` and `spam` messages (bytes, or corpus paths); file path
    relative to `root` -> the message's key."""
    keys = {}
    for n, (folder, msgs) in enumerate((("", inbox), (".Spam", spam))):
        base = root / folder if folder else root
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for k, msg in enumerate(msgs):
            sub = "cur" if k % 2 else "new"
            name = f"{1700000000 + k}.M{k}P{n}.host" + (":2,S" if sub == "cur" else "")
            path = base / sub / name
            if isinstance(msg, bytes):
                path.write_bytes(msg)
            else:
                shutil.copyfile(msg, path)
            keys[str(path.relative_to(root))] = mailfolders.message_key(path.read_bytes())
    return keys


def config_file(tmp_path: Path, algorithm: list[str] | None) -> list[str]:
    if algorithm is None:
        return []
    path = tmp_path / "spamsift.toml"
    path.write_text(f"algorithm = {json.dumps(algorithm)}\n")
    return ["--config", str(path)]


def run_reclassify(capsys, *argv) -> dict:
    assert reclassify.main(["--user", "u", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


# -- the record ------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm,jobs", [(None, "0"), (None, "1"),
                                            (["graham", "burton"], "0"),
                                            (["graham", "burton"], "2")])
def test_train_records_every_message_it_learned_with_its_class_and_step(
        env, tmp_path, capsys, algorithm, jobs):
    ham, spam = mails(30, False), mails(20, True)
    keys = write_maildir(tmp_path / "Maildir", ham + [ham[0]], spam)  # one duplicate
    cfg = config_file(tmp_path, algorithm)
    assert train.main(["--user", "u", "--quiet", "--jobs", jobs, *cfg,
                       str(tmp_path / "Maildir")]) == 0
    settings = config.load(cfg[1] if cfg else None)
    store = open_store(settings.storage_url)
    uid = store.uid("u", create=False)
    records = store.learned_records(uid, set(keys.values()))
    assert len(records) == 50
    for path, key in keys.items():
        klass = "spam" if path.startswith(".Spam") else "innocent"
        assert list(records[key]) == [klass]
    dup = mailfolders.message_key(ham[0])
    assert records[dup]["innocent"][0] == 2
    steps = [step for r in records.values() for _copies, step in r.values()]
    if algorithm is None:  # the logistic model: each step recorded, toward the class
        assert any(steps)
        assert all(step >= 0 for k in keys.values() for c, (_n, step) in records[k].items()
                   if c == "spam")
    else:
        assert not any(steps)
    store.close()


# -- leave-one-out ---------------------------------------------------------------------------
def learned_view(settings, msgs: list[tuple[bytes, str]]):
    """`msgs` (raw, class) learned as corpus by user "u" on a memory store; (the learning
    agent, a `Without` view of its store, an agent judging on the view, u's context there)."""
    full = Agent(settings, MemoryStore())
    learner = CorpusLearner(full, "u", background=False)
    for raw, klass in msgs:
        learner.add(raw, klass)
    learner.close()
    view = Without(full.store)
    judge = Agent(settings, view)
    return full, view, judge, judge.user("u", create=False)


def test_leaving_a_message_out_scores_it_as_a_filter_that_never_learned_it(tmp_path):
    """Bayes: the view's score of a learned message equals the score a filter trained on all
    the others gives it (the same tokens, counts and totals)."""
    settings = config.load(None).replace(algorithm=["graham", "burton"])
    msgs = [(m, "innocent") for m in mails(25, False, seed=3)]
    msgs += [(m, "spam") for m in mails(15, True, seed=3)]
    msgs.insert(7, (mails(1, True, seed=4)[0], "innocent"))  # a misfiled spam
    full, view, judge, ctx = learned_view(settings, msgs)
    records = full.store.learned_records(ctx.uid, [mailfolders.message_key(r) for r, _ in msgs])
    for k in (0, 7, 30):
        raw, klass = msgs[k]
        without = Agent(settings, MemoryStore())
        other = CorpusLearner(without, "u", background=False)
        for n, (r, c) in enumerate(msgs):
            if n != k:
                other.add(r, c)
        other.close()
        wctx = without.user("u", create=False)
        exact = without.score(wctx, without.tokenize(wctx, raw))
        message = judge.tokenize(ctx, unstamp(raw, settings))
        copies, step = records[mailfolders.message_key(raw)][klass]
        view.leave_out(klass, dict.fromkeys(message.ids.values(), copies),
                       reclassify.corpus_counters(klass, copies), step)
        loo = judge.score(ctx, message)
        assert loo.counts == exact.counts
        assert loo.stats == exact.stats
        assert loo.verdict.score == pytest.approx(exact.verdict.score)
        view.keep()
        assert judge.score(ctx, message).counts != exact.counts  # the view did something
    # The misfiled spam, learned as innocent: as is it agrees with its folder, left out not.
    raw = msgs[7][0]
    message = judge.tokenize(ctx, raw)
    view.keep()
    as_learned = judge.score(ctx, message).verdict.score
    view.leave_out("innocent", dict.fromkeys(message.ids.values(), 1),
                   {"innocent_learned": 1}, 0.0)
    assert judge.score(ctx, message).verdict.score > as_learned


def test_prefetched_counts_score_as_lookups_of_the_store(tmp_path):
    """A chunk's counts read at once (`Without.prefetch`) give each message the counts and
    score of a lookup of its own, left-out learning subtracted; tokens the chunk did not
    cover are read from the store; after `forget` every lookup reads the store again."""
    settings = config.load(None).replace(algorithm=["graham", "burton"])
    msgs = [(m, "innocent") for m in mails(20, False, seed=5)]
    msgs += [(m, "spam") for m in mails(12, True, seed=5)]
    full, view, judge, ctx = learned_view(settings, msgs)
    messages = [judge.tokenize(ctx, raw) for raw, _k in msgs]

    def scored_without_itself(k):
        view.leave_out(msgs[k][1], dict.fromkeys(messages[k].ids.values(), 1),
                       reclassify.corpus_counters(msgs[k][1], 1), 0.0)
        scored = judge.score(ctx, messages[k])
        return scored.counts, scored.verdict.score

    plain = [scored_without_itself(k) for k in range(len(msgs))]
    reads = []
    lookup = full.store.lookup
    full.store.lookup = lambda uid, tokens: reads.append(len(tokens)) or lookup(uid, tokens)
    covered = {t for k in range(0, len(msgs), 2) for t in messages[k].ids.values()}
    view.prefetch(ctx.data_uid, covered)  # every other message's tokens
    assert reads == [len(covered)]
    reads.clear()
    assert [scored_without_itself(k) for k in range(len(msgs))] == plain
    # Only the tokens no covered message holds were read again, once per such message.
    uncovered = [len(set(m.ids.values()) - covered) for m in messages]
    assert reads == [n for n in uncovered if n] and reads
    view.forget()
    reads.clear()
    assert scored_without_itself(0) == plain[0] and reads == [len(messages[0].ids)]


def test_the_recorded_model_step_is_taken_back_from_every_feature(tmp_path):
    """The logistic model: the view's weights are the stored ones minus the message's step
    on each of its features and the bias, and nothing else changes."""
    from spamsift.filter.engine import logistic

    settings = config.load(None)
    store = MemoryStore()
    agent = Agent(settings, store)
    ctx = agent.user("u")
    for raw in mails(10, False, seed=5):
        agent.learn_tokenized(ctx, agent.tokenize(ctx, raw), "innocent", record="x")
    raw = mails(1, True, seed=5)[0]
    message = agent.tokenize(ctx, raw)
    agent.learn_tokenized(ctx, message, "spam", record="k")
    (copies, step), = store.learned_records(ctx.uid, ["k"])["k"].values()
    assert copies == 1 and step > 0
    feats = logistic.features(message.ids.values())
    view = Without(store)
    view.leave_out("spam", dict.fromkeys(message.ids.values(), 1), {"spam_learned": 1}, step)
    counts, weights = view.counts_and_weights(ctx.uid, feats + [12345])
    stored = store.weights(ctx.uid, feats)
    assert all(weights.get(f, 0.0) == pytest.approx(stored.get(f, 0.0) - step) for f in feats)
    assert 12345 not in weights
    assert view.stats(ctx.uid).spam_learned == 0 and store.stats(ctx.uid).spam_learned == 1
    with pytest.raises(AssertionError):
        view.commit(ctx.uid, None)


# -- the command -----------------------------------------------------------------------------
def dirty_maildir(tmp_path: Path):
    """60 ham and 40 spam filed right, 4 spam in the INBOX and 3 ham in .Spam; the
    misfiled files' paths (relative) and the paths of the corrected mailbox."""
    ham, spam = mails(60, False, seed=11), mails(40, True, seed=11)
    bad_spam, bad_ham = mails(4, True, seed=12), mails(3, False, seed=12)
    md = tmp_path / "Maildir"
    keys = write_maildir(md, ham + bad_spam, spam + bad_ham)
    bad = {mailfolders.message_key(m) for m in bad_spam + bad_ham}
    misfiled = {p for p, k in keys.items() if k in bad}
    clean = write_maildir(tmp_path / "Clean", ham + bad_ham, spam + bad_spam)
    return md, misfiled, clean


def token_table(store, uid: int) -> dict:
    """Every token row's counts (not weights: the model's steps depend on the order)."""
    if hasattr(store, "tokens"):
        return {t: (r[0], r[1]) for (u, t), r in store.tokens.items() if u == uid and
                (r[0] or r[1])}
    return {t: (s, i) for t, s, i in store.db.execute(
        "SELECT token, spam_hits, innocent_hits FROM dspam_token_data WHERE uid = ? AND "
        "(spam_hits > 0 OR innocent_hits > 0)", (uid,))}


@pytest.mark.parametrize("algorithm", [None, ["graham", "burton"]])
def test_reclassify_finds_what_training_learned_wrong_and_retrain_equals_a_clean_train(
        env, tmp_path, capsys, algorithm):
    md, misfiled, clean = dirty_maildir(tmp_path)
    cfg = config_file(tmp_path, algorithm)
    assert train.main(["--user", "u", "--quiet", *cfg, str(md)]) == 0
    capsys.readouterr()
    report = run_reclassify(capsys, *cfg, str(md))
    listed = {f"{'' if f['folder'] == 'INBOX' else f['folder'] + '/'}{f['file']}"
              for f in report["findings"]}
    assert report["left_out"] == 107 and listed == misfiled
    scores = [abs(f["score"]) for f in report["findings"]]
    assert scores == sorted(scores, reverse=True)  # most certain first
    assert all((f["score"] >= 0) == (f["verdict"] == "spam") for f in report["findings"])
    # The cuts.
    assert run_reclassify(capsys, *cfg, "--top", "2", str(md))["misplaced"] == 2
    # (the JSON's scores are rounded to 4 places: cut half a unit below the fourth)
    cut = run_reclassify(capsys, *cfg, "--min-score", str(scores[3] - 5e-5), str(md))
    assert cut["misplaced"] == sum(1 for s in scores if s >= scores[3])
    # --retrain without --move is a usage error.
    assert reclassify.main(["--user", "u", "--retrain", *cfg, str(md)]) == 64
    capsys.readouterr()

    report = run_reclassify(capsys, *cfg, "--move", "--retrain", str(md))
    assert report["moved"] == report["retrained"] == len(misfiled)
    settings = config.load(cfg[1] if cfg else None)
    store = open_store(settings.storage_url)
    uid = store.uid("u", create=False)
    after = (token_table(store, uid), store.stats(uid), list(store.sources(uid)))
    # The record says where each moved message is, for the watchers, and what it counts as.
    for f in report["findings"]:
        key = mailfolders.message_key((md / (".Spam" if f["verdict"] == "spam" else "")
                                       / f["file"]).read_bytes())
        assert store.watch_states(uid, [key]) == {key: f["verdict"]}
        assert list(store.learned_records(uid, [key])[key]) == [f["verdict"]]
    store.close()
    # A train on the corrected mailbox gives the same counts.
    assert train.main(["--user", "clean", "--quiet", *cfg, str(tmp_path / "Clean")]) == 0
    capsys.readouterr()
    store = open_store(settings.storage_url)
    cuid = store.uid("clean", create=False)
    assert token_table(store, cuid) == after[0]
    assert store.stats(cuid) == after[1]
    assert [r[1:] for r in store.sources(cuid)] == [r[1:] for r in after[2]]
    store.close()
    # A second run changes nothing.
    again = run_reclassify(capsys, *cfg, "--move", "--retrain", str(md))
    assert again["misplaced"] == 0 and again["moved"] == 0
    store = open_store(settings.storage_url)
    assert (token_table(store, uid), store.stats(uid), list(store.sources(uid))) == after
    store.close()


def test_helpers_and_chunked_reads_judge_as_one_message_at_a_time(env, tmp_path, capsys,
                                                                   monkeypatch):
    """A helper process tokenizing chunk after chunk (--jobs 1), with each chunk's counts read
    at once, gives the report of reading and tokenizing one message at a time."""
    from spamsift.filter.engine import tokenpool

    md, misfiled, _clean = dirty_maildir(tmp_path)
    assert train.main(["--user", "u", "--quiet", str(md)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(reclassify, "CHUNK", 1)
    alone = run_reclassify(capsys, "--jobs", "0", str(md))
    handed = []
    submit = tokenpool.TokenPool.tokenize
    monkeypatch.setattr(tokenpool.TokenPool, "tokenize",
                        lambda pool, chunk: handed.append(len(chunk)) or submit(pool, chunk))
    monkeypatch.setattr(reclassify, "CHUNK", 25)
    helped = run_reclassify(capsys, "--jobs", "1", str(md))
    assert handed == [25, 25, 25, 25]  # 107 messages: the last 7 are tokenized here
    assert helped == alone
    assert {f"{'' if f['folder'] == 'INBOX' else f['folder'] + '/'}{f['file']}"
            for f in helped["findings"]} == misfiled
    assert reclassify.main(["--user", "u", "--jobs", "-1", str(md)]) == 64


def test_each_correction_is_scored_with_the_totals_the_ones_before_it_left(env, tmp_path,
                                                                         capsys, monkeypatch):
    """--move --retrain trains the model of each moved message from its leave-one-out score;
    the totals that score reads are those after the corrections before it, as a view made
    afresh would read them (the scan's view kept the totals of its start: found by review)."""
    from spamsift.filter.engine.agent import Agent as RealAgent

    md, misfiled, _clean = dirty_maildir(tmp_path)
    assert train.main(["--user", "u", "--quiet", str(md)]) == 0
    capsys.readouterr()
    compared = []
    correct_learned = RealAgent.correct_learned

    def checked(agent, ctx, message, key, old, target, old_step, model=None, watch=()):
        copies, step = agent.store.learned_records(ctx.uid, [key])[key][old]
        fresh = Without(agent.store)
        fresh.leave_out(old, dict.fromkeys(message.ids.values(), copies),
                        reclassify.corpus_counters(old, copies), step, data_uid=ctx.uid)
        now = RealAgent(agent.settings, fresh).score(ctx, message).verdict.model
        compared.append((model[0], model[1], now[0], now[1]))
        return correct_learned(agent, ctx, message, key, old, target, old_step, model, watch)

    monkeypatch.setattr(RealAgent, "correct_learned", checked)
    report = run_reclassify(capsys, "--move", "--retrain", str(md))
    assert report["retrained"] == len(misfiled) == len(compared) == 7
    for z, base, fresh_z, fresh_base in compared:
        assert (z, base) == (pytest.approx(fresh_z), pytest.approx(fresh_base))


@pytest.mark.parametrize("algorithm", [None, ["graham", "burton"]])
def test_train_clean_retrains_what_looks_misfiled_as_a_train_of_the_corrected_mailbox(
        env, tmp_path, capsys, algorithm):
    md, misfiled, _clean = dirty_maildir(tmp_path)
    cfg = config_file(tmp_path, algorithm)
    assert train.main(["--user", "u", "--quiet", "--clean", *cfg, str(md)]) == 0
    out = capsys.readouterr().out
    # Per folder: what was judged and what was retrained (4 spam in the INBOX, 3 ham in
    # .Spam), the files left where they are.
    assert f"{md}: 64 judged, 4 retrained as spam, 0 as ham" in out, out
    assert f"{md}/.Spam: 43 judged, 0 retrained as spam, 3 as ham" in out, out
    assert all((md / p).exists() for p in misfiled)
    assert train.main(["--user", "clean", "--quiet", *cfg, str(tmp_path / "Clean")]) == 0
    capsys.readouterr()
    settings = config.load(cfg[1] if cfg else None)
    store = open_store(settings.storage_url)
    uid, cuid = store.uid("u", create=False), store.uid("clean", create=False)
    assert token_table(store, uid) == token_table(store, cuid)
    assert store.stats(uid) == store.stats(cuid)
    records = store.learned_records(uid, [mailfolders.message_key((md / p).read_bytes())
                                          for p in misfiled])
    assert all(list(r) == ["spam" if "Spam" not in p else "innocent"]
               for p, r in zip(sorted(misfiled), (records[mailfolders.message_key(
                   (md / p).read_bytes())] for p in sorted(misfiled))))
    store.close()
    # Still in the wrong folders, so reclassify lists them; moving them retrains nothing.
    report = run_reclassify(capsys, *cfg, "--move", "--retrain", str(md))
    assert report["moved"] == len(misfiled) and report["retrained"] == 0
    assert {f["action"] for f in report["findings"]} == {"moved, corrected already"}
    assert train.main(["--user", "u", "--clean", "--strategy", "error", str(md)]) == 64


def test_evaluate_estimates_per_folder_how_many_messages_look_misfiled(env, tmp_path, capsys):
    """The label-noise estimate: each message judged by a training on all the others, with
    reclassify's judge; nothing stored."""
    from spamsift.trainer import evaluate

    md, _misfiled, _clean = dirty_maildir(tmp_path)
    assert evaluate.main(["--user", "u", "--json", "--quiet", "--no-replay", "--folds", "0",
                          str(md)]) == 0
    noise = json.loads(capsys.readouterr().out)["label_noise"]
    rows = {r["folder"]: r for r in noise["folders"]}
    assert rows[str(md)] == {"folder": str(md), "class": "innocent", "messages": 64,
                             "look_misfiled": 4, "look_misfiled_pct": 6.25}
    assert rows[f"{md}/.Spam"]["messages"] == 43 and rows[f"{md}/.Spam"]["look_misfiled"] == 3
    assert noise["min_score"] == reclassify.MIN_EVIDENCE
    # The same in text; --no-noise skips it.
    assert evaluate.main(["--user", "u", "--quiet", "--no-replay", "--folds", "0",
                          str(md)]) == 0
    text = capsys.readouterr().out
    assert "label noise" in text and "6.25" in text
    assert evaluate.main(["--user", "u", "--json", "--quiet", "--no-replay", "--folds", "0",
                          "--no-noise", str(md)]) == 0
    assert "label_noise" not in json.loads(capsys.readouterr().out)
    assert open_store(config.load(None).storage_url).uid("u", create=False) is None


def test_a_correction_happens_once_even_from_two_runs_at_once(env, tmp_path, capsys):
    """Two reclassify runs that both found a message: the second one's correction finds the
    record changed and only records the place."""
    md, misfiled, _clean = dirty_maildir(tmp_path)
    cfg = config_file(tmp_path, ["graham", "burton"])
    assert train.main(["--user", "u", "--quiet", *cfg, str(md)]) == 0
    settings = config.load(cfg[1])
    store = open_store(settings.storage_url)
    judge = Agent(settings, Without(store))
    ctx = judge.user("u", create=False)
    findings = reclassify.scan(judge, ctx, str(md), settings).findings
    assert {f.key for f in findings} == {mailfolders.message_key((md / p).read_bytes())
                                        for p in misfiled}
    first = reclassify.Corrector(Agent(settings, store), ctx, judge)
    second = reclassify.Corrector(Agent(settings, store), ctx, judge)
    import time

    assert first.correct(findings[0], time.time)[0] == "retrained"
    before = (token_table(store, ctx.uid), store.stats(ctx.uid))
    assert second.correct(findings[0], time.time)[0] == "corrected already"
    assert (token_table(store, ctx.uid), store.stats(ctx.uid)) == before
    store.close()


# -- the scenarios, on the SpamAssassin corpus ---------------------------------------
def corpus_mailbox(corpus_dir: str, root: Path, ham: int, spam: int, bad_spam: int,
                   bad_ham: int, seed: int = 1):
    """A Maildir of corpus messages drawn at random (seeded): `ham` and `spam` filed right,
    `bad_spam` in the INBOX and `bad_ham` in .Spam; the misfiled files' relative paths."""
    entries = [line.split() for line in open(os.path.join(corpus_dir, "index"))]
    rng = random.Random(seed)
    hams = rng.sample([os.path.join(corpus_dir, p) for c, p in entries if c == "ham"],
                      ham + bad_ham)
    spams = rng.sample([os.path.join(corpus_dir, p) for c, p in entries if c == "spam"],
                       spam + bad_spam)
    keys = write_maildir(root, hams[:ham] + spams[spam:], spams[:spam] + hams[ham:])
    bad = {mailfolders.message_key(open(p, "rb").read()) for p in spams[spam:] + hams[ham:]}
    return {p for p, k in keys.items() if k in bad}


def figures(report: dict, misfiled: set[str]) -> tuple[int, int, float, float]:
    listed = [f"{'' if f['folder'] == 'INBOX' else f['folder'] + '/'}{f['file']}"
              for f in report["findings"]]
    found = sum(1 for p in listed if p in misfiled)
    recall = found / len(misfiled)
    precision = found / len(listed) if listed else 1.0
    return found, len(listed) - found, recall, precision


def best_recall_at(report: dict, misfiled: set[str], precision: float) -> tuple[int, float]:
    """The most misfiled messages a cut of the ranked list finds at `precision` or better
    (and its recall)."""
    best, found = 0, 0
    for n, f in enumerate(report["findings"], 1):
        found += f"{'' if f['folder'] == 'INBOX' else f['folder'] + '/'}{f['file']}" in misfiled
        if found / n >= precision:
            best = found
    return best, best / len(misfiled)


def train_then_reclassify(capsys, corpus_dir: str, md: Path, *shape: int):
    """`spamsift train` then `spamsift reclassify` (defaults) on a `corpus_mailbox` of
    `shape`: figures() of the listing, then best_recall_at() 90% precision."""
    misfiled = corpus_mailbox(corpus_dir, md, *shape)
    assert train.main(["--user", "u", "--quiet", str(md)]) == 0
    capsys.readouterr()
    report = run_reclassify(capsys, str(md))
    return (*figures(report, misfiled), *best_recall_at(report, misfiled, 0.9))


@pytest.mark.xfail(strict=True, reason=(
    "issue #20's 27 of 30 with at most 3 others is not reached: the default listing finds "
    "21 and 3 others at seed 1 (seeds 2-6: 28/1, 28/2, 25/5, 26/4, 25/4); most others are "
    "hard_ham newsletters, most misses spam one judge or both call innocent, which a filter "
    "of 450 messages misjudges: with every other message's true label and the best cut known, "
    "no ranking finds more than 26 at seed 1 (benchmarks/reclassify_bound.py, "
    "docs/training.md#how-much-a-480-message-mailbox-can-tell)"))
def test_scenario_450_with_30_misfiled(env, tmp_path, capsys, corpus_dir):
    """The issue's measurement: 300 ham and 150 spam filed right, 20 spam in the INBOX, 10
    ham in .Spam; train, then reclassify. Before leave-one-out it listed 2 of the 30."""
    found, others, recall, precision, cut, cut_recall = train_then_reclassify(
        capsys, corpus_dir, tmp_path / "Maildir", 300, 150, 20, 10)
    print(f"\n450 + 30 misfiled: listed {found} of 30 and {others} others (recall {recall:.2f}, "
          f"precision {precision:.2f}); best cut at 90% precision finds {cut} ({cut_recall:.2f})")
    assert found >= 27 and others <= 3  # issue #20


def test_scenario_3000_with_5_percent_misfiled(env, tmp_path, capsys, corpus_dir):
    """1,950 ham and 900 spam filed right, 100 spam in the INBOX and 50 ham in .Spam."""
    found, others, recall, precision, cut, cut_recall = train_then_reclassify(
        capsys, corpus_dir, tmp_path / "Maildir", 1950, 900, 100, 50)
    print(f"\n3,000 with 150 misfiled: listed {found} and {others} others: recall {recall:.3f}, "
          f"precision {precision:.3f}; best cut at 90% precision: recall {cut_recall:.3f}")
    assert recall >= 0.9 and precision >= 0.9  # issue #20, the default listing


# -- processes and failures ------------------------------------------------------------------
def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}") and state_of(pid) not in ("Z", "gone")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_terminated_reclassify_leaves_no_helper_behind(tmp_path, how):
    """`spamsift reclassify` starts a tokenizing helper by default (two or more CPUs, 500
    messages or more). When the command itself is terminated (SIGTERM from `timeout`,
    systemd or an administrator; SIGKILL from the OOM killer), its helper and
    multiprocessing's resource tracker stayed for ever under init (found by review): the
    helper waits on a call queue whose write end it holds itself. It now watches its
    parent (`tokenpool.PARENT_POLL`)."""
    spamsift = Path(sys.executable).parent / "spamsift"
    if not spamsift.exists():
        pytest.skip("spamsift console script not installed")
    md = tmp_path / "Maildir"
    write_maildir(md, mails(1400, False), mails(600, True))
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, SPAMSIFT_HOME=str(home))
    env.pop("SPAMSIFT_CONFIG", None)
    env.pop("SPAMSIFT_STORAGE", None)
    subprocess.run([str(spamsift), "train", "--user", "u", "--quiet", "--jobs", "0", str(md)],
                   env=env, check=True, capture_output=True)
    proc = subprocess.Popen([str(spamsift), "reclassify", "--user", "u", "--jobs", "1",
                             str(md)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    kids: list[int] = []
    try:
        for _ in range(4000):  # until the tokenizing helper runs
            kids = children_of(proc.pid)
            if any("multiprocessing.spawn" in _cmdline(p) for p in kids) or \
                    proc.poll() is not None:
                break
            time.sleep(0.005)
        assert kids, "the helper never started"
        time.sleep(0.25)  # past its start-up: it waits for or tokenizes a chunk
        kids = sorted(set(kids) | set(children_of(proc.pid)))
        assert proc.poll() is None, "reclassify ended before it could be killed"
        proc.send_signal(how)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in kids):
            time.sleep(0.1)
        left = [(p, _cmdline(p)[:70]) for p in kids if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in kids:  # the processes this test started: clean up what outlived it
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    assert not left, f"still running 10 s after reclassify was killed: {left}"


def test_a_dead_helper_is_not_reported_as_a_training_failure(env, tmp_path, capsys,
                                                             monkeypatch):
    """reclassify learns nothing, yet when its tokenizing helper died it said "what was
    flushed stays learned; --jobs 0 trains without helpers" (tokenpool's message for train;
    found by review). It says nothing was moved or learned."""
    from spamsift.filter.engine import tokenpool

    md, _misfiled, _clean = dirty_maildir(tmp_path)
    assert train.main(["--user", "u", "--quiet", "--jobs", "0", str(md)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(reclassify, "CHUNK", 25)
    submit = tokenpool.TokenPool.tokenize

    def tokenize_then_die(pool, chunk):
        done = submit(pool, chunk)
        for process in list(pool._pool._processes.values()):
            os.kill(process.pid, signal.SIGKILL)
        return done

    monkeypatch.setattr(tokenpool.TokenPool, "tokenize", tokenize_then_die)
    code = reclassify.main(["--user", "u", "--jobs", "1", str(md)])
    err = capsys.readouterr().err
    assert code == 70 and "helper" in err and "nothing was moved or learned" in err, err
    assert "stays learned" not in err and "trains" not in err, err


def test_a_failed_prefetch_does_not_leave_every_token_unseen():
    """`Without.prefetch` marked the tokens covered before its lookup: when that lookup failed
    (a lock timeout, a lost connection), the view answered every later lookup of those tokens
    from an empty table, counts of zero, without an error (found by review; latent: scan
    gives up on the error). A failed prefetch now leaves the view reading through."""
    settings = config.load(None).replace(algorithm=["graham", "burton"])
    msgs = [(m, "innocent") for m in mails(10, False, seed=5)]
    full, view, judge, ctx = learned_view(settings, msgs + [(m, "spam")
                                                            for m in mails(10, True, seed=5)])
    store = full.store
    message = judge.tokenize(ctx, mails(1, True, seed=6)[0])
    tokens = list(message.ids.values())
    expected = view.lookup(ctx.data_uid, tokens)
    assert expected

    lookup = store.lookup

    def failing(uid, toks):
        raise StorageError("database is locked")

    store.lookup = failing
    with pytest.raises(StorageError):
        view.prefetch(ctx.data_uid, tokens)
    store.lookup = lookup
    assert view.lookup(ctx.data_uid, tokens) == expected
