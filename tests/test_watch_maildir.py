"""The Maildir watcher on real Maildir trees, with messages stamped by the real filter; every
outcome is checked against the token counts and statistics in storage."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.watchsite import HAM, SPAM, Site
from spamsift.watchers.finder import MailboxFinder, Template
from spamsift.watchers.maildir import TrainingQueue, Watcher

USER = "alice@example.org"


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def watcher(site, **kw):
    lines: list[str] = []
    w = Watcher(site.settings(), site.store, [site.root], log=lines.append, **kw)
    w.lines = lines  # type: ignore[attr-defined]
    return w


def delta(before: dict, after: dict) -> set[tuple[int, int]]:
    """The set of per-token (spam, innocent) changes between two `Site.counts`."""
    return {(after.get(t, (0, 0))[0] - before.get(t, (0, 0))[0],
             after.get(t, (0, 0))[1] - before.get(t, (0, 0))[1])
            for t in set(before) | set(after)}


def all_counts(site, sigs) -> dict[int, tuple[int, int]]:
    """Stored counts of every token of these signatures, in one lookup."""
    uid = site.store.uid(USER, create=False)
    tokens = {t for s in sigs for t in site.store.signature(s).tokens}
    return site.store.lookup(uid, tokens)


def expected_change(site, moves) -> dict[int, tuple[int, int]]:
    """Per token, what retraining each (signature, target class) once must change: the
    signature's applied amount leaves the other class and one hit joins the target (TEFT,
    test-conditional training off), summed over messages sharing a token."""
    change: dict[int, list[int]] = {}
    for sig_id, target in moves:
        sig = site.store.signature(sig_id)
        for token, applied in zip(sig.tokens, sig.applied):
            entry = change.setdefault(token, [0, 0])
            entry[0 if target == "spam" else 1] += 1
            entry[1 if target == "spam" else 0] -= applied
    return {t: (v[0], v[1]) for t, v in change.items()}


def changed(before, after) -> dict[int, tuple[int, int]]:
    return {t: (after.get(t, (0, 0))[0] - before.get(t, (0, 0))[0],
                after.get(t, (0, 0))[1] - before.get(t, (0, 0))[1]) for t in set(before) | set(after)}


def ham(n) -> bytes:
    return HAM.format(user=USER, n=n).encode()


def spam(n) -> bytes:
    return SPAM.format(user=USER, n=n).encode()


@pytest.fixture
def trained(site):
    """A trained user with one message in the INBOX (innocent) and one in .Spam (spam)."""
    box = site.mailbox()
    site.train(USER)
    inbox = site.deliver(box, USER, ham(1))
    junk = site.deliver(box, USER, spam(2), folder=".Spam")
    assert site.store.signature(site.signature(inbox)).result in ("innocent", "whitelisted")
    assert site.store.signature(site.signature(junk)).result == "spam"
    return box, inbox, junk


@pytest.mark.parametrize("how", ["rename", "copy+delete"])
def test_drag_into_spam_retrains_once_and_drag_back_restores(site, trained, how):
    box, inbox, _junk = trained
    w = watcher(site)
    assert w.cycle().trained == {}  # deliveries where their verdicts put them: nothing
    sig = site.signature(inbox)
    before, stats0 = site.counts(USER, sig), site.stats(USER)
    inbox = site.seen(inbox)
    moved = site.move(inbox, box, ".Spam") if how == "rename" else site.copy_delete(
        inbox, box, ".Spam")
    report = w.cycle()
    assert report.trained == {"retrained": 1}
    after = site.counts(USER, sig)
    assert delta(before, after) == {(1, -1)}  # every token: one hit moved innocent -> spam
    stats = site.stats(USER)
    assert stats.spam_misclassified == stats0.spam_misclassified + 1
    assert stats.spam_learned == stats0.spam_learned + 1
    assert site.store.signature(sig).trained == "spam"
    # Seen again, flags changed, more cycles: exactly once.
    flagged = os.path.join(os.path.dirname(moved), os.path.basename(moved) + "T")
    os.rename(moved, flagged)
    w.cycle()
    w.cycle()
    assert site.counts(USER, sig) == after and site.stats(USER) == stats
    # Dragged back: a false positive, back to the counts from before the first drag.
    back = site.move(flagged, box, "") if how == "rename" else site.copy_delete(flagged, box, "")
    assert w.cycle().trained == {"retrained": 1}
    assert site.counts(USER, sig) == before
    assert site.store.signature(sig).trained == "innocent"
    assert os.path.exists(back)


def test_false_positive_drag_out_of_spam(site, trained):
    box, _inbox, junk = trained
    w = watcher(site)
    w.cycle()
    sig = site.signature(junk)
    before, stats0 = site.counts(USER, sig), site.stats(USER)
    site.move(junk, box, "")
    assert w.cycle().trained == {"retrained": 1}
    assert delta(before, site.counts(USER, sig)) == {(-1, 1)}
    assert site.stats(USER).innocent_misclassified == stats0.innocent_misclassified + 1


def test_flags_new_to_cur_deletions_and_trash_are_not_training(site, trained):
    box, inbox, junk = trained
    extra = site.deliver(box, USER, ham(3))
    trash_ham = site.deliver(box, USER, ham(4))
    w = watcher(site)
    w.cycle()
    sigs = [site.signature(p) for p in (inbox, junk, extra, trash_ham)]
    counts0 = {s: site.counts(USER, s) for s in sigs}
    stats0 = site.stats(USER)
    inbox = site.seen(inbox, "S")
    os.rename(inbox, inbox + "F")                          # flag change
    trashed = site.move(site.seen(junk, "S"), box, ".Trash")  # spam into Trash
    os.unlink(extra)                                       # deletion
    w.cycle()
    trash_ham = site.move(site.seen(trash_ham), box, ".Trash")  # ham into Trash
    assert w.cycle().trained == {}
    assert w.cycle().trained == {}
    assert {s: site.counts(USER, s) for s in sigs} == counts0
    assert site.stats(USER) == stats0
    # Ham rescued from Trash into the INBOX: it was innocent all along, nothing.
    site.move(trash_ham, box, "")
    assert w.cycle().trained == {}
    assert {s: site.counts(USER, s) for s in sigs} == counts0
    # Spam rescued from Trash into the INBOX: a drag out of Spam (via Trash).
    site.move(trashed, box, "")
    assert w.cycle().trained == {"retrained": 1}
    assert delta(counts0[sigs[1]], site.counts(USER, sigs[1])) == {(-1, 1)}
    assert site.stats(USER).innocent_misclassified == stats0.innocent_misclassified + 1


def test_move_out_and_back_between_scans_trains_nothing(site, trained):
    box, inbox, _junk = trained
    w = watcher(site)
    w.cycle()
    sig = site.signature(inbox)
    before, stats0 = site.counts(USER, sig), site.stats(USER)
    moved = site.move(inbox, box, ".Spam")
    site.move(moved, box, "")
    assert w.cycle().trained == {}
    # Out, scanned (queued), back before its turn: decided once, from where it ended up.
    w.queue.limiter.rate = 0.001  # nothing may be trained right after the scan
    w.queue.limiter.tokens = 0.0
    inbox = os.path.join(box, "cur", os.path.basename(moved))
    moved = site.move(inbox, box, ".Spam")
    assert w.scan().queued == 1
    site.move(moved, box, "")
    assert w.scan().queued == 1 and len(w.queue) == 1
    w.queue.limiter.rate = 0
    assert w.cycle().trained.get("nothing") == 1
    assert site.counts(USER, sig) == before and site.stats(USER) == stats0


def test_restart_catches_up_on_moves_made_while_down(site, trained):
    box, inbox, junk = trained
    watcher(site).cycle()
    sig_in, sig_junk = site.signature(inbox), site.signature(junk)
    site.move(inbox, box, ".Spam")
    site.move(junk, box, "")
    report = watcher(site).cycle()  # a new process: no memory of the tree
    assert report.trained == {"retrained": 2}
    assert site.store.signature(sig_in).trained == "spam"
    assert site.store.signature(sig_junk).trained == "innocent"
    assert watcher(site).cycle().trained == {}  # and again: nothing


def test_saved_scanner_state_makes_a_restart_read_only_what_changed(site, trained, tmp_path):
    box, inbox, junk = trained
    state = str(tmp_path / "watch.state")
    extra = [site.deliver(box, USER, ham(600 + n)) for n in range(5)]
    first = watcher(site, state_file=state)
    assert first.cycle().files == 7
    first.save_state()
    assert oct(os.stat(state).st_mode & 0o777) == "0o600"
    # Restarted with nothing changed: not one message is read.
    again = watcher(site, state_file=state)
    assert again.cycle().files == 0
    # Moves made while it was down: only the moved files are read, and trained.
    sig_in, sig_junk = site.signature(inbox), site.signature(junk)
    site.move(inbox, box, ".Spam")
    site.move(junk, box, "")
    third = watcher(site, state_file=state)
    report = third.cycle()
    assert report.files == 2 and report.trained == {"retrained": 2}
    assert site.store.signature(sig_in).trained == "spam"
    assert site.store.signature(sig_junk).trained == "innocent"
    # Saved while a drag was still queued (a slow rate): the next start sees it again.
    third.save_state()
    moved = site.move(site.seen(extra[0]), box, ".Spam")
    slow = watcher(site, state_file=state)
    slow.queue.limiter.rate, slow.queue.limiter.tokens = 0.001, 0.0
    assert slow.scan().queued == 1
    slow.save_state()
    del slow
    last = watcher(site, state_file=state)
    assert last.cycle().trained == {"retrained": 1}
    assert site.store.signature(site.signature(moved)).trained == "spam"
    # A damaged state file is ignored: everything is read, nothing is trained twice.
    with open(state, "wb") as fh:
        fh.write(b"\x00garbage")
    damaged = watcher(site, state_file=state)
    report = damaged.cycle()
    assert report.files == 7 and report.trained == {}
    assert any("unreadable scanner state" in line for line in damaged.lines)


def test_restart_in_the_middle_of_a_batch_trains_each_message_once(site):
    box = site.mailbox()
    site.train(USER)
    paths = [site.deliver(box, USER, ham(100 + n)) for n in range(30)]
    sigs = [site.signature(p) for p in paths]
    expected = expected_change(site, [(s, "spam") for s in sigs])
    before = all_counts(site, sigs)
    stats0 = site.stats(USER)
    first = watcher(site)
    first.cycle()
    for p in paths:
        site.move(site.seen(p), box, ".Spam")
    report = first.scan()
    assert report.queued == 30
    for _ in range(12):  # twelve trained, then the process is gone
        assert first.train_one(report)
    del first
    second = watcher(site)
    report = second.cycle()
    assert report.trained == {"retrained": 18}
    assert site.stats(USER).spam_misclassified == stats0.spam_misclassified + 30
    assert changed(before, all_counts(site, sigs)) == expected


def two_watchers_once(site, timeout: float) -> list[str]:
    """Run two `spamsift watch --once` processes on `site` at once; their logs (both must
    exit 0)."""
    cmd = [sys.executable, "-m", "spamsift", "watch", "--once", "-v", "--rate", "0", site.root]
    env = {**os.environ, **site.env}
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    logs = [proc.communicate(timeout=timeout)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], logs
    return logs


def test_killed_process_and_restart(site):
    """A real `spamsift watch` process killed (SIGKILL) while training at 10 a second, then
    started again: every drag is trained exactly once."""
    box = site.mailbox()
    site.train(USER)
    paths = [site.deliver(box, USER, ham(200 + n)) for n in range(40)]
    sigs = [site.signature(p) for p in paths]
    expected = expected_change(site, [(s, "spam") for s in sigs])
    before = all_counts(site, sigs)
    stats0 = site.stats(USER)
    for p in paths:
        site.move(p, box, ".Spam")
    cmd = [sys.executable, "-m", "spamsift", "watch", "--once", "--rate", "10", site.root]
    env = {**os.environ, **site.env}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill it once it has trained some
        if sum(site.store.signature(s).trained == "spam" for s in sigs) >= 12:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sum(site.store.signature(s).trained == "spam" for s in sigs)
    assert 0 < done < 40, done  # killed in the middle
    rerun = subprocess.run(cmd[:5] + ["--rate", "0", site.root], env=env, capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert all(site.store.signature(s).trained == "spam" for s in sigs)
    assert site.stats(USER).spam_misclassified == stats0.spam_misclassified + 40
    assert changed(before, all_counts(site, sigs)) == expected


def test_two_watcher_processes_on_mysql_train_each_drag_once(tmp_path, mysql_url):
    site = Site(tmp_path, storage=mysql_url)
    try:
        box = site.mailbox()
        site.train(USER)
        paths = [site.deliver(box, USER, ham(300 + n)) for n in range(40)]
        paths += [site.deliver(box, USER, spam(400 + n), folder=".Spam") for n in range(10)]
        sigs = [site.signature(p) for p in paths]
        expected = expected_change(site, [(s, "spam") for s in sigs[:40]]
                                   + [(s, "innocent") for s in sigs[40:]])
        before = all_counts(site, sigs)
        stats0 = site.stats(USER)
        for p in paths[:40]:
            site.move(p, box, ".Spam")
        for p in paths[40:]:
            site.move(p, box, "")
        logs = two_watchers_once(site, timeout=120)
        # Between them the two trained each message once (whoever lost a race saw it done).
        assert sum(log.count(" retrained ") for log in logs) == 50, logs
        stats = site.stats(USER)
        assert stats.spam_misclassified == stats0.spam_misclassified + 40
        assert stats.innocent_misclassified == stats0.innocent_misclassified + 10
        assert changed(before, all_counts(site, sigs)) == expected
        uid = site.store.uid(USER, create=False)
        assert set(site.store.watch_states(uid, sigs).values()) == {"spam", "innocent"}
        assert len(site.store.watch_states(uid, sigs)) == 50
    finally:
        site.close()


def test_unsigned_mail_is_learned_as_corpus_only_when_configured(tmp_path):
    raw = b"From: x@y.example\nSubject: never filtered\n\nold mail from before opt-in\n"
    for learn in (False, True):
        site = Site(tmp_path / str(learn), extra=f"watch_learn_unsigned = {str(learn).lower()}\n")
        try:
            box = site.mailbox()
            site.train(USER)
            path = site.deliver(box, USER, raw, signed=False)
            stats0 = site.stats(USER)
            w = watcher(site)
            assert w.cycle().trained == {}  # in the INBOX: not a statement
            moved = site.move(path, box, ".Spam")
            w.cycle()
            stats = site.stats(USER)
            if not learn:
                assert stats == stats0
                continue
            assert stats.spam_corpusfed == stats0.spam_corpusfed + 1
            assert stats.spam_learned == stats0.spam_learned + 1
            from spamsift.filter.engine.mailfolders import message_key
            from spamsift.filter.engine.watchstate import derived_signature

            uid = site.store.uid(USER, create=False)
            sig = derived_signature(uid, message_key(raw))
            learned = site.counts(USER, sig)
            assert all(s >= 1 for s, _i in learned.values())
            site.move(moved, box, "")  # dragged back: exactly what was learned moves
            assert w.cycle().trained == {"retrained": 1}
            back = site.counts(USER, sig)
            assert delta(learned, back) == {(-1, 1)}
            assert watcher(site).cycle().trained == {}
        finally:
            site.close()


def test_sites_delivering_spam_to_the_inbox_record_first_sightings(tmp_path):
    site = Site(tmp_path, extra="watch_trust_verdict = false\n")
    try:
        box = site.mailbox()
        site.train(USER)
        tagged = [site.deliver(box, USER, spam(500 + n)) for n in range(3)]  # INBOX, tagged
        sigs = [site.signature(p) for p in tagged]
        assert {site.store.signature(s).result for s in sigs} == {"spam"}
        before, stats0 = all_counts(site, sigs), site.stats(USER)
        w = watcher(site)
        report = w.cycle()
        assert report.trained == {} and report.queued == 0  # recorded in one transaction
        uid = site.store.uid(USER, create=False)
        assert site.store.watch_states(uid, sigs) == dict.fromkeys(sigs, "innocent")
        assert all_counts(site, sigs) == before and site.stats(USER) == stats0
        # Reported by dragging into .Spam: already counted as spam, so only the record moves.
        moved = site.move(tagged[0], box, ".Spam")
        assert w.cycle().trained == {"unchanged": 1}
        assert all_counts(site, sigs) == before
        # ... and taken back: now that is a false positive.
        site.move(moved, box, "")
        assert w.cycle().trained == {"retrained": 1}
        assert site.stats(USER).innocent_misclassified == stats0.innocent_misclassified + 1
    finally:
        site.close()


def test_tmp_vanishing_unreadable_and_deleted_mailboxes_are_skipped(site, trained):
    box, inbox, _junk = trained
    other = site.mailbox("bob")
    site.deliver(other, "bob@example.org", ham(5))
    w = watcher(site)
    w.cycle()
    stats0 = site.stats(USER)
    # A half-written file in tmp/ of .Spam: never read.
    with open(os.path.join(box, ".Spam", "tmp", "123.half"), "wb") as fh:
        fh.write(open(inbox, "rb").read())
    # A symlink and a directory posing as messages: skipped as unreadable.
    os.symlink(inbox, os.path.join(box, ".Spam", "cur", "1.link:2,S"))
    os.mkdir(os.path.join(box, ".Spam", "cur", "2.dir:2,S"))
    # Bob's mailbox is deleted while the scan runs.
    real_listdir, real_open = os.listdir, os.open
    deleted = []

    def delete_once(path):
        if isinstance(path, str) and path.startswith(other) and not deleted:
            deleted.append(path)
            shutil.rmtree(other)

    def listdir(path):
        delete_once(path)
        return real_listdir(path)

    def opener(path, flags, *args, **kw):
        delete_once(path)
        return real_open(path, flags, *args, **kw)

    w.scanner.listdir = listdir
    w.finder.listdir = listdir
    os.utime(os.path.join(other, "cur"), ns=(1, 1))  # make Bob's INBOX look changed
    import spamsift.filter.engine.mailfolders as md

    # message_files opens cur/ and new/ (no symlink followed) and lists them by descriptor.
    md.os.listdir, md.os.open = listdir, opener
    try:
        report = w.cycle()
    finally:
        md.os.listdir, md.os.open = real_listdir, real_open
    assert deleted
    assert report.unreadable == 2 and report.trained == {}
    assert site.stats(USER) == stats0
    assert not os.path.exists(other)
    assert w.cycle().trained == {}
    assert any("unreadable" in line for line in w.lines)
    # A file that vanishes between listing and reading is seen again under its new name.
    moved = site.move(inbox, box, ".Spam")
    real_key = md.file_key

    def vanish_once(path, header, limit=None, below=None, strict=False):
        md.file_key = real_key
        raise FileNotFoundError(path)

    md.file_key = vanish_once
    try:
        report = w.cycle()
    finally:
        md.file_key = real_key
    assert report.vanished == 1 and report.trained == {}
    assert w.cycle().trained == {"retrained": 1}
    assert site.store.signature(site.signature(moved)).trained == "spam"


def test_a_lost_store_connection_is_reopened_and_nothing_is_missed(site, trained):
    from spamsift.filter.engine.errors import StorageUnavailableError

    box, inbox, _junk = trained

    class Gone:
        """A connection the server closed: every query fails."""
        closed = False

        def __getattr__(self, name):
            def fail(*_args, **_kw):
                raise StorageUnavailableError("MySQL: server has gone away")
            return fail

        def close(self):
            Gone.closed = True

    w = watcher(site)
    w.cycle()
    w.use_store(Gone())
    sig = site.signature(inbox)
    site.move(inbox, box, ".Spam")
    deadline = time.monotonic() + 10
    w.run(0.01, reopen=lambda: site.store, stop=lambda: time.monotonic() > deadline or (
        w.store is site.store and site.store.signature(sig).trained == "spam"))
    assert Gone.closed and w.store is site.store, "\n".join(w.lines)
    assert site.store.signature(sig).trained == "spam", "\n".join(w.lines)
    assert any("server has gone away" in line for line in w.lines)


def test_reclassify_move_is_not_taken_for_a_drag(site, trained):
    from spamsift.filter.engine.watchstate import record_placement

    box, inbox, _junk = trained
    w = watcher(site)
    w.cycle()
    sig = site.signature(inbox)
    before = site.counts(USER, sig)
    record_placement(site.store, site.store.uid(USER, create=False), sig, "spam")
    site.move(inbox, box, ".Spam")  # the administrator's tool moved it
    assert w.cycle().trained == {}
    assert site.counts(USER, sig) == before  # the tool decides about training, not us


def test_mailbox_templates():
    t = Template("%d/%u/Maildir")
    assert Template.user_of({"u": "a", "d": "example.org"}) == "a@example.org"
    assert [p for p, _ in t.parts] == ["%d", "%u", "Maildir"]
    with pytest.raises(Exception, match="names no user"):
        Template("%d/Maildir")
    with pytest.raises(Exception, match="relative path"):
        Template("../%u")


def test_finder_maps_paths_to_users(tmp_path):
    root = tmp_path / "vmail"
    for rel in ("example.org/alice/Maildir/cur", "example.org/bob/Maildir/cur",
                "Example.NET/carol/Maildir/cur", "example.org/no-maildir/x",
                "example.org/..evil/Maildir/cur"):
        os.makedirs(root / rel)
    found = MailboxFinder([str(root)], Template("%d/%u/Maildir")).find()
    assert sorted(found.values()) == ["alice@example.org", "bob@example.org",
                                      "carol@example.net"]
    home = tmp_path / "home"
    os.makedirs(home / "dave" / "Maildir" / "cur")
    found = MailboxFinder([str(home)], Template("%u/Maildir")).find()
    assert found == {str(home / "dave" / "Maildir"): "dave"}


def test_home_relative_template_finds_system_users(tmp_path):
    homes = tmp_path / "home"
    for user in ("erin", "frank"):
        os.makedirs(homes / user / "Maildir" / "cur")
    os.makedirs(tmp_path / "elsewhere" / "gina" / "Maildir" / "cur")
    entries = [("erin", str(homes / "erin")), ("frank", str(homes / "frank")),
               ("gina", str(tmp_path / "elsewhere" / "gina")), ("nobody", "/nonexistent"),
               ("daemon", "/")]
    finder = MailboxFinder([str(homes)], Template("~/Maildir"), passwd=lambda: entries)
    assert finder.find() == {str(homes / "erin" / "Maildir"): "erin",
                             str(homes / "frank" / "Maildir"): "frank"}


def test_inotify_wakes_the_loop_early(site, trained):
    from spamsift.watchers.inotify import InotifyWaker

    box, inbox, _junk = trained
    waker = InotifyWaker()
    try:
        waker.watch([box])
        assert waker.wait(0.2) is False  # nothing happened
        started = time.monotonic()
        threading_timer = __import__("threading").Timer(0.3, site.move, (inbox, box, ".Spam"))
        threading_timer.start()
        assert waker.wait(10) is True
        assert time.monotonic() - started < 5
        waker.watch([])  # mailbox gone: unwatched
        assert waker.watches == {}
    finally:
        waker.stop()


def test_queue_is_rate_limited_and_round_robin_per_user():
    from spamsift.watchers.core import RateLimiter, Sighting

    now = [0.0]
    q = TrainingQueue(RateLimiter(2.0, clock=lambda: now[0]))
    for n in range(5):
        q.put(Sighting("bulk", 1, f"k{n}", frozenset({"spam"}), {}))
    q.put(Sighting("other", 2, "x", frozenset({"spam"}), {}))
    taken = [q.take(), q.take(), q.take()]
    assert [s.uid for s in taken[:2]] == [1, 2]  # the single drag is not stuck behind 5
    assert taken[2] is None and q.wait_time() == pytest.approx(0.5)
    now[0] += 1.0
    assert q.take() is not None and q.take() is not None and q.take() is None
    q.put(Sighting("bulk", 1, "k4", frozenset({"innocent"}), {}))  # replaces, no duplicate
    assert len(q) == 2


def test_cli(site, trained, capsys):
    from spamsift.watchers.cli import main

    box, inbox, _junk = trained
    os.environ.update(site.env)
    try:
        assert main(["--once", "-v", site.root]) == 0
        site.move(inbox, box, ".Spam")
        assert main(["--once", "-v", site.root]) == 0
        err = capsys.readouterr().err
        assert "retrained spam" in err and "1 mailboxes" in err
        assert main(["--once", str(site.root) + "/missing"]) == 64
        assert main(["--once", "--bogus", site.root]) == 64
        assert main(["--once", "--template", "%d/Maildir", site.root]) == 78
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 3
    finally:
        for key in site.env:
            os.environ.pop(key, None)


@pytest.mark.parametrize("restart", [False, True])
def test_copies_in_both_classes_at_once_are_decided_when_one_goes(site, trained, tmp_path,
                                                                 restart):
    # An IMAP client COPYs a new message into Spam and expunges the INBOX copy later: when
    # one scan finds both copies, nothing can be decided yet, and the expunge is no
    # sighting. The copy left must still be trained as the move it was -- once.
    box, _inbox, _junk = trained
    state = str(tmp_path / "watch.state")
    w = watcher(site, state_file=state)
    w.cycle()
    new = site.deliver(box, USER, ham(700))
    sig = site.signature(new)
    copy = os.path.join(box, ".Spam", "cur", "copy-700:2,S")
    shutil.copyfile(new, copy)
    assert w.cycle().trained == {}
    assert w.cycle().trained == {}  # both copies still there: still nothing
    if restart:
        w.save_state()
        w = watcher(site, state_file=state)
        assert w.cycle().trained == {}
    before = site.counts(USER, sig)
    os.unlink(new)  # the expunge
    assert w.cycle().trained == {"retrained": 1}
    assert site.store.signature(sig).trained == "spam"
    assert delta(before, site.counts(USER, sig)) == {(1, -1)}
    assert w.cycle().trained == {} and watcher(site).cycle().trained == {}
    # The other way round: a copy into Spam undone by deleting the Spam copy trains nothing.
    other = site.deliver(box, USER, ham(701))
    other_copy = os.path.join(box, ".Spam", "cur", "copy-701:2,S")
    shutil.copyfile(other, other_copy)
    w.cycle()
    os.unlink(other_copy)
    assert w.cycle().trained == {} and w.cycle().trained == {}
    assert site.store.signature(site.signature(other)).trained == "innocent"


def test_nothing_is_read_through_a_symlink_below_the_mailbox(tmp_path):
    # The watcher reads with more rights than the mailbox's user: a user's symlink in place
    # of a folder, of cur/ or of a message must not make it read (and learn) other files.
    from spamsift.filter.engine.tokenizer import token_id

    site = Site(tmp_path / "site", extra='watch_learn_unsigned = true\n'
                'spam_folders = ["Spam", "Junk", "Spam2"]\n')
    try:
        box = site.mailbox()
        site.train(USER)
        secret = tmp_path / "secret"
        os.makedirs(secret / "cur")
        os.makedirs(secret / "new")
        root_only = b"From: root@example.org\nSubject: root only\n\nrootonlytoken\n"
        (secret / "cur" / "key:2,S").write_bytes(root_only)
        os.symlink(secret, os.path.join(box, ".Junk"))                  # a whole folder
        os.makedirs(os.path.join(box, ".Spam2", "new"))
        os.symlink(secret / "cur", os.path.join(box, ".Spam2", "cur"))  # its cur/
        os.symlink(secret / "cur" / "key:2,S",                          # one message
                   os.path.join(box, ".Spam", "cur", "link:2,S"))
        w = watcher(site)
        assert w.cycle().trained == {}
        uid = site.store.uid(USER, create=False)
        assert site.store.lookup(uid, [token_id("rootonlytoken")]) == {}
        # The content itself is fine: as a real file in the user's Spam it is learned.
        with open(os.path.join(box, ".Spam", "cur", "real:2,S"), "wb") as fh:
            fh.write(root_only)
        assert sum(w.cycle().trained.values()) == 1
        assert site.store.lookup(uid, [token_id("rootonlytoken")])
    finally:
        site.close()


def test_read_message_below_a_root_refuses_symlinked_directories(tmp_path):
    from spamsift.filter.engine import mailfolders

    os.makedirs(tmp_path / "box" / ".F")
    os.makedirs(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "m").write_bytes(b"Subject: x\n\nbody\n")
    os.symlink(tmp_path / "elsewhere", tmp_path / "box" / ".F" / "cur")
    path = str(tmp_path / "box" / ".F" / "cur" / "m")
    assert mailfolders.read_message(path) == b"Subject: x\n\nbody\n"  # without a root: as before
    with pytest.raises(OSError):
        mailfolders.read_message(path, below=str(tmp_path / "box"))
    with pytest.raises(OSError):
        mailfolders.read_message(str(tmp_path / "elsewhere" / "m"), below=str(tmp_path / "box"))
    # The root itself may be a symlink (an administrator's layout).
    os.makedirs(tmp_path / "real" / "cur")
    (tmp_path / "real" / "cur" / "m").write_bytes(b"ok\n")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert mailfolders.read_message(str(tmp_path / "link" / "cur" / "m"),
                                below=str(tmp_path / "link")) == b"ok\n"


def test_home_relative_mailbox_owned_by_someone_else_is_skipped(tmp_path):
    # A system user can point ~/Maildir at any directory; one not owned by the user is not
    # theirs to train from. Their own is found by its resolved path, which is then read
    # without following any symlink, so swapping ~/Maildir afterwards changes nothing.
    if os.geteuid() != 0:
        pytest.skip("needs root to give directories other owners")
    home = tmp_path / "home" / "hal"
    os.makedirs(home)
    os.makedirs(tmp_path / "rootonly" / "cur")
    os.makedirs(tmp_path / "rootonly" / "new")
    os.symlink(tmp_path / "rootonly", home / "Maildir")
    lines: list[str] = []
    finder = MailboxFinder([str(tmp_path / "home")], Template("~/Maildir"),
                           passwd=lambda: [("hal", str(home), 65534)], log=lines.append)
    assert finder.find() == {}
    assert any("not owned by hal" in line for line in lines)
    os.chown(tmp_path / "rootonly", 65534, 65534)
    assert finder.find() == {str(tmp_path / "rootonly"): "hal"}
    # A root-owned home (an SFTP chroot) with the user's own Maildir is theirs.
    os.chown(home, 0, 0)
    assert finder.find() == {str(tmp_path / "rootonly"): "hal"}
    # Reading under the resolved path refuses a symlink anywhere in it.
    from spamsift.filter.engine import mailfolders

    (tmp_path / "rootonly" / "cur" / "m").write_bytes(b"Subject: x\n\nok\n")
    real = str(tmp_path / "rootonly")
    assert mailfolders.read_message(real + "/cur/m", below=real, strict=True) == \
        b"Subject: x\n\nok\n"
    with pytest.raises(OSError):
        mailfolders.read_message(str(home / "Maildir" / "cur" / "m"),
                             below=str(home / "Maildir"), strict=True)


def test_idle_cycles_are_logged_only_verbose_or_as_an_hourly_heartbeat(site, trained):
    """One line per idle cycle was 8,600 lines a day at 10 s: a cycle that found or trained
    something is logged, an idle one only with --verbose or once an hour."""
    box, inbox, _junk = trained
    now = [1000.0]
    w = watcher(site, monotonic=lambda: now[0])
    w.cycle()
    assert len([line for line in w.lines if line.startswith("watch:")]) == 1  # the first
    for _ in range(5):
        now[0] += 10
        w.cycle()
    assert len([line for line in w.lines if line.startswith("watch:")]) == 1
    site.move(site.seen(inbox), box, ".Spam")
    now[0] += 10
    assert w.cycle().trained == {"retrained": 1}
    assert "trained: 1 retrained" in w.lines[-1]
    now[0] += 3600
    w.cycle()  # idle, but an hour since the last line: the heartbeat
    assert w.lines[-1].startswith("watch:") and "trained: none" in w.lines[-1]
    count = len(w.lines)
    w.heartbeat.verbose = True
    now[0] += 10
    w.cycle()
    assert len(w.lines) == count + 1


def test_watch_help_is_plain_and_lists_the_imap_options():
    out = subprocess.run([sys.executable, "-m", "spamsift", "watch", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "%%" not in out.stdout and "%d/%u/Maildir" in out.stdout
    for option in ("--password-file", "--cafile", "--no-idle", "--all-folders", "--state"):
        assert option in out.stdout, option
    bad = subprocess.run([sys.executable, "-m", "spamsift", "watch", "--no-idle", "/tmp"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 64
    assert bad.stderr.strip().splitlines() == [
        "spamsift watch: --no-idle is for imap:// URLs, not Maildir roots"]


class _FrozenMtime:
    """os.stat with chosen directories' mtimes held still (`held`: path -> st_mtime_ns), as
    NFS attribute caching (acdirmax) or a one-second mtime resolution shows them: the folder
    changes, its mtime does not."""

    def __init__(self, held: dict[str, int]) -> None:
        self.held = {os.path.normpath(path): ns for path, ns in held.items()}

    def __call__(self, path, *args, **kwargs):
        real = os.stat(path, *args, **kwargs)
        mtime_ns = self.held.get(os.path.normpath(path))
        if mtime_ns is None:
            return real

        class Held:
            def __getattr__(self, name):
                return mtime_ns if name == "st_mtime_ns" else getattr(real, name)
        return Held()


@pytest.mark.parametrize("recent", [True, False])
def test_nfs_mtime_slack_lists_a_recently_changed_folder_again(site, trained, recent):
    """Through the stat= seam: .Spam/cur keeps the same mtime while a message is moved in.
    When that mtime was within MTIME_SLACK of the listing, the folder is listed again next
    cycle and the drag is trained; when it was older, nothing says the folder changed, and
    the drag waits until its mtime moves (then it is trained, once)."""
    from spamsift.watchers import scanner as scanner_module

    box, inbox, _junk = trained
    now = [1_800_000_000.0]
    frozen_dir = os.path.join(box, ".Spam", "cur")
    held_at = now[0] if recent else now[0] - 10 * scanner_module.MTIME_SLACK
    stat = _FrozenMtime({frozen_dir: int(held_at * 1e9)})
    w = watcher(site, stat=stat, clock=lambda: now[0])
    assert w.cycle().trained == {}
    site.move(site.seen(inbox), box, ".Spam")
    now[0] += 1
    report = w.cycle()
    if recent:
        assert report.trained == {"retrained": 1}
    else:
        assert report.trained == {}  # the folder looked unchanged
        stat.held[frozen_dir] += 1_000_000_000  # the cache expires: the mtime moves
        now[0] += 1
        assert w.cycle().trained == {"retrained": 1}
    now[0] += 60
    assert w.cycle().trained == {}  # and once only


def test_nfs_recheck_ends_once_the_mtime_is_older_than_the_slack(site, trained):
    """Through the stat=, listdir= and clock= seams: a folder listed while its mtime is within
    MTIME_SLACK is listed again every cycle until a listing finds that mtime older than the
    slack, then no more; an idle cycle lists nothing, and every listing goes through
    listdir (two descriptors a folder: new/ and cur/)."""
    from spamsift.watchers.scanner import MTIME_SLACK

    box, _inbox, _junk = trained
    now = [1_800_000_000.0]
    old = int((now[0] - 10 * MTIME_SLACK) * 1e9)
    subdirs = [os.path.join(box, folder, sub) for folder in ("", ".Spam") for sub in ("new", "cur")]
    stat = _FrozenMtime(dict.fromkeys(subdirs, old))
    listings: list[int] = []

    def listdir(path):
        if isinstance(path, int):  # a folder's new/ or cur/, opened without following links
            listings.append(path)
        return os.listdir(path)

    w = watcher(site, stat=stat, listdir=listdir, clock=lambda: now[0])

    def cycle(advance: float) -> int:
        """Folders listed by one cycle `advance` seconds on (checked against listdir)."""
        now[0] += advance
        del listings[:]
        listed = w.cycle().listed
        assert len(listings) == 2 * listed
        return listed

    assert cycle(0) == 2          # the first scan lists INBOX and .Spam (.Trash: ignored)
    assert cycle(10) == 0         # idle: stats only
    spam_cur = os.path.normpath(os.path.join(box, ".Spam", "cur"))
    stat.held[spam_cur] = int(now[0] * 1e9)  # .Spam changes now: its mtime moves
    assert cycle(0) == 1          # changed: listed, and its mtime is recent
    assert cycle(1) == 1          # still within the slack at the last listing: again
    assert cycle(MTIME_SLACK) == 1  # listed once more, which finds the mtime old enough
    assert cycle(1) == 0          # and no more
    assert cycle(60) == 0


def test_finder_lists_a_directory_again_only_when_its_mtime_changes(tmp_path):
    """Through the finder's stat= and listdir= seams: an idle find stats the template's
    directories and lists none; a new mailbox is found by listing only what changed."""
    root = tmp_path / "vmail"
    os.makedirs(root / "example.org" / "alice" / "Maildir" / "cur")
    listed: list[str] = []

    def listdir(path):
        listed.append(os.path.relpath(path, root))
        return os.listdir(path)

    finder = MailboxFinder([str(root)], Template("%d/%u/Maildir"), listdir=listdir)
    assert list(finder.find().values()) == ["alice@example.org"]
    assert listed == [".", "example.org", "example.org/alice"]
    del listed[:]
    assert list(finder.find().values()) == ["alice@example.org"] and listed == []
    os.makedirs(root / "example.org" / "bob" / "Maildir" / "cur")
    assert sorted(finder.find().values()) == ["alice@example.org", "bob@example.org"]
    assert listed == ["example.org", "example.org/bob"]
