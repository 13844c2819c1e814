"""The inline filter on MySQL: end to end, and what happens when the server is unreachable."""

from __future__ import annotations

import io
import socket
import threading
import time

from mail import HAM, SPAM
from spamsift.filter.cli import main
from spamsift.filter.engine.store.base import open_store



def run(env, argv, data=b"", config=None, tmp_path=None):
    if config is not None:
        path = tmp_path / "spamsift.toml"
        path.write_text(config)
        env = dict(env, SPAMSIFT_CONFIG=str(path))
    out, err = io.BytesIO(), io.StringIO()
    code = main(argv, stdin=io.BytesIO(data), stdout=out, stderr=err, environ=env)
    return code, out.getvalue(), err.getvalue()


def test_filter_train_and_retrain_on_mysql(mysql_url, tmp_path):
    store = open_store(mysql_url)
    store.initialize()
    env = {"SPAMSIFT_HOME": str(tmp_path), "SPAMSIFT_STORAGE": mysql_url}
    for i in range(8):
        for klass, msg in (("spam", SPAM), ("innocent", HAM)):
            code, _, err = run(env, ["--user", "alice", f"--class={klass}", "--source=corpus"],
                               msg + f"{i}\n".encode())
            assert code == 0, err
    code, out, err = run(env, ["--user", "alice", "--stdout"], SPAM)
    assert code == 0 and b"X-DSPAM-Result: Spam" in out, err
    sig = [line.split(b": ")[1].decode() for line in out.split(b"\n")
           if line.startswith(b"X-DSPAM-Signature")][0]
    uid = store.uid("alice", create=False)
    assert store.stats(uid).spam_learned == 9
    code, _, err = run(env, ["--user", "alice", "--falsepositive", f"--signature={sig}"])
    assert code == 0, err
    stats = store.stats(uid)
    assert (stats.spam_learned, stats.innocent_learned, stats.innocent_misclassified) == (8, 9, 1)
    code, _, err = run(env, ["--user", "bob", "--addspam", f"--signature={sig}"])
    assert code == 65
    store.close()


def test_unreachable_server_passes_mail_through_or_tempfails(tmp_path):
    env = {"SPAMSIFT_HOME": str(tmp_path), "SPAMSIFT_STORAGE": "mysql://root@127.0.0.1:1/x"}
    started = time.monotonic()
    code, out, err = run(env, ["--user", "alice", "--stdout"], HAM)
    assert code == 0 and out == HAM and "passed through" in err
    code, out, _ = run(env, ["--user", "alice", "--stdout"], HAM, 'on_error = "tempfail"\n',
                       tmp_path)
    assert code == 75 and out == b""
    code, _, err = run(env, ["--user", "alice", "--addspam", "--signature=" + "a" * 30])
    assert code == 75 and "MySQL" in err
    assert time.monotonic() - started < 5


def test_a_server_that_never_answers_is_given_up_within_the_timeout(tmp_path):
    # Accepts connections and then says nothing: a hung server, not a refused port.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        env = {"SPAMSIFT_HOME": str(tmp_path),
               "SPAMSIFT_STORAGE": f"mysql://root@127.0.0.1:{port}/x"}
        started = time.monotonic()
        code, out, err = run(env, ["--user", "alice", "--stdout"], SPAM,
                             "storage_timeout = 2.0\n", tmp_path)
        elapsed = time.monotonic() - started
        assert code == 0 and out == SPAM and "passed through" in err
        assert 1.5 <= elapsed < 5, elapsed
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_token_lookups_use_the_whole_index(mysql_url):
    # A mixed list of ids below and above 2^63 made MariaDB read every row of the user.
    import random

    from spamsift.filter.engine.store.base import Batch
    from spamsift.filter.engine.store.mysql_txn import token_lists

    store = open_store(mysql_url)
    store.initialize()
    uid = store.uid("alice")
    rng = random.Random(3)
    batch = Batch("2026-11-24")
    for _ in range(3000):
        batch.add_token(rng.getrandbits(64), 1, 0)
    store.commit(uid, batch)
    wanted = [rng.getrandbits(64) for _ in range(700)]
    lists = list(token_lists(wanted))
    assert len(lists) == 2
    with store.db.cursor() as cur:
        for in_list in lists:
            cur.execute("EXPLAIN SELECT token FROM dspam_token_data WHERE uid = %s AND token "
                        f"IN ({in_list})", (uid,))
            plan = cur.fetchone()
            assert plan[3] == "range" and str(plan[6]) == "12", plan  # type, key_len
    store.close()
