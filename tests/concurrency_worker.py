"""One of the processes of tests/test_concurrency.py, and the synthetic mail they share.

Kept out of the test module so that a "spawn" child imports only this (and the filter), not
pytest's collection of the test file. Everything a worker does goes through
`spamsift.filter.cli.main`, the real inline filter and retraining command, with in-memory streams.

A worker runs two phases, between barriers shared with the other seven:

1. For each of its messages (in order): filter it for its user, check that what comes out is
   the message plus X-DSPAM headers, record the result and signature, and apply the message's
   plan of corrections (retrain an error; report twice; report wrong, then take it back).
2. After every worker has recorded its signatures: all eight replay the same corrections on
   the same few signatures at the same moment ("storm"), each sequence ending in the message's
   true class, so that the compare-and-set on the signature is contended across processes.

Whatever a worker sees is written to a JSON file; the parent decides what is right.
"""

from __future__ import annotations

import io
import json
import os
import random
import time
import traceback

USERS = ("alice@example.org", "bob@example.net", "carol@example.com")
WORKERS = 8
PREFIX = b"X-DSPAM-"
OUR_HEADERS = (b"Result", b"Processed", b"Confidence", b"Probability", b"Score", b"Signature")
MAYBE_OURS = (b"Unsure",)  # only when the score is in unsure_band

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "pe", "da", "gu", "xo", "bre",
              "ston", "quil", "mar", "fen", "dro", "pli", "zu")


def _words(rng: random.Random, n: int, tag: str) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(tag + "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))))
    return sorted(out)


def corpus(seed: int, count: int) -> list[dict]:
    """`count` synthetic messages: dicts with index, user, label, raw (latin-1 str), plan.

    Plans: "fix" (correct an error only), "twice" (report the true class twice), "flip"
    (report the wrong class, then the true one), "storm" (phase 2: all workers at once).
    """
    rng = random.Random(seed)
    ham_words = _words(rng, 120, "")
    spam_words = _words(rng, 120, "")
    common = _words(rng, 80, "")
    ham_senders = {u: [f"friend{k}@{d}" for k, d in zip(range(12), ("example.org", "mail.test",
                                                                        "corp.test") * 4)]
                   for u in USERS}
    messages = []
    for index in range(count):
        user = USERS[rng.randrange(len(USERS))]
        label = "spam" if rng.random() < 0.45 else "innocent"
        # Ambiguous mail makes errors, and errors make retraining: mix the vocabularies.
        own, other = (spam_words, ham_words) if label == "spam" else (ham_words, spam_words)
        mix = rng.random() * 0.45
        body_words = []
        for _ in range(rng.randint(25, 70)):
            r = rng.random()
            pool = other if r < mix else common if r < mix + 0.2 else own
            body_words.append(rng.choice(pool))
        body_words.insert(rng.randrange(len(body_words)), f"ref{index}x{seed}")  # unique token
        if label == "spam" and rng.random() < 0.9:
            sender = f"offers{rng.randrange(40)}@promo{rng.randrange(6)}.example"
            ip = f"203.0.113.{rng.randrange(1, 40)}"
        elif label == "spam":
            sender = rng.choice(ham_senders[user])  # forged: may be whitelisted
            ip = f"203.0.113.{rng.randrange(1, 40)}"
        else:
            sender = rng.choice(ham_senders[user])
            ip = f"198.51.100.{rng.randrange(1, 20)}"
        subject = " ".join(rng.choice(own) for _ in range(rng.randint(2, 5)))
        lines = [
            (f"Received: from relay{index % 7}.example ([{ip}]) by mx.example.org "
             f"with ESMTP id {index:06d}"),
            f"From: Sender {index % 13} <{sender}>",
            f"To: {user}",
            f"Subject: {subject}",
            f"Message-ID: <{seed}.{index}@gen.example>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
        ]
        text = [" ".join(body_words[i:i + 12]) for i in range(0, len(body_words), 12)]
        eol = "\r\n" if index % 17 == 5 else "\n"
        raw = eol.join(lines) + eol + eol + eol.join(text) + eol
        r = rng.random()
        plan = "storm" if r < 0.02 else "twice" if r < 0.07 else "flip" if r < 0.12 else "fix"
        messages.append({"index": index, "user": user, "label": label, "raw": raw,
                         "plan": plan})
    return messages


def other(klass: str) -> str:
    return "innocent" if klass == "spam" else "spam"


def check_stamped(raw: bytes, out: bytes) -> tuple[str, str, str]:
    """(result, signature, problem): the output must be the input plus our headers only.

    Our headers go at the end of the header block; every other byte is the input's.
    """
    eol = b"\r\n" if b"\r\n" in raw[:200] else b"\n"
    cut = raw.index(eol + eol) + len(eol)  # end of the last header line
    head, body = raw[:cut], raw[cut:]
    if not out.startswith(head):
        return "", "", "the original headers were changed"
    if not out.endswith(body) or len(out) < len(head) + len(body):
        return "", "", "the body was changed"
    ours = out[len(head):len(out) - len(body)]
    if not ours:
        return "", "", "passed through without X-DSPAM headers (the filter gave up on it)"
    found = {}
    for line in ours.split(eol)[:-1] if ours.endswith(eol) else [ours]:
        name, _, value = line.partition(b": ")
        if not name.startswith(PREFIX) or name[len(PREFIX):] not in OUR_HEADERS + MAYBE_OURS:
            return "", "", f"unexpected line between headers and body: {line[:80]!r}"
        found[name[len(PREFIX):]] = value.decode("ascii")
    if set(found) - set(MAYBE_OURS) != set(OUR_HEADERS):
        return "", "", f"headers added: {sorted(found)}; expected {sorted(OUR_HEADERS)}"
    return found[b"Result"], found[b"Signature"], ""


class Counters:
    """Retries the product does quietly, counted by wrapping (never altering) two methods."""

    cas_conflicts = 0
    deadlocks = 0

    @classmethod
    def install(cls, backend: str) -> None:
        from spamsift.filter.engine import agent
        from spamsift.filter.engine.errors import ConflictError

        original = agent.Agent._retrain_once

        def counted(self, *args, **kwargs):
            try:
                return original(self, *args, **kwargs)
            except ConflictError:
                cls.cas_conflicts += 1
                raise

        agent.Agent._retrain_once = counted  # type: ignore[method-assign]
        if backend == "mysql":
            from spamsift.filter.engine.store import mysql, mysql_txn

            write = mysql.MySQLStore._write

            def counted_write(self, *args, **kwargs):
                try:
                    return write(self, *args, **kwargs)
                except mysql.pymysql.MySQLError as exc:
                    if mysql_txn.error_code(exc) in mysql_txn.RETRY_CODES:
                        cls.deadlocks += 1
                    raise

            mysql.MySQLStore._write = counted_write  # type: ignore[method-assign]


class Worker:
    def __init__(self, number: int, env: dict[str, str], out_dir: str) -> None:
        from spamsift.filter.cli import main

        self.main = main
        self.number = number
        self.env = env
        self.out_dir = out_dir
        self.errors: list[str] = []
        self.ops: list[dict] = []

    def run(self, argv: list[str], data: bytes = b"") -> tuple[int, bytes, str]:
        out, err = io.BytesIO(), io.StringIO()
        code = self.main(argv, stdin=io.BytesIO(data), stdout=out, stderr=err,
                         environ=dict(self.env))
        return code, out.getvalue(), err.getvalue()

    def report(self, msg: dict, klass: str, stamped: bytes | None, phase: int) -> None:
        """--addspam / --falsepositive, by --signature or from the stamped message itself."""
        flag = "--addspam" if klass == "spam" else "--falsepositive"
        argv = ["--user", msg["user"], flag]
        data = b""
        if stamped is None:
            argv.append(f"--signature={msg['signature']}")
        else:
            data = stamped
        code, _, err = self.run(argv, data)
        self.ops.append({"index": msg["index"], "klass": klass, "code": code, "phase": phase,
                         "t": time.time()})
        if code != 0:
            self.errors.append(f"worker {self.number}: {flag} of message {msg['index']} "
                               f"exited {code}: {err.strip()[:300]}")

    def phase1(self, messages: list[dict]) -> list[dict]:
        records = []
        for msg in messages:
            raw = msg["raw"].encode("latin-1")
            code, out, err = self.run(["--user", msg["user"], "--stdout",
                                       "--deliver=innocent,spam"], raw)
            result, signature, problem = check_stamped(raw, out) if code == 0 else ("", "", "")
            if code != 0 or problem:
                self.errors.append(f"worker {self.number}: message {msg['index']}: exit "
                                   f"{code}, {problem or 'no output'}; stderr: "
                                   f"{err.strip()[:300]}")
                continue
            record = {k: msg[k] for k in ("index", "user", "label", "plan")}
            record.update(result=result, signature=signature, worker=self.number)
            records.append(record)
            label = msg["label"]
            got = "spam" if result == "Spam" else "innocent"
            # Alternate the two ways a user reports: the signature alone, or the message.
            via = out if msg["index"] % 2 else None
            if msg["plan"] == "twice":
                self.report(record, label, via, 1)
                self.report(record, label, None, 1)
            elif msg["plan"] == "flip":
                self.report(record, other(label), via, 1)
                self.report(record, label, via, 1)
            elif got != label and msg["plan"] == "fix":  # "storm": corrected in phase 2
                self.report(record, label, via, 1)
        return records

    def phase2(self, records: list[dict]) -> None:
        """Every worker reports the same storm signatures in the same order, at once."""
        for record in sorted(records, key=lambda r: r["index"]):
            label = record["label"]
            steps = {0: [label], 1: [other(label), label], 2: [label, label],
                     3: [other(label), other(label), label]}[(self.number + record["index"]) % 4]
            for klass in steps:
                self.report(record, klass, None, 2)


def work(number: int, messages: list[dict], env: dict[str, str], out_dir: str,
         backend: str, barrier, process_env: dict[str, str] | None = None) -> None:
    """The body of one spawned process; results go to out_dir/worker-N.json.

    `process_env` is added to this process's own environment (the filter's `environ` is
    `env`): the test uses it to keep OpenSSL from loading the system CA bundle, see
    test_concurrency.WORKER_PROCESS_ENV.
    """
    os.environ.update(process_env or {})
    started = time.time()
    worker = None
    records: list[dict] = []
    result_path = os.path.join(out_dir, f"worker-{number}.json")
    try:
        Counters.install(backend)
        worker = Worker(number, env, out_dir)
        barrier.wait(timeout=120)  # everyone imported and ready: start together
        records = worker.phase1(messages)
        with open(os.path.join(out_dir, f"records-{number}.json"), "w") as fh:
            json.dump(records, fh)
        barrier.wait(timeout=300)  # every signature is known
        storm = []
        for n in range(WORKERS):
            with open(os.path.join(out_dir, f"records-{n}.json")) as fh:
                storm += [r for r in json.load(fh) if r["plan"] == "storm"]
        worker.phase2(storm)
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the test
        errors = (worker.errors if worker else []) + [f"worker {number} crashed:\n"
                                                      + traceback.format_exc()]
        barrier.abort()  # do not leave the others waiting for us
    else:
        errors = worker.errors
    with open(result_path, "w") as fh:
        json.dump({"records": records, "ops": worker.ops if worker else [], "errors": errors,
                   "seconds": time.time() - started, "cas_conflicts": Counters.cas_conflicts,
                   "deadlocks": Counters.deadlocks}, fh)
