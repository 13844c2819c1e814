"""A mail site for the watcher tests: a Maildir++ tree, the real filter stamping messages,
moves as Courier-IMAP/Dovecot (rename) and IMAP clients (copy + delete) make them."""

from __future__ import annotations

import io
import os
import shutil
import time

from spamsift.filter.cli import main as filter_main
from spamsift.filter.engine import config
from spamsift.filter.engine.store.base import open_store

HAM = ("From: Bob <bob@example.com>\nTo: {user}\nSubject: lunch {n}\nMessage-ID: <h{n}@x>\n\n"
       "Hello, shall we have lunch tomorrow at noon? The usual place near the office. {n}\n")
SPAM = ("From: Deals <d@promo.biz>\nTo: {user}\nSubject: cheap pills {n}\nMessage-ID: <s{n}@x>\n"
        "\nBuy cheap pills now, click here for the best viagra casino offer {n}\n")

_counter = [0]


def unique_name() -> str:
    _counter[0] += 1
    return f"{int(time.time())}.M{_counter[0]}P{os.getpid()}.testhost"


class Site:
    def __init__(self, tmp_path, storage: str | None = None, extra: str = "") -> None:
        self.home = str(tmp_path / "home")
        self.root = str(tmp_path / "mail")
        os.makedirs(self.home, exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        self.config = os.path.join(self.home, "spamsift.toml")
        self.storage = storage or f"sqlite:///{self.home}/spamsift.db"
        with open(self.config, "w") as fh:
            fh.write(f'storage = "{self.storage}"\nsyslog = false\nwatch_rate = 0.0\n'
                     "test_conditional_training = false\n" + extra)
        self.env = {"SPAMSIFT_HOME": self.home, "SPAMSIFT_CONFIG": self.config}
        self.store = open_store(self.storage)
        self.store.initialize()

    def settings(self):
        return config.load(self.config, environ=self.env, use_cache=False)

    def close(self) -> None:
        self.store.close()

    # -- mailboxes -------------------------------------------------------------------------
    def mailbox(self, user: str = "alice", domain: str = "example.org",
                folders=(".Spam", ".Trash")) -> str:
        box = os.path.join(self.root, domain, user, "Maildir")
        for folder in ("", *folders):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(box, folder, sub), exist_ok=True)
        return box

    def filter(self, user: str, raw: bytes) -> bytes:
        out, err = io.BytesIO(), io.StringIO()
        code = filter_main(["--user", user, "--stdout", "--deliver=innocent,spam"],
                           stdin=io.BytesIO(raw), stdout=out, stderr=err, environ=self.env)
        assert code == 0, err.getvalue()
        return out.getvalue()

    def train(self, user: str, rounds: int = 12) -> None:
        """Corpus training, so that SPAM-like mail is classified spam."""
        for n in range(rounds):
            for klass, text in (("spam", SPAM), ("innocent", HAM)):
                raw = text.format(user=user, n=f"t{n}").encode()
                code = filter_main(["--user", user, f"--class={klass}", "--source=corpus"],
                                   stdin=io.BytesIO(raw), stdout=io.BytesIO(),
                                   stderr=io.StringIO(), environ=self.env)
                assert code == 0

    def deliver(self, box: str, user: str, raw: bytes, folder: str = "",
                signed: bool = True) -> str:
        """Filter (unless not `signed`) and deliver as maildrop does: tmp/, then new/."""
        data = self.filter(user, raw) if signed else raw
        name = unique_name()
        tmp = os.path.join(box, folder, "tmp", name)
        with open(tmp, "wb") as fh:
            fh.write(data)
        final = os.path.join(box, folder, "new", name)
        os.rename(tmp, final)
        return final

    # -- what users do ---------------------------------------------------------------------
    @staticmethod
    def seen(path: str, flags: str = "S") -> str:
        """new/ -> cur/ with flags (an IMAP client opened the folder)."""
        folder = os.path.dirname(os.path.dirname(path))
        base = os.path.basename(path).split(":2,")[0]
        target = os.path.join(folder, "cur", f"{base}:2,{flags}")
        os.rename(path, target)
        return target

    @staticmethod
    def move(path: str, box: str, folder: str) -> str:
        """Courier-IMAP / Dovecot: rename into the other folder's cur/, same name."""
        name = os.path.basename(path)
        if ":2," not in name:
            name += ":2,S"
        target = os.path.join(box, folder, "cur", name)
        os.rename(path, target)
        return target

    @staticmethod
    def copy_delete(path: str, box: str, folder: str) -> str:
        """An IMAP client: COPY (a new file with a new name), then delete the original."""
        name = unique_name()
        tmp = os.path.join(box, folder, "tmp", name)
        shutil.copyfile(path, tmp)
        target = os.path.join(box, folder, "cur", name + ":2,S")
        os.rename(tmp, target)
        os.unlink(path)
        return target

    @staticmethod
    def signature(path: str) -> str:
        with open(path, "rb") as fh:
            for line in fh.read().split(b"\n\n", 1)[0].split(b"\n"):
                if line.lower().startswith(b"x-dspam-signature:"):
                    return line.split(b":", 1)[1].strip().decode()
        raise AssertionError(f"{path} has no signature")

    def counts(self, user: str, sig_id: str) -> dict[int, tuple[int, int]]:
        """The stored (spam, innocent) counts of the tokens of a message's signature."""
        uid = self.store.uid(user, create=False)
        sig = self.store.signature(sig_id)
        return self.store.lookup(uid, list(sig.tokens))

    def stats(self, user: str):
        return self.store.stats(self.store.uid(user, create=False))
