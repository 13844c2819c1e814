"""`spamsift train` and `spamsift evaluate`: every kind of source, the bulk path's equivalence
with per-message learning, stamped messages, train-on-error, and the evaluation figures."""

from __future__ import annotations

import json
import mailbox
import math
import os
import random
from pathlib import Path

import pytest
from mail import mails

from spamsift.filter.engine import config
from spamsift.filter.engine.agent import Agent
from spamsift.filter.engine.message import unstamp
from spamsift.trainer.learner import CorpusLearner
from spamsift.filter.engine.store.base import open_store
from spamsift.filter.engine.tokenizer import Tokenizer, token_id
from spamsift.trainer import corpus, evaluate, train

pytest_plugins = ["imapserver"]  # the dovecot and imap_user fixtures (tests/imapserver.py)



def write_maildir(root: Path, inbox: list[bytes], spam: list[bytes], trash: list[bytes] = (),
                  spam_folder: str = ".Spam") -> Path:
    for n, (folder, msgs) in enumerate((("", inbox), (spam_folder, spam), (".Trash", trash))):
        base = root / folder if folder else root
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for k, raw in enumerate(msgs):
            sub = "cur" if k % 2 else "new"
            name = f"{1700000000 + k}.M{k}P{n}.host" + (":2,S" if sub == "cur" else "")
            (base / sub / name).write_bytes(raw)
    (root / "tmp" / "half-written").write_bytes(b"Subject: not yet\n\npartial")
    return root


def open_db():
    settings = config.load(None)
    return settings, open_store(settings.storage_url, settings.storage_timeout)


def counts_of(store, user: str, raw: bytes, settings) -> dict[int, tuple[int, int]]:
    tok = Tokenizer(settings.tokenizer, settings.ignore_headers, settings.header_prefix)
    ids = [token_id(t) for t in tok.tokenize(raw)]
    return store.lookup(store.uid(user, create=False), ids)


def test_maildir_folders_give_labels_and_trash_and_tmp_are_skipped(env, tmp_path, capsys):
    ham, spam, trash = mails(12, False), mails(5, True), mails(3, True, seed=9)
    md = write_maildir(tmp_path / "Maildir", ham, spam, trash)
    assert train.main(["--user", "u@example.org", "--quiet", str(md)]) == 0
    out = capsys.readouterr().out
    assert "spam      read       5  learned       5" in out
    assert "innocent  read      12  learned      12" in out
    settings, store = open_db()
    stats = store.stats(store.uid("u@example.org"))
    assert (stats.spam_learned, stats.innocent_learned) == (5, 12)
    assert (stats.spam_corpusfed, stats.innocent_corpusfed) == (5, 12)
    # a Trash message's own tokens were not learned: its Message-ID is unique to it
    tok = Tokenizer(settings.tokenizer, settings.ignore_headers, settings.header_prefix)
    trash_only = {token_id(t) for t in tok.tokenize(trash[0])} - {
        token_id(t) for m in ham + spam for t in tok.tokenize(m)}
    assert trash_only and store.lookup(store.uid("u@example.org"), trash_only) == {}


def test_a_folder_given_itself_is_labelled_by_its_name(env, tmp_path, capsys):
    # ~/Maildir/.Spam named on the command line is the spam folder, not an INBOX: it was
    # trained as ham, poisoning the user's filter. An ignored folder needs a label.
    md = write_maildir(tmp_path / "Maildir", mails(4, False), mails(5, True), mails(3, True))
    assert train.main(["--user", "f", "--quiet", str(md / ".Spam")]) == 0
    assert "spam      read       5  learned       5" in capsys.readouterr().out
    (md / ".Work" / "cur").mkdir(parents=True)
    (md / ".Work" / "new").mkdir()
    (md / ".Work" / "maildirfolder").touch()
    (md / ".Work" / "cur" / "1:2,S").write_bytes(mails(1, False, seed=5)[0])
    os.chdir(md / ".Work")  # "." names the folder too (Courier's maildirfolder marker)
    assert train.main(["--user", "f", "--quiet", "."]) == 0
    assert "innocent  read       1  learned       1" in capsys.readouterr().out
    assert train.main(["--user", "f", "--quiet", str(md / ".Trash")]) == 64
    assert "ignored folder" in capsys.readouterr().err
    assert train.main(["--user", "f", "--quiet", "--spam", str(md / ".Trash")]) == 0
    _settings, store = open_db()
    stats = store.stats(store.uid("f"))
    assert (stats.spam_learned, stats.innocent_learned) == (8, 1)
    # A mailbox that is itself a dot directory (~/.maildir, a common mail_location) is a
    # Maildir with folders, not a folder: its .Spam is spam.
    dot = write_maildir(tmp_path / "home" / ".maildir", mails(2, False, seed=3),
                        mails(3, True, seed=3))
    assert train.main(["--user", "h", "--quiet", str(dot)]) == 0
    out = capsys.readouterr().out
    assert "spam      read       3  learned       3" in out
    assert "innocent  read       2  learned       2" in out


def test_links_fifos_and_devices_in_a_users_tree_are_not_read(env, tmp_path, capsys):
    # Training runs as root over users' mail: a user's symlink to a file only root may read
    # must not be learned as their mail, a FIFO must not hang the run, /dev/zero must not
    # exhaust memory. Files an administrator lists in an index may be links.
    secret = tmp_path / "secret"
    secret.write_bytes(b"From: root@example.org\nSubject: x\n\nrootonlysecret\n")
    md = write_maildir(tmp_path / "Maildir", mails(3, False), [])
    os.symlink(secret, md / "cur" / "link:2,S")
    os.mkfifo(md / "cur" / "fifo:2,S")
    os.symlink("/dev/zero", md / "cur" / "zero:2,S")
    assert train.main(["--user", "g", "--quiet", str(md)]) == 0
    out = capsys.readouterr().out
    assert "innocent  read       6  learned       3" in out and "skipped     3" in out
    settings, store = open_db()
    assert counts_of(store, "g", secret.read_bytes(), settings).get(
        token_id("rootonlysecret")) is None
    index = tmp_path / "index"
    index.write_text(f"spam {md / 'cur' / 'link:2,S'}\n")
    assert train.main(["--user", "g", "--quiet", str(index)]) == 0
    assert counts_of(store, "g", secret.read_bytes(), settings)[token_id("rootonlysecret")] \
        == (1, 0)


def test_bulk_training_equals_learning_one_message_at_a_time(tmp_path):
    """CorpusLearner (one transaction per flush) writes exactly what Agent.learn writes per
    message: the same token counts, counters and sources."""
    settings = config.load(None, environ={"SPAMSIFT_HOME": str(tmp_path)}).replace(
        algorithm=["graham", "burton"])
    msgs = [(m, "spam") for m in mails(30, True)] + [(m, "innocent") for m in mails(40, False)]
    random.Random(3).shuffle(msgs)
    one, bulk = open_store("memory://"), open_store("memory://")
    a1, a2 = Agent(settings, one, clock=lambda: 1.8e9), Agent(settings, bulk, clock=lambda: 1.8e9)
    ctx = a1.user("u")
    for raw, klass in msgs:
        a1.learn(ctx, raw, klass)
    learner = CorpusLearner(a2, "u", flush_every=7)
    assert {learner.add(raw, klass) for raw, klass in msgs} == {"learned"}
    learner.flush()
    assert learner.commits == 10
    assert one.tokens == bulk.tokens
    assert one.stat_rows == bulk.stat_rows and one.daily == bulk.daily
    assert one.source_rows == bulk.source_rows


@pytest.mark.parametrize("case", ["new user", "user with data", "cache dropped"])
def test_with_the_logistic_model_each_message_is_learned_in_order(tmp_path, case, monkeypatch):
    """The logistic model's step depends on everything learned before the message, so with
    it enabled the learner learns message by message: the same counts and weights as
    Agent.learn in the same order -- whether the learner's cache may take a new user's
    missing rows as absent (WriteBehind's empty_uid), reads the store for an existing
    user's, or is dropped between flushes."""
    from spamsift.filter.engine import writebehind

    settings = config.load(None, environ={"SPAMSIFT_HOME": str(tmp_path)}).replace(
        algorithm=["graham", "burton", "logistic"])
    msgs = [(m, "spam") for m in mails(15, True)] + [(m, "innocent") for m in mails(20, False)]
    random.Random(4).shuffle(msgs)
    one, bulk_store = open_store("memory://"), open_store("memory://")
    a1 = Agent(settings, one, clock=lambda: 1.8e9)
    a2 = Agent(settings, bulk_store, clock=lambda: 1.8e9)
    ctx = a1.user("u")
    before = msgs[:10] if case != "new user" else []
    for raw, klass in before:  # the same history in both stores
        a1.learn(ctx, raw, klass)
        a2.learn(a2.user("u", create=True), raw, klass)
    if case == "cache dropped":
        monkeypatch.setattr(writebehind.WriteBehind, "CACHE_TOKENS", 50)
    for raw, klass in msgs[len(before):]:
        a1.learn(ctx, raw, klass)
    learner = CorpusLearner(a2, "u", flush_every=7)
    assert (learner._held.complete_uid is not None) == (case == "new user")
    for raw, klass in msgs[len(before):]:
        learner.add(raw, klass)
    learner.close()
    # Counts and dates exactly; weights to rounding: the learner adds a flush's summed steps
    # to a stored weight, w + (s1 + s2), where Agent.learn adds them one by one, (w + s1) + s2.
    assert one.tokens.keys() == bulk_store.tokens.keys()
    for key, row in one.tokens.items():
        other = bulk_store.tokens[key]
        assert row[:3] == other[:3], key
        assert math.isclose(row[3], other[3], rel_tol=1e-12, abs_tol=1e-15), (key, row, other)
    assert any(row[3] for row in bulk_store.tokens.values())  # the model was trained
    assert one.stat_rows == bulk_store.stat_rows


def _stamped(agent, ctx, raw: bytes, sig_id: str) -> bytes:
    """`raw` as the filter delivers it: classified (and learned, TEFT) with signature
    `sig_id`, which its header carries."""
    agent.make_id = lambda: sig_id
    outcome = agent.process(ctx, raw)
    head, _, body = raw.partition(b"\n\n")
    return (head + f"\nX-DSPAM-Result: {outcome.result}\nX-DSPAM-Signature: {sig_id}"
            .encode() + b"\n\n" + body)


@pytest.mark.parametrize("algorithm", [["graham", "burton"], ["graham", "burton", "logistic"]])
@pytest.mark.parametrize("jobs", [1, 2])
def test_tokenizing_helpers_learn_exactly_what_one_process_learns(tmp_path, algorithm, jobs):
    """With helper processes tokenizing (`spamsift train --jobs`), the store ends up exactly
    as when the training process tokenizes itself: counts, counters, sources and -- learned
    in the same order -- the logistic weights to the last bit. Stamped messages in the run
    are recognised in order: one already learned as its folder's class is skipped, one moved
    to the other class is corrected after everything read before it was learned."""
    settings = config.load(None, environ={"SPAMSIFT_HOME": str(tmp_path)}).replace(
        algorithm=algorithm)
    msgs = [(m, "spam") for m in mails(25, True)] + [(m, "innocent") for m in mails(30, False)]
    random.Random(5).shuffle(msgs)
    stores, results = [], []
    for helpers in (0, jobs):
        store = open_store("memory://")
        agent = Agent(settings, store, clock=lambda: 1.8e9)
        ctx = agent.user("u")
        # Two messages the filter delivered earlier; the user moved the second one.
        kept = _stamped(agent, ctx, mails(1, False, seed=7)[0], "1a1a1a")
        moved = _stamped(agent, ctx, mails(1, False, seed=8)[0], "2b2b2b")
        run = msgs[:20] + [(kept, "innocent")] + msgs[20:40] + [(moved, "spam")] + msgs[40:]
        learner = CorpusLearner(agent, "u", flush_every=9, jobs=helpers, chunk=4)
        results.append([learner.add(raw, klass) for raw, klass in run])
        learner.close()
        stores.append(store)
    assert learner._pool is not None and learner._pool.chunks >= 14  # helpers did the work
    plain, helped = stores
    assert results[0] == results[1]
    assert results[1].count("known") == 1 and results[1].count("corrected") == 1
    assert plain.tokens == helped.tokens  # weights included: exact, not to rounding
    assert plain.stat_rows == helped.stat_rows and plain.daily == helped.daily
    assert plain.source_rows == helped.source_rows
    assert any(row[3] for row in helped.tokens.values()) == ("logistic" in algorithm)


def test_a_helper_that_dies_is_a_clear_error_and_nothing_hangs(tmp_path):
    import signal

    from spamsift.filter.engine.tokenpool import HelperError

    settings = config.load(None, environ={"SPAMSIFT_HOME": str(tmp_path)}).replace(
        algorithm=["graham", "burton"])
    agent = Agent(settings, open_store("memory://"), clock=lambda: 1.8e9)
    learner = CorpusLearner(agent, "u", jobs=1, chunk=2)
    msgs = mails(12, False)
    for raw in msgs[:4]:
        learner.add(raw, "innocent")
    for process in list(learner._pool._pool._processes.values()):
        os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(HelperError, match="helper process died"):
        for raw in msgs[4:]:
            learner.add(raw, "innocent")
        learner.flush()
    with pytest.raises(HelperError):
        learner.close()


@pytest.mark.parametrize("cpus, counting, per_message", [(1, 0, 0), (2, 2, 1), (8, 2, 1)])
def test_default_helpers_by_cpus_and_path(monkeypatch, cpus, counting, per_message):
    """No helper on one CPU; up to 2 for counting, 1 for the logistic model's per-message
    learning (its training process is the bottleneck)."""
    from spamsift.filter.engine import tokenpool

    monkeypatch.setattr(tokenpool.os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    assert tokenpool.default_jobs(False) == counting
    assert tokenpool.default_jobs(True) == per_message


def test_train_jobs_option(env, tmp_path, capsys, monkeypatch):
    """`--jobs N` trains through N helper processes (started once a chunk is full) to the
    same result; a negative count is a one-line usage error."""
    from spamsift.trainer import learner

    ham, spam = mails(12, False), mails(6, True)
    md = write_maildir(tmp_path / "Maildir", ham, spam)
    assert train.main(["--user", "solo", "--quiet", "--jobs", "0", str(md)]) == 0
    monkeypatch.setattr(learner, "CHUNK_MESSAGES", 4)
    assert train.main(["--user", "helped", "--quiet", "--jobs", "2", str(md)]) == 0
    assert "innocent  read      12  learned      12" in capsys.readouterr().out
    settings, store = open_db()
    solo, helped = store.uid("solo", create=False), store.uid("helped", create=False)
    tok = Tokenizer(settings.tokenizer, settings.ignore_headers, settings.header_prefix)
    ids = {token_id(t) for raw in ham + spam for t in tok.tokenize(raw)}
    assert store.lookup(solo, ids) == store.lookup(helped, ids)
    weights = store.weights(helped, ids)
    assert weights and store.weights(solo, ids) == weights
    assert train.main(["--user", "x", "--quiet", "--jobs", "-1", str(md)]) == 64
    err = capsys.readouterr().err
    assert "--jobs" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("algorithms", [["graham", "burton", "logistic"],
                                        ["graham", "burton"]])
def test_an_interrupt_mid_message_leaves_only_whole_flushes(tmp_path, algorithms):
    # Ctrl-C can strike inside a message's commit (its tokens counted, its counters not):
    # writing what was pending stored that message half learned. After `abandon` the store
    # holds exactly the flushed messages, as learning them one by one gives.
    settings = config.load(None, environ={"SPAMSIFT_HOME": str(tmp_path)}).replace(
        algorithm=algorithms)
    msgs = [(m, "spam") for m in mails(12, True)] + [(m, "innocent") for m in mails(12, False)]
    random.Random(5).shuffle(msgs)
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    learner = CorpusLearner(Agent(settings, store, clock=lambda: 1.8e9), "u", flush_every=5)

    class Interrupting(dict):
        calls = 0

        def setdefault(self, key, default=None):
            Interrupting.calls += 1
            if Interrupting.calls == 7:
                raise KeyboardInterrupt
            return super().setdefault(key, default)

    class InterruptingCount(dict):
        def __getitem__(self, key):
            raise KeyboardInterrupt  # its tokens are counted, the message is not

    with pytest.raises(KeyboardInterrupt):
        for n, (raw, klass) in enumerate(msgs):
            if n == 12:  # two flushes written; the interrupt strikes inside message 13
                if learner.per_message:
                    learner._held.pairs = Interrupting(learner._held.pairs)
                else:
                    learner.counts.messages = InterruptingCount(learner.counts.messages)
            learner.add(raw, klass)
    learner.abandon()
    replay = open_store("memory://")
    agent = Agent(settings, replay, clock=lambda: 1.8e9)
    ctx = agent.user("u")
    for raw, klass in msgs[:10]:
        agent.learn(ctx, raw, klass)
    uid = store.uid("u", create=False)
    tokens = {t for (u, t) in replay.tokens if u == ctx.uid}
    assert store.lookup(uid, tokens) == replay.lookup(ctx.uid, tokens)
    assert store.stats(uid).spam_learned + store.stats(uid).innocent_learned == 10


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.3])
def test_ctrl_c_with_helpers_is_one_line_and_leaves_no_process(tmp_path, delay):
    """Ctrl-C reaches the whole process group: the command says it was interrupted (exit 75)
    in one line, no helper prints a traceback, and no helper outlives it. With no delay the
    signal comes while the helpers are still starting (multiprocessing's spawn code), which
    is when a helper that ignored SIGINT only once it ran printed a KeyboardInterrupt."""
    import signal
    import subprocess
    import sys
    import time

    from procs import children_of, state_of

    spamsift = Path(sys.executable).parent / "spamsift"
    if not spamsift.exists():
        pytest.skip("spamsift console script not installed")
    md = write_maildir(tmp_path / "Maildir", mails(1500, False), mails(500, True))
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, SPAMSIFT_HOME=str(home))
    env.pop("SPAMSIFT_CONFIG", None)
    env.pop("SPAMSIFT_STORAGE", None)
    proc = subprocess.Popen(
        [str(spamsift), "train", "--user", "u", "--quiet", "--jobs", "2", str(md)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        helpers: list[int] = []
        for _ in range(3000):  # until the first helper process exists
            helpers = children_of(proc.pid)
            if helpers or proc.poll() is not None:
                break
            time.sleep(0.005)
        assert proc.poll() is None and helpers, "helpers never started"
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        helpers += children_of(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 75, err
    assert err.decode().splitlines() == [
        "spamsift train: interrupted; the flushes already written stay learned, the rest was "
        "dropped (the same sources trained again count those twice)"]
    time.sleep(0.2)
    assert not [p for p in helpers if os.path.exists(f"/proc/{p}")
                and state_of(p) != "Z"]


@pytest.mark.parametrize("kind", ["mbox", "mh", "directory", "index", "file"])
def test_each_file_source(kind, env, tmp_path, capsys):
    spam, ham = mails(4, True), mails(6, False)
    args = ["--user", "v", "--quiet"]
    if kind == "mbox":
        for name, msgs in (("spam.mbox", spam), ("ham.mbox", ham)):
            box = mailbox.mbox(str(tmp_path / name))
            for raw in msgs:
                box.add(raw)
            box.close()
        args += ["--spam", str(tmp_path / "spam.mbox"), "--ham", str(tmp_path / "ham.mbox")]
    elif kind == "mh":
        for name, msgs in (("spam", spam), ("ham", ham)):
            box = mailbox.MH(str(tmp_path / name))
            for raw in msgs:
                box.add(raw)
            box.close()
        args += ["--spam", str(tmp_path / "spam"), "--ham", str(tmp_path / "ham")]
    elif kind in ("directory", "index"):
        for name, msgs in (("spam", spam), ("ham", ham)):
            (tmp_path / name / "sub").mkdir(parents=True)
            for k, raw in enumerate(msgs):
                (tmp_path / name / ("sub" if k % 2 else "") / f"m{k}.eml").write_bytes(raw)
        if kind == "directory":
            args += ["--spam", str(tmp_path / "spam"), "--ham", str(tmp_path / "ham")]
        else:
            lines = [f"spam spam/{'sub/' if k % 2 else ''}m{k}.eml" for k in range(4)]
            lines += [f"ham ham/{'sub/' if k % 2 else ''}m{k}.eml" for k in range(6)]
            (tmp_path / "index").write_text("\n".join(lines) + "\n")
            args += [str(tmp_path / "index")]
    else:
        for k, raw in enumerate(spam + ham):
            (tmp_path / f"{k}.eml").write_bytes(raw)
        args += [a for k in range(10) for a in ("--spam" if k < 4 else "--ham",
                                                 str(tmp_path / f"{k}.eml"))]
    assert train.main(args) == 0, capsys.readouterr().err
    settings, store = open_db()
    stats = store.stats(store.uid("v"))
    assert (stats.spam_learned, stats.innocent_learned) == (4, 6)
    # every message's tokens are there, in the right class
    for raw, column in [(m, 0) for m in spam] + [(m, 1) for m in ham]:
        found = counts_of(store, "v", raw, settings)
        assert found and all(v[column] >= 1 for v in found.values() if v[1 - column] == 0)


def test_interleave_mixes_classes_in_proportion():
    spam = corpus.Stream("spam", "s", 3, lambda: iter([(b"s", str(k)) for k in range(3)]))
    ham = corpus.Stream("innocent", "h", 6, lambda: iter([(b"h", str(k)) for k in range(6)]))
    order = "".join(k[0] for k, _r, _n in corpus.interleave([ham, spam]))
    # the class furthest behind its share goes next (ties: innocent first)
    assert order == "iisiisiis"
    assert "".join(k[0] for k, _r, _n in corpus.interleave([spam, ham])) == "iisiisiis"


def test_interleave_spreads_each_folder_over_the_run():
    """Two ham folders and a spam folder: each comes in proportion to its size all along,
    not one folder after the other (the logistic model leans toward what it learned last)."""
    def stream(label, where, n):
        return corpus.Stream(label, where, n, lambda: iter([(b"x", f"{where}{k}")
                                                            for k in range(n)]))
    got = [name for _k, _r, name in corpus.interleave(
        [stream("innocent", "a", 4), stream("innocent", "b", 8), stream("spam", "s", 4)])]
    assert sorted(got) == sorted([f"a{k}" for k in range(4)] + [f"b{k}" for k in range(8)]
                                 + [f"s{k}" for k in range(4)])
    first_half = got[:8]
    assert sum(n[0] == "a" for n in first_half) == 2 and sum(n[0] == "b" for n in first_half) == 4
    assert [n for n in got if n[0] == "b"] == [f"b{k}" for k in range(8)]  # order kept


def test_an_index_file_gives_a_stream_per_class_and_folder(tmp_path):
    index = tmp_path / "index"
    index.write_text("ham easy/1\nspam s/1\nham easy/2\nham hard/1\nspam s/2\n")
    streams = corpus.index_streams(str(index), corpus._index_entries(str(index)), None)
    assert [(s.label, s.count) for s in streams] == [("innocent", 2), ("spam", 2),
                                                      ("innocent", 1)]


def test_unlabelled_and_missing_sources_are_one_line_errors(env, tmp_path, capsys):
    box = tmp_path / "x.mbox"
    box.write_bytes(b"From a@b Mon Jan  1 00:00:00 2026\nSubject: x\n\nhi\n")
    assert train.main(["--user", "w", str(box)]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "say --spam or --ham" in err
    assert train.main(["--user", "w", str(tmp_path / "nope")]) == 66  # NOINPUT, as documented
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: no such file" in err
    assert train.main(["--user", "../etc", "--ham", str(box)]) == 65
    assert "Traceback" not in capsys.readouterr().err


def test_unreadable_and_vanished_messages_are_skipped(env, tmp_path, capsys):
    """Read errors (here: an entry that is a directory, and a file that vanished between the
    listing and the read, as a dangling link) are counted as skipped; the run goes on."""
    md = write_maildir(tmp_path / "Maildir", mails(3, False), mails(2, True))
    (md / "cur" / "1700000100.M1P1.host:2,S").mkdir()
    os.symlink(tmp_path / "gone", md / "new" / "1700000101.M1P1.host")
    assert train.main(["--user", "u", "--quiet", str(md)]) == 0
    out = capsys.readouterr().out
    assert "innocent  read       5  learned       3" in out and "skipped     2" in out


def test_stamped_mail_is_not_learned_twice_and_a_moved_one_is_corrected(env, tmp_path):
    """Mail the filter already learned (TEFT) is skipped when it is in the class its signature
    says, and corrected through the signature when it is not (no double counting)."""
    from spamsift.filter import cli

    settings, store = open_db()
    stamped = []
    for raw in mails(3, False) + mails(1, True):
        out = __import__("io").BytesIO()
        assert cli.main(["--user", "s", "--stdout", "--deliver=innocent,spam"],
                        stdin=__import__("io").BytesIO(raw), stdout=out) == 0
        stamped.append(out.getvalue())
    before = store.stats(store.uid("s"))
    learned_before = before.spam_learned + before.innocent_learned
    assert learned_before == 4
    # all four end up in INBOX, and the user had moved the first one to .Spam
    md = write_maildir(tmp_path / "Maildir", stamped[1:], stamped[:1])
    victim_counts = counts_of(store, "s", stamped[0], settings)
    assert train.main(["--user", "s", "--quiet", str(md)]) == 0
    after = store.stats(store.uid("s"))
    assert after.spam_learned + after.innocent_learned == 4  # nothing learned twice
    assert after.spam_misclassified + after.innocent_misclassified >= 1
    moved = counts_of(store, "s", stamped[0], settings)
    assert all(moved[t][0] >= victim_counts[t][0] + 1 for t in victim_counts)


def test_unstamp_removes_subject_and_body_tags_only_from_our_mail(tmp_path):
    settings = config.load(None, environ={"SPAMSIFT_HOME": str(tmp_path)})
    ours = (b"Subject: [SPAM] cheap watches\nX-DSPAM-Result: Spam\n\nbuy now\n"
            b"!DSPAM:4f2a9c1b0e7d3a6b5c8e9f0a1b2c3d!\n")
    assert unstamp(ours, settings) == (b"Subject: cheap watches\nX-DSPAM-Result: Spam\n\n"
                                       b"buy now\n")
    foreign = b"Subject: [SPAM] a list's own tag\n\nbody\n"
    assert unstamp(foreign, settings) == foreign


def test_train_on_error_makes_passes_until_clean(env, tmp_path, capsys):
    md = write_maildir(tmp_path / "Maildir", mails(60, False), mails(30, True))
    assert train.main(["--user", "e", "--quiet", "--strategy", "error", "--passes", "4",
                       str(md)]) == 0
    out = capsys.readouterr().out
    passes = [int(v) for v in out.split("errors per pass: ")[1].splitlines()[0].split(", ")]
    assert 1 <= len(passes) <= 4 and passes[0] > 0
    assert passes[-1] == 0 or len(passes) == 4  # stops at the first clean pass
    settings, store = open_db()
    stats = store.stats(store.uid("e"))
    # train on error learns fewer messages than it read
    assert 0 < stats.spam_learned + stats.innocent_learned < 90


def test_train_into_mysql(tmp_path, monkeypatch, mysql_url, capsys):
    monkeypatch.setenv("SPAMSIFT_HOME", str(tmp_path))
    monkeypatch.setenv("SPAMSIFT_STORAGE", mysql_url)
    store = open_store(mysql_url)
    store.initialize()
    md = write_maildir(tmp_path / "Maildir", mails(20, False), mails(10, True))
    assert train.main(["--user", "m@example.org", "--quiet", "--flush", "7", str(md)]) == 0
    ref = Agent(config.load(None), open_store("memory://"), clock=lambda: 1.8e9)
    ctx = ref.user("m@example.org")
    for raw in mails(20, False):
        ref.learn(ctx, raw, "innocent")
    for raw in mails(10, True):
        ref.learn(ctx, raw, "spam")
    uid = store.uid("m@example.org", create=False)
    expected = {tok: (row[0], row[1]) for (_u, tok), row in ref.store.tokens.items()
                if row[0] or row[1]}  # (the logistic model's bias has a weight, no counts)
    assert store.lookup(uid, expected.keys()) == expected
    assert store.stats(uid).innocent_learned == 20


# -- evaluate --------------------------------------------------------------------------------
def test_roc_area_and_threshold():
    assert evaluate.roc_area([(0.1, False), (0.9, True)]) == 1.0
    assert evaluate.roc_area([(0.9, False), (0.1, True)]) == 0.0
    assert evaluate.roc_area([(0.5, False), (0.5, True)]) == 0.5  # a tie counts half
    scored = [(k / 10, False) for k in range(10)] + [(0.35, True), (0.95, True)]
    # 10 hams x 2 spams: 0.35 beats 4 hams, 0.95 beats all 10 -> 14/20
    assert evaluate.roc_area(scored) == pytest.approx(0.7)
    hams = [(k / 1000, False) for k in range(1000)] + [(0.5, True), (0.9995, True)]
    t, ham_pct, missed = evaluate.threshold_for(hams)
    assert ham_pct <= 0.1 and t == pytest.approx(0.998) and missed == 50.0


def test_evaluate_replay_matches_the_filter_run_message_by_message(env, tmp_path, capsys):
    """The replay is the filter's code path: running the same messages in the order the
    replay used (--order-file) through `spamsift filter` (classify+learn, then
    --source=error reports) gives the same errors, message by message."""
    import io

    from spamsift.filter import cli

    msgs = [(m, "spam") for m in mails(25, True, seed=4)] + [
        (m, "innocent") for m in mails(40, False, seed=4)]
    random.Random(5).shuffle(msgs)
    index = tmp_path / "index"
    for k, (raw, _klass) in enumerate(msgs):
        (tmp_path / f"{k}.eml").write_bytes(raw)
    index.write_text("".join(f"{'spam' if c == 'spam' else 'ham'} {k}.eml\n"
                             for k, (_r, c) in enumerate(msgs)))
    order_file = tmp_path / "order"
    assert evaluate.main(["--user", "r", "--json", "--folds", "0", "--order", "input",
                          "--order-file", str(order_file), "--quiet", str(index)]) == 0
    report = json.loads(capsys.readouterr().out)
    fig = report["replay"]
    # evaluate interleaves the classes (as training does), so the order is its own, not the
    # index's: the filter run below follows the order it wrote
    order = [tuple(line.split(None, 1)) for line in order_file.read_text().splitlines()]
    assert sorted(order) == sorted([("spam" if c == "spam" else "ham", str(tmp_path / f"{k}.eml"))
                                    for k, (_r, c) in enumerate(msgs)])
    assert [label for label, _name in order] != [  # the test would not see an order mix-up
        "spam" if c == "spam" else "ham" for _r, c in msgs]
    msgs = [(Path(name).read_bytes(), "spam" if label == "spam" else "innocent")
            for label, name in order]
    # the independent run, through the filter's command line
    fp = fn = 0
    curve = []
    for raw, klass in msgs:
        out = io.BytesIO()
        assert cli.main(["--user", "r", "--stdout", "--deliver=innocent,spam"],
                        stdin=io.BytesIO(raw), stdout=out) == 0
        stamped = out.getvalue()
        said_spam = b"X-DSPAM-Result: Spam" in stamped
        if said_spam != (klass == "spam"):
            if klass == "spam":
                fn += 1
            else:
                fp += 1
            assert cli.main(["--user", "r", f"--class={klass}", "--source=error"],
                            stdin=io.BytesIO(stamped), stdout=io.BytesIO()) == 0
        curve.append(said_spam != (klass == "spam"))
    assert (fig["ham_misclassified"], fig["spam_misclassified"]) == (fp, fn)
    assert fig["learning_curve"] == [round(100.0 * sum(curve[i:i + 100]) / len(curve[i:i + 100]), 2)
                                     for i in range(0, len(curve), 100)]
    # and the user's real data was not touched by evaluate: only the filter run wrote
    settings, store = open_db()
    stats = store.stats(store.uid("r"))
    assert stats.spam_learned + stats.innocent_learned == len(msgs)


def test_evaluate_json_fields_and_cross_validation(env, tmp_path, capsys):
    md = write_maildir(tmp_path / "Maildir", mails(50, False, seed=6), mails(25, True, seed=6))
    assert evaluate.main(["--user", "x", "--json", "--quiet", "--folds", "3", str(md)]) == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("replay", "cross_validation"):
        fig = report[name]
        assert (fig["messages"], fig["spam"], fig["ham"]) == (75, 25, 50)
        assert 0 <= fig["one_minus_roca_pct"] <= 100
        assert sum(r["ham"] + r["spam"] for r in fig["histogram"]) == 75
        assert fig["ham_misclassified_pct"] == pytest.approx(
            100 * fig["ham_misclassified"] / 50, abs=1e-3)
        # The score a site thresholds by: quantiles per class, and what unsure_band holds.
        score = fig["score"]
        assert list(score["ham_quantiles"]) == ["0.0", "0.01", "0.1", "0.5", "0.9", "0.99",
                                                "1.0"]
        assert score["ham_quantiles"]["0.0"] <= score["ham_quantiles"]["1.0"]
        inside = score["unsure_band"]
        assert inside["band"] == [-2.5, 0.0] and inside["ham"] + inside["spam"] <= 75
        assert inside["spam_misclassified_inside"] <= min(inside["spam"],
                                                          fig["spam_misclassified"])
    assert len(report["replay"]["learning_curve"]) == 1
    # evaluate created no database for the user
    assert not (env / "spamsift.db").exists()
    # More folds than messages: a one-line usage error, not k x n learning of empty folds.
    assert evaluate.main(["--user", "x", "--quiet", "--folds", "76", str(md)]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more folds than the 75 messages" in err


def test_cross_validation_with_the_logistic_model_trains_each_fold_as_train_would(tmp_path):
    """With `logistic` enabled, each fold is classified by a filter trained message by message
    on the other folds: the same verdicts and scores as a filter trained by `spamsift
    train`'s learner (CorpusLearner) on those messages, fold by fold."""
    settings = config.load(None, environ={"SPAMSIFT_HOME": str(tmp_path)}).replace(
        algorithm=["graham", "burton", "logistic"])
    msgs = [(m, "spam") for m in mails(12, True, seed=5)] + [
        (m, "innocent") for m in mails(18, False, seed=5)]
    random.Random(5).shuffle(msgs)
    spool = evaluate.Spool()
    for n, (raw, klass) in enumerate(msgs):
        spool.add(klass, raw, f"m{n}", float(n))
    got = evaluate.cross_validate(settings, spool, 3, lambda: None)
    expected = []
    for f in range(3):
        agent = Agent(settings, open_store("memory://"), clock=lambda: 1.8e9)
        learner = CorpusLearner(agent, "fold")
        for n, (raw, klass) in enumerate(msgs):
            if n % 3 != f:
                learner.add(raw, klass)
        learner.close()
        ctx = agent.user("fold")
        for raw, klass in msgs[f::3]:
            outcome = agent.process(ctx, raw, classify_only=True)
            expected.append(evaluate.result_of(klass == "spam", outcome))
    assert got == expected
    assert any(weight for row in agent.store.tokens.values() for weight in row[3:])
    # and the Bayesian-only path still runs (counts of k-1 folds as a sum)
    bayes = evaluate.cross_validate(settings.replace(algorithm=["graham", "burton"]), spool, 3,
                                    lambda: None)
    assert len(bayes) == len(msgs) and [r[0] for r in bayes] == [r[0] for r in got]


# -- reclassify ------------------------------------------------------------------------------
def test_reclassify_lists_then_moves_and_the_watcher_takes_no_drag(env, tmp_path, capsys):
    from spamsift.filter.engine import mailfolders
    from spamsift.watchers.applier import Applier
    from spamsift.watchers.decide import decide

    assert train.main(["--user", "c", "--quiet", "--spam",
                       str(write_maildir(tmp_path / "s", [], mails(40, True, seed=7))),
                       "--ham", str(write_maildir(tmp_path / "h", mails(60, False, seed=7),
                                                  []))]) == 0
    capsys.readouterr()
    misfiled_spam, misfiled_ham = mails(3, True, seed=8), mails(2, False, seed=8)
    md = write_maildir(tmp_path / "Maildir", mails(5, False, seed=9) + misfiled_spam,
                       mails(4, True, seed=9) + misfiled_ham)
    before = sorted(p.relative_to(md) for p in md.rglob("*") if p.is_file())
    assert reclassify_main(["--user", "c", "--json", str(md)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] and report["messages"] == 14 and report["misplaced"] == 5
    assert {f["verdict"] for f in report["findings"] if f["folder"] == "INBOX"} == {"spam"}
    assert sorted(p.relative_to(md) for p in md.rglob("*") if p.is_file()) == before
    assert reclassify_main(["--user", "c", "--json", "--move", str(md)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["moved"] == 5
    for f in report["findings"]:
        name = f["file"].split("/", 1)[1]
        target = md / ".Spam" if f["verdict"] == "spam" else md
        assert (target / f["file"]).is_file()   # same subdir, same name: flags kept
        assert name.endswith(":2,S") == f["file"].startswith("cur/")
    # the watcher state says where the administrator put them: no drag to train
    settings, store = open_db()
    uid = store.uid("c")
    applier = Applier(settings, store, decide)
    for raw in misfiled_spam:
        key = mailfolders.message_key(raw)
        assert store.watch_states(uid, [key]) == {key: "spam"}
        assert applier.apply("c", uid, key, {mailfolders.SPAM}, read=lambda r=raw: r).action \
            == "nothing"
    stats = store.stats(uid)
    assert (stats.spam_learned, stats.innocent_learned) == (40, 60)  # nothing trained
    # a second dry run finds nothing left to move
    assert reclassify_main(["--user", "c", "--json", str(md)]) == 0
    assert json.loads(capsys.readouterr().out)["misplaced"] == 0


def test_reclassify_refuses_a_folder_and_keeps_base_names_unique(env, tmp_path, capsys):
    assert train.main(["--user", "c", "--quiet", "--spam",
                       str(write_maildir(tmp_path / "s", [], mails(40, True, seed=7))),
                       "--ham", str(write_maildir(tmp_path / "h", mails(60, False, seed=7),
                                                  []))]) == 0
    md = write_maildir(tmp_path / "Maildir", mails(3, True, seed=8), [])
    capsys.readouterr()
    # Its spam folder would be made inside the folder, where no IMAP server shows it.
    assert reclassify_main(["--user", "c", "--move", str(md / ".Trash")]) == 64
    assert "a folder of a Maildir" in capsys.readouterr().err
    assert not (md / ".Trash" / ".Spam").exists()
    # A file in .Spam with the same base name but other flags: not a second copy.
    name = next(p.name for p in (md / "cur").iterdir())
    base = name.split(":2,")[0]
    (md / ".Spam" / "new" / base).write_bytes(b"Subject: other\n\nx\n")
    assert reclassify_main(["--user", "c", "--json", "--move", str(md)]) == 0
    report = json.loads(capsys.readouterr().out)
    actions = {f["file"]: f["action"] for f in report["findings"]}
    assert actions[f"cur/{name}"] == "target exists"
    assert (md / "cur" / name).is_file()
    assert [p.name for p in (md / ".Spam").rglob("*") if p.name.startswith(base)] == [base]


def reclassify_main(argv):
    from spamsift.trainer import reclassify

    return reclassify.main(argv)


def test_train_from_imap_folders(env, tmp_path, monkeypatch, dovecot, imap_user, capsys):
    """`spamsift train` over IMAPS from the real Dovecot: INBOX is ham, Junk is spam (a spam
    folder's name), the password comes from a file, and the mailbox is left as it was."""
    import ssl

    imapclient = pytest.importorskip("imapclient")
    user, password = imap_user
    ham, spam = mails(6, False, seed=11), mails(4, True, seed=11)
    client = imapclient.IMAPClient(dovecot.host, port=dovecot.tls_port, ssl=True,
                                   ssl_context=ssl.create_default_context(cafile=dovecot.cert))
    client.login(user, password)
    client.create_folder("Junk")
    for raw in ham:
        client.append("INBOX", raw.replace(b"\n", b"\r\n"))
    for raw in spam:
        client.append("Junk", raw.replace(b"\n", b"\r\n"))
    client.logout()
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    base = f"imaps://{user}@{dovecot.host}:{dovecot.tls_port}"
    assert train.main(["--user", "i@example.org", "--quiet", "--password-file", str(secret),
                       "--cafile", dovecot.cert, f"{base}/INBOX", f"{base}/Junk"]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert "spam      read       4  learned       4" in out
    assert "innocent  read       6  learned       6" in out
    settings, store = open_db()
    stats = store.stats(store.uid("i@example.org"))
    assert (stats.spam_corpusfed, stats.innocent_corpusfed) == (4, 6)
    found = counts_of(store, "i@example.org", spam[0].replace(b"\n", b"\r\n"), settings)
    assert found and all(s >= 1 for s, _i in found.values() if _i == 0)
    # a wrong password is one line and nothing is trained
    secret.write_text("wrong\n")
    assert train.main(["--user", "j", "--quiet", "--password-file", str(secret), "--cafile",
                       dovecot.cert, f"{base}/INBOX"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
