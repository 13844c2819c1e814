"""`spamsift doctor` names each trap it checks for, as the uid that meets it, and only then.

One test per check of filter/doctor.py that no other test holds. Each asserts the whole problem
line (what and fix) where the trap is set, then that the same node with the trap fixed is
healthy (exit 0, "ok" alone): a check that is removed, never fires, or fires on a healthy node
fails here. Held elsewhere and not repeated: a database root made 0644 that a delivery uid
cannot open, a -shm left read-only and a stale socket (tests/test_unfiltered.py); a stopped
daemon, and doctor's silence for a uid that cannot write while the daemon serves it
(tests/test_deployment.py).

Other uids run the system Python on conftest's shadow copy of the source. Every file doctor
looks at is the test's own, under a world-searchable folder: never /etc (--maildroprc and
--alias point it elsewhere; --alias /dev/null stands for "no alias file").
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
DELIVER = "spamsift-t-deliver"
COURIER = "daemon"  # Courier's mail user in Debian's packages: the system-wide aliases run as it
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# The fixes doctor prints, as filter/doctor.py words them.
OPEN_FIX = ("start the daemon (the spamsift user owns the database), or make the database "
            "writable by this uid")
WRITE_FIX = ("start the daemon (the spamsift user owns the database), or make the database, "
             "its folder, -wal and -shm writable by this uid")
STORE_FIX = "the spamsift user owns the database; deliveries go through the daemon"  # store's own
SCHEMA_FIX = "spamsift db init (as the database's owner)"
DAEMON_FIX = ("start it (systemctl start spamsift-daemon), or give it the configuration this "
              "uid uses")
CONFIG_FIX = "correct the file; `spamsift config` shows what is in effect"
RUN_FIX = ("install spamsift where every delivery uid can run it (see docs/install.md), and "
           "name that path")

pytestmark = pytest.mark.skipif(not os.path.exists(SPAMSIFT),
                                reason="spamsift console script not installed")


class Site:
    """A node's home of the test's own, world-searchable: root's `db init` made the database
    (0644) and the pass-through folder (1733); `env` points spamsift at it and at a
    configuration of its own, with no daemon."""

    def __init__(self) -> None:
        self.top = Path(tempfile.mkdtemp(prefix="spamsift-doctor-"))
        os.chmod(self.top, 0o755)
        self.db = self.top / "spamsift.db"
        self.sock = self.top / "no-daemon"
        self.config = self.write("spamsift.toml", "syslog = false\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
        self.env.update(SPAMSIFT_CONFIG=str(self.config), SPAMSIFT_HOME=str(self.top),
                        SPAMSIFT_SOCKET=str(self.sock))
        subprocess.run([SPAMSIFT, "db", "init"], env=self.env, check=True, capture_output=True)

    def write(self, name: str, text: str, mode: int = 0o644) -> Path:
        path = self.top / name
        path.write_text(text)
        os.chmod(path, mode)
        return path

    def program(self, name: str, mode: int = 0o755) -> Path:
        """A program a maildroprc or alias may name (doctor only looks at it, never runs it)."""
        return self.write(name, "#!/bin/sh\nexit 0\n", mode)

    def open_to_deliveries(self) -> None:
        """What a node without a daemon needs: every delivery uid writes the database."""
        os.chmod(self.top, 0o777)
        os.chmod(self.db, 0o666)


@pytest.fixture
def site():
    s = Site()
    yield s
    shutil.rmtree(s.top, ignore_errors=True)


@pytest.fixture
def run(shadow_src):
    """run(env, *argv, user=None): spamsift as root (the venv's), or as `user` (the shadow)."""
    python, path = shadow_src

    def run_(env: dict[str, str], *argv: str, user: str | None = None):
        if user is None:
            command = [SPAMSIFT, *argv]
        else:
            command = [python, "-m", "spamsift", *argv]
            env = dict(env, PYTHONPATH=path, HOME="/nonexistent")
        return subprocess.run(command, check=False, env=env, user=user, cwd="/",
                              capture_output=True, text=True, timeout=120)
    return run_


@pytest.fixture
def doctor(run):
    """doctor(site, *argv, user=None, env=None, **changes): `spamsift doctor` on the site,
    with no maildroprc and no alias file unless argv names them."""
    def doctor_(site: Site, *argv: str, user: str | None = None,
                env: dict[str, str] | None = None, **changes: str):
        return run(dict(env or site.env, **changes), "doctor",
                   "--maildroprc", str(site.top / "no-maildroprc"), "--alias", "/dev/null",
                   *argv, user=user)
    return doctor_


def problems(done) -> list[str]:
    assert not done.stderr, done.stderr  # a traceback is not a diagnosis
    return [line for line in done.stdout.splitlines() if line.startswith("problem: ")]


def healthy(done) -> None:
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", ""), done.stdout


def courier_user() -> str:
    try:
        pwd.getpwnam(COURIER)
    except KeyError:
        pytest.skip(f"no {COURIER} user to run the system-wide aliases' checks as")
    return COURIER


@contextlib.contextmanager
def serving(site: Site):
    """A `spamsift daemon` as root on the site: yields (socket, the environment that uses it)."""
    sock = site.top / "d.sock"
    env = dict(site.env, SPAMSIFT_SOCKET=str(sock))
    proc = subprocess.Popen([SPAMSIFT, "daemon", "--socket", str(sock)], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        # Printed once the socket is in place and usable by every uid (filter/daemon.py).
        first = proc.stderr.readline()
        assert "listening on" in first, first
        yield sock, env
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stderr.close()


# -- the configuration (_configuration) -------------------------------------------------------

def test_a_configuration_the_uid_cannot_read(site, doctor, system_user):
    system_user(DELIVER)
    site.open_to_deliveries()
    os.chmod(site.config, 0o600)
    done = doctor(site, user=DELIVER)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [
        (f"problem: {site.config}: not readable by this uid, so its deliveries run without it "
         "(fix: make it readable (mode 0644, owned and writable by root alone))")]
    os.chmod(site.config, 0o644)
    healthy(doctor(site, user=DELIVER))


@pytest.mark.parametrize("text, what", [
    ("bogus = 1\n", "unknown key 'bogus' (every key: 'spamsift config --defaults')"),
    ('opt = "sometimes"\n', "opt must be one of in, out, not 'sometimes'"),
    # Trust granted by a file others may write: any local user could have written it.
    ('trusted_users = ["root", "mail", "courier", "daemon", "vmail"]\n',
     "trusted_users adds vmail, which only a file owned and writable by root alone may do"),
], ids=["unknown-key", "bad-value", "trust-from-a-writable-file"])
def test_a_configuration_with_a_bad_key_or_value(site, doctor, text, what):
    bad = site.write("bad.toml", text, 0o666)
    done = doctor(site, SPAMSIFT_CONFIG=str(bad))
    assert done.returncode == 65, done.stdout
    assert problems(done) == [f"problem: configuration: {bad}: {what} (fix: {CONFIG_FIX})"]
    healthy(doctor(site))


def test_a_configuration_that_is_not_toml(site, doctor):
    bad = site.write("bad.toml", 'opt = "in\n')
    done = doctor(site, SPAMSIFT_CONFIG=str(bad))
    assert done.returncode == 65, done.stdout
    [line] = problems(done)
    assert line.startswith(f"problem: configuration: {bad}: not valid TOML: "), line
    assert line.endswith(f" (fix: {CONFIG_FIX})"), line


# -- the daemon (_daemon) ---------------------------------------------------------------------

def test_a_daemon_socket_this_uid_may_not_connect_to(site, doctor, system_user):
    """The daemon runs, but its socket lets in its owner only (0600): deliveries as any other
    uid filter in their own process, which doctor, as that uid, says."""
    system_user(DELIVER)
    site.open_to_deliveries()
    with serving(site) as (sock, env):
        healthy(doctor(site, user=DELIVER, env=env))
        os.chmod(sock, 0o600)
        done = doctor(site, user=DELIVER, env=env)
        assert done.returncode == 65, done.stdout
        assert problems(done) == [
            (f"problem: daemon at {sock} cannot be reached (Permission denied): this uid's "
             f"deliveries filter in-process (fix: {DAEMON_FIX})")]
        healthy(doctor(site, env=env))  # root's deliveries still reach it


def test_a_daemon_that_declines_this_uids_configuration(site, doctor):
    """The daemon serves its own configuration only: a uid whose SPAMSIFT_* differ (the same
    database, named another way) filters in its own process."""
    with serving(site) as (sock, env):
        healthy(doctor(site, env=env))
        done = doctor(site, env=env, SPAMSIFT_STORAGE=f"sqlite:///{site.db}")
        assert done.returncode == 65, done.stdout
        assert problems(done) == [
            (f"problem: daemon at {sock} declined the request (another configuration "
             f"(SPAMSIFT_STORAGE)): this uid's deliveries filter in-process (fix: {DAEMON_FIX})")]


# -- the database (_database) -----------------------------------------------------------------

def test_a_database_the_uid_cannot_open_while_no_daemon_serves_it(site, doctor, system_user):
    system_user(DELIVER)
    site.open_to_deliveries()
    os.chmod(site.db, 0o600)
    done = doctor(site, user=DELIVER)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [
        (f"problem: no daemon serves this uid (no socket at {site.sock}), and it cannot open the "
         f"database ({site.db}: unable to open database file): its deliveries pass mail through "
         f"unfiltered (fix: {OPEN_FIX})")]
    os.chmod(site.db, 0o666)
    healthy(doctor(site, user=DELIVER))


@pytest.mark.parametrize("trap", ["wal", "database", "folder"])
def test_a_database_the_uid_opens_but_cannot_write(site, doctor, system_user, trap):
    """The database opens, so nothing fails until a message is written: a -wal left root's
    0444, the file itself root's 0644 (SQLite opens it read-only), or a folder the uid cannot
    create -wal and -shm in."""
    uid, _gid = system_user(DELIVER)
    site.open_to_deliveries()
    wal = Path(f"{site.db}-wal")
    if trap == "wal":
        wal.write_bytes(b"")
        os.chmod(wal, 0o444)
        what = f"{wal}: not writable by uid {uid} (fix: {STORE_FIX})"
    elif trap == "database":
        os.chmod(site.db, 0o644)
        what = f"{site.db}: not writable by uid {uid} (fix: {STORE_FIX})"
    else:
        for name in (wal, Path(f"{site.db}-shm")):
            name.write_bytes(b"")
            os.chmod(name, 0o666)
        os.chmod(site.top, 0o755)
        what = f"{site.top}: uid {uid} cannot create files here (SQLite's -wal and -shm)"
    done = doctor(site, user=DELIVER)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [
        (f"problem: no daemon serves this uid (no socket at {site.sock}), and {what}: its "
         f"deliveries pass mail through unfiltered (fix: {WRITE_FIX})")]
    if trap == "wal":
        os.chmod(wal, 0o666)
    elif trap == "database":
        os.chmod(site.db, 0o666)
    else:
        os.chmod(site.top, 0o777)
    healthy(doctor(site, user=DELIVER))


def test_a_schema_problem_and_the_fix_doctor_names(site, doctor, run):
    import sqlite3

    db = sqlite3.connect(site.db)
    db.execute("DROP TABLE dspam_stats")
    db.close()
    done = doctor(site)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [f"problem: table dspam_stats is missing (fix: {SCHEMA_FIX})"]
    assert run(site.env, "db", "init").returncode == 0
    healthy(doctor(site))


@pytest.mark.parametrize("damage", ["newer", "not-a-database"])
def test_a_database_no_one_can_use_is_a_problem_while_the_daemon_serves(site, doctor, damage):
    """A database the daemon cannot use either is not "the daemon's to open": every
    delivery passes mail through unfiltered. doctor once said "ok" here."""
    import sqlite3

    with serving(site) as (_sock, env):
        healthy(doctor(site, env=env))
        if damage == "newer":
            db = sqlite3.connect(site.db)
            db.execute("PRAGMA user_version = 99")
            db.close()
            from spamsift.filter.engine.store.sqlite_txn import SCHEMA_VERSION

            why = f"{site.db}: schema version 99 is newer than this spamsift ({SCHEMA_VERSION})"
        else:
            site.db.write_bytes(b"not a database" * 100)
            for name in ("-wal", "-shm"):
                Path(f"{site.db}{name}").unlink(missing_ok=True)
            why = f"{site.db}: file is not a database"
        done = doctor(site, env=env)
        assert done.returncode == 65, done.stdout
        assert problems(done) == [
            (f"problem: the database cannot be used ({why}): every delivery passes mail through "
             "unfiltered (fix: restore a damaged database from a backup; one that a newer "
             "spamsift made needs that spamsift)")]


def test_mysql_unreachable_with_or_without_a_daemon(site, doctor):
    """MySQL configured, the server not answering (a port the test holds, listening on
    nothing): the daemon's deliveries pass mail through as well, so it is a problem whoever
    opens the database. doctor once said "ok" while a daemon served, and told a uid without
    one to start it. (The server answering: the next test.)"""
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    try:
        url = f"mysql://root@127.0.0.1:{held.getsockname()[1]}/spamsift_doctor"
        prefix = "problem: the database cannot be reached (MySQL 127.0.0.1: "
        fix = (": every delivery passes mail through unfiltered (fix: start the database "
               "server, or correct storage (host, port, account, database) in the "
               "configuration)")
        alone = doctor(site, SPAMSIFT_STORAGE=url)
        site.env["SPAMSIFT_STORAGE"] = url  # the daemon's too
        with serving(site) as (_sock, env):
            served = doctor(site, env=env)
        for done in (alone, served):
            assert done.returncode == 65, done.stdout
            [line] = problems(done)
            assert line.startswith(prefix) and line.endswith(fix), line
            assert "refused" in line, line
    finally:
        held.close()


def test_mysql_reachable_before_and_after_db_init(site, doctor, run, mysql_url):
    """The real server, in a database of the test's own: its missing tables, each with the
    fix, then nothing once `spamsift db init` made them."""
    from spamsift import sql

    done = doctor(site, SPAMSIFT_STORAGE=mysql_url)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [
        f"problem: table {table} is missing (run 'spamsift db init') (fix: {SCHEMA_FIX})"
        for table in sql.tables("mysql")]
    init = run(dict(site.env, SPAMSIFT_STORAGE=mysql_url), "db", "init")
    assert init.returncode == 0, init.stdout + init.stderr
    healthy(doctor(site, SPAMSIFT_STORAGE=mysql_url))


# -- trust (_trust) ---------------------------------------------------------------------------

def test_the_aliases_user_left_out_of_trusted_users(site, doctor, system_user):
    """The system-wide aliases run as Courier's user and act for the signature's owner: left
    out of trusted_users, every report through them fails (exit 77). A plain delivery uid is
    not trusted either, and needs not be."""
    courier = courier_user()
    system_user(DELIVER)
    site.open_to_deliveries()
    strict = site.write("strict.toml", 'syslog = false\ntrusted_users = ["root"]\n')
    done = doctor(site, user=courier, SPAMSIFT_CONFIG=str(strict))
    assert done.returncode == 65, done.stdout
    assert problems(done) == [
        (f"problem: {courier} is not in trusted_users: as the system-wide aliases' or virtual "
         "mailboxes' user it cannot act for other users (exit 77) (fix: add "
         f'"{courier}" to trusted_users in a root-owned configuration)')]
    healthy(doctor(site, user=courier))  # the default trusted_users has it
    healthy(doctor(site, user=DELIVER, SPAMSIFT_CONFIG=str(strict)))


# -- counting what passes through (_passthrough) ----------------------------------------------

def test_a_passthrough_folder_the_uid_cannot_write(site, doctor, run, system_user):
    system_user(DELIVER)
    site.open_to_deliveries()
    folder = site.top / "passthrough"
    os.chmod(folder, 0o755)
    done = doctor(site, user=DELIVER)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [
        (f"problem: {folder}: this uid cannot count mail it passes through unfiltered (it only "
         "goes to syslog) (fix: spamsift db init (makes it, mode 1733))")]
    assert run(site.env, "db", "init").returncode == 0  # the fix doctor names
    healthy(doctor(site, user=DELIVER))


# -- maildroprc and the aliases (_programs, _runnable) ----------------------------------------

def _maildroprc(spamsift: Path, spamc: Path) -> str:
    """The shipped maildroprc with these programs, as `spamsift setup` fills it in."""
    text = (EXAMPLES / "maildroprc").read_text()
    text = re.sub(r'(?m)^SPAMSIFT=.*$', lambda _m: f'SPAMSIFT="{spamsift}"', text)
    return re.sub(r'(?m)^SPAMC=.*$', lambda _m: f'SPAMC="{spamc}"', text)


def test_a_maildroprc_the_uid_cannot_read(site, doctor, system_user):
    system_user(DELIVER)
    site.open_to_deliveries()
    rc = site.write("maildroprc", _maildroprc(site.program("spamsift"), site.top / "no-spamc"),
                    0o600)
    done = doctor(site, "--maildroprc", str(rc), user=DELIVER)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [(f"problem: {rc}: Permission denied (fix: make it readable by "
                               "maildrop)")]
    os.chmod(rc, 0o644)
    healthy(doctor(site, "--maildroprc", str(rc), user=DELIVER))  # spamc is optional


def test_a_maildroprc_naming_programs_the_uid_cannot_run(site, doctor, system_user):
    system_user(DELIVER)
    site.open_to_deliveries()
    spamsift, spamc = site.program("spamsift", 0o700), site.program("spamc", 0o700)
    rc = site.write("maildroprc", _maildroprc(spamsift, spamc))
    done = doctor(site, "--maildroprc", str(rc), user=DELIVER)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [
        f"problem: {rc}: SPAMSIFT: {spamsift} cannot be run by this uid (fix: {RUN_FIX})",
        f"problem: {rc}: SPAMC: {spamc} cannot be run by this uid (fix: {RUN_FIX})"]
    healthy(doctor(site, "--maildroprc", str(rc)))  # root may run them
    os.chmod(spamsift, 0o755)
    os.chmod(spamc, 0o755)
    healthy(doctor(site, "--maildroprc", str(rc), user=DELIVER))


def _alias(command: str) -> str:
    """The shipped system-wide spam alias with `command` as its program line."""
    text = (EXAMPLES / "courier" / "aliasdir" / ".courier-spam-default").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("|")]
    return "\n".join([*lines, command]) + "\n"


def test_an_alias_file_courier_cannot_read(site, doctor):
    courier = courier_user()
    site.open_to_deliveries()
    alias = site.write(".courier-spam-default",
                       _alias(f"| {site.program('spamsift')} filter --addspam"), 0o600)
    done = doctor(site, "--alias", str(alias), user=courier)
    assert done.returncode == 65, done.stdout
    assert problems(done) == [(f"problem: {alias}: Permission denied (fix: make it readable by "
                               "Courier)")]
    os.chmod(alias, 0o644)
    healthy(doctor(site, "--alias", str(alias), user=courier))


@pytest.mark.parametrize("trap", ["quoting", "program", "program-after-variables"])
def test_an_alias_with_a_bad_command(site, doctor, trap):
    """The program after any VAR=value words is the one checked: Courier passes no
    SPAMSIFT_* through, so examples/courier/.courier-spam tells a non-default configuration
    to set them on the line, and doctor once took SPAMSIFT_CONFIG=... for the program."""
    spamsift = site.program("spamsift")
    if trap == "quoting":
        command = f'| {spamsift} filter --user "$USER --addspam'
        what = f"cannot read the command {command!r} (fix: fix its quoting)"
        fixed = f'| {spamsift} filter --user "$USER" --addspam'
    else:
        missing = site.top / "bin" / "spamsift"
        given = (f"SPAMSIFT_CONFIG={site.config} SPAMSIFT_HOME='{site.top}' "
                 if trap == "program-after-variables" else "")
        command = f"| {given}{missing} filter --addspam"
        what = f"{missing} cannot be run by this uid (fix: {RUN_FIX})"
        fixed = f"| {given}{spamsift} filter --addspam"
    alias = site.write(".courier-spam-default", _alias(command))
    done = doctor(site, "--alias", str(alias))
    assert done.returncode == 65, done.stdout
    assert problems(done) == [f"problem: {alias}: {what}"]
    site.write(".courier-spam-default", _alias(fixed))
    healthy(doctor(site, "--alias", str(alias)))


# -- db check as a delivery uid ---------------------------------------------------------------

def test_db_check_as_a_delivery_uid_that_cannot_write_is_not_ok(site, run, system_user):
    """The issue's trap: root's 0644 database in a folder the delivery uid may write opens
    (read-only) and reads fine, so only a write fails; `db check` as that uid must say so,
    never "ok". (A database it cannot open at all: tests/test_unfiltered.py.)"""
    uid, _gid = system_user(DELIVER)
    os.chmod(site.top, 0o777)
    done = run(site.env, "db", "check", user=DELIVER)
    assert done.returncode == 65, done.stdout
    assert done.stdout.splitlines() == [(f"{site.db}: not writable by uid {uid} (fix: "
                                         f"{STORE_FIX})")]
    os.chmod(site.db, 0o666)
    fixed = run(site.env, "db", "check", user=DELIVER)
    assert (fixed.returncode, fixed.stdout) == (0, "ok\n"), fixed.stdout
