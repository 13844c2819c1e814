"""trainer/imap_source.py against a real Dovecot (tests/imapserver.py): byte-exact, read-only,
TLS verified, clear errors."""

from __future__ import annotations

import os
import ssl

import pytest

from spamsift.filter.engine import imapurl
from spamsift.trainer import imap_source

pytest_plugins = ["imapserver"]  # the dovecot and imap_user fixtures (tests/imapserver.py)
imapclient = pytest.importorskip("imapclient")

MESSAGES = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nplain body\r\n",
    # 8-bit body, folded header, no final line end
    b"From: b@example.org\r\nSubject: two\r\n folded\r\nContent-Type: text/plain; "
    b"charset=latin-1\r\n\r\ncaf\xe9 cr\xe8me\r\nno final newline",
    b"From: c@example.org\r\nSubject: three\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (
        b"line of a longer message body\r\n" * 3000),
]


def _client(server, user, password):
    ctx = ssl.create_default_context(cafile=server.cert)
    c = imapclient.IMAPClient(server.host, port=server.tls_port, ssl=True, ssl_context=ctx)
    c.login(user, password)
    return c


def _access(password, **kw):
    return imapurl.ImapAccess(
        imapurl.PasswordSource(environ={imapurl.PASSWORD_ENV: password}, interactive=False), **kw)


def _url(server, user, folder="INBOX", tls=True):
    if tls:
        return f"imaps://{user}@{server.host}:{server.tls_port}/{folder}"
    return f"imap://{user}@{server.host}:{server.port}/{folder}"


def _state(server, user, folder):
    c = _client(server, user, server.users[user])
    c.select_folder(folder, readonly=True)
    # \Recent belongs to the session that first sees a message, and EXAMINE leaves it alone.
    flags = {uid: tuple(f for f in fl if f != b"\\Recent")
             for uid, fl in c.get_flags(c.search("ALL")).items()}
    c.logout()
    root = server.maildir(user)
    files = sorted(os.listdir(os.path.join(root, "new")) + os.listdir(os.path.join(root, "cur")))
    return flags, files


def test_reads_every_message_byte_exact_and_changes_nothing(dovecot, imap_user):
    user, password = imap_user
    c = _client(dovecot, user, password)
    for i, raw in enumerate(MESSAGES):
        c.append("INBOX", raw, flags=[b"\\Seen"] if i == 1 else [])
    c.logout()
    before = _state(dovecot, user, "INBOX")

    got = list(imap_source.imap_messages(_url(dovecot, user), _access(
        password, ca_file=dovecot.cert), label="innocent"))

    assert [raw for _label, raw, _name in got] == MESSAGES
    assert {label for label, _raw, _name in got} == {"innocent"}
    names = [name for _label, _raw, name in got]
    assert names[0].startswith(f"imaps://{user}@127.0.0.1:{dovecot.tls_port}/INBOX;UIDVALIDITY=")
    assert [n.rsplit(";UID=", 1)[1] for n in names] == ["1", "2", "3"]
    after = _state(dovecot, user, "INBOX")
    assert after == before  # same flags (no \Seen set), same Maildir files (no rename)
    assert before[0][1] == () and before[0][2] == (b"\\Seen",)


def test_batches_are_bounded_by_count_and_bytes(dovecot, imap_user):
    user, password = imap_user
    c = _client(dovecot, user, password)
    c.create_folder("Junk")
    bodies = [b"Subject: m%d\r\n\r\n" % i + b"y" * (100 * i) + b"\r\n" for i in range(12)]
    for raw in bodies:
        c.append("Junk", raw)
    c.logout()
    fetched = []

    class CountingClient(imapclient.IMAPClient):
        def fetch(self, messages, data, modifiers=None):
            if b"BODY.PEEK[]" in data:
                fetched.append(list(messages))
            return super().fetch(messages, data, modifiers)

    got = list(imap_source.imap_messages(
        _url(dovecot, user, "Junk"), _access(password, ca_file=dovecot.cert), "spam",
        batch_count=5, batch_bytes=2500, client_factory=CountingClient))
    assert [raw for _l, raw, _n in got] == bodies
    assert [uid for batch in fetched for uid in batch] == list(range(1, 13))
    assert max(len(b) for b in fetched) <= 5
    sizes = {i + 1: len(b) for i, b in enumerate(bodies)}
    for batch in fetched:  # over the byte bound only as a batch of one
        assert len(batch) == 1 or sum(sizes[u] for u in batch) <= 2500


def test_starttls_verified_against_the_fixture_certificate(dovecot):
    url = _url(dovecot, "alice", tls=False)
    c = _client(dovecot, "alice", dovecot.users["alice"])
    c.append("INBOX", MESSAGES[0])
    c.logout()
    got = list(imap_source.imap_messages(url, _access(dovecot.users["alice"],
                                                      ca_file=dovecot.cert)))
    assert MESSAGES[0] in [raw for _l, raw, _n in got]
    assert all(label is None for label, _r, _n in got)


def test_untrusted_certificate_is_refused_unless_insecure(dovecot):
    url = _url(dovecot, "bob")
    with pytest.raises(imapurl.ImapTLSError, match="certificate not trusted"):
        list(imap_source.imap_messages(url, _access(dovecot.users["bob"])))
    # --imap-insecure: reads, certificate unchecked
    assert list(imap_source.imap_messages(url, _access(dovecot.users["bob"], insecure=True))) == []


def test_wrong_password_is_a_clear_error(dovecot, imap_user):
    user, _password = imap_user
    with pytest.raises(imapurl.ImapLoginError) as err:
        list(imap_source.imap_messages(_url(dovecot, user), _access("wrong",
                                                                    ca_file=dovecot.cert)))
    text = str(err.value)
    assert "login refused" in text and user in text and "wrong" not in text.split(":")[0]
    assert "\n" not in text
    assert err.value.exit_code == 77


def test_missing_folder_and_unreachable_server(dovecot, imap_user):
    user, password = imap_user
    with pytest.raises(imapurl.ImapFolderError, match="cannot open the folder"):
        list(imap_source.imap_messages(_url(dovecot, user, "NoSuchFolder"),
                                       _access(password, ca_file=dovecot.cert)))
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(imapurl.ImapConnectError, match="cannot reach"):
        list(imap_source.imap_messages(f"imaps://{user}@127.0.0.1:{port}/INBOX",
                                       _access(password, ca_file=dovecot.cert)))


def test_stream_counts_first_and_prompts_once(dovecot, imap_user):
    user, password = imap_user
    c = _client(dovecot, user, password)
    c.create_folder("Junk")
    for raw in MESSAGES[:2]:
        c.append("Junk", raw)
    c.append("INBOX", MESSAGES[2])
    c.logout()
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return password
    access = imapurl.ImapAccess(imapurl.PasswordSource(environ={}, getpass=ask, interactive=True),
                                ca_file=dovecot.cert)
    options = {"access": access}
    junk = imap_source.stream(_url(dovecot, user, "Junk"), "spam", options)
    inbox = imap_source.stream(_url(dovecot, user, ""), "innocent", options)  # no folder: INBOX
    assert (junk.label, junk.count, inbox.count) == ("spam", 2, 1)
    assert inbox.where.endswith("/INBOX")
    assert [raw for raw, _name in junk.open()] == MESSAGES[:2]
    assert [raw for raw, _name in inbox.open()] == MESSAGES[2:]
    assert len(asked) == 1


def test_trainer_options_dict_keeps_one_access(dovecot, imap_user, tmp_path):
    user, password = imap_user
    pw = tmp_path / "pw"
    pw.write_text(password + "\n")
    options = {"password_file": str(pw), "cafile": dovecot.cert}
    s = imap_source.stream(_url(dovecot, user), "innocent", options)
    assert s.count == 0 and list(s.open()) == []
    assert isinstance(options["access"], imapurl.ImapAccess)
    assert options["access"].ca_file == dovecot.cert
