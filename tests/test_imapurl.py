"""IMAP URLs, the TLS rule and password sources (filter/engine/imapurl.py); no server needed."""

from __future__ import annotations

import pytest

from spamsift.filter.engine import imapurl
from spamsift.filter.engine.errors import UsageError


@pytest.mark.parametrize("text, user, host, port, folder, implicit", [
    ("imaps://alice@mail.example.org/INBOX", "alice", "mail.example.org", 993, "INBOX", True),
    ("imap://alice@mail.example.org/Junk", "alice", "mail.example.org", 143, "Junk", False),
    ("imap://alice@mail.example.org:993/Junk", "alice", "mail.example.org", 993, "Junk", True),
    ("imap://alice@127.0.0.1:10143", "alice", "127.0.0.1", 10143, None, False),
    ("IMAPS://bob@[::1]:9993/", "bob", "::1", 9993, None, True),
    ("imaps://alice%40example.org@host/Lists.Debian%20Users", "alice@example.org", "host", 993,
     "Lists.Debian Users", True),
])
def test_parse_url(text, user, host, port, folder, implicit):
    url = imapurl.parse_url(text)
    assert (url.user, url.host, url.port, url.folder, url.implicit_tls) == (
        user, host, port, folder, implicit)
    assert imapurl.parse_url(str(url)) == url  # str() round-trips


@pytest.mark.parametrize("text, words", [
    ("imap://alice:secret@host/INBOX", "no password in the URL"),
    ("imap://host/INBOX", "needs a user name"),
    ("imap://alice@/INBOX", "needs a host"),
    ("http://alice@host/INBOX", "not an IMAP URL"),
    ("imap://alice@host:99999/INBOX", "not a valid IMAP URL"),
    ("imap://alice@host/INBOX;UID=4", "not supported"),
    ("imap://alice@host/INBOX?x=1", "not supported"),
])
def test_bad_urls_are_one_line_usage_errors(text, words):
    with pytest.raises(UsageError) as err:
        imapurl.parse_url(text)
    assert words in str(err.value)
    assert "\n" not in str(err.value)
    assert "secret" not in str(err.value)


URL = imapurl.parse_url("imaps://alice@host/INBOX")


def test_password_file_first_line(tmp_path):
    f = tmp_path / "pw"
    f.write_bytes(b"s3cret pass\r\nsecond line\n")
    src = imapurl.PasswordSource(str(f), environ={imapurl.PASSWORD_ENV: "from-env"},
                                 interactive=False)
    assert src.password(URL) == "s3cret pass"  # the file wins over the environment


def test_password_file_problems_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--password-file"):
        imapurl.PasswordSource(str(tmp_path / "missing"), interactive=False).password(URL)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="first line is empty"):
        imapurl.PasswordSource(str(tmp_path / "empty"), interactive=False).password(URL)


def test_password_from_environment_then_prompt_once():
    src = imapurl.PasswordSource(environ={imapurl.PASSWORD_ENV: "from-env"}, interactive=False)
    assert src.password(URL) == "from-env"
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return "typed"
    src = imapurl.PasswordSource(environ={}, getpass=ask, interactive=True)
    assert src.password(URL) == "typed"
    assert src.password(URL.with_folder("Junk")) == "typed"
    assert asked == ["Password for alice@host: "]  # once per account, not per folder


def test_no_password_source_is_a_clear_error():
    src = imapurl.PasswordSource(environ={}, interactive=False)
    with pytest.raises(UsageError, match="--password-file FILE, set \\$SPAMSIFT_IMAP_PASSWORD"):
        src.password(URL)


def test_unreadable_ca_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="CA file"):
        imapurl.ssl_context(str(tmp_path / "nope.pem"))


def test_starttls_is_required_before_login():
    """A server without STARTTLS never sees the password (client stand-in records calls)."""
    calls = []

    class NoTLSServer:
        def __init__(self, host, port, ssl, timeout, ssl_context=None):
            calls.append(("connect", ssl))

        def has_capability(self, name):
            return False

        def login(self, user, password):  # pragma: no cover - must not be reached
            calls.append(("login", password))

        def shutdown(self):
            calls.append(("shutdown",))

    access = imapurl.ImapAccess(imapurl.PasswordSource(environ={imapurl.PASSWORD_ENV: "pw"},
                                                       interactive=False))
    with pytest.raises(imapurl.ImapTLSError, match="no STARTTLS"):
        imapurl.connect(imapurl.parse_url("imap://alice@host/INBOX"), access, NoTLSServer)
    assert calls == [("connect", False), ("shutdown",)]


def test_argument_helpers():
    import argparse

    parser = argparse.ArgumentParser()
    imapurl.add_arguments(parser)
    args = parser.parse_args(["--password-file", "/p", "--imap-ca-file", "/ca", "--imap-insecure"])
    access = imapurl.access_from_args(args)
    assert (access.passwords.password_file, access.ca_file, access.insecure) == ("/p", "/ca", True)
