"""From `spamsift setup` to mail flowing, as the product runs: privilege-separated.

`spamsift setup --root R` makes the node under a temporary root with a site user of the test's
own. The daemon runs as that user; the real maildrop delivers as an unprivileged delivery uid
through the daemon; a report goes through the system-wide alias as Courier's user (`daemon`);
the watcher runs as the site user. Only the site user can write the database. A stopped daemon
then shows in `spamsift doctor`, and the delivery it no longer serves is counted in the report.

Unprivileged uids cannot run the venv's interpreter (it lives under /root here): the commands
they run are a wrapper around the system Python on a copy of the source tree (conftest's
shadow_src), which `setup --bin` writes into every unit, maildroprc and alias.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from scrape import free_port, scrape

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
SITE, DELIVER = "spamsift-t-site", "spamsift-t-deliver"
SPAM = (b"From: Deals <d@promo.biz>\nTo: alice\nSubject: cheap pills\nMessage-ID: <s1@x>\n\n"
        b"Buy cheap pills now, click here for the best casino offer\n")

pytestmark = pytest.mark.skipif(not os.path.exists(SPAMSIFT),
                                reason="spamsift console script not installed")


def _maildrop() -> str:
    path = shutil.which("maildrop") or "/usr/bin/maildrop"
    if not os.path.exists(path):
        from conftest import need

        need("the maildrop binary is not installed (apt-get install maildrop)")
    return path


@pytest.fixture
def node(system_user, shadow_src):
    if os.getuid() != 0:
        pytest.skip("needs root: setup makes users and owners")
    site = system_user(SITE)
    deliver = system_user(DELIVER)
    python, path = shadow_src
    top = Path(tempfile.mkdtemp(prefix="spamsift-node-"))
    os.chmod(top, 0o755)
    wrapper = top / "spamsift"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={path} exec {python} -m spamsift \"$@\"\n")
    os.chmod(wrapper, 0o755)
    root = top / "root"
    root.mkdir(mode=0o755)
    yield top, root, str(wrapper), site, deliver
    subprocess.run(["pkill", "-f", "--", f"--socket {root}"], check=False)
    shutil.rmtree(top, ignore_errors=True)


def _env(root: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
    env.update(SPAMSIFT_CONFIG=str(root / "etc/spamsift.toml"),
               SPAMSIFT_HOME=str(root / "var/lib/spamsift"),
               SPAMSIFT_SOCKET=str(root / "run/spamsift/spamsift.sock"), **extra)
    return env


def test_setup_to_mail_flow_with_only_the_site_user_writing(node):
    top, root, wrapper, (site_uid, _), (deliver_uid, deliver_gid) = node
    setup = [SPAMSIFT, "setup", "--root", str(root), "--user", SITE, "--bin", wrapper]
    done = subprocess.run(setup, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(setup, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.splitlines()[:-1] == [], again.stdout
    home = root / "var/lib/spamsift"
    db = home / "spamsift.db"
    assert (db.stat().st_uid, stat.S_IMODE(db.stat().st_mode)) == (site_uid, 0o600)
    assert stat.S_IMODE(home.stat().st_mode) == 0o711
    assert stat.S_IMODE((home / "passthrough").stat().st_mode) == 0o1733
    config = root / "etc/spamsift.toml"
    assert config.stat().st_uid == 0 and stat.S_IMODE(config.stat().st_mode) == 0o644
    assert wrapper in (root / "etc/maildroprc.spamsift").read_text()
    env = _env(root)
    sock = root / "run/spamsift/spamsift.sock"
    daemon = subprocess.Popen([wrapper, "daemon", "--socket", str(sock)], env=env, user=SITE,
                              stderr=subprocess.PIPE, cwd="/")
    try:
        for _ in range(400):
            if sock.exists():
                break
            time.sleep(0.025)
        assert sock.exists(), daemon.stderr.read() if daemon.poll() is not None else ""
        # The real maildrop, as the delivery uid, with setup's maildroprc.
        mail = top / "mail" / DELIVER
        for sub in ("cur", "new", "tmp"):
            (mail / "Maildir" / sub).mkdir(parents=True)
        subprocess.run(["chown", "-R", f"{deliver_uid}:{deliver_gid}", str(top / "mail")],
                       check=True)
        rc = mail / "maildroprc"
        rc.write_text(f"HOME='{mail}'\nDEFAULT='{mail}/Maildir'\nLOGNAME='{DELIVER}'\n"
                      f"SPAMSIFT_CONFIG='{env['SPAMSIFT_CONFIG']}'\n"
                      f"SPAMSIFT_HOME='{env['SPAMSIFT_HOME']}'\n"
                      f"SPAMSIFT_SOCKET='{env['SPAMSIFT_SOCKET']}'\n"
                      + (root / "etc/maildroprc.spamsift").read_text())
        os.chown(rc, deliver_uid, deliver_gid)
        os.chmod(rc, 0o600)
        delivered = subprocess.run([_maildrop(), str(rc)], input=SPAM, capture_output=True,
                                   user=DELIVER, cwd=str(mail), timeout=120,
                                   env={"PATH": os.environ["PATH"]})
        assert delivered.returncode == 0, delivered.stderr
        files = list((mail / "Maildir").glob("*/new/*")) + list((mail / "Maildir").glob(
            "new/*"))
        assert len(files) == 1
        message = files[0].read_bytes()
        assert b"X-DSPAM-Result: " in message  # filtered: by the daemon, the only writer
        sig = [line.split(b": ")[1] for line in message.split(b"\n\n")[0].split(b"\n")
               if line.startswith(b"X-DSPAM-Signature")][0].decode()
        # The delivery uid cannot write the database; only the site user can.
        probe = subprocess.run(["sh", "-c", f"test -w {db}"], user=DELIVER)
        assert probe.returncode != 0
        # A report through the system-wide alias, run as Courier's user (trusted by setup).
        alias = (root / "etc/courier/aliasdir/.courier-spam-default").read_text()
        command = next(line[1:].strip() for line in alias.splitlines() if line.startswith("|"))
        assert command.startswith(wrapper)
        report = subprocess.run(["sh", "-c", command], input=message, capture_output=True,
                                user="daemon", env=env, cwd="/", timeout=120)
        assert report.returncode == 0, report.stderr
        stats = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        for _ in range(200):
            row = stats.execute("SELECT trained FROM dspam_signature_data WHERE signature = ?",
                                (sig,)).fetchone()
            if row and row[0] == "spam":
                break
            time.sleep(0.05)
        assert row == ("spam",)
        # doctor as the delivery uid: nothing wrong while the daemon serves it.
        doctor = subprocess.run([wrapper, "doctor", "--maildroprc", str(rc)], env=env,
                                user=DELIVER, capture_output=True, text=True, cwd="/")
        assert doctor.returncode == 0, doctor.stdout
        # The watcher as the site user (it owns the database): one scan, no error.
        subprocess.run(["chmod", "-R", "o+rX", str(top / "mail")], check=True)
        watch = subprocess.run([wrapper, "watch", "--once", "--template", "%u/Maildir",
                                str(top / "mail")], env=env, user=SITE, capture_output=True,
                               text=True, cwd="/", timeout=120)
        assert watch.returncode == 0, watch.stderr
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    # The daemon stopped: doctor says so, and the delivery it no longer serves is counted.
    doctor = subprocess.run([wrapper, "doctor", "--maildroprc", str(rc)], env=env,
                            user=DELIVER, capture_output=True, text=True, cwd="/")
    assert doctor.returncode == 65 and "no daemon serves this uid" in doctor.stdout, doctor.stdout
    again = subprocess.run([_maildrop(), str(rc)], input=SPAM.replace(b"s1@x", b"s2@x"),
                           capture_output=True, user=DELIVER, cwd=str(mail), timeout=120,
                           env={"PATH": os.environ["PATH"]})
    assert again.returncode == 0, again.stderr
    counted = subprocess.run([SPAMSIFT, "report", "--json"], env=env, capture_output=True)
    passed = json.loads(counted.stdout)["passed_through"]
    assert passed["users"][DELIVER]["today"].get("error") == 1, passed
    # And in the metrics the watcher serves, as the site user: the daemon is down, and the
    # delivery it did not filter is counted.
    port = free_port()
    watch = subprocess.Popen([wrapper, "watch", "--template", "%u/Maildir", "--metrics",
                              f"127.0.0.1:{port}", str(top / "mail")], env=env, user=SITE,
                             stderr=subprocess.PIPE, cwd="/")
    try:
        metrics = scrape(port)
        assert metrics["spamsift_daemon_up"] == 0
        assert metrics['spamsift_unfiltered_total{reason="error"}'] == 1
    finally:
        watch.terminate()
        watch.wait(timeout=60)
