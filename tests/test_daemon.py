"""`spamsift daemon` and the thin client: same results, peer-credential trust, fallbacks."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
SRC = Path(__file__).resolve().parent.parent
HAM = b"From: Bob <bob@example.com>\nSubject: lunch\n\nHello Alice, lunch tomorrow at noon?\n"
SPAM = b"From: Deals <d@promo.biz>\nSubject: cheap pills\n\nBuy cheap pills now, click here\n"

pytestmark = pytest.mark.skipif(not os.path.exists(SPAMSIFT),
                                reason="spamsift console script not installed")


@pytest.fixture
def world():
    # Not pytest's tmp_path: its parent is root-only, and one test connects as "nobody".
    home = Path(tempfile.mkdtemp(prefix="spamsift-daemon-"))
    os.chmod(home, 0o777)
    sock = home / "d.sock"
    env = dict(os.environ, SPAMSIFT_HOME=str(home), SPAMSIFT_SOCKET=str(sock))
    env.pop("SPAMSIFT_CONFIG", None)
    proc = subprocess.Popen([SPAMSIFT, "daemon", "--socket", str(sock)], env=env,
                            stderr=subprocess.PIPE)
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    assert sock.exists(), proc.stderr.read() if proc.poll() is not None else "no socket"
    yield home, sock, env, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=60)
    shutil.rmtree(home, ignore_errors=True)


def run(env, args, data=b"", **kw):
    return subprocess.run([SPAMSIFT, "filter", *args], input=data, env=env,
                          capture_output=True, timeout=60, **kw)


def stats(home) -> list[tuple]:
    db = sqlite3.connect(home / "spamsift.db")
    try:
        return db.execute("SELECT username, spam_learned, innocent_learned FROM dspam_stats "
                          "JOIN dspam_virtual_uids USING (uid) ORDER BY username").fetchall()
    finally:
        db.close()


def wait_for(predicate, seconds=10.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_daemon_filters_like_the_process_and_learns_in_order(world):
    home, _sock, env, proc = world
    for i in range(6):
        assert run(env, ["--user", "alice", "--class=spam", "--source=corpus"],
                   SPAM + f"{i}\n".encode()).returncode == 0
        assert run(env, ["--user", "alice", "--class=innocent", "--source=corpus"],
                   HAM + f"{i}\n".encode()).returncode == 0
    out = run(env, ["--user", "alice", "--stdout", "--deliver=innocent,spam"], SPAM)
    assert out.returncode == 0
    head, body = out.stdout.split(b"\n\n", 1)
    assert body == SPAM.split(b"\n\n", 1)[1]
    assert b"X-DSPAM-Result: Spam" in head and b"X-DSPAM-Signature: " in head
    # The writer commits off the reply path, but it does commit.
    assert wait_for(lambda: stats(home) == [("alice", 7, 6)])
    # The signature it issued is retrainable through the daemon, once.
    sig = [line.split(b": ")[1] for line in head.split(b"\n")
           if line.startswith(b"X-DSPAM-Signature")][0].decode()
    fp = run(env, ["--user", "alice", "--falsepositive", f"--signature={sig}"])
    assert fp.returncode == 0, fp.stderr
    assert stats(home) == [("alice", 6, 7)]
    bad = run(env, ["--user", "alice", "--addspam", "--signature=" + "0" * 30])
    assert bad.returncode == 65 and b"unknown" in bad.stderr
    assert proc.poll() is None  # errors are answers, not crashes


def test_queued_learning_is_written_before_the_daemon_stops(world):
    home, _sock, env, proc = world
    for i in range(25):
        out = run(env, ["--user", "bob", "--stdout"], HAM + f"{i}\n".encode())
        assert out.returncode == 0 and b"X-DSPAM-Result" in out.stdout
    proc.terminate()
    proc.wait(timeout=60)
    assert stats(home) == [("bob", 0, 25)]


def test_client_without_daemon_or_with_other_configuration_filters_itself(world):
    home, sock, env, proc = world
    other = Path(tempfile.mkdtemp(prefix="spamsift-other-"))
    try:
        # Another home than the daemon's: the daemon declines, the client does the work.
        out = run(dict(env, SPAMSIFT_HOME=str(other)), ["--user", "carol", "--stdout"], HAM)
        assert out.returncode == 0 and b"X-DSPAM-Result" in out.stdout
        assert (other / "spamsift.db").exists()
    finally:
        shutil.rmtree(other, ignore_errors=True)
    proc.terminate()
    proc.wait(timeout=60)
    sock.touch()  # a stale socket file: nobody listens
    out = run(env, ["--user", "carol", "--stdout"], HAM)
    assert out.returncode == 0 and b"X-DSPAM-Result" in out.stdout


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another OS user")
def test_trust_comes_from_the_peer_not_the_request(world):
    home, _sock, env, _proc = world
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    shadow = home / "src"
    shutil.copytree(SRC, shadow, ignore=shutil.ignore_patterns(".venv", ".git", "tests",
                                                               "demo-home"))
    nobody_env = dict(env, PYTHONPATH=str(shadow), HOME=str(home))
    cmd = [python, "-c", "import sys; sys.argv[0] = 'spamsift'; from spamsift.main import "
           "main; sys.exit(main())", "filter"]

    def as_nobody(args, data):
        return subprocess.run(cmd + args, input=data, env=nobody_env, capture_output=True,
                              user="nobody", cwd=str(shadow), timeout=60)

    other = as_nobody(["--user", "alice", "--class=spam", "--source=corpus"], SPAM)
    assert other.returncode == 77 and b"not a trusted user" in other.stderr
    own = as_nobody(["--user", "nobody", "--class=spam", "--source=corpus"], SPAM)
    assert own.returncode == 0, own.stderr
    assert stats(home) == [("nobody", 1, 0)]  # written by the daemon (root) for nobody


def test_client_reads_the_message_exactly_when_the_filter_would():
    # The client decides without importing spamsift.filter.cli; the two must agree, or the daemon
    # gets an empty message for a delivery and the mail is lost.
    from spamsift.filter import cli, client

    lines = [["--user", "a", "--stdout"],
             ["--user", "a", "--stdout", "--signature=abc"],
             ["--user", "a", "--stdout", "--signature", "abc"],
             ["--user", "a", "--addspam", "--signature=abc"],
             ["--user", "a", "--falsepositive", "--signature", "abc"],
             ["--user", "a", "--class=spam", "--source=error", "--signature=abc"],
             ["--user", "a", "--class", "innocent", "--source", "error", "--signature=abc"],
             ["--user", "a", "--mode=unlearn", "--signature=abc"],
             ["--user", "a", "--mode", "UNLEARN", "--signature=abc"],
             ["--user", "a", "--mode=toe", "--stdout", "--signature=abc"],
             ["--user", "a", "--addspam"],
             ["--client", "--user", "a", "--stdout", "--deliver=innocent,spam"]]
    for argv in lines:
        opts = cli.parse(argv)
        inbound = opts.klass is None and opts.mode != "unlearn"
        assert client.wants_stdin(argv) == (not (opts.signature and not inbound)), argv


def test_delivery_naming_a_signature_through_the_daemon_returns_the_message(world):
    _home, _sock, env, _proc = world
    for args in (["--user", "alice", "--stdout", "--signature=abc"],
                 ["--client", "--user", "alice", "--stdout", "--deliver=innocent,spam"]):
        out = run(env, args, HAM)
        assert out.returncode == 0, out.stderr
        head, body = out.stdout.split(b"\n\n", 1)
        assert body == HAM.split(b"\n\n", 1)[1] and b"X-DSPAM-Result: " in head


def test_reader_leaving_mid_message_through_the_daemon_is_a_tempfail(world):
    # The client writes the daemon's reply itself: a pipe that takes only part of it must
    # not end as a delivery (exit 0), as it did when the short write went unnoticed.
    from tests.test_filter_cli import leave_mid_message

    _home, _sock, env, _proc = world
    code, err = leave_mid_message([SPAMSIFT, "filter", "--user", "alice", "--stdout"], env)
    assert code == 75, err
    assert "cannot write the message" in err, err


def test_daemon_never_removes_a_file_that_is_not_a_socket(tmp_path):
    # The stale-socket check took any path it could not connect to for a dead daemon's
    # socket and removed it: a mistyped --socket (or $SPAMSIFT_SOCKET) deleted a file.
    env = dict(os.environ, SPAMSIFT_HOME=str(tmp_path))
    env.pop("SPAMSIFT_CONFIG", None)
    precious = tmp_path / "precious.txt"
    precious.write_text("important\n")
    (tmp_path / "adir").mkdir()
    for target in (precious, tmp_path / "adir"):
        done = subprocess.run([SPAMSIFT, "daemon", "--socket", str(target)], env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 78, done.stderr
        assert done.stderr.count("\n") == 1 and "is not a socket" in done.stderr
    assert precious.read_text() == "important\n" and (tmp_path / "adir").is_dir()


def _writer_pid(daemon_pid: int) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == daemon_pid and b"spawn_main" in cmdline:
            return int(entry)
    return None


def test_a_dead_writer_is_replaced_and_learning_goes_on(world):
    # The writer process killed (the OOM killer, say): nothing was learned any more, every
    # signature issued was unknown to a later report, and once its queue was full each
    # delivery waited. The daemon now starts a new writer at the next message.
    import signal

    home, _sock, env, proc = world
    out = run(env, ["--user", "carol", "--stdout"], HAM)
    assert out.returncode == 0 and wait_for(lambda: stats(home) == [("carol", 0, 1)])
    first = _writer_pid(proc.pid)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{first}") or
             open(f"/proc/{first}/stat").read().split(")")[1].split()[0] == "Z")
    out = run(env, ["--user", "carol", "--stdout"], SPAM)
    assert out.returncode == 0 and b"X-DSPAM-Signature: " in out.stdout
    assert wait_for(lambda: stats(home) == [("carol", 0, 2)])
    second = _writer_pid(proc.pid)
    assert second is not None and second != first
    sig = [line.split(b": ")[1] for line in out.stdout.split(b"\n\n")[0].split(b"\n")
           if line.startswith(b"X-DSPAM-Signature")][0].decode()
    assert run(env, ["--user", "carol", "--addspam", f"--signature={sig}"]).returncode == 0
    assert stats(home) == [("carol", 1, 1)]
