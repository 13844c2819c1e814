"""The watcher on mail ``spamsift train`` learned in bulk (issue #20: corrected through the
record of what training learned, exactly once), beside ``train --clean`` and ``reclassify
--move --retrain``: real SQLite stores, real Maildir trees, the real watcher; every outcome
checked against a training on the corrected mailbox."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mail import mails

from spamsift.filter.engine import mailfolders
from spamsift.trainer import reclassify, train
from tests.test_reclassify import write_maildir
from tests.test_watch_maildir import USER, two_watchers_once, watcher
from tests.watchsite import Site


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


class Box:
    """A user's Maildir++ trained by ``spamsift train``: 60 ham and 40 spam filed right, 4
    spam in the INBOX and 3 ham in .Spam (`bad_spam`, `bad_ham`: their paths)."""

    def __init__(self, site: Site, tmp_path: Path) -> None:
        self.site = site
        self.path = Path(site.mailbox())  # alice@example.org, with .Spam and .Trash
        ham, spam = mails(60, False, seed=11), mails(40, True, seed=11)
        self.spam_msgs, self.ham_msgs = mails(4, True, seed=12), mails(3, False, seed=12)
        keys = write_maildir(self.path, ham + self.spam_msgs, spam + self.ham_msgs)
        bad_spam = {mailfolders.message_key(m) for m in self.spam_msgs}
        bad_ham = {mailfolders.message_key(m) for m in self.ham_msgs}
        self.bad_spam = sorted(str(self.path / p) for p, k in keys.items() if k in bad_spam)
        self.bad_ham = sorted(str(self.path / p) for p, k in keys.items() if k in bad_ham)
        self.ham, self.spam = ham, spam
        self.tmp_path = tmp_path

    def train(self, *flags: str) -> None:
        assert train.main(["--user", USER, "--quiet", "--config", self.site.config, *flags,
                           str(self.path)]) == 0

    def state(self, user: str = USER):
        store = self.site.store
        uid = store.uid(user, create=False)
        return token_table(store, uid), store.stats(uid), [r[1:] for r in store.sources(uid)]

    def trained_as(self, *misfiled: str) -> tuple:
        """What a training on this mailbox as it is now gives, the files `misfiled` (paths
        now) taken as the other class's."""
        self.copies = getattr(self, "copies", 0) + 1
        user = f"copy{self.copies}@example.org"
        root = self.tmp_path / f"copy{self.copies}"
        shutil.copytree(self.path, root)
        for path in misfiled:
            rel = Path(path).relative_to(self.path)
            folder = "" if rel.parts[0] == ".Spam" else ".Spam"
            target = root / folder / rel.parts[-2] / rel.parts[-1]
            os.rename(root / rel, target)
        assert train.main(["--user", user, "--quiet", "--config", self.site.config,
                           str(root)]) == 0
        return self.state(user)


def token_table(store, uid: int) -> dict:
    """Every token row's counts (not weights: the model's steps depend on the order)."""
    m = store.MARK
    return {t: (s, i) for t, s, i in store._query(
        "SELECT token, spam_hits, innocent_hits FROM dspam_token_data WHERE uid = "
        f"{m} AND (spam_hits > 0 OR innocent_hits > 0)", (uid,))}


def move(site, path: str, box: Box, folder: str) -> str:
    return site.move(path, str(box.path), folder)


@pytest.mark.parametrize("learn_unsigned", [False, True])
@pytest.mark.parametrize("watched_before", [True, False])
def test_a_drag_of_bulk_trained_mail_is_corrected_through_its_record_once(
        tmp_path, learn_unsigned, watched_before):
    """Sequences 1 and 4 (one node): a spam `train` learned from the INBOX dragged into
    .Spam, a ham it learned from .Spam dragged into the INBOX; with the watcher running
    before the drags or started only after them (downtime)."""
    site = Site(tmp_path, extra=f"watch_learn_unsigned = {str(learn_unsigned).lower()}\n")
    try:
        box = Box(site, tmp_path)
        box.train()
        w = watcher(site)
        if watched_before:
            assert w.cycle().trained == {}  # all where train found them: nothing
        move(site, box.bad_spam[0], box, ".Spam")
        move(site, box.bad_ham[0], box, "")
        report = w.cycle()
        assert report.trained == {"retrained": 2}, w.lines
        after = box.state()
        assert after == box.trained_as()
        # Seen again, by this watcher and by a new one: exactly once.
        assert w.cycle().trained == {}
        assert watcher(site).cycle().trained == {}
        assert box.state() == after
    finally:
        site.close()


def test_a_drag_back_restores_what_train_learned(site, tmp_path):
    box = Box(site, tmp_path)
    box.train()
    before = box.state()
    w = watcher(site)
    w.cycle()
    moved = move(site, box.bad_spam[0], box, ".Spam")
    assert w.cycle().trained == {"retrained": 1}
    move(site, moved, box, "")
    assert w.cycle().trained == {"retrained": 1}
    assert box.state() == before


def test_reclassify_moved_mail_is_left_alone_and_a_drag_back_is_corrected_once(
        site, tmp_path, capsys):
    """Sequence 3: reclassify --move --retrain moved and corrected the misfiled mail; the
    watcher sees it in its new folder (nothing), then the user drags one back (corrected
    back, once)."""
    box = Box(site, tmp_path)
    box.train()
    w = watcher(site)
    w.cycle()
    assert reclassify.main(["--user", USER, "--json", "--move", "--retrain", "--config",
                            site.config, str(box.path)]) == 0
    capsys.readouterr()
    moved = box.state()
    assert moved == box.trained_as()
    assert w.cycle().trained == {}
    assert watcher(site).cycle().trained == {}
    assert box.state() == moved
    sub, name = box.bad_spam[0].split(os.sep)[-2:]
    now = str(box.path / ".Spam" / sub / name)  # where reclassify moved it
    back = move(site, now, box, "")
    assert w.cycle().trained == {"retrained": 1}, w.lines
    assert box.state() == box.trained_as()
    assert watcher(site).cycle().trained == {}
    move(site, back, box, ".Spam")
    assert w.cycle().trained == {"retrained": 1}
    assert box.state() == moved


def test_two_watcher_processes_correct_a_bulk_trained_drag_once(tmp_path, mysql_url):
    """Sequence 4 on several nodes: two watcher processes at once on MariaDB."""
    site = Site(tmp_path, storage=mysql_url)
    try:
        box = Box(site, tmp_path)
        box.train()
        for p in box.bad_ham:
            move(site, p, box, "")
        for p in box.bad_spam:
            move(site, p, box, ".Spam")
        logs = two_watchers_once(site, timeout=180)
        assert sum(log.count(" retrained ") for log in logs) == 7, logs
        assert box.state() == box.trained_as()
    finally:
        site.close()
def test_after_train_clean_a_drag_where_it_belongs_changes_nothing(site, tmp_path):
    """Sequence 2: `train --clean` corrected the misfiled mail where it stayed; the watcher
    seeing it there, and the user then dragging it where it belongs, learn nothing more."""
    box = Box(site, tmp_path)
    box.train("--clean")
    cleaned = box.state()
    assert cleaned == box.trained_as(*box.bad_spam, *box.bad_ham)
    w = watcher(site)
    assert w.cycle().trained == {}, w.lines
    assert box.state() == cleaned
    moves = [move(site, p, box, ".Spam") for p in box.bad_spam[:2]]
    moves += [move(site, p, box, "") for p in box.bad_ham[:2]]
    w.cycle()
    assert box.state() == cleaned, w.lines
    assert watcher(site).cycle().trained == {}
    assert box.state() == cleaned
    # Dragged back to where train found it: the user says it was right there after all.
    move(site, moves[0], box, "")
    move(site, moves[2], box, ".Spam")
    assert w.cycle().trained == {"retrained": 2}, w.lines
    assert box.state() == box.trained_as(*box.bad_spam[2:], *box.bad_ham[2:])


def test_a_watcher_started_after_train_clean_and_a_drag_learns_nothing_more(site, tmp_path):
    box = Box(site, tmp_path)
    box.train("--clean")
    cleaned = box.state()
    move(site, box.bad_spam[0], box, ".Spam")
    move(site, box.bad_ham[0], box, "")
    assert watcher(site).cycle().trained.get("retrained", 0) == 0
    assert box.state() == cleaned


