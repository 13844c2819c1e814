"""Shared fixtures: real servers for the tests that need them.

A test that needs a server skips with the reason when it is absent, unless
SPAMSIFT_REQUIRE_SERVERS=1 (set by .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import uuid

import pytest

MYSQL_SERVER = os.environ.get("SPAMSIFT_TEST_MYSQL", "mysql://root@127.0.0.1:3306")


def need(reason: str) -> None:
    if os.environ.get("SPAMSIFT_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (SPAMSIFT_REQUIRE_SERVERS=1, so this is a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> str:
    """The unpacked SpamAssassin corpus: $SPAMSIFT_CORPUS (as .ci/run unpacks it), else
    unpacked from ../shared/corpora beside the checkout; missing is a skip, or a failure under
    SPAMSIFT_REQUIRE_SERVERS=1 (a clone outside the usual place must not pass quietly)."""
    import subprocess
    from pathlib import Path

    given = os.environ.get("SPAMSIFT_CORPUS")
    if given and os.path.exists(os.path.join(given, "index")):
        return given
    unpack = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "unpack"
    if unpack.exists():
        dest = tmp_path_factory.mktemp("corpus")
        subprocess.run(["sh", str(unpack), str(dest)], check=True, capture_output=True)
        if (dest / "index").exists():
            return str(dest)
    need(f"no SpamAssassin corpus: SPAMSIFT_CORPUS={given or ''} has no index, and there is "
         f"no {unpack}")
    raise AssertionError("unreachable")


@pytest.fixture
def mysql_url():
    """A fresh MySQL/MariaDB database of the test's own, dropped afterwards."""
    try:
        import pymysql

        from spamsift.filter.engine.store.mysql import parse_url

        params = parse_url(MYSQL_SERVER + "/mysql")
        params.pop("database")
        admin = pymysql.connect(**params, connect_timeout=3, autocommit=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: no server to test against
        need(f"no MySQL/MariaDB at {MYSQL_SERVER}: {exc}")
    name = "spamsift_test_" + uuid.uuid4().hex[:12]
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{MYSQL_SERVER}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A spamsift home of the test's own (SQLite), used by the commands' main()."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SPAMSIFT_HOME", str(home))
    monkeypatch.delenv("SPAMSIFT_STORAGE", raising=False)
    monkeypatch.delenv("SPAMSIFT_CONFIG", raising=False)
    return home


@pytest.fixture(params=["memory", "sqlite", "mysql"])
def store(request, tmp_path):
    """An empty store of each backend in turn (MySQL: a database of the test's own)."""
    from spamsift.filter.engine.store.base import open_store

    if request.param == "memory":
        s = open_store("memory://")
    elif request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/store.db")
    else:
        s = open_store(request.getfixturevalue("mysql_url"))
        s.initialize()
    yield s
    s.close()


@pytest.fixture
def admin_cli(tmp_path):
    """(the installed ``spamsift`` command, an environment for it) on a home of the test's
    own holding an initialized SQLite database."""
    import subprocess
    import sys

    command = os.path.join(os.path.dirname(sys.executable), "spamsift")
    env = dict(os.environ, SPAMSIFT_HOME=str(tmp_path))
    env.pop("SPAMSIFT_CONFIG", None)
    env.pop("SPAMSIFT_STORAGE", None)
    subprocess.run([command, "db", "init"], env=env, check=True, capture_output=True)
    return command, env


@pytest.fixture(scope="session")
def system_user():
    """make(name) -> (uid, gid) of a system user of that name, created when missing (with
    useradd, as an administrator would): tests of what an unprivileged local user can do run
    as one. Needs root; skips (or fails under SPAMSIFT_REQUIRE_SERVERS=1) without."""
    import pwd
    import subprocess

    def make(name: str) -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if os.getuid() != 0:
                need(f"needs root to create the system user {name}")
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir",
                            "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)
            entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    return make


@pytest.fixture(scope="session")
def shadow_src(tmp_path_factory):
    """(a Python every user can run, PYTHONPATH) for running spamsift as an unprivileged user:
    the venv's interpreter lives under /root here, so this is the system Python on a
    world-readable copy of the source tree (the same files under test)."""
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    top = Path(tempfile.mkdtemp(prefix="spamsift-shadow-"))
    os.chmod(top, 0o755)
    src = Path(__file__).resolve().parent.parent
    shutil.copytree(src / "spamsift", top / "spamsift",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # The pure-Python dependencies the commands run here import (--metrics), which the
    # system Python may lack.
    import prometheus_client

    shutil.copytree(Path(prometheus_client.__file__).parent, top / "prometheus_client",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in top.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    yield python, str(top)
    shutil.rmtree(top, ignore_errors=True)
