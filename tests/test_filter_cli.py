"""`spamsift filter`: the DSPAM command line, delivery, failure policy, users and security."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import pytest

from mail import HAM, SPAM
from spamsift.filter.cli import main
from spamsift.filter.engine.errors import UsageError
from spamsift.filter.options import parse

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")


class Run:
    """One in-process run of the filter."""

    def __init__(self, home, argv, data=b"", config=None, extra_env=None):
        env = {"SPAMSIFT_HOME": str(home)}
        if config is not None:
            path = os.path.join(str(home), "spamsift.toml")
            os.makedirs(str(home), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(config)
            env["SPAMSIFT_CONFIG"] = path
        env.update(extra_env or {})
        self.out, self.err = io.BytesIO(), io.StringIO()
        self.code = main(argv, stdin=io.BytesIO(data), stdout=self.out, stderr=self.err,
                         environ=env)
        self.stdout = self.out.getvalue()
        self.stderr = self.err.getvalue()


def filt(home, data, *extra, **kw):
    return Run(home, ["--user", "alice", "--stdout", "--deliver=innocent,spam", *extra], data,
               **kw)


def header(data: bytes, name: str) -> str | None:
    for line in data.split(b"\n\n", 1)[0].split(b"\n"):
        if line.lower().startswith(name.lower().encode() + b":"):
            return line.split(b":", 1)[1].strip().decode()
    return None


def console_env(home) -> dict[str, str]:
    """The environment for running the console script on `home`, without a caller's config."""
    env = dict(os.environ, SPAMSIFT_HOME=str(home))
    env.pop("SPAMSIFT_CONFIG", None)
    return env


def train(home, n=12, **kw):
    for i in range(n):
        for klass, msg in (("spam", SPAM), ("innocent", HAM)):
            r = Run(home, ["--user", "alice", f"--class={klass}", "--source=corpus"],
                    msg.replace(b"\n\n", f"\nX-N: {i}\n\n".encode()), **kw)
            assert r.code == 0, r.stderr


def test_parse_follows_dspam():
    opts = parse(["--user", "a", "b", "--mode=toe", "--deliver=innocent,spam", "--stdout"])
    assert opts.users == ["a", "b"] and opts.mode == "toe" and opts.stdout
    assert opts.deliver == {"innocent", "spam"}
    legacy = parse(["--addspam", "--user", "a"])
    assert (legacy.klass, legacy.source) == ("spam", "error")
    assert parse(["--falsepositive"]).klass == "innocent"
    assert parse(["--addspam", "--corpus"]).source == "corpus"
    assert parse(["--class", "nonspam", "--source", "corpus"]).klass == "innocent"
    for bad in (["--class=spam"], ["--source=error"], ["--mode=fast"], ["--deliver=all"],
                ["--classify", "--class=spam", "--source=error"], ["--bogus"], ["--user"]):
        with pytest.raises(UsageError):
            parse(bad)


def test_usage_errors_are_one_line_exit_64(tmp_path):
    r = Run(tmp_path, ["--mode=fast", "--user", "alice"], HAM)
    assert r.code == 64 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stdout == b""


def test_inbound_message_is_stamped_byte_exact(tmp_path):
    data = b"From: x@y\r\nSubject: s\r\nX-DSPAM-Result: Innocent\r\n\r\nbody \xe9\x00\r\nend"
    r = filt(tmp_path, data)
    assert r.code == 0, r.stderr
    head, body = r.stdout.split(b"\r\n\r\n", 1)
    assert body == b"body \xe9\x00\r\nend"
    lines = head.split(b"\r\n")
    assert lines[:2] == [b"From: x@y", b"Subject: s"]
    # A new user's filter is unsure of it (docs/unsure.md): the marker comes after the score.
    assert [line.split(b":")[0] for line in lines[2:]] == [
        b"X-DSPAM-Result", b"X-DSPAM-Processed", b"X-DSPAM-Confidence",
        b"X-DSPAM-Probability", b"X-DSPAM-Score", b"X-DSPAM-Unsure", b"X-DSPAM-Signature"]
    assert len(header(r.stdout.replace(b"\r", b""), "X-DSPAM-Signature")) == 30


def test_trained_user_gets_spam_and_ham_results(tmp_path):
    train(tmp_path)
    spam = filt(tmp_path, SPAM.replace(b"click", b"now click"))
    ham = filt(tmp_path, HAM.replace(b"noon", b"noon please"))
    assert header(spam.stdout, "X-DSPAM-Result") == "Spam"
    assert header(ham.stdout, "X-DSPAM-Result") in ("Innocent", "Whitelisted")
    assert float(header(spam.stdout, "X-DSPAM-Probability")) > 0.9
    # The score is signed: at least 0 exactly when the result is Spam.
    assert float(header(spam.stdout, "X-DSPAM-Score")) >= 0
    assert float(header(ham.stdout, "X-DSPAM-Score")) < 0


def test_classify_prints_the_summary_and_writes_nothing(tmp_path):
    train(tmp_path)
    r = Run(tmp_path, ["--user", "alice", "--classify"], SPAM)
    assert r.code == 0
    assert r.stdout.startswith(b'X-DSPAM-Result: alice; result="Spam"; class="Spam"; '
                               b"probability=") and r.stdout.endswith(b"signature=N/A\n")
    score = r.stdout.split(b"score=")[1].split(b";")[0]
    assert float(score) >= 0 and len(score.split(b".")[1]) == 6
    assert r.stdout.count(b"\n") == 1
    import sqlite3

    stats = sqlite3.connect(tmp_path / "spamsift.db").execute(
        "SELECT spam_learned, spam_classified FROM dspam_stats").fetchall()
    assert stats == [(12, 0)]
    assert sqlite3.connect(tmp_path / "spamsift.db").execute(
        "SELECT count(*) FROM dspam_signature_data").fetchone() == (0,)
    r2 = Run(tmp_path, ["--user", "alice", "--classify"], SPAM)
    assert r2.stdout == r.stdout  # nothing was learned in between


def test_classify_never_writes_the_message_even_on_errors(tmp_path):
    for argv, code in ((["--user", "../x", "--classify"], 65),
                       (["--user", "alice", "--classify"], 78)):
        r = Run(tmp_path, argv, HAM, config="storage_timeout = -1\n" if code == 78 else None)
        assert r.code == code and r.stdout == b"" and r.stderr.count("\n") == 1, r.stderr


def test_closed_standard_streams_are_errors_not_tracebacks(tmp_path):
    env = console_env(tmp_path)
    # Run through a shell so that the descriptor is really closed, as a broken MTA leaves it.
    no_in = subprocess.run(f"{SPAMSIFT} --user alice --stdout <&-", shell=True, env=env,
                           capture_output=True, text=True)
    assert no_in.returncode == 65 and "Traceback" not in no_in.stderr, no_in.stderr
    with open(tmp_path / "m", "wb") as fh:
        fh.write(HAM)
    no_out = subprocess.run(f"{SPAMSIFT} --user alice --stdout < {tmp_path}/m >&-",
                            shell=True, env=env, capture_output=True, text=True)
    assert no_out.returncode == 75 and no_out.stderr.count("\n") == 1, no_out.stderr
    assert "cannot write the message" in no_out.stderr


def test_deliver_summary_and_quarantine(tmp_path):
    train(tmp_path)
    r = Run(tmp_path, ["--user", "alice", "--stdout", "--deliver=innocent,summary"], SPAM)
    assert r.code == 0
    assert r.stdout.startswith(b"X-DSPAM-Result: alice;") and b"Buy cheap" not in r.stdout
    box = tmp_path / "quarantine" / "alice" / "new"
    files = list(box.iterdir())
    assert len(files) == 1 and files[0].read_bytes().endswith(SPAM.split(b"\n\n", 1)[1])


def test_retrain_from_signature_header_tag_and_flag(tmp_path):
    train(tmp_path)
    stamped = filt(tmp_path, SPAM.replace(b"pills", b"pills today")).stdout
    sig = header(stamped, "X-DSPAM-Signature")
    # 1. the delivered message itself, bounced to the alias
    assert Run(tmp_path, ["--user", "alice", "--falsepositive"], stamped).code == 0
    # 2. the same report again: a no-op, still success
    assert Run(tmp_path, ["--user", "alice", "--falsepositive"], stamped).code == 0
    # 3. a forwarded copy with only the body tag
    fwd = f"Subject: Fwd\n\n> spam I got\n> !DSPAM:{sig}!\n".encode()
    assert Run(tmp_path, ["--user", "alice", "--addspam"], fwd).code == 0
    # 4. by flag, stdin unused
    r = Run(tmp_path, ["--user", "alice", "--class=innocent", "--source=error",
                       f"--signature={sig}", "--deliver=summary"])
    assert r.code == 0 and b'class="Innocent"' in r.stdout
    # 5. forwarded as an attachment: message/rfc822 in base64 and in quoted-printable
    import base64
    import quopri

    def qp(data):
        return quopri.encodestring(data, quotetabs=True)  # ": " -> ":=20"

    for cte, encode in (("base64", base64.encodebytes), ("quoted-printable", qp)):
        attached = (b"Subject: Fwd: spam\nMIME-Version: 1.0\n"
                    b'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\n'
                    b"Content-Type: text/plain\n\nsee attached\n--b1\n"
                    b"Content-Type: message/rfc822\nContent-Transfer-Encoding: "
                    + cte.encode() + b"\n\n" + encode(stamped) + b"\n--b1--\n")
        assert f"X-DSPAM-Signature: {sig}".encode() not in attached
        klass = "spam" if cte == "base64" else "innocent"
        r = Run(tmp_path, ["--user", "alice", f"--class={klass}", "--source=error",
                           "--deliver=summary"], attached)
        assert r.code == 0 and f'class="{klass.title()}"'.encode() in r.stdout, r.stderr


def test_unknown_missing_and_foreign_signatures_are_exit_65(tmp_path):
    train(tmp_path, 2)
    stamped = filt(tmp_path, SPAM).stdout
    Run(tmp_path, ["--user", "bob", "--class=innocent", "--source=corpus"], HAM)
    r = Run(tmp_path, ["--user", "bob", "--falsepositive"], stamped)
    assert r.code == 65 and "does not belong" in r.stderr
    r = Run(tmp_path, ["--user", "alice", "--addspam", "--signature=" + "0" * 30])
    assert r.code == 65 and "unknown" in r.stderr
    r = Run(tmp_path, ["--user", "alice", "--addspam"], b"Subject: no sig\n\nnothing\n")
    assert r.code == 65 and "no signature" in r.stderr
    assert all("Traceback" not in x.stderr for x in (r,))


def test_opt_in_by_preference_dotfile_and_default(tmp_path):
    cfg = 'opt = "in"\n'
    home = tmp_path / "home"
    home.mkdir()
    r = filt(tmp_path, HAM, "--home", str(home), config=cfg)
    assert r.code == 0 and r.stdout == HAM  # not opted in: untouched, no headers
    (home / ".spamsift").write_text("")
    r = filt(tmp_path, HAM, "--home", str(home), config=cfg)
    assert header(r.stdout, "X-DSPAM-Result") is not None
    (home / ".nospamsift").write_text("")
    assert filt(tmp_path, HAM, "--home", str(home), config=cfg).stdout == HAM
    # Opt-out default: everyone filtered, a dotfile opts out; maildrop's $HOME is used.
    env = {"HOME": str(home), "LOGNAME": "alice"}
    assert filt(tmp_path, HAM, extra_env=env).stdout == HAM
    assert b"X-DSPAM-Result" in filt(tmp_path, HAM).stdout  # other home, filtered


def test_virtual_user_home_template(tmp_path):
    vhome = tmp_path / "virtual" / "example.org" / "alice"
    vhome.mkdir(parents=True)
    (vhome / ".spamsift").write_text("")
    cfg = f'opt = "in"\nhome_template = "{tmp_path}/virtual/%d/%u"\n'
    r = Run(tmp_path, ["--user", "alice@Example.ORG", "--stdout"], HAM, config=cfg)
    assert b"X-DSPAM-Result" in r.stdout
    r = Run(tmp_path, ["--user", "carol@example.org", "--stdout"], HAM, config=cfg)
    assert r.stdout == HAM


def test_oversized_messages_pass_through(tmp_path):
    big = HAM + b"x" * 2000
    r = filt(tmp_path, big, config="max_message_size = 1000\n")
    assert r.code == 0 and r.stdout == big


def test_subject_tag_preference(tmp_path):
    train(tmp_path)
    r = filt(tmp_path, SPAM, config="subject_tag = true\n")
    assert b"Subject: [SPAM] cheap pills\n" in r.stdout


def test_storage_failure_passes_the_message_through_or_tempfails(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    home = blocker / "home"  # cannot be created
    r = Run(tmp_path, ["--user", "alice", "--stdout"], SPAM,
            extra_env={"SPAMSIFT_HOME": str(home)})
    assert r.code == 0 and r.stdout == SPAM
    assert r.stderr.count("\n") == 1 and "passed through" in r.stderr
    r = Run(tmp_path, ["--user", "alice", "--stdout"], SPAM, config='on_error = "tempfail"\n',
            extra_env={"SPAMSIFT_STORAGE": f"sqlite:///{home}/x.db"})
    assert r.code == 75 and r.stdout == b""


def test_corrupt_database_is_reported_not_replaced(tmp_path):
    db = tmp_path / "spamsift.db"
    db.write_bytes(b"garbage" * 1000)
    r = filt(tmp_path, HAM)
    assert r.code == 0 and r.stdout == HAM and "Corrupt" in r.stderr
    assert db.read_bytes() == b"garbage" * 1000


def test_bad_configuration_never_loses_inbound_mail(tmp_path):
    r = filt(tmp_path, HAM, config="this is = not toml [\n")
    assert r.code == 0 and r.stdout == HAM and "not valid TOML" in r.stderr
    r = Run(tmp_path, ["--user", "alice", "--addspam"], HAM, config="nosuchkey = 1\n")
    assert r.code == 78 and "unknown key" in r.stderr


def test_settings_that_would_break_or_misplace_mail_are_refused(tmp_path):
    # Each is a one-line configuration error (inbound mail passes through untouched), never
    # a traceback, a spam tag that ends the header block, or a database in the wrong place.
    bad = {'spam_subject = "[S]\\n\\nX"\n': "control characters",
           'spam_subject = "[S]\\nBcc: x@y"\n': "control characters",
           "storage_timeout = inf\n": "finite",
           "storage_timeout = nan\n": "finite",
           "storage_timeout = 1e400\n": "finite",
           'home = ""\n': "absolute path",
           'home = "relative/dir"\n': "absolute path",
           'storage = "sqlite://"\n': "no database file",
           'storage = "sqlite:///"\n': "no database file"}
    for cfg, why in bad.items():
        r = filt(tmp_path / "site", HAM, config=cfg)
        assert r.code == 0 and r.stdout == HAM, cfg
        assert r.stderr.count("\n") == 1 and why in r.stderr, (cfg, r.stderr)
        r = Run(tmp_path / "site", ["--user", "alice", "--addspam"], HAM, config=cfg)
        assert r.code == 78 and why in r.stderr, (cfg, r.stderr)
    for folder in (tmp_path / "site", os.getcwd()):  # no database anywhere
        assert not [n for n in os.listdir(folder) if "spamsift.db" in n], folder
    r = filt(tmp_path, HAM, extra_env={"SPAMSIFT_STORAGE": "sqlite://"})
    assert r.stdout == HAM and "no database file" in r.stderr
    with pytest.raises(Exception, match="no database file"):
        from spamsift.filter.engine.store.base import open_store

        open_store("sqlite://", 1.0)


def test_spam_subject_preference_with_a_line_break_is_refused(tmp_path):
    train(tmp_path)
    env = console_env(tmp_path)
    set_tag = subprocess.run([SPAMSIFT, "prefs", "alice", "spam_subject", "[S]\n\nX"],
                             env=env, capture_output=True, text=True)
    assert set_tag.returncode == 78 and set_tag.stderr.count("\n") == 1, set_tag.stderr
    assert "control characters" in set_tag.stderr
    subprocess.run([SPAMSIFT, "prefs", "alice", "subject_tag", "true"], env=env, check=True)
    r = filt(tmp_path, SPAM)
    assert b"Subject: [SPAM] cheap pills\n" in r.stdout
    assert header(r.stdout, "X-DSPAM-Result") == "Spam"


def test_opt_preference_is_stored_in_its_canonical_case(tmp_path):
    env = console_env(tmp_path)
    assert filt(tmp_path, HAM).stdout != HAM  # opt-out site: filtered
    done = subprocess.run([SPAMSIFT, "prefs", "alice", "opt", "OUT"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = subprocess.run([SPAMSIFT, "prefs", "alice", "opt"], env=env,
                           capture_output=True, text=True)
    assert shown.stdout == "out\n"
    assert filt(tmp_path, HAM).stdout == HAM  # opted out: untouched
    # A row written in another case (by hand, by DSPAM's tools) counts as well.
    from spamsift.filter.engine import users

    assert users.opted_in("In", "out", None, ".x", ".y") is True
    assert users.opted_in(" OUT ", "out", None, ".x", ".y") is False


def test_invalid_user_names_never_reach_storage(tmp_path):
    assert Run(tmp_path, ["--user", "", "--stdout"], HAM).code == 64  # DSPAM: needs a name
    for name in ("../../etc/passwd", "a/b", "x'; DROP TABLE dspam_stats; --", ".hidden",
                 "a\nb", "x" * 200):
        r = Run(tmp_path, ["--user", name, "--stdout"], HAM)
        assert r.code == 0 and r.stdout == HAM
        r = Run(tmp_path, ["--user", name, "--addspam", "--signature=" + "1" * 30])
        assert r.code in (64, 65)
    import sqlite3

    if (tmp_path / "spamsift.db").exists():
        names = sqlite3.connect(tmp_path / "spamsift.db").execute(
            "SELECT username FROM dspam_virtual_uids").fetchall()
        assert names == []


def _nobody_env(home):
    os.chmod(home, 0o777)
    return dict(os.environ, SPAMSIFT_HOME=str(home), HOME=str(home))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a command as another OS user")
def test_untrusted_os_user_may_only_act_for_itself():
    import tempfile

    # pytest's tmp_path sits in a root-only folder: "nobody" needs one it can reach.
    tmp_path = __import__("pathlib").Path(tempfile.mkdtemp(prefix="spamsift-nobody-"))
    try:
        _untrusted(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _untrusted(tmp_path):
    # The venv lives under /root (mode 0700 here), so run the source tree with the system
    # Python as "nobody"; the code under test is the same files.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shadow = tmp_path / "src"
    shutil.copytree(src, shadow, ignore=shutil.ignore_patterns(".venv", ".git", "tests",
                                                               "demo-home"))
    os.chmod(shadow, 0o755)
    env = _nobody_env(tmp_path)
    env["PYTHONPATH"] = str(shadow)
    cmd = [python, "-m", "spamsift", "filter"]
    own = subprocess.run(cmd + ["--user", "nobody", "--stdout"], input=HAM, env=env,
                         capture_output=True, user="nobody", cwd=str(shadow))
    assert own.returncode == 0 and b"X-DSPAM-Result" in own.stdout, own.stderr
    other = subprocess.run(cmd + ["--user", "alice", "--class=spam", "--source=corpus"],
                           input=SPAM, env=env, capture_output=True, user="nobody",
                           cwd=str(shadow))
    assert other.returncode == 77 and b"not a trusted user" in other.stderr
    inbound = subprocess.run(cmd + ["--user", "alice", "--stdout"], input=HAM, env=env,
                             capture_output=True, user="nobody", cwd=str(shadow))
    assert inbound.returncode == 0 and inbound.stdout == HAM  # passed through, untouched
    # Trust is the administrator's to grant: a file of the caller's own that adds the caller
    # to trusted_users is refused (exit 78), by --config and by $SPAMSIFT_CONFIG alike.
    grant = tmp_path / "mine.toml"
    subprocess.run(["sh", "-c", f"echo 'trusted_users = [\"nobody\"]' > {grant}"],
                   user="nobody", check=True)
    for how in (["--config", str(grant)], []):
        run_env = dict(env, SPAMSIFT_CONFIG=str(grant)) if not how else env
        forged = subprocess.run(cmd + how + ["--user", "alice", "--class=spam",
                                             "--source=corpus"], input=SPAM, env=run_env,
                                capture_output=True, user="nobody", cwd=str(shadow))
        assert forged.returncode == 78 and b"trusted_users adds nobody" in forged.stderr, \
            forged.stderr
    # The same file, root's own, is the administrator's grant.
    os.chown(grant, 0, 0)
    granted = subprocess.run(cmd + ["--config", str(grant), "--user", "alice", "--class=spam",
                                    "--source=corpus"], input=SPAM, env=env,
                             capture_output=True, user="nobody", cwd=str(shadow))
    assert granted.returncode == 0, granted.stderr
    # The one-user commands refuse too (users.acting_for), before reading any source.
    for command in (["train", "--user", "alice", "--ham", str(tmp_path)],
                    ["evaluate", "--user", "alice", "--ham", str(tmp_path)],
                    ["reclassify", "--user", "alice", str(tmp_path)],
                    ["train", "--user", "../alice", "--ham", str(tmp_path)]):
        done = subprocess.run([python, "-m", "spamsift", *command], env=env,
                              capture_output=True, user="nobody", cwd=str(shadow))
        bad_name = command[2].startswith("..")
        assert done.returncode == (65 if bad_name else 77), (command, done.stderr)
        assert done.stderr.count(b"\n") == 1, done.stderr
        assert (b"invalid user name" if bad_name else b"not a trusted user") in done.stderr


@pytest.mark.skipif(not os.path.exists(SPAMSIFT), reason="spamsift console script not installed")
def test_console_script_dspam_compatibility(tmp_path):
    env = dict(os.environ, SPAMSIFT_HOME=str(tmp_path))
    plain = subprocess.run([SPAMSIFT, "--user", "alice", "--stdout"], input=HAM, env=env,
                           capture_output=True)
    assert plain.returncode == 0 and b"X-DSPAM-Result" in plain.stdout
    link = tmp_path / "dspam"
    link.symlink_to(SPAMSIFT)
    as_dspam = subprocess.run([str(link), "--user", "alice", "--stdout",
                               "--deliver=innocent,spam"], input=HAM, env=env,
                              capture_output=True)
    assert as_dspam.returncode == 0 and b"X-DSPAM-Signature" in as_dspam.stdout
    cfg = subprocess.run([SPAMSIFT, "config"], env=env, capture_output=True, text=True)
    assert cfg.returncode == 0 and f'home = "{tmp_path}"' in cfg.stdout
    assert "training_mode = " in cfg.stdout


class _ShortWriter:
    """A stream like a BufferedWriter whose reader left mid-message: the first write takes
    part of the data and returns that count, the next raises BrokenPipeError."""

    def __init__(self, take: int) -> None:
        self.take = take
        self.data = b""
        self.writes = 0

    def write(self, data) -> int:
        self.writes += 1
        if self.writes > 1:
            raise BrokenPipeError(32, "Broken pipe")
        self.data += bytes(data[:self.take])
        return min(self.take, len(data))

    def flush(self) -> None:
        pass


def test_a_message_cut_short_on_stdout_is_a_tempfail_not_a_delivery(tmp_path):
    out, err = _ShortWriter(100), io.StringIO()
    code = main(["--user", "alice", "--stdout"], stdin=io.BytesIO(HAM * 10), stdout=out,
                stderr=err, environ={"SPAMSIFT_HOME": str(tmp_path)})
    assert code == 75 and out.data and out.writes == 2
    assert err.getvalue().count("\n") == 1 and "cannot write the message" in err.getvalue()


def leave_mid_message(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the filter on a 3 MB message with a reader that goes away after 10 bytes: (exit
    status, stderr)."""
    big = b"From: a@example.com\nSubject: big\n\n" + b"word " * 600_000 + b"\n"
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(big)
    proc.stdin.close()
    assert proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), err


def test_reader_leaving_mid_message_through_the_real_pipe(tmp_path):
    # CPython's buffered stdout returns the 64 KB the pipe took instead of raising, so
    # without write_all the filter exited 0 with the message cut short. `python -m spamsift`
    # takes the normal exit path.
    code, err = leave_mid_message([sys.executable, "-m", "spamsift", "filter", "--user",
                                   "alice", "--stdout"], console_env(tmp_path))
    assert code == 75, err
    assert err.count("\n") == 1 and "cannot write the message" in err, err


def test_write_all_writes_everything_across_short_writes():
    from spamsift.filter.stdio import write_all

    class Trickle(io.BytesIO):
        def write(self, data):
            return super().write(bytes(data[:7]))

    stream = Trickle()
    write_all(stream, HAM * 5)
    assert stream.getvalue() == HAM * 5


def test_a_spoofed_signature_behind_a_bare_cr_does_not_survive(tmp_path):
    # A bare CR kept a whole incoming X-DSPAM line once (so that a CR-only message kept its
    # bytes); the spoofed signature then came first and was the one a retraining used.
    from spamsift.filter.engine.message import Message, find_signature

    spoof = (b"From: a@example.com\nX-DSPAM-Signature: 1,aaaaaaaaaaaaaaaaaaaaaaa\r\r\n"
             b"X-DSPAM-Result: Innocent\r\tfolded\rSubject: kept\n\nbody\n")
    r = filt(tmp_path, spoof)
    assert r.code == 0
    ours = [v for k, v in (line.split(b": ", 1) for line in r.stdout.split(b"\n\n")[0]
                           .split(b"\n") if b": " in line) if k == b"X-DSPAM-Signature"]
    assert len(ours) == 1 and ours[0] != b"1,aaaaaaaaaaaaaaaaaaaaaaa"
    assert Message(r.stdout).get_header("X-DSPAM-Signature") == ours[0]
    assert find_signature(r.stdout, "X-DSPAM-Signature") == ours[0].decode()
    assert b"1,aaaa" not in r.stdout and b"Innocent\r" not in r.stdout
    assert b"Subject: kept\n" in r.stdout and r.stdout.endswith(b"\n\nbody\n")


def test_a_delivery_agent_that_cannot_run_is_a_tempfail_not_a_pass_through(tmp_path):
    # Run as the MTA's delivery program (--deliver without --stdout), nobody reads stdout: a
    # pass-through to it after the agent failed lost the message with exit 0.
    out = tmp_path / "delivered"
    good = f'delivery_agent = "sh -c \'cat > {out}\'"\n'
    r = Run(tmp_path / "h1", ["--user", "alice", "--deliver=innocent,spam"], HAM, config=good)
    assert r.code == 0 and r.stdout == b""
    assert out.read_bytes().endswith(HAM.split(b"\n\n", 1)[1])
    assert b"X-DSPAM-Result: " in out.read_bytes()
    for agent in ('"/nonexistent/agent -d %u"', "\"sh -c 'unbalanced\""):
        r = Run(tmp_path / "h2", ["--user", "alice", "--deliver=innocent,spam"], HAM,
                config=f"delivery_agent = {agent}\n")
        assert r.code == 75 and r.stdout == b"", (agent, r.stderr)
        assert r.stderr.count("\n") == 1 and "delivery_agent" in r.stderr
    # With --stdout the agent is not used: the message comes back on stdout as ever.
    r = Run(tmp_path / "h3", ["--user", "alice", "--stdout", "--deliver=innocent,spam"], HAM,
            config='delivery_agent = "/nonexistent/agent"\n')
    assert r.code == 0 and r.stdout.endswith(HAM.split(b"\n\n", 1)[1])


def test_a_pass_through_goes_to_the_delivery_agent_when_there_is_one(tmp_path):
    # Storage broken (here: the database path is a directory): the failure policy passes the
    # original on. With a delivery agent, that is to the agent, unchanged, for each user.
    (tmp_path / "adir").mkdir()
    out = tmp_path / "delivered"
    config = (f'storage = "sqlite:///{tmp_path}/adir"\n'
              f'delivery_agent = "sh -c \'cat >> {out}.%u\'"\n')
    r = Run(tmp_path / "h", ["--user", "alice", "bob", "--deliver=innocent,spam"], HAM,
            config=config)
    assert r.code == 0 and r.stdout == b"", r.stderr
    assert "passed through unchanged" in r.stderr
    assert (tmp_path / "delivered.alice").read_bytes() == HAM
    assert (tmp_path / "delivered.bob").read_bytes() == HAM
