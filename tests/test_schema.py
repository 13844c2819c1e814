"""The SQL files: both backends define the same tables and columns; db init/check work."""

from __future__ import annotations

import subprocess
import sys

from spamsift import sql
from spamsift.filter.engine.store.base import open_store


def test_sqlite_and_mysql_schemas_define_the_same_tables_and_columns():
    lite, my = sql.tables("sqlite"), sql.tables("mysql")
    assert sorted(lite) == sorted(my)
    for table in lite:
        assert lite[table] == my[table], table
    assert "dspam_token_data" in lite and "spam_hits" in lite["dspam_token_data"]


def test_mysql_init_is_idempotent_and_check_finds_what_is_missing(mysql_url):
    store = open_store(mysql_url)
    try:
        assert any("missing" in p for p in store.check())
        created = store.initialize()
        assert "created dspam_token_data" in created
        assert store.check() == []
        assert store.initialize() == []  # nothing left to create
        # A schema 3 database from before the purge's index on learned records.
        store.db.cursor().execute("ALTER TABLE spamsift_learned_messages DROP KEY id_learned_at")
        assert store.check() == ["index id_learned_at on spamsift_learned_messages is missing, "
                                 "so each purge batch sorts the old records (run 'spamsift db "
                                 "init')"]
        assert store.initialize() == ["added index spamsift_learned_messages.id_learned_at"]
        assert store.check() == [] and store.initialize() == []
        store.db.cursor().execute("ALTER TABLE dspam_stats DROP COLUMN spam_corpusfed")
        assert store.check() == ["table dspam_stats lacks columns spam_corpusfed"]
    finally:
        store.close()


def test_db_command_on_sqlite(tmp_path):
    env = {"SPAMSIFT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "spamsift", "db"]
    init = subprocess.run(run + ["init"], env=env, capture_output=True, text=True)
    assert init.returncode == 0 and "schema ready" in init.stdout
    check = subprocess.run(run + ["check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == "ok"
    import sqlite3

    sqlite3.connect(tmp_path / "spamsift.db").execute("DROP TABLE spamsift_sources")
    check = subprocess.run(run + ["check"], env=env, capture_output=True, text=True)
    assert check.returncode == 65 and "spamsift_sources is missing" in check.stdout


def test_dspam_mysql_data_file_selects_the_database(mysql_url, tmp_path):
    from spamsift.filter.engine.store.mysql import parse_url

    params = parse_url(mysql_url)
    datafile = tmp_path / "mysql.data"
    datafile.write_text(f"{params['host']}\n{params['port']}\n{params['user']}\n"
                        f"{params['password']}\n{params['database']}\n")
    store = open_store(f"mysql+datafile://{datafile}")
    try:
        store.initialize()
        assert store.uid("alice") == 1 and store.check() == []
    finally:
        store.close()
    socket_file = tmp_path / "sock.data"
    socket_file.write_text("/run/mysqld/mysqld.sock\n\nspamsift\nsecret\nmail\n")
    assert parse_url(f"mysql+datafile://{socket_file}") == {
        "unix_socket": "/run/mysqld/mysqld.sock", "user": "spamsift", "password": "secret",
        "database": "mail"}


def test_unreadable_mysql_urls_are_config_errors_without_the_password():
    # urllib raises ValueError for a port it cannot read: every admin command printed a
    # traceback (exit 1) for a password with / # ? in it. Now one line, exit 78.
    import pytest

    from spamsift.filter.engine.errors import ConfigError
    from spamsift.filter.engine.store.mysql import parse_url

    for url in ("mysql://u:s/e#c?r@127.0.0.1:1/db", "mysql://u@127.0.0.1:99999/db",
                "mysql://u@[::1/db", "mysql://u@host:port/db"):
        with pytest.raises(ConfigError) as caught:
            parse_url(url)
        assert "s/e#c" not in str(caught.value) and "cannot be read" in str(caught.value)
    assert parse_url("mysql://u:p%2Fq@h:3307/db")["password"] == "p/q"


def test_a_new_sqlite_database_has_small_pages(tmp_path):
    """Random token ids dirty one page per learned token: 1 KB pages write a third of the WAL
    that 4 KB pages did (issue #18)."""
    from spamsift.filter.engine.store.sqlite_maintenance import PAGE_SIZE

    store = open_store(f"sqlite:///{tmp_path}/new.db", 5.0)
    try:
        assert store.db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 1024
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_db_compact_rewrites_an_old_database_at_the_new_page_size(tmp_path):
    """A database made with 4 KB pages keeps every row through `db compact`, which refuses
    (exit 75, one line) while another process has the file open."""
    import sqlite3

    from spamsift.filter.engine.store.base import Batch

    path = tmp_path / "spamsift.db"
    old = sqlite3.connect(path)
    old.execute("PRAGMA page_size = 4096")
    old.execute("VACUUM")
    old.close()
    store = open_store(f"sqlite:///{path}", 5.0)  # the schema in a 4 KB-page file
    uid = store.uid("alice")
    batch = Batch("2026-12-03")
    batch.tokens = {t: (t % 3, 1) for t in range(1, 5001)}
    store.commit(uid, batch)
    store.close()
    before = sqlite3.connect(path)
    assert before.execute("PRAGMA page_size").fetchone()[0] == 4096
    rows = before.execute("SELECT * FROM dspam_token_data ORDER BY token").fetchall()
    env = {"SPAMSIFT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "spamsift", "db", "compact"]
    busy = subprocess.run(run, env=env, capture_output=True, text=True)  # `before` has it open
    assert busy.returncode == 75 and busy.stdout == ""
    assert len(busy.stderr.splitlines()) == 1 and "in use by another process" in busy.stderr
    assert before.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    before.close()
    done = subprocess.run(run, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "page size 4096 -> 1024" in done.stdout
    after = sqlite3.connect(path)
    assert after.execute("PRAGMA page_size").fetchone()[0] == 1024
    assert after.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert after.execute("SELECT * FROM dspam_token_data ORDER BY token").fetchall() == rows
    after.close()
    other = subprocess.run(run + ["--storage", "memory://"], env=env, capture_output=True,
                           text=True)
    assert other.returncode == 64 and "compact rewrites SQLite databases" in other.stderr


def test_db_check_reports_a_database_left_out_of_wal_mode(tmp_path):
    """What an interrupted `db compact` can leave behind is found, with the fix."""
    import sqlite3

    env = {"SPAMSIFT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "spamsift", "db"]
    assert subprocess.run(run + ["init"], env=env, capture_output=True).returncode == 0
    db = sqlite3.connect(tmp_path / "spamsift.db")
    assert db.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    db.close()
    check = subprocess.run(run + ["check"], env=env, capture_output=True, text=True)
    assert check.returncode == 65 and "journal mode delete, not wal" in check.stdout
    done = subprocess.run(run + ["compact"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check = subprocess.run(run + ["check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == "ok"
