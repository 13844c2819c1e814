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
from mail import HAM, SPAM
from scrape import free_port as _free_port
from scrape import scrape as _scrape

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
SRC = Path(__file__).resolve().parent.parent

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
    from spamsift.filter import client, options

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
        opts = options.parse(argv)
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


def _signature_of(stdout: bytes) -> str:
    return [line.split(b": ")[1] for line in stdout.split(b"\n\n", 1)[0].split(b"\n")
            if line.startswith(b"X-DSPAM-Signature")][0].decode()


def test_a_report_right_after_the_reply_finds_its_signature(world):
    """The writer commits in groups after replying; a training request waits until every
    message answered before it is written, so a report of one just answered works."""
    home, _sock, env, _proc = world
    for i in range(5):
        out = run(env, ["--user", "dave", "--stdout"], SPAM + f"{i}\n".encode())
        report = run(env, ["--user", "dave", "--addspam",
                           f"--signature={_signature_of(out.stdout)}"])
        assert report.returncode == 0, report.stderr
    assert wait_for(lambda: stats(home) == [("dave", 5, 0)])


def test_a_writer_crash_loses_only_what_was_not_written_and_says_so(world):
    """Messages answered while the writer is stopped and then killed were not learned: their
    signatures are unknown, and a report of one is a clear error (65), never a wrong retrain.
    The daemon starts a new writer, and what comes after is learned."""
    import signal as signals

    home, _sock, env, proc = world
    written = run(env, ["--user", "erin", "--stdout"], HAM)
    assert wait_for(lambda: stats(home) == [("erin", 0, 1)])
    from procs import children_of

    writers = [p for p in children_of(proc.pid)
               if b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes()
               and b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(writers) == 1
    os.kill(writers[0], signals.SIGSTOP)
    lost = [run(env, ["--user", "erin", "--stdout"], HAM + f"{i}\n".encode())
            for i in range(3)]
    assert all(b"X-DSPAM-Result" in out.stdout for out in lost)  # mail is never held up
    os.kill(writers[0], signals.SIGKILL)
    report = run(env, ["--user", "erin", "--addspam",
                       f"--signature={_signature_of(lost[0].stdout)}"])
    assert report.returncode == 65 and b"unknown" in report.stderr, report.stderr
    ok = run(env, ["--user", "erin", "--addspam",
                   f"--signature={_signature_of(written.stdout)}"])
    assert ok.returncode == 0, ok.stderr
    later = run(env, ["--user", "erin", "--stdout"], HAM + b"later\n")
    fp = run(env, ["--user", "erin", "--addspam", f"--signature={_signature_of(later.stdout)}"])
    assert fp.returncode == 0, fp.stderr
    assert wait_for(lambda: stats(home) == [("erin", 2, 0)])


def test_a_busy_daemon_is_waited_for_and_a_fallback_is_never_silent(tmp_path):
    """A full listen backlog answers EAGAIN at once: the client waits for room instead of
    filtering in-process; when it does filter in-process (a stale socket), it says so."""
    import socket
    import threading

    from spamsift.filter import client

    path = str(tmp_path / "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    queued = []
    for _ in range(8):  # fill the backlog
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
            queued.append(s)
        except BlockingIOError:
            s.close()
            break
    else:
        pytest.fail("the backlog never filled")

    def accept_later():
        time.sleep(0.3)
        for _ in range(len(queued) + 1):
            listener.accept()
    threading.Thread(target=accept_later, daemon=True).start()
    started = time.monotonic()
    got = client._connect(path)
    assert not isinstance(got, str), got
    assert time.monotonic() - started >= 0.25
    got.close()
    for s in queued:
        s.close()
    listener.close()
    # Nobody listens now: a stale socket file. The client filters in-process and says so.
    import io

    err = io.StringIO()
    result = client.run(["--user", "x", "--stdout"], {"SPAMSIFT_SOCKET": path},
                        io.BytesIO(HAM), io.BytesIO(), err)
    assert isinstance(result, client.Fallback) and result.stdin == HAM
    assert "filtering in-process" in err.getvalue() and "cannot be reached" in err.getvalue()


def test_daemon_and_watcher_metrics_are_scraped(tmp_path):
    """daemon --metrics and watch --metrics serve Prometheus text at /metrics; every name
    starts with spamsift_; what the daemon filtered, retrained and timed is counted, the
    unfiltered count comes from every uid's passlog, and a stopped daemon shows (daemon_up)."""
    home = Path(tempfile.mkdtemp(prefix="spamsift-metrics-"))
    try:
        sock = home / "d.sock"
        env = dict(os.environ, SPAMSIFT_HOME=str(home), SPAMSIFT_SOCKET=str(sock))
        env.pop("SPAMSIFT_CONFIG", None)
        port = _free_port()
        proc = subprocess.Popen([SPAMSIFT, "daemon", "--socket", str(sock), "--metrics",
                                 f"127.0.0.1:{port}"], env=env, stderr=subprocess.PIPE)
        try:
            assert wait_for(sock.exists)
            out = run(env, ["--user", "mia", "--stdout"], HAM)
            assert b"X-DSPAM-Result: Innocent" in out.stdout
            fp = run(env, ["--user", "mia", "--addspam",
                           f"--signature={_signature_of(out.stdout)}"])
            assert fp.returncode == 0, fp.stderr
            from spamsift.filter.engine import passlog

            passlog.prepare(str(home))
            passlog.record(str(home), "-", "fallback_busy")
            m = _scrape(port)
            assert all(name.startswith("spamsift_") for name in m), sorted(m)
            assert m['spamsift_messages_total{result="Innocent",unsure="yes"}'] == 1
            assert m['spamsift_retrains_total{source="error"}'] == 1
            assert m["spamsift_request_seconds_count"] == 2
            assert m['spamsift_unfiltered_total{reason="fallback_busy"}'] == 1
            maildir = home / "mail" / "example.org" / "mia" / "Maildir"
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).mkdir(parents=True)
            wport = _free_port()
            watch = subprocess.Popen([SPAMSIFT, "watch", "--interval", "0.2", "--metrics",
                                      f"127.0.0.1:{wport}", str(home / "mail")], env=env,
                                     stderr=subprocess.PIPE)
            try:
                w = _scrape(wport)
                assert w["spamsift_daemon_up"] == 1 and "spamsift_watch_queue_depth" in w
                proc.terminate()
                proc.wait(timeout=60)
                assert _scrape(wport)["spamsift_daemon_up"] == 0  # a stopped daemon shows
            finally:
                watch.terminate()
                watch.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_worker_reopens_its_store_after_a_storage_error(tmp_path):
    """A storage error (here a database overwritten in place) is decided by its type, not by
    words in the error text: the worker drops its open store, and once the database is good
    again the next request is filtered with a fresh one."""
    home = Path(tempfile.mkdtemp(prefix="spamsift-reopen-"))
    try:
        sock = home / "d.sock"
        config = home / "spamsift.toml"
        config.write_text(f'home = "{home}"\nsyslog = false\ndaemon_workers = 1\n')
        env = dict(os.environ, SPAMSIFT_CONFIG=str(config), SPAMSIFT_SOCKET=str(sock))
        env.pop("SPAMSIFT_HOME", None)
        proc = subprocess.Popen([SPAMSIFT, "daemon", "--socket", str(sock)], env=env,
                                stderr=subprocess.PIPE)
        try:
            assert wait_for(sock.exists)
            assert b"X-DSPAM-Result" in run(env, ["--user", "ann", "--stdout"], HAM).stdout
            db = home / "spamsift.db"
            assert wait_for(lambda: stats(home) == [("ann", 0, 1)])
            good = db.read_bytes()
            with open(db, "r+b") as fh:  # the same file, overwritten: no longer a database
                fh.write(b"\xff" * 4096)
            broken = run(env, ["--user", "ann", "--stdout"], HAM + b"2\n")
            assert broken.returncode == 0 and broken.stdout == HAM + b"2\n"  # passed on
            with open(db, "r+b") as fh:
                fh.write(good[:4096])
            again = run(env, ["--user", "ann", "--stdout"], HAM + b"3\n")
            assert b"X-DSPAM-Result" in again.stdout, again.stderr
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)



@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another OS user")
def test_the_socket_appears_only_when_every_uid_can_use_it(shadow_src):
    """The socket is made world-writable by bind itself. It was chmodded after the writer
    process started, and stood there with the umask's mode meanwhile: a delivery as another
    uid in that window got EACCES and filtered in its own process (which, in a deployment,
    cannot write the database)."""
    python, path = shadow_src
    home = Path(tempfile.mkdtemp(prefix="spamsift-sockmode-"))
    os.chmod(home, 0o711)
    try:
        sock = home / "d.sock"
        env = dict(os.environ, SPAMSIFT_HOME=str(home), SPAMSIFT_SOCKET=str(sock))
        env.pop("SPAMSIFT_CONFIG", None)
        proc = subprocess.Popen([SPAMSIFT, "daemon", "--socket", str(sock)], env=env,
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not os.path.lexists(sock) and time.monotonic() < deadline:
                time.sleep(0.001)
            mode = os.lstat(sock).st_mode & 0o777  # the first moment a client can see it
            first = subprocess.run([python, "-m", "spamsift", "filter", "--user", "nobody",
                                    "--stdout"], input=HAM, capture_output=True, timeout=60,
                                   env=dict(env, PYTHONPATH=path), user="nobody", cwd="/")
            assert mode == 0o666
            # Served at once: another uid's first delivery went through the daemon.
            assert b"X-DSPAM-Result" in first.stdout, first.stderr
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_metrics_without_prometheus_client_is_one_line(tmp_path):
    """A broken install (prometheus_client missing) gives a one-line error, not a traceback."""
    fake = tmp_path / "fake" / "prometheus_client"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'prometheus_client'\")\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"), SPAMSIFT_HOME=str(tmp_path))
    env.pop("SPAMSIFT_CONFIG", None)
    for command in (["daemon", "--socket", str(tmp_path / "d.sock"), "--metrics", "127.0.0.1:0"],
                    ["watch", "--once", "--metrics", "127.0.0.1:0", str(tmp_path)]):
        done = subprocess.run([sys.executable, "-m", "spamsift", *command], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 64, done.stderr
        assert len(done.stderr.splitlines()) == 1 and "prometheus_client" in done.stderr
