"""End to end: the real maildrop runs examples/maildroprc, which runs the real spamsift.

What is exercised, all through the installed ``spamsift`` command:

* a trained, opted-in user: spam lands in ``Maildir/.Spam/new`` (the folder is created and
  subscribed on the fly), ham in ``Maildir/new``; each delivered file is the input plus only
  the added ``X-DSPAM-*`` header lines, appended at the end of the header block;
* a user who is not opted in (config ``opt = "in"``): spamsift hands the message back untouched,
  the rc file falls back to spamc -- absent here, so the message lands in the INBOX byte for
  byte; with a stand-in spamc it is asked (and only then);
* forged ``X-DSPAM-*`` headers from outside and ``X-DSPAM-Result`` headers inside an attached
  message do not steer the delivery;
* the Courier aliases (``examples/courier/.courier-spam`` ...) retrain: their command line is
  run through /bin/sh with the environment Courier's courierdeliver sets for a ``|program``;
  a bogus or foreign signature gives exit 65;
* a failing filter makes maildrop tempfail (exit 75) and deliver nothing.

How maildrop is driven: *manual mode*, ``maildrop RCFILE < message``.  Delivery mode (``-d``)
is no use in a test: it reads the system's /etc/maildroprc and needs a passwd/authlib account
(and root, for anyone but the caller).  Manual mode resets HOME, DEFAULT, LOGNAME, SHELL and PATH (the rest of the environment
is imported), so the test writes a copy of examples/maildroprc that starts with assignments for
them and has the SPAMSIFT= / SPAMC= lines substituted.  maildrop refuses (exit 75) an rc file
not owned by the running user or world-writable (upstream: any group/world bit), hence 0600.
``maildrop -V 9`` prints a trace (manual mode only); `Mailbox.deliver_ok` reruns a failed
delivery with it and shows the trace.

Skips with a reason when maildrop or spamsift is missing, unless SPAMSIFT_REQUIRE_SERVERS=1,
which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.maildrop

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MAILDROPRC = EXAMPLES / "maildroprc"
COURIER = EXAMPLES / "courier"
TIMEOUT = 120

SIG_RE = re.compile(rb"^[0-9a-f]{30}$")


# --------------------------------------------------------------------------------------------
# Environment discovery


def _unavailable(reason: str) -> None:
    if os.environ.get("SPAMSIFT_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (SPAMSIFT_REQUIRE_SERVERS=1, so this is a failure)")
    pytest.skip(reason)


def _spamsift_binary() -> str | None:
    candidate = os.path.join(os.path.dirname(sys.executable), "spamsift")
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    return shutil.which("spamsift")


def _tool(name: str) -> str | None:
    for folder in ("/usr/bin", "/usr/local/bin", "/bin"):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which(name)


# --------------------------------------------------------------------------------------------
# Synthetic mail (never real corpus mail)

SPAM_WORDS = ("viagra cialis pharmacy discount pills cheap order now click here limited offer "
              "guaranteed winner casino bonus free money refinance mortgage lowest price "
              "unsubscribe replica watches").split()
HAM_WORDS = ("meeting agenda quarterly report review schedule team lunch budget draft minutes "
             "project milestone deadline colleague conference room thursday slides feedback "
             "release notes").split()


def _words(pool: tuple[str, ...] | list[str], n: int, seed: int) -> str:
    out = []
    for k in range(n):
        out.append(pool[(seed * 7 + k * 3) % len(pool)])
    return " ".join(out)


def spam_message(i: int, extra_headers: str = "", sender: str = "") -> bytes:
    body = "\n".join(_words(SPAM_WORDS, 12, i + line) for line in range(6))
    sender = sender or f"promo{i}@deals{i}.example.net"
    return (
        f"Return-Path: <{sender}>\n"
        f"Received: from mx{i}.deals{i}.example.net "
        f"(mx{i}.deals{i}.example.net [192.0.2.{i % 200 + 1}])\n"
        f"\tby mail.example.com with ESMTP; Mon, 3 Mar 2025 10:{i % 60:02d}:00 +0000\n"
        f"From: \"Best Deals\" <{sender}>\n"
        f"To: victim@example.com\n"
        f"Subject: Cheap pills discount offer {i}\n"
        f"Date: Mon, 3 Mar 2025 10:{i % 60:02d}:00 +0000\n"
        f"Message-ID: <spam{i}.{i * 31}@deals{i}.example.net>\n"
        f"{extra_headers}"
        f"MIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset=us-ascii\n"
        f"\n"
        f"{body}\n"
        f"Order now: http://deals{i}.example.net/buy\n"
    ).encode()


def ham_message(i: int, extra_headers: str = "", sender: str = "") -> bytes:
    body = "\n".join(_words(HAM_WORDS, 12, i + line) for line in range(6))
    sender = sender or f"colleague{i % 3}@corp.example.org"
    return (
        f"Return-Path: <{sender}>\n"
        f"Received: from smtp.corp.example.org (smtp.corp.example.org [198.51.100.{i % 200 + 1}])\n"
        f"\tby mail.example.com with ESMTPS; Tue, 4 Mar 2025 09:{i % 60:02d}:00 +0000\n"
        f"From: Colleague <{sender}>\n"
        f"To: worker@example.com\n"
        f"Subject: Notes from the project meeting {i}\n"
        f"Date: Tue, 4 Mar 2025 09:{i % 60:02d}:00 +0000\n"
        f"Message-ID: <ham{i}.{i * 17}@corp.example.org>\n"
        f"{extra_headers}"
        f"MIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset=utf-8\n"
        f"Content-Transfer-Encoding: 8bit\n"
        f"\n"
        f"Hi,\n\n{body}\n\nThanks,\n  colleague\n"
    ).encode()


def message_with_attached(inner: bytes, subject: str = "Fwd: have a look") -> bytes:
    """A MIME message carrying `inner` as message/rfc822 (what "forward as attachment" makes)."""
    return (
        b"From: Worker <worker@example.com>\n"
        b"To: someone@example.com\n"
        b"Subject: " + subject.encode() + b"\n"
        b"Date: Wed, 5 Mar 2025 12:00:00 +0000\n"
        b"Message-ID: <fwd-attached@example.com>\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=\"=-=outer=-=\"\n"
        b"\n"
        b"--=-=outer=-=\n"
        b"Content-Type: text/plain; charset=us-ascii\n"
        b"\n"
        b"See the attached message.\n"
        b"\n"
        b"--=-=outer=-=\n"
        b"Content-Type: message/rfc822\n"
        b"Content-Disposition: attachment\n"
        b"\n" + inner + b"\n"
        b"--=-=outer=-=--\n"
    )


# --------------------------------------------------------------------------------------------
# Message comparison


def split_fields(data: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its continuation lines and line ends) and the rest."""
    end = data.find(b"\n\n")
    assert end >= 0, f"no header/body separator in {data[:200]!r}"
    head, rest = data[: end + 1], data[end + 1:]
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields, rest


def field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def is_dspam(field: bytes) -> bool:
    return field_name(field).startswith(b"x-dspam-")


def dspam_headers(data: bytes) -> dict[bytes, list[bytes]]:
    fields, _rest = split_fields(data)
    out: dict[bytes, list[bytes]] = {}
    for f in fields:
        if is_dspam(f):
            value = f.split(b":", 1)[1].strip()
            out.setdefault(field_name(f), []).append(value)
    return out


def assert_only_dspam_added(delivered: bytes, original: bytes) -> dict[bytes, list[bytes]]:
    """`delivered` == `original` except for X-DSPAM-* fields, which must sit at the end of
    the header block.  Returns the X-DSPAM fields found (name -> values)."""
    d_fields, d_rest = split_fields(delivered)
    o_fields, o_rest = split_fields(original)
    assert d_rest == o_rest, "the body (and header/body separator) was changed"
    d_plain = [f for f in d_fields if not is_dspam(f)]
    o_plain = [f for f in o_fields if not is_dspam(f)]
    assert d_plain == o_plain, (
        "header fields other than X-DSPAM-* differ:\n"
        f"delivered: {b''.join(d_plain)!r}\noriginal:  {b''.join(o_plain)!r}")
    added = [i for i, f in enumerate(d_fields) if is_dspam(f)]
    if added:
        assert added == list(range(len(d_fields) - len(added), len(d_fields))), (
            "X-DSPAM-* headers are not at the end of the header block: "
            f"{b''.join(d_fields)!r}")
    return dspam_headers(delivered)


def assert_classified(headers: dict[bytes, list[bytes]], expected: tuple[bytes, ...]) -> bytes:
    """Exactly one of each X-DSPAM header spamsift adds; returns the signature."""
    for name in (b"x-dspam-result", b"x-dspam-processed", b"x-dspam-confidence",
                 b"x-dspam-probability", b"x-dspam-score", b"x-dspam-signature"):
        assert len(headers.get(name, [])) == 1, f"expected one {name!r}, got {headers}"
    assert headers[b"x-dspam-result"][0] in expected, headers
    # The signed score agrees with the result: at least 0 exactly for Spam.
    assert (float(headers[b"x-dspam-score"][0]) >= 0) == (
        headers[b"x-dspam-result"][0] == b"Spam"), headers
    for name in (b"x-dspam-confidence", b"x-dspam-probability"):
        value = float(headers[name][0])
        assert 0.0 <= value <= 1.0, headers
    sig = headers[b"x-dspam-signature"][0]
    assert SIG_RE.match(sig), f"signature {sig!r} is not 30 lowercase hex digits"
    return sig


# --------------------------------------------------------------------------------------------
# The test world


class World:
    def __init__(self, root: Path, spamsift: str, maildrop: str) -> None:
        self.root = root
        self.spamsift = spamsift
        self.maildrop = maildrop
        self.state = root / "state"
        self.state.mkdir()
        self.config = root / "spamsift.toml"
        # Root always may act for others; a non-root test runner stands in for Courier's mail
        # user, which the system-wide alias needs to be trusted.
        trusted = sorted({"root", pwd.getpwuid(os.getuid()).pw_name})
        self.config.write_text(
            f"home = {json.dumps(str(self.state))}\n"
            'opt = "in"\n'
            f"trusted_users = {json.dumps(trusted)}\n"
            "syslog = false\n"
            # The retraining test relies on the auto-whitelist: pin it.
            "whitelist = true\n"
            "whitelist_threshold = 10\n"
        )
        self.absent = str(root / "no-such-dir" / "spamc")

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C",
            "SPAMSIFT_HOME": str(self.state),
            "SPAMSIFT_CONFIG": str(self.config),
        }
        env.update(extra)
        return env

    def run_spamsift(self, args: list[str], data: bytes, home: Path | None = None,
                     user: str | None = None) -> subprocess.CompletedProcess:
        """Run spamsift directly, with the environment maildrop gives its filters: HOME is
        the recipient's home and LOGNAME names the recipient (spamsift only takes $HOME as
        the user's home when LOGNAME or USER say whose it is)."""
        env = self.env()
        env["HOME"] = str(home) if home else str(self.root)
        if user:
            env["LOGNAME"] = env["USER"] = user
        return subprocess.run([self.spamsift, *args], input=data, capture_output=True,
                              env=env, timeout=TIMEOUT, cwd=str(self.root))


class Mailbox:
    """One recipient: a home with a Maildir, and a maildroprc copy pointing at both."""

    def __init__(self, world: World, name: str, opted_in: bool,
                 spamc: str | None = None, spamsift: str | None = None) -> None:
        self.world = world
        self.name = name
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name)
        self.home = world.root / "homes" / slug
        self.home.mkdir(parents=True)
        self.maildir = self.home / "Maildir"
        maildirmake = _tool("maildirmake")
        if maildirmake:
            subprocess.run([maildirmake, str(self.maildir)], check=True, timeout=TIMEOUT)
        else:
            for sub in ("tmp", "new", "cur"):
                (self.maildir / sub).mkdir(parents=True)
        if opted_in:
            (self.home / ".spamsift").write_text("")
        self.rcfile = self.home / "maildroprc.test"
        self.write_rc(spamsift or world.spamsift, spamc or world.absent)

    def write_rc(self, spamsift: str, spamc: str) -> None:
        text = MAILDROPRC.read_text()
        text, n1 = re.subn(r'(?m)^SPAMSIFT=.*$', lambda _m: f'SPAMSIFT="{spamsift}"', text)
        text, n2 = re.subn(r'(?m)^SPAMC=.*$', lambda _m: f'SPAMC="{spamc}"', text)
        assert (n1, n2) == (1, 1), "examples/maildroprc must set SPAMSIFT= and SPAMC= once each"
        # Manual mode resets these to the invoking user's values; delivery mode would set them
        # from the recipient's account.  Single quotes: no maildrop variable substitution.
        prologue = (
            f"HOME='{self.home}'\n"
            f"DEFAULT='{self.maildir}'\n"
            f"LOGNAME='{self.name}'\n"
            f"SPAMSIFT_HOME='{self.world.state}'\n"
            f"SPAMSIFT_CONFIG='{self.world.config}'\n"
        )
        self.rcfile.write_text(prologue + text)
        os.chmod(self.rcfile, stat.S_IRUSR | stat.S_IWUSR)

    def deliver(self, data: bytes, verbose: bool = False) -> subprocess.CompletedProcess:
        cmd = [self.world.maildrop]
        if verbose:
            cmd += ["-V", "9"]
        cmd.append(str(self.rcfile))
        return subprocess.run(cmd, input=data, capture_output=True, env=self.world.env(),
                              timeout=TIMEOUT, cwd=str(self.home))

    def deliver_ok(self, data: bytes) -> None:
        proc = self.deliver(data)
        if proc.returncode != 0:
            trace = self.deliver(data, verbose=True)
            pytest.fail(f"maildrop exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
                        f"\n--- maildrop -V 9 trace ---\n{trace.stderr.decode(errors='replace')}")

    def files(self, folder: str = "") -> list[Path]:
        base = self.maildir / folder if folder else self.maildir
        new = base / "new"
        if not new.is_dir():
            return []
        return sorted(new.iterdir())

    def only_new_file(self, folder: str = "") -> bytes:
        where = f"{folder or 'INBOX'}"
        files = self.files(folder)
        assert len(files) == 1, (
            f"expected one message in {where}, found {len(files)}; "
            f"INBOX={[p.name for p in self.files()]} Spam={[p.name for p in self.files('.Spam')]}")
        data = files[0].read_bytes()
        files[0].unlink()
        return data

    def assert_empty(self) -> None:
        assert self.files() == [], "unexpected message in INBOX"
        assert self.files(".Spam") == [], "unexpected message in .Spam"

    def train(self, spam: int = 10, ham: int = 10) -> None:
        for i in range(max(spam, ham)):
            if i < spam:
                self.train_one(spam_message(100 + i), "spam")
            if i < ham:
                self.train_one(ham_message(100 + i), "innocent")

    def train_one(self, data: bytes, cls: str) -> None:
        proc = self.world.run_spamsift(
            ["filter", "--user", self.name, f"--class={cls}", "--source=corpus"], data,
            home=self.home, user=self.name)
        assert proc.returncode == 0, (
            f"training {cls} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")

    def classify(self, data: bytes) -> str:
        """The class --classify reports: Spam, Innocent or Whitelisted."""
        proc = self.world.run_spamsift(["filter", "--classify", "--user", self.name], data,
                                       home=self.home, user=self.name)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        out = proc.stdout.decode(errors="replace")
        m = re.fullmatch(r'X-DSPAM-Result: (\S+); result="(Spam|Innocent)"; class="(\w+)"; '
                         r"probability=[0-9.]+; confidence=[0-9.]+; score=-?[0-9.]+; "
                         r"signature=N/A\n", out)
        assert m, f"unexpected --classify output: {out!r}"
        assert m.group(1) == self.name, out
        assert (m.group(2) == "Spam") == (m.group(3) == "Spam"), out
        return m.group(3)


def courier_command(path: Path, spamsift: str) -> str:
    """The |program line of a .courier file, as Courier's courierdeliver would run it."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if pending:
            raw = pending + raw
            pending = ""
        if raw.endswith("\\"):
            pending = raw[:-1] + " "
            continue
        if not raw.strip() or raw.startswith("#"):
            continue
        lines.append(raw)
    programs = [ln for ln in lines if ln.startswith("|") and not ln.startswith("||")]
    assert len(lines) == 1 and len(programs) == 1, (
        f"{path} should hold exactly one '|program' delivery instruction, found {lines}")
    command = programs[0][1:].strip()
    assert "/usr/local/bin/spamsift " in command, command
    return command.replace("/usr/local/bin/spamsift", spamsift, 1)


def courier_env(world: World, *, user: str, home: Path, recipient: str, ext: str,
                default: str = "", sender: str = "worker@example.com") -> dict[str, str]:
    """What courierdeliver puts into the environment of a |program (module.local/deliver.C)."""
    local, _, host = recipient.partition("@")
    ext2 = ext.split("-", 1)[1] if "-" in ext else ""
    ext3 = ext2.split("-", 1)[1] if "-" in ext2 else ""
    ext4 = ext3.split("-", 1)[1] if "-" in ext3 else ""
    env = world.env()
    env.update({
        "HOME": str(home), "USER": user, "SENDER": sender, "RECIPIENT": recipient,
        "HOST": host or "localhost", "LOCAL": local, "EXT": ext, "EXT2": ext2, "EXT3": ext3,
        "EXT4": ext4, "DEFAULT": default,
        "DTLINE": f"Delivered-To: {recipient}", "RPLINE": f"Return-Path: <{sender}>",
        "UFLINE": f"From {sender} Wed Mar  5 12:00:00 2025", "SHELL": "/bin/sh",
        "MAILDIRQUOTA": "", "MAILDROPDEFAULT": "./Maildir",
    })
    return env


def run_alias(world: World, alias: Path, data: bytes, env: dict[str, str],
              cwd: Path) -> subprocess.CompletedProcess:
    command = courier_command(alias, world.spamsift)
    return subprocess.run(["/bin/sh", "-c", command], input=data, capture_output=True, env=env,
                          timeout=TIMEOUT, cwd=str(cwd))


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    maildrop = _tool("maildrop")
    if not maildrop:
        _unavailable("the maildrop binary is not installed (Debian: apt-get install maildrop)")
    if not _tool("reformail"):
        _unavailable("reformail (part of maildrop) is not installed; examples/maildroprc uses it")
    spamsift = _spamsift_binary()
    if not spamsift:
        _unavailable("the spamsift command is not installed (pip install -e .)")
    root = tmp_path_factory.mktemp("maildrop-e2e")
    os.chmod(root, 0o755)
    return World(root, spamsift, maildrop)


@pytest.fixture(scope="module")
def alice(world: World) -> Mailbox:
    """A virtual-style account name (with @ and .), opted in and trained."""
    box = Mailbox(world, "alice@example.com", opted_in=True)
    box.train()
    return box


def _fake_spamc(world: World, name: str) -> tuple[str, Path]:
    """A stand-in for SpamAssassin's spamc (spamd is not available in tests): flags messages
    that mention a lottery, and records that it ran."""
    marker = world.root / f"{name}.ran"
    script = world.root / f"{name}.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"echo ran >> '{marker}'\n"
        "msg=$(cat; echo x); msg=${msg%x}\n"
        "if printf '%s' \"$msg\" | grep -qi lottery; then flag=YES; else flag=NO; fi\n"
        "printf '%s' \"$msg\" | awk -v f=\"$flag\" "
        "'BEGIN{h=1} h && /^$/ {print \"X-Spam-Flag: \" f; h=0} {print}'\n"
    )
    script.chmod(0o755)
    return str(script), marker


# --------------------------------------------------------------------------------------------
# Tests: delivery


def test_spam_to_spam_folder_ham_to_inbox(alice: Mailbox) -> None:
    spam = spam_message(1)
    alice.deliver_ok(spam)
    assert alice.files() == [], "spam must not reach the INBOX"
    delivered = alice.only_new_file(".Spam")
    sig = assert_classified(assert_only_dspam_added(delivered, spam), (b"Spam",))

    # The folder was made as a Maildir++ folder and subscribed for Courier-IMAP.
    spamdir = alice.maildir / ".Spam"
    for sub in ("tmp", "new", "cur"):
        assert (spamdir / sub).is_dir()
    assert (spamdir / "maildirfolder").exists()
    subscribed = (alice.maildir / "courierimapsubscribed").read_text().splitlines()
    assert subscribed.count("INBOX.Spam") == 1

    ham = ham_message(2)
    alice.deliver_ok(ham)
    assert alice.files(".Spam") == []
    delivered = alice.only_new_file()
    sig2 = assert_classified(assert_only_dspam_added(delivered, ham),
                             (b"Innocent", b"Whitelisted"))
    assert sig2 != sig

    # A second spam reuses the folder and does not subscribe it twice.
    spam = spam_message(3)
    alice.deliver_ok(spam)
    assert_classified(assert_only_dspam_added(alice.only_new_file(".Spam"), spam), (b"Spam",))
    subscribed = (alice.maildir / "courierimapsubscribed").read_text().splitlines()
    assert subscribed.count("INBOX.Spam") == 1
    alice.assert_empty()


def test_not_opted_in_passes_through_untouched(world: World) -> None:
    bob = Mailbox(world, "bob", opted_in=False)  # spamc path points nowhere
    for data in (spam_message(4), ham_message(5)):
        bob.deliver_ok(data)
        assert bob.files(".Spam") == []
        assert bob.only_new_file() == data, "an unfiltered message must arrive byte for byte"
    assert not (bob.maildir / ".Spam").exists()
    # And spamsift itself, asked directly, gives the original back without headers.
    proc = world.run_spamsift(["filter", "--user", "bob", "--stdout",
                               "--deliver=innocent,spam"], spam_message(4), home=bob.home,
                              user="bob")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == spam_message(4)


def test_spamc_runs_only_when_spamsift_passed_the_message_through(world: World,
                                                                  alice: Mailbox) -> None:
    spamc, marker = _fake_spamc(world, "spamc-fallback")
    dave = Mailbox(world, "dave", opted_in=False, spamc=spamc)

    lottery = ham_message(6).replace(b"Hi,\n", b"Hi,\nYou won the lottery!\n")
    dave.deliver_ok(lottery)
    assert marker.read_text().count("ran") == 1
    delivered = dave.only_new_file(".Spam")
    assert b"\nX-Spam-Flag: YES\n" in delivered
    assert dspam_headers(delivered) == {}

    dave.deliver_ok(ham_message(7))
    assert marker.read_text().count("ran") == 2
    delivered = dave.only_new_file()
    assert b"\nX-Spam-Flag: NO\n" in delivered

    # For a user spamsift classifies, spamc is not run at all.
    alice.write_rc(world.spamsift, spamc)
    try:
        alice.deliver_ok(lottery)
        assert marker.read_text().count("ran") == 2, "spamc ran although spamsift classified"
        delivered = alice.only_new_file()
        assert b"X-Spam-Flag" not in delivered
        assert_classified(assert_only_dspam_added(delivered, lottery),
                          (b"Innocent", b"Whitelisted"))
    finally:
        alice.write_rc(world.spamsift, world.absent)
    alice.assert_empty()


def test_forged_dspam_headers_do_not_steer_delivery(world: World, alice: Mailbox) -> None:
    forged = ("X-DSPAM-Result: Innocent\n"
              "X-DSPAM-Signature: 0123456789abcdef0123456789abcd\n"
              "X-DSPAM-Confidence: 0.9999\n")
    spam = spam_message(8, extra_headers=forged)
    alice.deliver_ok(spam)
    delivered = alice.only_new_file(".Spam")
    headers = assert_only_dspam_added(delivered, spam)
    assert_classified(headers, (b"Spam",))
    assert headers[b"x-dspam-signature"] != [b"0123456789abcdef0123456789abcd"]

    # Not opted in, no spamc: a forged "Spam" verdict must not file ham away, and is removed.
    erin = Mailbox(world, "erin", opted_in=False)
    ham = ham_message(9, extra_headers="X-DSPAM-Result: Spam\nX-DSPAM-Probability: 1.0000\n")
    erin.deliver_ok(ham)
    delivered = erin.only_new_file()
    assert assert_only_dspam_added(delivered, ham) == {}, "forged X-DSPAM headers were kept"
    erin.assert_empty()
    alice.assert_empty()


def test_a_spoof_behind_a_blank_line_of_crs_does_not_steer_delivery(world: World,
                                                                    alice: Mailbox) -> None:
    """A line of two CRs ends the header block for spamsift and maildrop's /.../:h, but not
    for reformail, which the recipe reads the verdict with: a spoofed verdict behind such a
    line made DSPAM_RESULT "Spam Innocent", and the spam went to the INBOX."""
    spam = spam_message(11)
    head, body = spam.split(b"\n\n", 1)
    spoofed = head + b"\n\r\r\nX-DSPAM-Result: Innocent\nX-DSPAM-Unsure: yes\n\n" + body
    alice.deliver_ok(spoofed)
    assert alice.files() == [], "the spoofed verdict steered spam into the INBOX"
    delivered = alice.only_new_file(".Spam")
    assert b"X-DSPAM-Result: Innocent" not in delivered and b"X-DSPAM-Unsure" not in delivered
    assert delivered.endswith(body)
    alice.assert_empty()


def test_headers_of_an_attached_message_are_not_the_verdict(world: World) -> None:
    spamc, marker = _fake_spamc(world, "spamc-attached")
    frank = Mailbox(world, "frank", opted_in=False, spamc=spamc)
    inner = spam_message(10, extra_headers="X-DSPAM-Result: Spam\n"
                                           "X-DSPAM-Signature: 00112233445566778899aabbccddee\n")
    report = message_with_attached(inner)
    frank.deliver_ok(report)
    # spamsift did not classify it, so spamc had to be asked, and it said no: INBOX.
    assert marker.read_text().count("ran") == 1
    delivered = frank.only_new_file()
    assert delivered.endswith(report.split(b"\n\n", 1)[1]), "the attached message was changed"
    frank.assert_empty()


def test_failing_filter_tempfails_and_delivers_nothing(world: World) -> None:
    gina = Mailbox(world, "gina", opted_in=True)
    for broken in ("/bin/false", "/bin/true"):  # non-zero exit; exit 0 with no output
        if not os.access(broken, os.X_OK):
            continue
        gina.write_rc(broken, world.absent)
        proc = gina.deliver(ham_message(11))
        assert proc.returncode == 75, (broken, proc.returncode, proc.stderr)
        gina.assert_empty()
    # A spamsift that is not installed at all is skipped (mail still flows).
    gina.write_rc(str(world.root / "no-such-dir" / "spamsift"), world.absent)
    data = ham_message(12)
    gina.deliver_ok(data)
    assert gina.only_new_file() == data


# --------------------------------------------------------------------------------------------
# Tests: retraining through the Courier aliases


def test_courier_alias_retrains_and_rejects_bad_signatures(world: World, alice: Mailbox) -> None:
    carol = Mailbox(world, "carol", opted_in=True)
    carol.train()
    # A sender with a long clean history is auto-whitelisted (spamsift: more than
    # whitelist_threshold = 10 innocent messages and no spam)...
    boss = "boss@corp.example.org"
    for i in range(12):
        carol.train_one(ham_message(200 + i, sender=boss), "innocent")
    # ... so when that sender's account starts sending spam, it is let through to the INBOX.
    # One correction (a spam report) is enough to end the whitelisting, whatever the
    # classifier's thresholds: this makes the retraining observable with a small training set.
    compromised = spam_message(20, sender=boss)
    carol.deliver_ok(compromised)
    delivered = carol.only_new_file()
    sig = assert_classified(assert_only_dspam_added(delivered, compromised), (b"Whitelisted",))
    assert carol.classify(compromised) == "Whitelisted"

    env = courier_env(world, user="carol", home=carol.home, recipient="carol-spam@example.com",
                      ext="spam")
    # The user bounces (redirects) the message: it arrives with its headers intact.
    proc = run_alias(world, COURIER / ".courier-spam", delivered, env, carol.home)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == b""
    assert carol.classify(compromised) == "Spam", "the spam report did not retrain carol's data"

    # False positive, reported by forwarding the message as an attachment.
    env = courier_env(world, user="carol", home=carol.home, recipient="carol-fp@example.com",
                      ext="fp")
    proc = run_alias(world, COURIER / ".courier-fp", message_with_attached(delivered), env,
                     carol.home)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == b""
    assert carol.classify(compromised) != "Spam", "the false-positive report was not applied"

    # Unknown signature (header form, then !DSPAM! tag form), and no signature at all: 65.
    bogus = [
        ham_message(13, extra_headers="X-DSPAM-Signature: 0123456789abcdef0123456789abcd\n"),
        ham_message(14).replace(b"Thanks,", b"!DSPAM:fedcba9876543210fedcba987654!\nThanks,"),
        ham_message(15),
    ]
    env = courier_env(world, user="carol", home=carol.home, recipient="carol-spam@example.com",
                      ext="spam")
    for data in bogus:
        proc = run_alias(world, COURIER / ".courier-spam", data, env, carol.home)
        assert proc.returncode == 65, (proc.returncode, proc.stderr)
        assert proc.stdout == b""
        err = proc.stderr.decode(errors="replace").strip()
        assert err and "\n" not in err, f"expected a one-line error, got {err!r}"

    # carol's signature reported through alice's alias: it belongs to someone else.
    env_alice = courier_env(world, user=alice.name, home=alice.home,
                            recipient="alice-spam@example.com", ext="spam")
    proc = run_alias(world, COURIER / ".courier-spam", delivered, env_alice, alice.home)
    assert proc.returncode == 65, (proc.returncode, proc.stderr)
    assert carol.classify(compromised) != "Spam", "a foreign report changed carol's data"

    # The system-wide aliasdir variant: no --user, runs as Courier's (trusted) mail user with
    # HOME=aliasdir and USER=alias; the signature's owner decides whose data is retrained.
    # This report carries only the !DSPAM:<id>! tag, pasted into a new message.
    aliasdir = world.root / "aliasdir"
    aliasdir.mkdir(exist_ok=True)
    env_sys = courier_env(world, user="alias", home=aliasdir,
                          recipient="spam-report@example.com", ext="spam-report@example.com",
                          default="report@example.com")
    tag_report = (b"From: Carol <carol@example.com>\nTo: spam-report@example.com\n"
                  b"Subject: missed spam\n\nThis one got through: !DSPAM:" + sig + b"!\n")
    proc = run_alias(world, COURIER / "aliasdir" / ".courier-spam-default", tag_report, env_sys,
                     aliasdir)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == b""
    assert carol.classify(compromised) == "Spam", "the system-wide report was not applied"

    env_sys_fp = courier_env(world, user="alias", home=aliasdir,
                             recipient="fp-report@example.com", ext="fp-report@example.com",
                             default="report@example.com")
    proc = run_alias(world, COURIER / "aliasdir" / ".courier-fp-default", delivered, env_sys_fp,
                     aliasdir)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == b""
    assert carol.classify(compromised) != "Spam", "the system-wide false positive was not applied"

    for data in bogus[:2]:
        proc = run_alias(world, COURIER / "aliasdir" / ".courier-spam-default", data, env_sys,
                         aliasdir)
        assert proc.returncode == 65, (proc.returncode, proc.stderr)
        assert proc.stdout == b""


# --------------------------------------------------------------------------------------------
# Unsure mail: SpamAssassin decides, and spamsift learns its answer

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def spamd(world: World):
    """A private spamd on a loopback port (SpamAssassin's rules as Debian ships them), and a
    spamc for it: a script, as maildroprc's SPAMC is one command."""
    import socket
    import time

    binary = _tool("spamd") or ("/usr/sbin/spamd" if os.path.exists("/usr/sbin/spamd") else None)
    if not binary or not _tool("spamc"):
        _unavailable("SpamAssassin is not installed (Debian: apt-get install spamassassin "
                     "spamc)")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen([binary, f"--listen=127.0.0.1:{port}", "--username=nobody",
                             "--max-children=1", "--syslog=stderr", "--pidfile",
                             str(world.root / "spamd.pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    _unavailable("spamd did not start")
                time.sleep(0.2)
        script = world.root / "spamc-real.sh"
        script.write_text(f"#!/bin/sh\nexec {_tool('spamc')} -d 127.0.0.1 -p {port} \"$@\"\n")
        script.chmod(0o755)
        yield str(script)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        subprocess.run(["pkill", "-KILL", "-f", f"--listen=127.0.0.1:{port}"], check=False)


def _stats(world: World, name: str) -> tuple[int, int]:
    import sqlite3

    db = sqlite3.connect(world.state / "spamsift.db")
    try:
        row = db.execute("SELECT spam_learned, innocent_learned FROM dspam_stats JOIN "
                         "dspam_virtual_uids USING (uid) WHERE username = ?", (name,)).fetchone()
        return tuple(row) if row else (0, 0)
    finally:
        db.close()


def _signature_counts(world: World, sig: bytes) -> dict[int, tuple[int, int]]:
    """Token id -> (spam, innocent) counts, for the tokens a signature recorded."""
    import sqlite3

    from spamsift.filter.engine.store.signature import Signature

    db = sqlite3.connect(world.state / "spamsift.db")
    try:
        uid, data = db.execute("SELECT uid, data FROM dspam_signature_data WHERE signature = ?",
                               (sig.decode(),)).fetchone()
        tokens, _freqs, _applied = Signature.unpack_data(data)
        counts = {}
        for token in tokens:
            signed = token - (1 << 64) if token >= 1 << 63 else token
            row = db.execute("SELECT spam_hits, innocent_hits FROM dspam_token_data WHERE "
                             "uid = ? AND token = ?", (uid, signed)).fetchone()
            counts[token] = tuple(row) if row else (0, 0)
        return counts
    finally:
        db.close()


def test_unsure_mail_asks_spamassassin_whose_answer_is_learned_once(world: World,
                                                                     spamd: str) -> None:
    """A new user's filter is unsure (X-DSPAM-Unsure: yes) of a message SpamAssassin knows
    is spam (GTUBE): maildroprc asks spamc, files it in .Spam and retrains spamsift through the
    message's signature. The user then drags it back out, and the watcher learns that: the
    drag wins, and every token is counted once, as innocent."""
    uma = Mailbox(world, "uma", opted_in=True, spamc=spamd)
    spam = ham_message(40).replace(b"Hi,\n", f"Hi,\n{GTUBE}\n".encode())
    uma.deliver_ok(spam)
    assert uma.files() == []
    delivered = uma.only_new_file(".Spam")
    assert b"\nX-DSPAM-Unsure: yes" in delivered and b"\nX-Spam-Flag: YES\n" in delivered
    # The message as spamsift stamped it, byte for byte, and SpamAssassin's answer.
    assert delivered.replace(b"X-Spam-Flag: YES\n", b"") .endswith(spam.split(b"\n\n", 1)[1])
    headers = assert_only_dspam_added(delivered.replace(b"X-Spam-Flag: YES\n", b""), spam)
    assert headers[b"x-dspam-result"] == [b"Innocent"]  # spamsift's own verdict stays
    sig = headers[b"x-dspam-signature"][0]
    assert _stats(world, "uma") == (1, 0)  # learned innocent, then corrected to spam
    as_spam = _signature_counts(world, sig)
    assert set(as_spam.values()) == {(1, 0)}  # the user's first message: spam once
    # An unsure ham: SpamAssassin says no, nothing to correct.
    uma.deliver_ok(ham_message(41))
    inbox = uma.only_new_file()
    assert b"\nX-Spam-Flag: NO\n" in inbox and b"\nX-DSPAM-Unsure: yes" in inbox
    assert _stats(world, "uma") == (1, 1)
    # The user drags the spam back to the INBOX; the watcher sees it (as it runs, as root).
    spamdir = uma.maildir / ".Spam" / "cur"
    spamdir.mkdir(exist_ok=True)
    placed = spamdir / "1.uma:2,S"
    placed.write_bytes(delivered)
    watch = [world.spamsift, "watch", "--once", "--template", "%u/Maildir",
             str(world.root / "homes")]
    first = subprocess.run(watch, env=world.env(), capture_output=True, timeout=TIMEOUT)
    assert first.returncode == 0, first.stderr
    assert _stats(world, "uma") == (1, 1)  # where its class put it: nothing to learn
    placed.rename(uma.maildir / "cur" / placed.name)
    second = subprocess.run(watch, env=world.env(), capture_output=True, timeout=TIMEOUT)
    assert second.returncode == 0, second.stderr
    assert _stats(world, "uma") == (0, 2)
    # Every token of it moved from spam to innocent once: no double count (the ham shares
    # some tokens, which it counts itself).
    after = _signature_counts(world, sig)
    assert set(after) == set(as_spam)
    assert all(after[t][0] == 0 and after[t][1] in (1, 2) for t in after), after
    third = subprocess.run(watch, env=world.env(), capture_output=True, timeout=TIMEOUT)
    assert third.returncode == 0 and _stats(world, "uma") == (0, 2)
