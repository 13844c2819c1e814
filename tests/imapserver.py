"""A real Dovecot IMAP server for the tests, on loopback ports, with a private configuration.

Use it from a test module as a plugin (tests/ is not a package; pytest puts tests/ on
sys.path because of tests/conftest.py, and registers the module once however many ask)::

    pytest_plugins = ["imapserver"]

`dovecot` (session scope) starts one ``/usr/sbin/dovecot`` for the whole run and yields a
`DovecotServer`: ``host``, ``port`` (plain IMAP, STARTTLS offered), ``tls_port`` (IMAPS),
``users`` (name -> password: alice and bob), ``maildir(user)`` (the Maildir++ root),
``cert`` (the self-signed certificate, to pass as the CA file), ``new_user()`` (a fresh user,
for tests that must not see other tests' mail) and ``doveadm(...)``. `imap_user` is a fresh
user per test: ``(name, password)``.

What the private configuration does, and why:

- everything (base_dir, state, log, mail, passwd-file, certificate) lives in one temporary
  directory, so the machine's own /etc/dovecot is never read and nothing is left behind;
- users come from a passwd-file with {PLAIN} passwords; the passwd-file is re-read by
  Dovecot when its size or mtime changes, which is how `new_user()` can add users to a running server;
- mail is Maildir++ (``maildir:DIR/mail/%u/Maildir``, Courier's layout: ``.Junk`` etc.);
- TLS: IMAPS on `tls_port` and STARTTLS on `port`, with a certificate for ``localhost`` and
  127.0.0.1 made by openssl here; plaintext LOGIN is allowed too (the listeners are loopback
  only), so the tests can check what a client does without TLS;
- IDLE, MOVE and UIDPLUS are Dovecot defaults.

Running as an ordinary user, every Dovecot service runs as that user (Dovecot supports this:
no chroot, internal and login user = ourselves). Running as root (CI), Dovecot refuses to run
its login processes as root and refuses UID 0 for mail, so the services run as the package's
``dovecot`` / ``dovenull`` users and mail belongs to ``nobody``; the temporary directory is made
traversable for them. Root can still read and write the Maildirs directly.

When dovecot is not installed the fixture skips with the reason (or fails under
SPAMSIFT_REQUIRE_SERVERS=1, through conftest's `need`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import pytest

from conftest import need

DOVECOT = os.environ.get("SPAMSIFT_DOVECOT", "/usr/sbin/dovecot")
DOVEADM = os.environ.get("SPAMSIFT_DOVEADM", "/usr/bin/doveadm")
HOST = "127.0.0.1"
# Startup takes ~0.3 s here; 15 s leaves room for a loaded 2-core CI machine.
START_TIMEOUT = 15.0
# Fresh users ready before the start (see DovecotServer.new_user): more than the IMAP tests use.
POOL_SIZE = 60

CONFIG = """\
# spamsift test server: private configuration (tests/imapserver.py)
base_dir = {base}/run
state_dir = {base}/state
instance_name = spamsift-test-{tag}
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
protocols = imap
listen = {host}
ssl = yes
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
# Plaintext LOGIN is allowed: the listeners are on loopback and tests cover the no-TLS path.
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests log in with wrong passwords on purpose: without this, Dovecot delays that reply 2 s
# (and see anvil-auth-penalty below).
auth_failure_delay = 0
first_valid_uid = 0
mail_location = maildir:{base}/mail/%u/Maildir
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {base}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  # No auth penalty: it delays every later login from 127.0.0.1 after a failed one (seen: 4 s).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  chroot =
}}
service auth {{
  user = {auth_user}
}}
"""


@dataclass
class DovecotServer:
    """A running private Dovecot; see the module docstring for each field."""

    base: str
    host: str
    port: int
    tls_port: int
    cert: str
    config: str
    mail_uid: int
    mail_gid: int
    users: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    _pool: list[str] = field(default_factory=list)

    def maildir(self, user: str) -> str:
        """The user's Maildir++ root (created by Dovecot at the user's first login)."""
        return os.path.join(self.base, "mail", user, "Maildir")

    def new_user(self) -> tuple[str, str]:
        """A user no other test has seen; returns (name, password).

        Users come from a pool written before the server started. Dovecot looks at the
        passwd-file at most once a second, so a user appended later can only log in after
        the next second starts; a drained pool therefore appends and waits for that."""
        if self._pool:
            name = self._pool.pop()
            return name, self.users[name]
        name = "u" + uuid.uuid4().hex[:10]
        self._add_user(name, "pw-" + uuid.uuid4().hex[:8])
        written = int(time.time())
        while int(time.time()) <= written:
            time.sleep(0.05)
        time.sleep(0.05)
        return name, self.users[name]

    def _add_user(self, name: str, password: str) -> None:
        home = os.path.join(self.base, "mail", name)
        line = f"{name}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::{home}::\n"
        passwd = os.path.join(self.base, "passwd")
        with open(passwd, "a") as f:
            f.write(line)  # Dovecot re-reads the file when its size or mtime changes
        self.users[name] = password

    def doveadm(self, *args: str) -> str:
        """Run doveadm against this server (e.g. ``mailbox update --uid-validity``)."""
        done = subprocess.run(
            [DOVEADM, "-c", self.config, *args], capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def log(self) -> str:
        try:
            with open(os.path.join(self.base, "dovecot.log")) as f:
                return f.read()
        except OSError:
            return ""


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_listening(server: DovecotServer, deadline: float) -> bool:
    """True once the server greets on its plain port; False if it died or the deadline passed."""
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, server.port), timeout=1) as s:
                if s.recv(200).startswith(b"* OK"):
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _make_cert(base: str) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", os.path.join(base, "key.pem"), "-out", os.path.join(base, "cert.pem"),
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )


def start_dovecot() -> DovecotServer:
    """Write a private configuration, start Dovecot, wait until it answers; raise on failure."""
    base = tempfile.mkdtemp(prefix="spamsift-dovecot-")
    if os.geteuid() == 0:
        # Login processes may not run as root, and mail may not belong to UID 0.
        internal_user, internal_group = "dovecot", "dovecot"
        login_user, auth_user = "dovenull", "root"
        mail = pwd.getpwnam("nobody")
        mail_uid, mail_gid = mail.pw_uid, mail.pw_gid
        os.chmod(base, 0o755)  # dovenull must reach base/run/login
    else:
        me = pwd.getpwuid(os.getuid())
        internal_user = login_user = auth_user = me.pw_name
        internal_group = str(os.getgid())
        try:
            import grp

            internal_group = grp.getgrgid(os.getgid()).gr_name
        except KeyError:
            pass
        mail_uid, mail_gid = os.getuid(), os.getgid()
    _make_cert(base)
    os.makedirs(os.path.join(base, "mail"))
    if os.geteuid() == 0:
        os.chown(os.path.join(base, "mail"), mail_uid, mail_gid)
    config = os.path.join(base, "dovecot.conf")
    server = DovecotServer(base, HOST, 0, 0, os.path.join(base, "cert.pem"), config,
                           mail_uid, mail_gid)
    server._add_user("alice", "alice-secret")
    server._add_user("bob", "bob-secret")
    for _ in range(POOL_SIZE):
        name = "u" + uuid.uuid4().hex[:10]
        server._add_user(name, "pw-" + uuid.uuid4().hex[:8])
        server._pool.append(name)
    last_error = ""
    for _attempt in range(3):  # a port picked free can be taken before Dovecot binds it
        port, tls_port = _free_ports(2)
        with open(config, "w") as f:
            f.write(CONFIG.format(
                base=base, tag=uuid.uuid4().hex[:8], host=HOST, port=port, tls_port=tls_port,
                internal_user=internal_user, internal_group=internal_group,
                login_user=login_user, auth_user=auth_user,
            ))
        server.port, server.tls_port = port, tls_port
        # -F keeps the master in the foreground as our child, so teardown (or a crashed test
        # run's exit) can stop exactly this process; its own log goes to dovecot.log.
        with open(os.path.join(base, "master.out"), "ab") as out:
            server.process = subprocess.Popen(
                [DOVECOT, "-F", "-c", config], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                preexec_fn=_die_with_parent,
            )
        if _wait_listening(server, time.monotonic() + START_TIMEOUT):
            return server
        stop_dovecot(server, remove=False)
        last_error = _last_line(os.path.join(base, "master.out")) or _last_line(
            os.path.join(base, "dovecot.log"))
    shutil.rmtree(base, ignore_errors=True)
    raise RuntimeError(f"dovecot did not start: {last_error or 'no error logged'}")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM the Dovecot master when the test process dies, so a
    killed test run leaves no server behind (Linux prctl PR_SET_PDEATHSIG; elsewhere a no-op).
    The signal follows the *thread* that started the server: start it from the main thread."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def stop_dovecot(server: DovecotServer, remove: bool = True) -> None:
    """Stop the master (it stops its services) and, with `remove`, delete everything."""
    proc = server.process
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if remove:
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot():
    """One private Dovecot for the test session, users alice and bob (see module docstring)."""
    if not os.path.exists(DOVECOT):
        need(f"Dovecot is not installed ({DOVECOT} missing; apt-get install dovecot-imapd)")
    if shutil.which("openssl") is None:
        need("openssl is not installed (needed for the test server's certificate)")
    if os.geteuid() == 0:
        try:
            for user in ("dovecot", "dovenull", "nobody"):
                pwd.getpwnam(user)
        except KeyError as exc:
            need(f"running as root, Dovecot needs its system users: {exc}")
    try:
        server = start_dovecot()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        need(f"could not start a test Dovecot: {exc}")
    try:
        yield server
    finally:
        stop_dovecot(server)


@pytest.fixture
def imap_user(dovecot):
    """A fresh (name, password) on the session's Dovecot, with an empty mailbox."""
    return dovecot.new_user()
