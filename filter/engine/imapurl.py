"""IMAP addresses, passwords and TLS, shared by the IMAP trainer source and the IMAP watcher.

This module does not import imapclient (the engine stays free of it): `connect` takes the
client class as a parameter, and both IMAP modules pass ``imapclient.IMAPClient`` (tests can
pass anything with the same methods).

URL forms (RFC 5092's shape, the parts spamsift uses)::

    imaps://USER@HOST[:PORT]/FOLDER    TLS from the first byte; port 993 by default
    imap://USER@HOST[:PORT]/FOLDER     port 143 by default, and STARTTLS is required

The TLS rule: spamsift never sends a password in the clear. ``imaps://`` is implicit TLS.
``imap://`` upgrades the connection with STARTTLS, and a server that does not offer STARTTLS
is an error, not a fallback; the one exception is ``imap://HOST:993``, which is taken as
implicit TLS (993 is IMAPS's registered port, where no server speaks STARTTLS). Certificates
are verified against the system's CA store, or against `ca_file` (a self-signed server's
certificate works as its own CA file); `insecure` turns verification off and is meant for
test servers only.

USER and FOLDER are percent-decoded (``imap://alice%40example.org@mail.example.org/Junk``).
No FOLDER (``imap://alice@host`` or ``.../``) leaves the choice to the caller: INBOX for the
trainer, INBOX plus the spam folders for the watcher. A password in the URL
(``imap://alice:secret@host``) is refused: command lines are visible to every local user in
``ps``.

The password comes, first match wins, from: the password file (``--password-file``: its first
line, without the line end), the environment variable ``SPAMSIFT_IMAP_PASSWORD``, or a prompt on
the terminal (getpass) when standard input is one. With none of these it is a usage error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from spamsift.filter.engine import exitcodes
from spamsift.filter.engine.errors import SpamsiftError, UsageError

PASSWORD_ENV = "SPAMSIFT_IMAP_PASSWORD"
IMAP_PORT = 143
IMAPS_PORT = 993
# Seconds to wait for connect and for each reply. A loopback Dovecot answers in milliseconds
# and a distant server within a second or two; 30 s lets a slow one through while a dead one
# still fails a cron run well before the next one starts.
DEFAULT_TIMEOUT = 30.0


class ImapError(SpamsiftError):
    """Base of the IMAP errors: the server was unreachable, refused us, or broke the protocol."""

    exit_code = exitcodes.TEMPFAIL


class ImapConnectError(ImapError):
    """Raised when the server cannot be reached (name unknown, refused, timed out, dropped)."""


class ImapTLSError(ImapError):
    """Raised when TLS cannot be set up: certificate not trusted, no STARTTLS offered.

    A configuration problem (which CA to trust), so it maps to the CONFIG exit code."""

    exit_code = exitcodes.CONFIG


class ImapLoginError(ImapError):
    """Raised when the server rejects the user name or password."""

    exit_code = exitcodes.NOPERM


class ImapFolderError(ImapError):
    """Raised when a folder named in the URL does not exist or cannot be selected."""

    exit_code = exitcodes.DATAERR


@dataclass(frozen=True)
class ImapURL:
    """A parsed ``imap://`` / ``imaps://`` URL; `folder` is None when the URL names none."""

    user: str
    host: str
    port: int
    folder: str | None
    implicit_tls: bool

    def __str__(self) -> str:
        """The URL for logs and messages (never with a password: it never holds one)."""
        from urllib.parse import quote

        scheme = "imaps" if self.implicit_tls else "imap"
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = IMAPS_PORT if self.implicit_tls else IMAP_PORT
        port = "" if self.port == default else f":{self.port}"
        folder = quote(self.folder, safe="/") if self.folder else ""
        return f"{scheme}://{quote(self.user, safe='')}@{host}{port}/{folder}"

    def with_folder(self, folder: str | None) -> ImapURL:
        return ImapURL(self.user, self.host, self.port, folder, self.implicit_tls)


def is_imap_url(text: str) -> bool:
    return text.lower().startswith(("imap://", "imaps://"))


def parse_url(text: str) -> ImapURL:
    """Parse an IMAP URL (see the module docstring); raises UsageError with one line."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{text}: not a valid IMAP URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("imap", "imaps"):
        raise UsageError(f"{text}: not an IMAP URL (use imap://USER@HOST/FOLDER or imaps://...)")
    if parts.password is not None:
        raise UsageError(f"{text.split('@')[-1]}: no password in the URL (command lines are "
                         f"visible to other users); use --password-file or ${PASSWORD_ENV}")
    if not parts.username:
        raise UsageError(f"{text}: the URL needs a user name: {scheme}://USER@HOST/FOLDER")
    if not parts.hostname:
        raise UsageError(f"{text}: the URL needs a host: {scheme}://USER@HOST/FOLDER")
    if parts.query or parts.fragment:
        raise UsageError(f"{text}: IMAP URL options (?..., #...) are not supported")
    user = unquote(parts.username)
    path = parts.path
    # RFC 5092 parameters after the mailbox (;UIDVALIDITY=, ;UID=) name single messages:
    # not something a whole-folder reader can honour.
    if ";" in path:
        raise UsageError(f"{text}: IMAP URL parameters (;...) are not supported")
    folder = unquote(path.lstrip("/")).rstrip("/") or None
    implicit = scheme == "imaps" or port == IMAPS_PORT
    if port is None:
        port = IMAPS_PORT if implicit else IMAP_PORT
    if any(ord(c) < 32 for c in user + (folder or "")):
        raise UsageError(f"{text}: control characters in the user or folder")
    return ImapURL(user, parts.hostname, port, folder, implicit)


class PasswordSource:
    """Where passwords come from: a file, then an environment variable, then a prompt.

    One password per URL user and host, asked for at most once per process (a training run
    over several folders of one account prompts once). Test seams: `environ`, `getpass`,
    `interactive`."""

    def __init__(self, password_file: str | None = None, env_var: str = PASSWORD_ENV,
                 environ=None, getpass=None, interactive: bool | None = None) -> None:
        self.password_file = password_file
        self.env_var = env_var
        self._environ = os.environ if environ is None else environ
        self._getpass = getpass
        self._interactive = interactive
        self._cache: dict[tuple[str, str, int], str] = {}

    def password(self, url: ImapURL) -> str:
        """The password for `url`'s user; raises UsageError when there is no way to get one."""
        key = (url.user, url.host, url.port)
        if key not in self._cache:
            self._cache[key] = self._find(url)
        return self._cache[key]

    def _find(self, url: ImapURL) -> str:
        if self.password_file:
            try:
                with open(self.password_file, encoding="utf-8") as f:
                    line = f.readline()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise UsageError(f"--password-file {self.password_file}: {reason}") from None
            password = line.rstrip("\r\n")
            if not password:
                raise UsageError(f"--password-file {self.password_file}: the first line is empty")
            return password
        from_env = self._environ.get(self.env_var)
        if from_env:
            return str(from_env)
        interactive = self._interactive
        if interactive is None:
            import sys

            interactive = sys.stdin is not None and sys.stdin.isatty()
        if not interactive:
            raise UsageError(f"{url}: no IMAP password: use --password-file FILE, set "
                             f"${self.env_var}, or run on a terminal to be asked")
        ask = self._getpass
        if ask is None:
            from getpass import getpass as ask
        password = ask(f"Password for {url.user}@{url.host}: ")
        if not password:
            raise UsageError(f"{url}: empty password")
        return password


def ssl_context(ca_file: str | None = None, insecure: bool = False):
    """A client TLS context: verifying against `ca_file` (or the system CAs), or, with
    `insecure`, verifying nothing. Raises UsageError for an unreadable `ca_file`."""
    import ssl

    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"CA file {ca_file}: {reason}") from None


@dataclass
class ImapAccess:
    """Everything beyond the URL that reaching an IMAP account needs."""

    passwords: PasswordSource
    ca_file: str | None = None
    insecure: bool = False
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_options(cls, options: dict | None) -> ImapAccess:
        """From a plain dict: ``password_file``, ``cafile`` (or ``ca_file``), ``insecure``,
        ``timeout`` — the shape the trainer's commands pass."""
        options = options or {}
        return cls(PasswordSource(options.get("password_file")),
                   options.get("ca_file") or options.get("cafile"),
                   bool(options.get("insecure", False)),
                   float(options.get("timeout") or DEFAULT_TIMEOUT))


def add_arguments(parser) -> None:
    """The IMAP options every command that takes imap:// URLs shares."""
    group = parser.add_argument_group("IMAP")
    group.add_argument("--password-file", metavar="FILE",
                       help=f"IMAP password: first line of FILE (else ${PASSWORD_ENV}, "
                            "else a prompt on a terminal)")
    group.add_argument("--cafile", "--imap-ca-file", dest="cafile", metavar="FILE",
                       help="trust the CA certificates (or a self-signed certificate) in FILE")
    group.add_argument("--imap-insecure", action="store_true",
                       help="do not verify the IMAP server's certificate (test servers only)")


def access_from_args(args) -> ImapAccess:
    return ImapAccess(PasswordSource(getattr(args, "password_file", None)),
                      getattr(args, "cafile", None), bool(getattr(args, "imap_insecure", False)))


def connect(url: ImapURL, access: ImapAccess, client_factory):
    """A logged-in client for `url` (no folder selected), over TLS as the module docstring
    says. `client_factory` is ``imapclient.IMAPClient`` or a stand-in with its signature.
    Raises ImapConnectError, ImapTLSError, ImapLoginError; never sends the password in the
    clear."""
    import imaplib
    import ssl

    password = access.passwords.password(url)
    ctx = ssl_context(access.ca_file, access.insecure)
    where = f"{url.host}:{url.port}"
    client = None
    try:
        if url.implicit_tls:
            client = client_factory(url.host, port=url.port, ssl=True, ssl_context=ctx,
                                    timeout=access.timeout)
        else:
            client = client_factory(url.host, port=url.port, ssl=False, timeout=access.timeout)
            if not client.has_capability("STARTTLS"):
                raise ImapTLSError(f"{url}: the server offers no STARTTLS, and spamsift does not "
                                   "send passwords in the clear (use imaps:// if it has IMAPS)")
            client.starttls(ctx)
    except ssl.SSLCertVerificationError as exc:
        _close(client)
        raise ImapTLSError(f"{url}: certificate not trusted ({exc.verify_message}); give "
                           "--cafile FILE, or --imap-insecure for a test server") from None
    except ssl.SSLError as exc:
        _close(client)
        raise ImapTLSError(f"{url}: TLS failed: {exc.reason or exc}") from None
    except ImapError:
        _close(client)
        raise
    except (OSError, EOFError) as exc:
        _close(client)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ImapConnectError(f"{url}: cannot reach {where}: {reason}") from None
    except imaplib.IMAP4.error as exc:
        _close(client)
        raise ImapConnectError(f"{url}: {where} broke the protocol: {_text(exc)}") from None
    try:
        client.login(url.user, password)
    except imaplib.IMAP4.error as exc:  # imapclient's LoginError is a subclass
        _close(client)
        raise ImapLoginError(f"{url}: login refused ({_text(exc)}): wrong user name or "
                             "password?") from None
    except (OSError, EOFError) as exc:
        _close(client)
        raise ImapConnectError(f"{url}: connection lost during login: {exc}") from None
    return client


def _text(exc: BaseException) -> str:
    """An IMAP error's server text, without the bytes repr around it."""
    arg = exc.args[0] if exc.args else exc
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    text = str(arg)
    if text.startswith(("b'", 'b"')) and text[-1:] in ("'", '"'):
        text = text[2:-1]
    return text


def _close(client) -> None:
    if client is None:
        return
    try:
        client.shutdown()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way
        pass
