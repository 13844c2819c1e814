"""What a local user or a sender can do to spamsift: each test is an attack that once worked.

The daemon runs as root here (the worst case: the shipped unit runs it as its own user) and the
attacker is a system user of the test's own (``spamsift-t-evil``), never root: requests to the
world-writable socket, hostile messages within max_message_size, names that are not UTF-8.
Each test asserts the bound or the error; times are printed by benchmarks/hostile.py.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import hostile
import procs
from mail import HAM
from spamsift.filter import client
from spamsift.filter.engine.tokenizer import MAX_TOKENS

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
EVIL = "spamsift-t-evil"

needs_console = pytest.mark.skipif(not os.path.exists(SPAMSIFT),
                                   reason="spamsift console script not installed")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
    env.update(SPAMSIFT_HOME=str(home), **extra)
    return env


class Daemon:
    """A `spamsift daemon` as root on a world-reachable folder, with a root-owned config."""

    def __init__(self, extra_config: str = "") -> None:
        self.top = Path(tempfile.mkdtemp(prefix="spamsift-attack-"))
        os.chmod(self.top, 0o755)
        self.home = self.top / "home"
        self.home.mkdir(mode=0o755)
        self.drop = self.top / "drop"  # where agents and attackers may write
        self.drop.mkdir()
        os.chmod(self.drop, 0o1777)
        self.sock = self.top / "d.sock"
        self.config = self.top / "spamsift.toml"
        self.config.write_text(f'home = "{self.home}"\nsyslog = false\n' + extra_config)
        os.chmod(self.config, 0o644)
        self.env = _env(self.home, SPAMSIFT_CONFIG=str(self.config),
                        SPAMSIFT_SOCKET=str(self.sock))
        self.env.pop("SPAMSIFT_HOME")
        self.proc = subprocess.Popen([SPAMSIFT, "daemon", "--socket", str(self.sock),
                                      "--config", str(self.config)], env=self.env,
                                     stderr=subprocess.PIPE)
        for _ in range(400):
            if self.sock.exists():
                break
            time.sleep(0.025)
        assert self.sock.exists(), self.proc.stderr.read() if self.proc.poll() else "no socket"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=120)
        shutil.rmtree(self.top, ignore_errors=True)

    def request(self, argv: list[str], env: dict[str, str], data: bytes,
                user: str | None = None) -> list[bytes]:
        """Send one raw request as `user` (the framing of spamsift.filter.client, nothing of
        spamsift's code on the sending side) and return the reply's fields."""
        fields = [str(len(argv)).encode(), *(a.encode() for a in argv),
                  str(len(env)).encode()]
        for key, value in env.items():
            fields += [key.encode(), value.encode()]
        fields.append(data)
        frame = self.drop / f"frame-{os.getpid()}-{time.monotonic_ns()}"
        frame.write_bytes(client.encode(fields))
        os.chmod(frame, 0o644)
        sender = ("import socket, sys\n"
                  "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                  "s.sendall(open(sys.argv[2], 'rb').read()); s.shutdown(socket.SHUT_WR)\n"
                  "out = b''\n"
                  "while (chunk := s.recv(65536)): out += chunk\n"
                  "sys.stdout.buffer.write(out)\n")
        done = subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                               else sys.executable, "-c", sender, str(self.sock), str(frame)],
                              capture_output=True, user=user, cwd="/", timeout=120)
        assert done.returncode == 0, done.stderr
        return client.decode(done.stdout)


@pytest.fixture
def evil(system_user):
    uid, gid = system_user(EVIL)
    return uid, gid


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.close()


def _evil_config(d: Daemon, evil_uid: int) -> Path:
    """What the attacker writes: a configuration of their own with a program to run."""
    mine = d.drop / "evil"
    mine.mkdir()
    os.chown(mine, evil_uid, -1)
    evil = mine / "evil.toml"
    evil.write_text(f'delivery_agent = "/bin/sh -c \'id > {mine}/pwned; cat >/dev/null\'"\n'
                    f'home = "{mine}"\nstorage = "sqlite:///{mine}/evil.db"\n'
                    "max_message_size = 0\n")
    os.chown(evil, evil_uid, -1)
    return evil


@needs_console
def test_a_config_in_the_request_is_declined_by_the_daemon_itself(daemon, evil):
    """Critical, once: a raw request with --config made the daemon (root) run the request's
    delivery_agent and write uid=0 into a file. The daemon declines it now, whatever the
    client sends; nothing runs and the attacker's storage is never opened."""
    evil_cfg = _evil_config(daemon, evil[0])
    pwned = evil_cfg.parent / "pwned"
    own_env = {"SPAMSIFT_CONFIG": str(daemon.config)}
    for argv in (["--user", EVIL, "--deliver=innocent,spam", f"--config={evil_cfg}"],
                 ["--user", EVIL, "--deliver=innocent,spam", "--config", str(evil_cfg)],
                 ["--config", str(evil_cfg), "--user", EVIL, "--stdout"]):
        assert daemon.request(argv, own_env, HAM, user=EVIL)[0] == b"decline", argv
    # Environment that would change the configuration: declined the same way.
    for env in ({"SPAMSIFT_CONFIG": str(evil_cfg)},
                {**own_env, "SPAMSIFT_STORAGE": f"sqlite:///{evil_cfg.parent}/evil.db"},
                {**own_env, "SPAMSIFT_HOME": str(evil_cfg.parent)}):
        assert daemon.request(["--user", EVIL, "--deliver=innocent,spam"], env, HAM,
                              user=EVIL)[0] == b"decline", env
    time.sleep(0.3)
    assert not pwned.exists()
    assert not (evil_cfg.parent / "evil.db").exists()
    # The daemon is still serving its own configuration.
    reply = daemon.request(["--user", EVIL, "--stdout"], own_env, HAM, user=EVIL)
    assert reply[0] == b"0" and b"X-DSPAM-Result: " in reply[1]


@needs_console
def test_a_home_that_is_not_the_callers_is_declined(daemon, evil):
    """The daemon (root) would otherwise tell anyone whether a dotfile exists in a folder only
    root can read: a home named by --home or $HOME must be the caller's."""
    secret = daemon.top / "secret"
    secret.mkdir(mode=0o700)
    (secret / ".nospamsift").touch()
    own_env = {"SPAMSIFT_CONFIG": str(daemon.config)}
    assert daemon.request(["--user", EVIL, "--stdout", f"--home={secret}"], own_env, HAM,
                          user=EVIL)[0] == b"decline"
    # $HOME that is not the caller's is left out: the dotfile in it does not opt EVIL out.
    reply = daemon.request(["--user", EVIL, "--stdout"], {**own_env, "HOME": str(secret)},
                           HAM, user=EVIL)
    assert reply[0] == b"0" and b"X-DSPAM-Result: " in reply[1]
    mine = daemon.drop / "mine"
    mine.mkdir()
    os.chown(mine, evil[0], -1)
    reply = daemon.request(["--user", EVIL, "--stdout", f"--home={mine}"], own_env, HAM,
                           user=EVIL)
    assert reply[0] == b"0" and b"X-DSPAM-Result: " in reply[1]


@needs_console
def test_the_delivery_agent_runs_in_the_client_as_the_caller(evil, shadow_src):
    """The daemon's own delivery_agent: the daemon says what to run on which message, and the
    client runs it under the caller's uid, on the stamped message."""
    d = Daemon('delivery_agent = "/bin/sh -c \'id -u > DROP/uid-%u; cat > DROP/msg-%u\'"\n')
    try:
        d.config.write_text(d.config.read_text().replace("DROP", str(d.drop)))
        python, path = shadow_src
        home = d.drop / "home-evil"
        home.mkdir()
        os.chown(home, evil[0], -1)
        env = dict(d.env, PYTHONPATH=path, HOME=str(home))
        done = subprocess.run([python, "-m", "spamsift", "filter", "--user", EVIL,
                               "--deliver=innocent,spam"], input=HAM, env=env,
                              capture_output=True, user=EVIL, cwd="/", timeout=120)
        assert done.returncode == 0, done.stderr
        assert (d.drop / f"uid-{EVIL}").read_text().strip() == str(evil[0])
        delivered = (d.drop / f"msg-{EVIL}").read_bytes()
        # Stamped: it went through the daemon (in the client's own process the database,
        # root's, could not be written, and the original would have been passed on).
        assert b"X-DSPAM-Result: " in delivered and delivered.endswith(HAM.split(b"\n\n")[1])
        db = sqlite3.connect(d.home / "spamsift.db")
        for _ in range(400):  # the daemon's writer commits after the reply, in groups
            if db.execute("SELECT count(*) FROM dspam_signature_data").fetchone()[0]:
                break
            time.sleep(0.025)
        assert db.execute("SELECT count(*) FROM dspam_signature_data").fetchone()[0] == 1
    finally:
        d.close()


@needs_console
def test_connections_wait_in_a_backlog_of_at_least_128():
    """With one worker, 100 connections at once all connect and all are served: the old
    backlog of 5 refused the rest at once, and their clients filtered in-process."""
    d = Daemon("daemon_workers = 1\n")
    try:
        socks = []
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(60)
            s.connect(str(d.sock))
            socks.append(s)
        env = {"SPAMSIFT_CONFIG": str(d.config)}
        frame = client.encode([b"3", b"--user", b"root", b"--stdout", b"0", HAM])
        # Only now is there anything to read: every connection waited in the backlog.
        replies = []
        for s in socks:
            fields = [b"3", b"--user", b"root", b"--stdout", b"1",
                      b"SPAMSIFT_CONFIG", env["SPAMSIFT_CONFIG"].encode(), HAM]
            s.sendall(client.encode(fields))
            s.shutdown(socket.SHUT_WR)
        for s in socks:
            replies.append(client.decode(client.recv_all(s)))
            s.close()
        assert frame  # the request shape above is a client's
        assert all(r[0] == b"0" and b"X-DSPAM-Result: " in r[1] for r in replies)
    finally:
        d.close()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@needs_console
def test_sixteen_hostile_requests_at_once_stay_bounded():
    """16 clients send 4 MB of unique words at once: the daemon works on `daemon_workers` of
    them at a time (the rest wait), every message comes back stamped and whole, and the
    daemon with its writer stays under 300 MB (once: 1.04 GB for two such messages)."""
    d = Daemon("daemon_workers = 4\n")
    raw = hostile.unique_words()
    try:
        peak, threads = 0.0, 0
        done = threading.Event()

        def sample():
            nonlocal peak, threads
            while not done.is_set():
                peak = max(peak, procs.rss_mb([d.proc.pid, *procs.children_of(d.proc.pid)]))
                threads = max(threads, _threads(d.proc.pid))
                time.sleep(0.01)
        sampler = threading.Thread(target=sample)
        sampler.start()
        results: list[subprocess.CompletedProcess] = []
        lock = threading.Lock()

        def one():
            r = subprocess.run([SPAMSIFT, "filter", "--user", "alice", "--stdout"], input=raw,
                               env=d.env, capture_output=True, timeout=600)
            with lock:
                results.append(r)
        clients = [threading.Thread(target=one) for _ in range(16)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        time.sleep(1.0)  # the writer's share comes after the replies
        done.set()
        sampler.join()
        assert len(results) == 16
        for r in results:
            assert r.returncode == 0, r.stderr
            head, body = r.stdout.split(b"\n\n", 1)
            assert b"X-DSPAM-Result: " in head and body == raw.split(b"\n\n", 1)[1]
        assert b"in-process" not in b"".join(r.stderr for r in results)
        print(f"daemon + writer peak {peak:.0f} MB, {threads} threads")
        assert peak <= 300, peak
        assert threads <= 4 + 6, threads  # the workers, the main thread, the writer's feeder
    finally:
        d.close()


@needs_console
@pytest.mark.parametrize("name", sorted(hostile.ALL))
def test_hostile_message_in_the_filter_process_is_bounded(tmp_path, name):
    """Each hostile message: exit 0, stamped, the body byte for byte, at most MAX_TOKENS token
    rows learned, and at most 100 MB in the filter process (4 MB of unique words once took
    20-31 s and 584-705 MB and added 1.48 M rows)."""
    raw = hostile.ALL[name]()
    assert len(raw) <= hostile.LIMIT
    env = _env(tmp_path, SPAMSIFT_SOCKET=str(tmp_path / "no-daemon"))
    code, out, err, cpu, peak = hostile.run_measured(
        [SPAMSIFT, "filter", "--user", "alice", "--stdout"], raw, env)
    assert code == 0 and err == b"", err
    head, _, body = out.partition(b"\n\n")
    assert b"X-DSPAM-Result: " in head and body == raw.partition(b"\n\n")[2]
    db = sqlite3.connect(tmp_path / "spamsift.db")
    rows = db.execute("SELECT count(*) FROM dspam_token_data").fetchone()[0]
    assert rows <= MAX_TOKENS + 3  # + the model's bias and two reputation weights
    print(f"{name}: {cpu:.2f} s CPU, {peak:.0f} MB, {rows} token rows")
    assert peak <= 100, peak


@needs_console
@pytest.mark.parametrize("command", [
    ["filter", "--user", "\udcff", "--class=spam", "--source=corpus"],
    ["filter", "--user", "\udcff", "--addspam", "--signature=" + "1" * 30],
    ["stats", "\udcff"], ["prefs", "\udcff"], ["prefs", "\udcff", "opt", "in"],
    ["train", "--user", "\udcff", "--ham", "/nonexistent"],
    ["evaluate", "--user", "\udcff", "--ham", "/nonexistent"],
    ["reclassify", "--user", "\udcff", "/nonexistent"],
    ["report", "--json", "--user", "\udcff"], ["sources", "--user", "\udcff"],
])
def test_a_name_that_is_not_utf8_is_one_line_and_exit_65(tmp_path, command):
    env = _env(tmp_path, SPAMSIFT_SOCKET=str(tmp_path / "no-daemon"))
    subprocess.run([SPAMSIFT, "db", "init"], env=env, check=True, capture_output=True)
    argv = [os.fsencode(a) for a in [SPAMSIFT, *command]]
    done = subprocess.run(argv, input=HAM, env=env, capture_output=True, timeout=120)
    assert done.returncode == 65, done.stderr
    lines = done.stderr.decode("utf-8", "replace").splitlines()
    assert len(lines) == 1 and "invalid user name '\\xff'" in lines[0], lines


def test_the_watcher_skips_a_mailbox_whose_name_is_not_utf8_and_serves_the_others(tmp_path):
    """A folder named b'\\xff' under the watch root crashed every scan (nobody's drags were
    trained); it is logged once and skipped, and alice's drag is trained."""
    from tests.watchsite import SPAM, Site
    from spamsift.watchers.maildir import Watcher

    site = Site(tmp_path)
    try:
        user = "alice@example.org"
        box = site.mailbox()
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(os.fsencode(site.root), b"example.org", b"\xff",
                                     b"Maildir", sub.encode()), exist_ok=True)
        site.train(user)
        inbox = site.deliver(box, user, b"From: bob@example.com\nSubject: hi\n\nlunch?\n")
        lines: list[str] = []
        w = Watcher(site.settings(), site.store, [site.root], log=lines.append)
        w.cycle()
        site.move(site.seen(inbox), box, ".Spam")
        assert w.cycle().trained == {"retrained": 1}
        w.cycle()
        skipped = [line for line in lines if "skipping" in line]
        assert len(skipped) == 1 and "invalid user name" in skipped[0], lines
        assert SPAM  # the site's spam template is unused: one drag is the test
    finally:
        site.close()


@needs_console
def test_spoofed_header_after_a_second_bare_cr_is_removed(tmp_path):
    raw = (b"X-DSPAM-Result: x\rX-Evil: y\rX-DSPAM-Signature: zz\nSubject: s\n\nbody\n")
    env = _env(tmp_path, SPAMSIFT_SOCKET=str(tmp_path / "no-daemon"))
    done = subprocess.run([SPAMSIFT, "filter", "--user", "alice", "--stdout"], input=raw,
                          env=env, capture_output=True, timeout=60)
    assert done.returncode == 0
    assert b"zz" not in done.stdout and b"X-Evil: y\r" in done.stdout
    assert done.stdout.count(b"X-DSPAM-Signature") == 1
    assert done.stdout.endswith(b"\n\nbody\n")


@needs_console
@pytest.mark.parametrize("first", [b" leading space\n", b" X-DSPAM-Result: Spam\n",
                                   b"\tX-DSPAM-Signature: 0123\n"])
def test_a_first_line_starting_with_white_space_is_kept(tmp_path, first):
    raw = first + b"Subject: s\n\nbody\n"
    env = _env(tmp_path, SPAMSIFT_SOCKET=str(tmp_path / "no-daemon"))
    done = subprocess.run([SPAMSIFT, "filter", "--user", "alice", "--stdout"], input=raw,
                          env=env, capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(first + b"Subject: s\n")


@needs_console
def test_a_user_name_may_start_with_a_dash_given_with_equals(tmp_path):
    env = _env(tmp_path, SPAMSIFT_SOCKET=str(tmp_path / "no-daemon"))
    done = subprocess.run([SPAMSIFT, "filter", "--user=-x", "--stdout"], input=HAM, env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0 and b"X-DSPAM-Result: " in done.stdout, done.stderr
    flag = subprocess.run([SPAMSIFT, "filter", "--user", "-x", "--stdout"], input=HAM,
                          env=env, capture_output=True, timeout=60)
    assert flag.returncode == 64 and b"--user=NAME" in flag.stderr


def test_the_writers_queue_is_bounded_by_rows_not_only_by_batches(tmp_path, monkeypatch):
    """With its writer stopped (niced behind busy workers, say), the daemon queues at most
    MAX_QUEUED_ROWS token and weight rows: a message that would go past them waits, then is
    not learned (mail first), instead of holding ~5 MB more of this process per message."""
    import signal as signals

    from spamsift.filter import writer as writers
    from spamsift.filter.engine import config
    from spamsift.filter.engine.store.base import Batch

    monkeypatch.setattr(writers, "SUBMIT_WAIT", 0.3)
    settings = config.load(None, {"SPAMSIFT_HOME": str(tmp_path)}, use_cache=False)
    writer = writers.Writer(settings.replace(syslog=False))
    writer.start()
    try:
        os.kill(writer.process.pid, signals.SIGSTOP)

        def batch(rows: int) -> Batch:
            b = Batch("2026-12-02")
            b.tokens = {n: [1, 0] for n in range(rows)}
            return b
        rows = writers.MAX_QUEUED_ROWS * 2 // 5
        for _ in range(2):
            writer.submit(1, batch(rows))
        assert writer.queued.value == 2 * (rows + 1)
        started = time.monotonic()
        writer.submit(1, batch(rows))  # would pass the bound: waits, then is dropped
        assert time.monotonic() - started >= 0.3
        assert writer.queued.value == 2 * (rows + 1)
        os.kill(writer.process.pid, signals.SIGCONT)
        deadline = time.monotonic() + 30
        while writer.queued.value and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.queued.value == 0  # the writer took both
    finally:
        os.kill(writer.process.pid, signals.SIGCONT)
        writer.stop()


# -- what a second adversarial review found ------------------------------------------------

def test_a_request_trickled_a_byte_at_a_time_is_dropped_at_one_deadline(monkeypatch):
    """A timeout per read let a client that sent a byte every 25 s hold a worker for ever:
    the request as a whole has REQUEST_TIMEOUT."""
    from spamsift.filter import daemon

    monkeypatch.setattr(daemon, "REQUEST_TIMEOUT", 0.6)
    ours, theirs = socket.socketpair()
    server = type("S", (), {"max_request": 1 << 20})()
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            try:
                theirs.send(b"x")
            except OSError:
                return
            time.sleep(0.1)
    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        daemon._Request(server, ours, None)._read()
    assert time.monotonic() - started < 2.0
    stop.set()
    ours.close()
    theirs.close()


def _fake_daemon(tmp_path: Path, reply: bytes | None = None) -> str:
    """A socket whose daemon, for each of four requests, either takes the first bytes and
    dies without answering (`reply` None), or reads the whole request and answers `reply`
    (a frame)."""
    path = str(tmp_path / "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def serve():
        for _ in range(4):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if reply is None:
                conn.recv(1 << 20)
            else:
                while conn.recv(1 << 20):
                    pass
                conn.sendall(reply)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return path


@pytest.mark.parametrize("argv, code", [
    (["--user", "x", "--deliver=innocent,spam"], 75),   # the delivery agent would take it
    (["--user", "x", "--deliver", "innocent"], 75),     # the quarantine would take spam
    (["--user", "x", "--stdout"], 0),                    # maildrop's xfilter: passed on
])
def test_a_daemon_that_dies_mid_request_never_loses_the_message(tmp_path, argv, code):
    """On stdout the original goes on (the failure policy); where stdout is read by no one
    (delivery agent, quarantine) the MTA must retry: exit 0 there lost the message."""
    import io

    from spamsift.filter import client

    out, err = io.BytesIO(), io.StringIO()
    got = client.run(argv, {"SPAMSIFT_SOCKET": _fake_daemon(tmp_path)}, io.BytesIO(HAM), out,
                     err)
    assert got == code, err.getvalue()
    assert out.getvalue() == (HAM if code == 0 else b"")


def test_one_name_given_many_times_is_one_users_work(tmp_path):
    import io

    from spamsift.filter.cli import main

    out = io.BytesIO()
    env = {"SPAMSIFT_HOME": str(tmp_path)}
    code = main(["--user", *["alice"] * 50, "--deliver=summary"], stdin=io.BytesIO(HAM),
                stdout=out, stderr=io.StringIO(), environ=env)
    assert code == 0 and out.getvalue().count(b"X-DSPAM-Result: alice;") == 1


@needs_console
def test_an_untrusted_quarantine_request_is_declined(daemon, evil):
    """Spam not delivered goes to the quarantine: through the daemon that made files of the
    daemon's for anyone, without limit; the caller's own process does it instead."""
    own_env = {"SPAMSIFT_CONFIG": str(daemon.config)}
    reply = daemon.request(["--user", EVIL, "--deliver=innocent"], own_env, HAM, user=EVIL)
    assert reply[0] == b"decline" and b"quarantine" in reply[1]
    served = daemon.request(["--user", EVIL, "--deliver=innocent,spam", "--stdout"], own_env,
                            HAM, user=EVIL)
    assert served[0] == b"0"


def test_made_up_charset_names_do_not_grow_the_codec_cache():
    """encodings caches every unknown name for good: 120 messages of made-up charset names
    grew a daemon by 530 MB."""
    import encodings

    from spamsift.filter.engine import mime

    before = len(encodings._cache)
    for n in range(3000):
        mime.bytes_to_text(b"text", f"x-{n}-" + "y" * 30)
        mime.decode_header_value(f"=?zz{n}?q?abc?=")
    assert len(encodings._cache) <= before + 1


@needs_console
@pytest.mark.parametrize("path, code", [("", 64), ("/proc/x.sock", 78),
                                        ("/tmp/" + "a" * 120 + ".sock", 78)])
def test_a_socket_the_daemon_cannot_make_is_one_line(path, code):
    done = subprocess.run([SPAMSIFT, "daemon", "--socket", path], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == code
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_the_configuration_cache_is_no_more_readable_than_the_configuration(evil, shadow_src):
    """The parsed configuration was cached world-readable (0644) beside the database, so a
    configuration kept at 0600 for its MySQL password could be read by every local user,
    and a uid the file shuts out still ran with it. The cache now has the file's read bits
    and group; an older, more readable cache is not used and is rewritten."""
    import shutil
    import tempfile

    from spamsift.filter.engine import config

    top = Path(tempfile.mkdtemp(prefix="spamsift-cache-"))  # pytest's tmp_path is root-only
    try:
        os.chmod(top, 0o711)
        home = top / "home"
        home.mkdir(mode=0o711)
        conf = top / "spamsift.toml"
        conf.write_text(f'home = "{home}"\nstorage = "mysql://spamsift:s3cret@127.0.0.1/x"\n')
        conf.chmod(0o644)
        cache = home / "config.cache"
        env = {"SPAMSIFT_HOME": str(home)}
        config.load(str(conf), env)
        assert cache.stat().st_mode & 0o777 == 0o644  # as readable as the file: fine
        conf.chmod(0o600)  # the password locked away; size and mtime unchanged
        config.load(str(conf), env)
        assert cache.stat().st_mode & 0o077 == 0, oct(cache.stat().st_mode)
        python, path = shadow_src
        done = subprocess.run([python, "-c", "import sys; from spamsift.filter.engine import "
                               "config; print(config.load(sys.argv[1]).storage)", str(conf)],
                              env={"PYTHONPATH": path, "SPAMSIFT_HOME": str(home)},
                              capture_output=True, text=True, user=EVIL, cwd="/", timeout=60)
        assert done.returncode != 0 and "s3cret" not in done.stdout + done.stderr
        assert f"{conf}: Permission denied" in done.stderr or "not readable" in done.stderr, (
            done.stderr)
        conf.chmod(0o640)
        cache.unlink()
        config.load(str(conf), env)
        assert (cache.stat().st_mode & 0o777, cache.stat().st_gid) == (0o640, conf.stat().st_gid)
        os.chown(conf, -1, evil[1])  # another group may read it now; size and mtime unchanged
        config.load(str(conf), env)
        assert cache.stat().st_gid == evil[1]  # the old group's cache was not used: rewritten
        conf.chmod(0o644)  # readable again: the other uid reads the file (and may the cache)
        done = subprocess.run([python, "-c", "import sys; from spamsift.filter.engine import "
                               "config; print(config.load(sys.argv[1]).storage)", str(conf)],
                              env={"PYTHONPATH": path, "SPAMSIFT_HOME": str(home)},
                              capture_output=True, text=True, user=EVIL, cwd="/", timeout=60)
        assert "s3cret" in done.stdout, done.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_socket_another_user_serves_is_not_trusted_with_mail(evil, tmp_path):
    """Where others may write the socket's folder (a --socket under /tmp), any local user
    could bind the socket first: the client handed that user every delivery's message and
    ran the program the reply named as the delivery uid. The client now checks who serves
    the socket (root, the folder's owner, or itself) before sending anything."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="spamsift-squat-"))
    try:
        os.chmod(top, 0o1777)  # root's, sticky, world-writable: like /tmp
        sock = top / "spamsift.sock"
        squatter = subprocess.Popen(
            ["/usr/bin/python3", "-I", "-c", "import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n"
             "print('up', flush=True)\n"
             "c, _ = s.accept(); data = c.recv(1 << 20)\n"
             "print('got', len(data), flush=True)\n", str(sock)],
            user=EVIL, stdout=subprocess.PIPE, text=True, cwd="/")
        try:
            assert squatter.stdout.readline().strip() == "up"
            err = io.StringIO()
            result = client.run(["--user", "alice", "--stdout"],
                                {"SPAMSIFT_SOCKET": str(sock)}, io.BytesIO(HAM), io.BytesIO(),
                                err, count=False)
            assert isinstance(result, client.Fallback) and result.stdin == HAM
            assert f"is served by uid {evil[0]}" in err.getvalue(), err.getvalue()
            squatter.wait(timeout=30)
            assert squatter.stdout.read().split() == ["got", "0"]  # nothing was sent to it
        finally:
            squatter.kill()
            squatter.wait()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_trust_grant_is_checked_on_the_file_read_not_the_path_later(evil, tmp_path,
                                                                       monkeypatch):
    """The trust check stat()ed the path after the file had been read: a symlink flipped in
    between (from the caller's file to root's) let the caller's own grant of trusted_users
    pass as root's. The check now looks at the file actually read (fstat)."""
    from spamsift.filter.engine import config
    from spamsift.filter.engine.errors import ConfigError

    mine = tmp_path / "mine.toml"
    mine.write_text(f'trusted_users = ["root", "{EVIL}"]\n')
    os.chown(mine, evil[0], evil[1])
    roots = tmp_path / "root.toml"
    roots.write_text("")
    real_stat = os.stat

    def flipped(path, *args, **kwargs):  # by now the path names root's file
        return real_stat(roots if str(path) == str(mine) else path, *args, **kwargs)

    monkeypatch.setattr(config.os, "stat", flipped)
    with pytest.raises(ConfigError, match="only a file owned and writable by root"):
        config.load(str(mine), {"SPAMSIFT_HOME": str(tmp_path)}, use_cache=False)


# -- what a third adversarial review found --------------------------------------------------

@needs_console
def test_a_deliver_hidden_in_another_options_value_does_not_open_the_quarantine(daemon,
                                                                                 evil):
    """The daemon read --deliver by its own scan of argv, the filter by its parser: a
    '--deliver=spam' given as the value of --mail-from (or --profile, --signature...) counted
    for the daemon's quarantine check but not for the filter, which then quarantined the
    caller's spam as the daemon's own files, without limit. The check now reads the options
    the filter will act on."""
    from mail import SPAM

    own_env = {"SPAMSIFT_CONFIG": str(daemon.config)}
    for n in range(6):  # make the caller's spam spam, in the caller's own data
        for klass, text in (("spam", SPAM), ("innocent", HAM)):
            done = daemon.request(["--user", EVIL, f"--class={klass}", "--source=corpus"],
                                  own_env, text + f"{n}\n".encode(), user=EVIL)
            assert done[0] == b"0", done
    for hidden in (["--mail-from", "--deliver=spam"], ["--profile", "--deliver=stdout"],
                   ["--signature", "--deliver=spam"]):
        argv = ["--user", EVIL, "--deliver=innocent", *hidden]
        reply = daemon.request(argv, own_env, SPAM, user=EVIL)
        assert reply[0] == b"decline", (argv, reply[:3])
    assert not (daemon.home / "quarantine").exists()


def test_many_homes_in_one_request_do_not_take_the_daemons_descriptors(evil, tmp_path):
    """Each --home of an untrusted caller was opened and held until the request ended: one
    request of a megabyte of '--home=MINE' arguments took every descriptor the daemon may
    have (the soft limit, 1024 under systemd), so its other workers could not accept a
    connection, open the database or count a pass-through. One --home is all the filter
    uses: more than one is declined before anything is opened."""
    from spamsift.filter import daemon
    from spamsift.filter.engine import config, users

    mine = tmp_path / "mine"
    mine.mkdir()
    os.chown(mine, evil[0], -1)
    server = type("S", (), {"settings": config.Settings({}), "own_env": {}})()
    request = daemon._Request(server, None, None)  # type: ignore[arg-type]
    try:
        environ, why = request._environment(
            ["--user", EVIL, "--stdout", *[f"--home={mine}"] * 3000], {},
            users.Caller(evil[0], EVIL))
        assert environ is None and "--home" in why
        assert len(request.fds) <= 1, len(request.fds)
        environ, why = request._environment(["--user", EVIL, "--stdout", "--home", str(mine)],
                                            {}, users.Caller(evil[0], EVIL))
        assert environ is not None and why == "" and len(request.fds) == 1
    finally:
        request.close()




@pytest.mark.parametrize("argv, code, reason", [
    (["--user", "x", "--stdout"], 0, "error"),
    (["--user", "x", "--deliver=innocent,spam"], 75, "tempfail"),
])
@pytest.mark.parametrize("reply", [None, client.encode([b"0"]), client.encode([b"x", b"", b""])])
def test_a_daemon_failure_is_counted_and_logged_like_any_pass_through(tmp_path, monkeypatch,
                                                                      argv, code, reason,
                                                                      reply):
    """A daemon that failed mid-request (or answered a frame that is not a reply) made the
    client pass the message on unfiltered, or tempfail it, with a line on standard error only,
    which Courier does not show: not counted, not in syslog. A reply of too few fields was
    taken as "pass the original on" with exit 0 even where standard output is read by no one
    (the delivery agent's turn), losing the message; a non-numeric exit code was a traceback."""
    from spamsift.filter.engine import passlog

    home = tmp_path / "home"
    home.mkdir()
    passlog.prepare(str(home))
    logged: list[str] = []
    import syslog
    monkeypatch.setattr(syslog, "syslog", lambda *args: logged.append(args[-1]))
    path = _fake_daemon(tmp_path, reply)
    out, err = io.BytesIO(), io.StringIO()
    got = client.run(argv, {"SPAMSIFT_SOCKET": path, "SPAMSIFT_HOME": str(home)},
                     io.BytesIO(HAM), out, err)
    assert got == code, err.getvalue()
    assert out.getvalue() == (HAM if code == 0 else b"")
    assert [r for (_day, r, _u) in passlog.counts(str(home), 0)] == [reason]
    assert any("daemon at" in line for line in logged), logged


@needs_console
def test_idle_connections_of_one_user_do_not_hold_every_worker(evil):
    """A connection holds its worker until its request is complete, for up to 30 s: a local
    user who opened as many idle connections as there are workers (and kept the backlog full
    of more) held them all, at no cost of their own, and every delivery waited or passed
    through unfiltered. One untrusted uid now gets all workers but one; a connection beyond
    that is declined at once, unread."""
    d = Daemon("daemon_workers = 2\n")
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-I", "-c", "import socket, sys, time\n"
         "socks = []\n"
         "for _ in range(6):\n"
         "    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); socks.append(s)\n"
         "print('up', flush=True)\n"
         "time.sleep(120)\n", str(d.sock)],
        user=EVIL, stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert holder.stdout.readline().strip() == "up"
        time.sleep(0.5)  # the workers have taken the first of them
        started = time.monotonic()
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(d.sock))
        s.sendall(client.encode([b"3", b"--user", b"alice", b"--stdout", b"1",
                                 b"SPAMSIFT_CONFIG", str(d.config).encode(), HAM]))
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(1 << 16):
            out += chunk
        s.close()
        reply = client.decode(out)
        assert reply[0] == b"0" and b"X-DSPAM-Result: " in reply[1]
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
        d.close()


def test_a_decline_sent_before_the_request_was_read_is_a_decline(tmp_path):
    """A daemon declines a connection beyond a uid's share of workers without reading it:
    a client still sending a large message met a broken pipe and took that for a daemon
    failure (the message passed through unfiltered) instead of filtering it itself."""
    path = str(tmp_path / "declines.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def serve():
        conn, _ = listener.accept()
        conn.sendall(client.encode([b"decline", b"busy"]))
        time.sleep(0.2)  # the client is sending meanwhile, more than the buffers hold
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    big = HAM + b"x" * (8 << 20)
    err = io.StringIO()
    result = client.run(["--user", "x", "--stdout"], {"SPAMSIFT_SOCKET": path},
                        io.BytesIO(big), io.BytesIO(), err, count=False)
    assert isinstance(result, client.Fallback) and result.stdin == big, err.getvalue()
    assert "declined the request (busy)" in err.getvalue()
    listener.close()


def test_a_uid_over_its_share_of_workers_waits_for_one(tmp_path):
    """A legitimate burst for one local user (Courier delivers to one mailbox up to 4 at
    once) meets the per-uid share too: declined "busy:", the client tries again, as for a
    full backlog, instead of filtering in-process at once."""
    path = str(tmp_path / "share.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def serve():
        for n in range(3):
            conn, _ = listener.accept()
            if n < 2:
                conn.sendall(client.encode([b"decline", b"busy: 1 request"]))
            else:
                while conn.recv(1 << 16):
                    pass
                conn.sendall(client.encode([b"0", b"stamped", b""]))
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    out, err = io.BytesIO(), io.StringIO()
    got = client.run(["--user", "x", "--stdout"], {"SPAMSIFT_SOCKET": path}, io.BytesIO(HAM),
                     out, err, count=False)
    assert got == 0 and out.getvalue() == b"stamped", err.getvalue()
    listener.close()


@pytest.mark.parametrize("argv, code", [
    (["--user", "root", "--deliver=innocent,spam"], b"75"),  # the delivery agent's turn
    (["--user", "root", "--stdout"], b"0"),                  # maildrop's xfilter
])
def test_an_internal_error_in_the_daemon_never_answers_the_message_to_no_one(
        tmp_path, monkeypatch, argv, code):
    """An exception out of the filter made the daemon answer "exit 0, here is the original
    on stdout" whatever the command line: where the delivery agent, not stdout, delivers,
    no one read it and the message was lost. It is now a tempfail there (the MTA retries),
    the original on stdout elsewhere, and counted either way."""
    from spamsift.filter import cli, daemon
    from spamsift.filter.engine import config, passlog, users

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(cli, "main", broken)
    home = tmp_path / "home"
    home.mkdir()
    passlog.prepare(str(home))
    settings = config.Settings({"home": str(home), "syslog": False,
                                "delivery_agent": "/bin/cat"})
    server = type("S", (), {"settings": settings, "own_env": {}, "max_request": 1 << 20,
                            "metrics": None, "writer": None,
                            "open_store": staticmethod(lambda: None)})()
    ours, theirs = socket.socketpair()
    fields = [str(len(argv)).encode(), *(a.encode() for a in argv), b"0", HAM]
    theirs.sendall(client.encode(fields))
    theirs.shutdown(socket.SHUT_WR)
    daemon._Request(server, ours, None, users.Caller(0, "root")).handle()  # type: ignore[arg-type]
    ours.close()
    reply = client.decode(client.recv_all(theirs))
    theirs.close()
    assert reply[0] == code and reply[1] == (HAM if code == b"0" else b"")
    assert len(reply) == 3  # no delivery for the client to make
    reasons = [r for (_d, r, _u) in passlog.counts(str(home), 0)]
    assert reasons == ["error" if code == b"0" else "tempfail"]
