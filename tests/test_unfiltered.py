"""Nothing passes unfiltered in silence: every such message is counted, and `db check` and
`report` show why, for the delivery uid that hit it (issue: a root-owned database)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mail import HAM
from spamsift.filter.engine import passlog

SPAMSIFT = os.path.join(os.path.dirname(sys.executable), "spamsift")
USER = "spamsift-t-deliver"

needs_console = pytest.mark.skipif(not os.path.exists(SPAMSIFT),
                                   reason="spamsift console script not installed")


def test_counts_are_per_uid_file_and_a_file_of_another_owner_is_neither_written_nor_read(
        tmp_path):
    passlog.prepare(str(tmp_path))
    assert os.stat(tmp_path / "passthrough").st_mode & 0o7777 == 0o1733
    assert passlog.record(str(tmp_path), "alice", "error", clock=lambda: 1_800_000_000)
    assert passlog.record(str(tmp_path), "alice", "error", clock=lambda: 1_800_000_060)
    assert passlog.record(str(tmp_path), "bob", "not_opted_in", clock=lambda: 1_800_000_000)
    counts = passlog.counts(str(tmp_path), 1_799_999_000)
    assert sorted(counts.values()) == [1, 2]
    assert {k[1:]: n for k, n in counts.items()} == {("error", "alice"): 2,
                                                      ("not_opted_in", "bob"): 1}
    assert passlog.counts(str(tmp_path), 1_800_000_030) == {
        (next(iter(counts))[0], "error", "alice"): 1}
    # A file named for another uid than its owner's: a forgery, not counted.
    forged = tmp_path / "passthrough" / f"uid-{os.geteuid() + 1}.log"
    forged.write_text("1800000000 error mallory\n")
    assert ("error", "mallory") not in {k[1:] for k in passlog.counts(str(tmp_path), 0)}


@pytest.fixture
def root_site():
    """(folder, environment) of a site whose database root made (`db init`), in a folder
    other uids can reach (not pytest's tmp_path: its parents are root's alone)."""
    top = Path(tempfile.mkdtemp(prefix="spamsift-unfiltered-"))
    os.chmod(top, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
    env.update(SPAMSIFT_HOME=str(top), SPAMSIFT_SOCKET=str(top / "no-daemon"))
    init = subprocess.run([SPAMSIFT, "db", "init"], env=env, capture_output=True)
    assert init.returncode == 0, init.stderr
    yield top, env
    shutil.rmtree(top, ignore_errors=True)


@needs_console
def test_a_database_the_delivery_uid_cannot_write_is_counted_and_diagnosed(
        system_user, shadow_src, root_site):
    """Trained as root, the database is root's 0644: a delivery as another uid passes the
    message through (exit 0, as the failure policy says), and that is counted where the
    administrator's report shows it; `db check` as that uid names the problem."""
    uid, _gid = system_user(USER)
    python, path = shadow_src
    top, env = root_site
    os.chmod(top / "spamsift.db", 0o644)
    as_user = dict(env, PYTHONPATH=path, HOME="/nonexistent", LOGNAME=USER)
    done = subprocess.run([python, "-m", "spamsift", "filter", "--user", USER, "--stdout"],
                          input=HAM, env=as_user, capture_output=True, user=USER, cwd="/")
    assert done.returncode == 0 and done.stdout == HAM  # mail is never held up
    assert b"passed through unchanged" in done.stderr
    check = subprocess.run([python, "-m", "spamsift", "db", "check"], env=as_user,
                           capture_output=True, user=USER, cwd="/", text=True)
    assert check.returncode == 65, check.stdout
    assert f"as uid {uid}" in check.stdout and "readonly" in check.stdout, check.stdout
    report = subprocess.run([SPAMSIFT, "report", "--json"], env=env, capture_output=True)
    assert report.returncode == 0, report.stderr
    passed = json.loads(report.stdout)["passed_through"]
    assert passed["site"]["today"]["error"] == 1
    assert passed["users"][USER]["7_days"] == {"error": 1, "total": 1}
    assert (top / "passthrough" / f"uid-{uid}.log").exists()
    # spamsift doctor, as that uid, says why and what to do.
    doctor = subprocess.run([python, "-m", "spamsift", "doctor"], env=as_user,
                            capture_output=True, user=USER, cwd="/", text=True)
    assert doctor.returncode == 65, doctor.stdout
    assert "pass mail through unfiltered" in doctor.stdout
    assert all(line.startswith("problem: ") and "(fix: " in line
               for line in doctor.stdout.splitlines()), doctor.stdout
    # A daemon that stopped (its socket left behind) is a problem of its own.
    (top / "d.sock").touch()
    stale = subprocess.run([SPAMSIFT, "doctor"], capture_output=True, text=True,
                           env=dict(env, SPAMSIFT_SOCKET=str(top / "d.sock")))
    assert stale.returncode == 65 and "cannot be reached" in stale.stdout, stale.stdout
    # And root's own check passes: only the delivery uid is in trouble.
    own = subprocess.run([SPAMSIFT, "db", "check"], env=env, capture_output=True,
                         text=True)
    assert own.returncode == 0 and own.stdout.strip() == "ok", own.stdout


@needs_console
def test_mail_for_a_user_not_opted_in_is_counted_by_reason(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
    config = tmp_path / "spamsift.toml"
    config.write_text(f'home = "{tmp_path}"\nopt = "in"\nsyslog = false\n')
    env.update(SPAMSIFT_CONFIG=str(config), SPAMSIFT_SOCKET=str(tmp_path / "no-daemon"))
    subprocess.run([SPAMSIFT, "db", "init"], env=env, check=True, capture_output=True)
    for _ in range(2):
        done = subprocess.run([SPAMSIFT, "filter", "--user", "carol", "--stdout"], input=HAM,
                              env=env, capture_output=True)
        assert done.returncode == 0 and done.stdout == HAM
    report = subprocess.run([SPAMSIFT, "report", "--json"], env=env, capture_output=True)
    passed = json.loads(report.stdout)["passed_through"]
    assert passed["users"]["carol"]["today"] == {"not_opted_in": 2, "total": 2}
    stats = subprocess.run([SPAMSIFT, "stats", "-H", "carol"], env=env, capture_output=True,
                           text=True)
    assert "Not filtered (7 days): 2 (not_opted_in 2)" in stats.stdout, stats.stdout


@needs_console
def test_doctor_names_a_read_only_shm_left_after_the_database_was_fixed(system_user,
                                                                        shadow_src,
                                                                        root_site):
    """The trap after the first: the database made writable (0666), but SQLite's -shm left
    read-only (0444, root's): deliveries still fail. doctor, as the delivery uid, names it."""
    uid, _gid = system_user(USER)
    python, path = shadow_src
    top, env = root_site
    os.chmod(top, 0o777)
    os.chmod(top / "spamsift.db", 0o666)
    shm = top / "spamsift.db-shm"
    shm.write_bytes(b"")
    os.chmod(shm, 0o444)
    as_user = dict(env, PYTHONPATH=path, HOME="/nonexistent")
    doctor = subprocess.run([python, "-m", "spamsift", "doctor"], env=as_user,
                            capture_output=True, user=USER, cwd="/", text=True)
    assert doctor.returncode == 65, doctor.stdout
    assert f"spamsift.db-shm: not writable by uid {uid}" in doctor.stdout, doctor.stdout
    check = subprocess.run([python, "-m", "spamsift", "db", "check"], env=as_user,
                           capture_output=True, user=USER, cwd="/", text=True)
    assert check.returncode == 65 and "-shm" in check.stdout, check.stdout


@needs_console
def test_counts_a_uid_cannot_list_are_unknown_not_zero(system_user, shadow_src, root_site):
    """`report` as a uid that cannot list HOME/passthrough (root's, 1733) once said "Not
    filtered today 0" whatever was there; the metrics said zero for every reason. The report
    now says the counts are unreadable, and the metrics leave the samples out."""
    uid, gid = system_user(USER)
    python, path = shadow_src
    top, env = root_site
    assert passlog.record(str(top), "alice", "error")  # there is something to count
    os.chown(top, uid, gid)  # the uid's home and database, as the site user's would be
    for db in top.glob("spamsift.db*"):
        os.chown(db, uid, gid)
    as_user = dict(env, PYTHONPATH=path, HOME="/nonexistent", LOGNAME=USER)
    report = subprocess.run([python, "-m", "spamsift", "report", "--json"], env=as_user,
                            capture_output=True, user=USER, cwd="/", text=True)
    assert report.returncode == 0, report.stderr
    passed = json.loads(report.stdout)["passed_through"]
    assert passed["unreadable"] == f"{top / 'passthrough'}: Permission denied", passed
    # The same report as root, who can list it: the count and no such note.
    report = subprocess.run([SPAMSIFT, "report", "--json"], env=env, capture_output=True)
    passed = json.loads(report.stdout)["passed_through"]
    assert "unreadable" not in passed and passed["site"]["today"]["error"] == 1, passed
    scrape = ("import sys; from spamsift.filter.engine.metrics import Metrics; "
              "from prometheus_client import generate_latest; "
              "print(generate_latest(Metrics(sys.argv[1]).registry).decode())")
    done = subprocess.run([python, "-c", scrape, str(top)], env=as_user, capture_output=True,
                          user=USER, cwd="/", text=True)
    assert done.returncode == 0, done.stderr
    assert "spamsift_unfiltered_total{" not in done.stdout, done.stdout
    assert "cannot count unfiltered mail" in done.stderr
    done = subprocess.run([sys.executable, "-c", scrape, str(top)], capture_output=True,
                          text=True)
    assert 'spamsift_unfiltered_total{reason="error"} 1.0' in done.stdout, done.stdout


def test_hostile_lines_in_a_uids_own_file_neither_crash_nor_flood_the_counts(tmp_path):
    """Each uid writes its own file, so every other file is an attacker's words: a non-ASCII
    digit or a time beyond any calendar raised out of counts() (report, stats and the whole
    metrics scrape failed), and a line per made-up user grew the counts without bound."""
    passlog.prepare(str(tmp_path))
    own = tmp_path / "passthrough" / f"uid-{os.geteuid()}.log"
    lines = ["\u00b2 error bob", "99999999999999999999 error bob", "1800000000 made_up bob",
             "1800000000 error  two spaces", "1800000000 error alice",
             "1800000000 error alice\r"]
    lines += [f"1800000000 not_opted_in u{n}" for n in range(passlog.MAX_USERS + 50)]
    own.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "passthrough" / "uid-\u00b2.log").write_text("1800000000 error x\n")
    found = passlog.counts(str(tmp_path), 0)
    by_reason: dict[str, int] = {}
    for (_day, reason, _user), n in found.items():
        by_reason[reason] = by_reason.get(reason, 0) + n
    assert by_reason == {"error": 2, "not_opted_in": passlog.MAX_USERS + 50}
    users = {user for (_day, _reason, user) in found}
    assert len(users) == passlog.MAX_USERS + 1 and passlog.OTHER_USERS in users
    assert {k[2] for k in found if k[1] == "error"} == {"alice"}


def test_a_count_file_made_for_another_uid_is_reported_not_silent(system_user, tmp_path):
    """A uid that makes uid-<victim>.log first keeps the victim from counting anything
    (record never writes into another's file). That was silent; the report names it now."""
    uid, gid = system_user(USER)
    passlog.prepare(str(tmp_path))
    forged = tmp_path / "passthrough" / f"uid-{os.geteuid()}.log"
    forged.write_text("")
    os.chown(forged, uid, gid)  # made by USER, named for root
    assert not passlog.record(str(tmp_path), "alice", "error")
    assert passlog.forged(str(tmp_path)) == [str(forged)]
    assert passlog.forged(str(tmp_path / "nowhere")) == []
    from spamsift.filter.engine import config
    from spamsift.filter.engine.store.base import open_store
    from spamsift.trainer import report_data

    settings = config.Settings({}).replace(home=str(tmp_path), storage="memory://")
    report = report_data.load(open_store("memory://"), settings)
    assert report_data.passed_through(report)["forged"] == [str(forged)]
