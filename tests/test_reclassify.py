"""`spamsift reclassify` with leave-one-out (issue #20): the record of what training learned,
scoring each message without its own learning, ranked candidates, and ``--move --retrain``
giving the counts of a training on the corrected mailbox, exactly once."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path

import pytest

from spamsift.filter.engine import config, mailfolders
from spamsift.filter.engine.store.base import open_store
from spamsift.trainer import train

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_corpus",
                                               ROOT / "examples/demo/make_corpus.py")
make_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_corpus)


def mails(n: int, spam: bool, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed * 2 + spam)
    return [make_corpus.message(rng, spam, k) for k in range(n)]


def write_maildir(root: Path, inbox, spam) -> dict[str, str]:
    """A Maildir++ with `inbox` and `spam` messages (bytes, or corpus paths); file path
    relative to `root` -> the message's key."""
    keys = {}
    for n, (folder, msgs) in enumerate((("", inbox), (".Spam", spam))):
        base = root / folder if folder else root
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for k, msg in enumerate(msgs):
            sub = "cur" if k % 2 else "new"
            name = f"{1700000000 + k}.M{k}P{n}.host" + (":2,S" if sub == "cur" else "")
            path = base / sub / name
            if isinstance(msg, bytes):
                path.write_bytes(msg)
            else:
                shutil.copyfile(msg, path)
            keys[str(path.relative_to(root))] = mailfolders.message_key(path.read_bytes())
    return keys


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A spamsift home of the test's own (SQLite), used by the commands' main()."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SPAMSIFT_HOME", str(home))
    monkeypatch.delenv("SPAMSIFT_STORAGE", raising=False)
    monkeypatch.delenv("SPAMSIFT_CONFIG", raising=False)
    return home


def config_file(tmp_path: Path, algorithm: list[str] | None) -> list[str]:
    if algorithm is None:
        return []
    path = tmp_path / "spamsift.toml"
    path.write_text(f"algorithm = {json.dumps(algorithm)}\n")
    return ["--config", str(path)]


# -- the record ------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm,jobs", [(None, "0"), (None, "1"),
                                            (["graham", "burton"], "0"),
                                            (["graham", "burton"], "2")])
def test_train_records_every_message_it_learned_with_its_class_and_step(
        env, tmp_path, capsys, algorithm, jobs):
    ham, spam = mails(30, False), mails(20, True)
    keys = write_maildir(tmp_path / "Maildir", ham + [ham[0]], spam)  # one duplicate
    cfg = config_file(tmp_path, algorithm)
    assert train.main(["--user", "u", "--quiet", "--jobs", jobs, *cfg,
                       str(tmp_path / "Maildir")]) == 0
    settings = config.load(cfg[1] if cfg else None)
    store = open_store(settings.storage_url)
    uid = store.uid("u", create=False)
    records = store.learned_records(uid, set(keys.values()))
    assert len(records) == 50
    for path, key in keys.items():
        klass = "spam" if path.startswith(".Spam") else "innocent"
        assert list(records[key]) == [klass]
    dup = mailfolders.message_key(ham[0])
    assert records[dup]["innocent"][0] == 2
    steps = [step for r in records.values() for _copies, step in r.values()]
    if algorithm is None:  # the logistic model: each step recorded, toward the class
        assert any(steps)
        assert all(step >= 0 for k in keys.values() for c, (_n, step) in records[k].items()
                   if c == "spam")
    else:
        assert not any(steps)
    store.close()
