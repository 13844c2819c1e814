"""The IMAP watcher (watchers/imap.py) against a real Dovecot (tests/imapserver.py), with
messages stamped by the real filter; every outcome is checked against storage."""

from __future__ import annotations

import json
import os
import ssl
import threading
import time

import pytest

from spamsift.filter.engine import imapurl
from spamsift.watchers.cli import imap_main as main
from spamsift.watchers.cursors import default_state_path
from spamsift.watchers.imap import ImapWatcher
from watchsite import HAM, SPAM, Site

pytest_plugins = ["imapserver"]  # the dovecot and imap_user fixtures (tests/imapserver.py)
imapclient = pytest.importorskip("imapclient")


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Account:
    """A fresh IMAP user that spamsift knows (trained), plus a client acting as its user."""

    def __init__(self, dovecot, user, password, site) -> None:
        self.dovecot, self.user, self.password, self.site = dovecot, user, password, site
        self.url = imapurl.parse_url(f"imaps://{user}@127.0.0.1:{dovecot.tls_port}/")
        self.access = imapurl.ImapAccess(
            imapurl.PasswordSource(environ={imapurl.PASSWORD_ENV: password}, interactive=False),
            ca_file=dovecot.cert)
        self.client = self.connect()
        for folder in ("Junk", "Trash"):
            self.client.create_folder(folder)
        site.train(user)
        self.state = os.path.join(site.home, "imap-state.json")
        self.lines: list[str] = []

    def connect(self):
        c = imapclient.IMAPClient("127.0.0.1", port=self.dovecot.tls_port, ssl=True,
                                  ssl_context=ssl.create_default_context(cafile=self.dovecot.cert))
        c.login(self.user, self.password)
        return c

    def deliver(self, text: str, n, folder: str = "INBOX") -> str:
        """Filter a message for the user (real filter) and APPEND it; returns its signature."""
        stamped = self.site.filter(self.user, text.format(user=self.user, n=n).encode())
        self.client.append(folder, crlf(stamped))
        return self.site_signature(stamped)

    @staticmethod
    def site_signature(raw: bytes) -> str:
        for line in raw.split(b"\n\n", 1)[0].split(b"\n"):
            if line.lower().startswith(b"x-dspam-signature:"):
                return line.split(b":", 1)[1].strip().decode()
        raise AssertionError("not stamped")

    def uid_of(self, folder: str, sig: str) -> int:
        self.client.select_folder(folder)
        found = self.client.search(["HEADER", "X-DSPAM-Signature", sig])
        assert len(found) == 1, (folder, sig, found)
        return found[0]

    def move(self, sig: str, source: str, target: str, how: str = "move") -> None:
        msg_uid = self.uid_of(source, sig)
        if how == "move":
            self.client.move([msg_uid], target)  # IMAP MOVE (RFC 6851)
        else:
            self.client.copy([msg_uid], target)  # what clients without MOVE do
            self.client.delete_messages([msg_uid])
            self.client.expunge()
        self.client.unselect_folder()

    def watcher(self, **kw) -> ImapWatcher:
        kw.setdefault("state_path", self.state)
        kw.setdefault("idle", False)
        return ImapWatcher(self.site.settings(), self.site.store, self.url, self.access,
                           log=self.lines.append, **kw)

    def counts(self, sig):
        return self.site.counts(self.user, sig)


@pytest.fixture
def account(dovecot, imap_user, tmp_path):
    site = Site(tmp_path)
    acc = Account(dovecot, *imap_user, site)
    yield acc
    acc.client.logout()
    site.close()


def delta(before, after) -> set[tuple[int, int]]:
    return {(after.get(t, (0, 0))[0] - before.get(t, (0, 0))[0],
             after.get(t, (0, 0))[1] - before.get(t, (0, 0))[1])
            for t in set(before) | set(after)}


@pytest.mark.parametrize("how", ["move", "copy+expunge"])
def test_drag_into_junk_retrains_spam_once_and_back_restores(account, how):
    sig = account.deliver(HAM, 1)
    spam_sig = account.deliver(SPAM, 2, folder="Junk")
    store = account.site.store
    assert store.signature(sig).result in ("innocent", "whitelisted")
    assert store.signature(spam_sig).result == "spam"
    w = account.watcher()
    try:
        assert w.cycle().trained == {}  # both where their verdicts put them: nothing
        before, stats0 = account.counts(sig), account.site.stats(account.user)

        account.move(sig, "INBOX", "Junk", how)
        assert w.cycle().trained == {"retrained": 1}, account.lines
        after = account.counts(sig)
        assert delta(before, after) == {(1, -1)}  # each token: one hit innocent -> spam
        stats = account.site.stats(account.user)
        assert stats.spam_misclassified == stats0.spam_misclassified + 1
        assert store.signature(sig).trained == "spam"
        # More cycles, a new watcher (restart) with the same state, a flag change: once.
        assert w.cycle().trained == {}
        account.client.select_folder("Junk")
        account.client.add_flags([account.uid_of("Junk", sig)], [b"\\Flagged"])
        assert w.cycle().trained == {}
        assert account.watcher().cycle().trained == {}
        assert account.counts(sig) == after and account.site.stats(account.user) == stats

        account.move(sig, "Junk", "INBOX", how)  # dragged back: a false positive
        assert w.cycle().trained == {"retrained": 1}
        assert account.counts(sig) == before
        assert store.signature(sig).trained == "innocent"
    finally:
        w.close()


def test_false_positive_out_of_junk_and_trash_is_nothing(account):
    spam_sig = account.deliver(SPAM, 3, folder="Junk")
    ham_sig = account.deliver(HAM, 4)
    w = account.watcher()
    try:
        w.cycle()
        spam_before, ham_before = account.counts(spam_sig), account.counts(ham_sig)
        stats0 = account.site.stats(account.user)
        account.move(spam_sig, "Junk", "INBOX")
        account.move(ham_sig, "INBOX", "Trash")
        assert w.cycle().trained == {"retrained": 1}
        assert delta(spam_before, account.counts(spam_sig)) == {(-1, 1)}
        # Trash is not followed: the ham's own tokens (those the spam does not share) stay.
        spam_tokens = set(account.site.store.signature(spam_sig).tokens)
        own = {t: c for t, c in account.counts(ham_sig).items() if t not in spam_tokens}
        assert own and own == {t: c for t, c in ham_before.items() if t not in spam_tokens}
        assert account.site.store.signature(ham_sig).trained in (None, "", "innocent")
        stats = account.site.stats(account.user)
        assert stats.innocent_misclassified == stats0.innocent_misclassified + 1
    finally:
        w.close()


def test_moves_while_stopped_are_caught_up_from_the_state_file(account):
    sigs = [account.deliver(HAM, f"r{i}") for i in range(3)]
    w = account.watcher()
    w.cycle()
    w.close()
    with open(account.state) as f:
        saved = json.load(f)
    assert saved["folders"]["INBOX"]["last_uid"] == 3
    assert saved["folders"]["Junk"]["last_uid"] == 0
    before = {s: account.counts(s) for s in sigs}
    account.move(sigs[0], "INBOX", "Junk")
    account.move(sigs[2], "INBOX", "Junk", "copy+expunge")
    w2 = account.watcher()  # the restarted watcher
    try:
        report = w2.cycle()
        assert report.trained == {"retrained": 2}
        assert report.new_uids == 2  # only what is past the saved cursors was fetched
        # Per token: one spam hit per moved message holding it, its innocent hits gone.
        store, uid = account.site.store, account.site.store.uid(account.user, create=False)
        expected: dict[int, list[int]] = {}
        for s in (sigs[0], sigs[2]):
            sig = store.signature(s)
            for token, applied in zip(sig.tokens, sig.applied):
                entry = expected.setdefault(token, [0, 0])
                entry[0] += 1
                entry[1] -= applied
        now = store.lookup(uid, list(expected))
        old = {t: c for s in (sigs[0], sigs[2]) for t, c in before[s].items()}
        assert {t: (now[t][0] - old[t][0], now[t][1] - old[t][1]) for t in expected} == {
            t: tuple(v) for t, v in expected.items()}
        assert store.signature(sigs[1]).trained in (None, "", "innocent")
    finally:
        w2.close()


def test_uidvalidity_change_resyncs_without_training_twice(account):
    sig = account.deliver(HAM, 5)
    other = account.deliver(HAM, 6)
    w = account.watcher()
    try:
        w.cycle()
        account.move(sig, "INBOX", "Junk")
        assert w.cycle().trained == {"retrained": 1}
        trained = account.counts(sig)
        old = w.state.cursors["Junk"].uidvalidity
        account.dovecot.doveadm("mailbox", "update", "-u", account.user,
                                "--uid-validity", str(old + 1000), "Junk")
        report = w.cycle()
        assert report.resynced == ["Junk"]
        assert w.state.cursors["Junk"].uidvalidity == old + 1000
        assert report.trained == {}  # the message seen again in Junk: recorded, nothing
        assert account.counts(sig) == trained
        assert any("UIDVALIDITY" in line for line in account.lines)
        # New UIDs after the renumbering still count.
        before = account.counts(other)
        account.move(other, "INBOX", "Junk")
        assert w.cycle().trained == {"retrained": 1}
        assert delta(before, account.counts(other)) == {(1, -1)}
    finally:
        w.close()


def test_idle_wakes_the_watcher_long_before_the_poll_interval(account):
    sig = account.deliver(HAM, 7)
    w = account.watcher(idle=True)
    stop = threading.Event()
    runner = threading.Thread(target=w.run, args=(300.0, stop.is_set), daemon=True)
    try:
        runner.start()
        deadline = time.monotonic() + 60  # generous: CI machines are shared and slow
        while not (len(w.idlers) >= 2 and all(i.ready.is_set() for i in w.idlers.values())):
            assert time.monotonic() < deadline, account.lines
            time.sleep(0.05)
        assert sorted(w.idlers) == ["INBOX", "Junk"]
        # The message counts as innocent before the drag: learned so on delivery, or (when the
        # filter called it spam) corrected by the watcher's first look at INBOX. Counting from
        # before that correction had finished made the drag's change look like none.
        while account.site.store.signature(sig).trained != "innocent":
            assert time.monotonic() < deadline, account.lines
            time.sleep(0.05)
        before = account.counts(sig)
        moved_at = time.monotonic()
        account.move(sig, "INBOX", "Junk")
        # The watcher thread writes through the same store object (one SQLite connection), so
        # the signature's new state can be seen before the same transaction's token rows:
        # wait for both.
        while (account.site.store.signature(sig).trained != "spam"
               or delta(before, account.counts(sig)) != {(1, -1)}):
            # Measured 0.45 s (benchmarks/imap_watch.py); the next poll is 300 s away.
            assert time.monotonic() - moved_at < 60, (account.lines,
                                                      delta(before, account.counts(sig)))
            time.sleep(0.05)
    finally:
        idlers = list(w.idlers.values())
        stop.set()
        w.wake.set()
        runner.join(timeout=10)
        w.close()
    assert not runner.is_alive()
    assert idlers and not any(i.is_alive() for i in idlers)  # IDLE connections closed


def test_unknown_user_trains_nothing_and_unsigned_mail_is_skipped(dovecot, imap_user, tmp_path):
    site = Site(tmp_path)
    user, password = imap_user
    url = imapurl.parse_url(f"imaps://{user}@127.0.0.1:{dovecot.tls_port}/")
    access = imapurl.ImapAccess(imapurl.PasswordSource(
        environ={imapurl.PASSWORD_ENV: password}, interactive=False), ca_file=dovecot.cert)
    lines: list[str] = []
    w = ImapWatcher(site.settings(), site.store, url, access, idle=False, log=lines.append)
    try:
        assert w.cycle().folders == 0  # not known to the store: not even looked at
        assert any("not known to the store" in line for line in lines)
        site.train(user)
        c = imapclient.IMAPClient("127.0.0.1", port=dovecot.tls_port, ssl=True,
                                  ssl_context=ssl.create_default_context(cafile=dovecot.cert))
        c.login(user, password)
        c.create_folder("Spam")
        c.append("Spam", crlf(SPAM.format(user=user, n="u").encode()))  # never filtered
        c.logout()
        stats0 = site.stats(user)
        report = w.cycle()
        assert report.folders == 2 and report.unsigned == 1 and report.trained == {}
        assert site.stats(user) == stats0
    finally:
        w.close()
        site.close()


def test_command_once_and_clear_errors(account, tmp_path, monkeypatch, capsys):
    sig = account.deliver(HAM, 8)
    account.move(sig, "INBOX", "Junk")
    pw = tmp_path / "pw"
    pw.write_text(account.password + "\n")
    monkeypatch.setenv("SPAMSIFT_HOME", account.site.home)
    monkeypatch.setenv("SPAMSIFT_CONFIG", account.site.config)
    url = f"imaps://{account.user}@127.0.0.1:{account.dovecot.tls_port}/"
    before = account.counts(sig)
    # `spamsift watch` hands URLs to the IMAP watcher
    from spamsift.watchers.cli import main as watch_main

    code = watch_main([url, "--once", "--password-file", str(pw), "--cafile",
                       account.dovecot.cert])
    assert code == 0, capsys.readouterr().err
    assert delta(before, account.counts(sig)) == {(1, -1)}
    state = default_state_path(account.site.home, imapurl.parse_url(url), account.user)
    assert json.load(open(state))["folders"]["Junk"]["last_uid"] == 1
    # again: nothing more
    assert main([url, "--once", "--password-file", str(pw), "--cafile",
                 account.dovecot.cert]) == 0
    assert delta(before, account.counts(sig)) == {(1, -1)}
    capsys.readouterr()

    pw.write_text("wrong\n")
    assert main([url, "--once", "--password-file", str(pw), "--cafile",
                 account.dovecot.cert]) == 77
    err = capsys.readouterr().err
    assert err.startswith("spamsift watch: ") and "login refused" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main([url, "--once", "--password-file", str(pw)]) == 78  # self-signed: untrusted
    assert "certificate not trusted" in capsys.readouterr().err
    assert main([url, "/var/mail", "--once"]) == 64
    assert "not both" in capsys.readouterr().err
    assert main([url, url, "--once"]) == 64
    assert main([url, "--template", "x", "--once"]) == 64


def test_lost_connection_is_one_error_and_the_next_cycle_reconnects(account):
    sig = account.deliver(HAM, 9)
    w = account.watcher()
    try:
        w.cycle()
        w.client.shutdown()  # the server (or a NAT box) dropped us
        with pytest.raises(imapurl.ImapConnectError) as err:
            w.cycle()
        assert "\n" not in str(err.value) and w.client is None
        account.move(sig, "INBOX", "Junk")
        assert w.cycle().trained == {"retrained": 1}
    finally:
        w.close()


@pytest.mark.parametrize("restart", [False, True])
def test_copy_into_junk_seen_with_its_original_is_decided_at_the_expunge(account, restart):
    # A client COPYs a new message into Junk and expunges the INBOX copy later: a cycle that
    # sees both copies can decide nothing, and the expunge is no new UID. The copy left must
    # still be trained as the move it was, once.
    w = account.watcher()
    try:
        w.cycle()
        sig = account.deliver(HAM, 30)
        msg_uid = account.uid_of("INBOX", sig)
        account.client.copy([msg_uid], "Junk")
        account.client.unselect_folder()
        assert w.cycle().trained == {}
        assert w.cycle().trained == {}  # both still there: still nothing
        if restart:
            w.close()
            w = account.watcher()
        before = account.counts(sig)
        account.client.select_folder("INBOX")
        account.client.delete_messages([msg_uid])
        account.client.expunge()
        account.client.unselect_folder()
        assert w.cycle().trained == {"retrained": 1}, account.lines
        assert account.site.store.signature(sig).trained == "spam"
        assert delta(before, account.counts(sig)) == {(1, -1)}
        assert w.cycle().trained == {} and account.watcher().cycle().trained == {}
    finally:
        w.close()


def test_uid_sets_are_ranges():
    from spamsift.watchers.imap import _uid_set

    assert _uid_set([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"
    assert _uid_set([4]) == "4"
    assert _uid_set(list(range(1, 10_001))) == "1:10000"


def test_split_copies_in_doubt_renumbered_or_old_are_not_decided(account):
    # A folder that cannot be examined right now is no deletion: nothing may be decided
    # from it. After SPLIT_DAYS both copies still there are forgotten.
    from spamsift.watchers import imap as imap_watcher

    now = [time.time()]
    w = account.watcher(clock=lambda: now[0])
    try:
        w.cycle()
        sig = account.deliver(HAM, 40)
        account.client.copy([account.uid_of("INBOX", sig)], "Junk")
        account.client.unselect_folder()
        assert w.cycle().trained == {} and len(w.state.split) == 1
        real_select = imapclient.IMAPClient.select_folder

        def unavailable(self, folder, readonly=False):
            if folder == "INBOX":
                raise imapclient.exceptions.IMAPClientError("NO [UNAVAILABLE] try later")
            return real_select(self, folder, readonly=readonly)

        imapclient.IMAPClient.select_folder = unavailable
        try:
            assert w.cycle().trained == {}
        finally:
            imapclient.IMAPClient.select_folder = real_select
        assert len(w.state.split) == 1  # still in doubt, kept
        assert account.site.store.signature(sig).trained != "spam"
        now[0] += (imap_watcher.SPLIT_DAYS + 1) * 86400
        assert w.cycle().trained == {} and w.state.split == {}
    finally:
        w.close()
