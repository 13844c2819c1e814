"""Benchmark: online accuracy on the SpamAssassin public corpus (issue 7).

Protocol (the one bogofilter's figures in issue 7 were measured with): the corpus's 6,046
messages are shuffled with a fixed seed; the ``X-Spam-*`` headers earlier filters added are
removed; then, message by message, the message is classified with the user's current state and
afterwards learned with its true label. Everything goes through the real engine --
`spamsift.filter.engine.agent.Agent` on a fresh ``memory://`` store -- so the code path
is production's:

* ``teft`` (train everything): `Agent.process` classifies the message and learns it as the
  class it was given; when that class was wrong, `Agent.retrain` (what ``spamsift --class=...
  --source=error`` does) takes it back and learns it as the true class, with test-conditional
  training when enabled. Every message ends up learned once with its true label.
* ``toe`` (train on error): `Agent.process` only classifies (TOE acts as TEFT until 100 spam
  and 100 innocent are learned); errors are learned through `Agent.retrain` as above. A message
  classified right is not learned: "learned with its true label" means "corrected if wrong".

Printed per configuration: ham misclassified % (ham called spam, whitelisted ham counts as
right), spam misclassified % (spam not called spam), (1-ROCA)% -- one minus the area under
the ROC curve, in percent, from `Outcome.score`, the classifier's unsaturated spamminess (the
largest of the enabled algorithms' log-odds margins over their thresholds, or with
``logistic`` the model's margin plus the others' score / BAYES_SCALE over its threshold; ties
count half; a whitelisted message's score is below every other's, as in X-DSPAM-Score) --
and wall milliseconds per message for the classification plus any correction. Rows run in up
to two worker processes (``--processes``); time figures are only comparable between rows run
the same way.

Usage:
  python benchmarks/accuracy.py                    # defaults + every tokenizer x algorithm
  python benchmarks/accuracy.py --only-defaults
  python benchmarks/accuracy.py --tokenizers osb --algorithms chi-square,graham+burton \\
      --modes teft,toe --limit 2000 --processes 2
  python benchmarks/accuracy.py --tokenize-time     # tokenize + hash cost per message
  python benchmarks/accuracy.py --only-defaults --outside 300   # header scores vs in-process
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from filter_latency import corpus_dir  # noqa: E402  (unpacks the corpus when missing)

ALGORITHM_SETS = ("graham", "burton", "robinson", "chi-square", "graham+burton",
                  "graham+chi-square", "burton+chi-square", "robinson+chi-square",
                  "logistic", "graham+burton+logistic")
TOKENIZERS = ("chain", "osb", "word")
_X_SPAM = re.compile(rb"^x-spam-[^:]*:.*(?:\r?\n[ \t].*)*\r?\n", re.I | re.M)


def strip_x_spam(raw: bytes) -> bytes:
    """The message without its top-level ``X-Spam-*`` header fields (continuations too)."""
    end = raw.find(b"\n\n")
    crlf_end = raw.find(b"\r\n\r\n")
    if end >= 0:
        end += 1  # keep the last field's line ending in the head
    if crlf_end >= 0 and (end < 0 or crlf_end + 2 < end):
        end = crlf_end + 2
    if end < 0:
        end = len(raw)
    head = raw[:end]
    if b"-spam-" not in head.lower():
        return raw
    return _X_SPAM.sub(b"", head) + raw[end:]


def load_corpus(root: str, seed: int, limit: int | None) -> list[tuple[bool, bytes]]:
    """(is_spam, message bytes) in the shuffled order of the protocol."""
    with open(os.path.join(root, "index")) as fh:
        entries = [line.split(None, 1) for line in fh if line.strip()]
    random.Random(seed).shuffle(entries)
    if limit:
        entries = entries[:limit]
    out = []
    for label, path in entries:
        with open(os.path.join(root, path.strip()), "rb") as fh:
            out.append((label == "spam", strip_x_spam(fh.read())))
    return out


def roc_area(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve: P(a spam scores above a ham), ties counting half."""
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    k = 0
    while k < len(order):
        j = k
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[k]]:
            j += 1
        mid_rank = (k + j) / 2.0 + 1.0  # ties share their average rank
        rank_sum += mid_rank * sum(1 for m in range(k, j + 1) if labels[order[m]])
        k = j + 1
    n_spam = sum(labels)
    n_ham = len(labels) - n_spam
    if not n_spam or not n_ham:
        return 1.0
    return (rank_sum - n_spam * (n_spam + 1) / 2.0) / (n_spam * n_ham)


def _online(messages: list[tuple[bool, bytes]], classify, correct,
            progress: bool = False) -> dict:
    """The online protocol over `messages` with `classify(raw)` -> (called spam, score,
    signature) and `correct(signature, is_spam)` for each error: figures as a dict."""
    scores: list[float] = []
    labels: list[bool] = []
    ham_errors = spam_errors = 0
    started = time.perf_counter()
    for n, (is_spam, raw) in enumerate(messages, 1):
        said_spam, score, signature = classify(raw)
        scores.append(score)  # X-DSPAM-Score: a whitelisted message's is lowest
        labels.append(is_spam)
        if said_spam != is_spam:
            if is_spam:
                spam_errors += 1
            else:
                ham_errors += 1
            correct(signature, is_spam)
        if progress and n % 500 == 0:
            print(f"  {n} messages, {ham_errors} ham and {spam_errors} spam errors",
                  file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    n_spam = sum(labels)
    n_ham = len(labels) - n_spam
    return {
        "ham": n_ham, "spam": n_spam, "ham_errors": ham_errors, "spam_errors": spam_errors,
        "ham_pct": 100.0 * ham_errors / max(n_ham, 1),
        "spam_pct": 100.0 * spam_errors / max(n_spam, 1),
        "roca_pct": 100.0 * (1.0 - roc_area(scores, labels)),
        "ms": 1000.0 * elapsed / max(len(messages), 1),
        "scores": scores,
    }


def run_online(messages: list[tuple[bool, bytes]], changes: dict[str, object],
               progress: bool = False) -> dict[str, float]:
    """The online protocol for one configuration, in this process: figures as a dict."""
    from spamsift.filter.engine import config
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.store.base import open_store

    settings = config.Settings({}).replace(storage="memory://", **changes)
    agent = Agent(settings, open_store("memory://"))
    ctx = agent.user("bench")

    def classify(raw: bytes):
        outcome = agent.process(ctx, raw)
        return outcome.is_spam, outcome.score, outcome.signature

    def correct(signature, is_spam: bool) -> None:
        assert signature is not None
        agent.retrain(ctx.name, signature, "spam" if is_spam else "innocent")
    return _online(messages, classify, correct, progress)


def run_outside(messages: list[tuple[bool, bytes]], spamsift: str) -> dict[str, object]:
    """The online protocol through real `spamsift filter` processes, as an outsider sees it:
    one ``--stdout`` process per message on a fresh SQLite home, ranked by the stamped
    X-DSPAM-Score header, errors corrected with ``--addspam`` / ``--falsepositive`` by the
    X-DSPAM-Signature. Figures as `run_online`'s."""
    import shutil
    import subprocess
    import tempfile

    from spamsift.filter.engine.message import Message

    home = tempfile.mkdtemp(prefix="spamsift-outside-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMSIFT_")}
    env.update(SPAMSIFT_HOME=home, SPAMSIFT_SOCKET=os.path.join(home, "no-daemon"))

    def classify(raw: bytes):
        out = subprocess.run([spamsift, "filter", "--user", "bench", "--stdout"],
                             input=raw, env=env, capture_output=True, check=True).stdout
        stamped = Message(out)
        return (stamped.get_header("X-DSPAM-Result") == b"Spam",
                float(stamped.get_header("X-DSPAM-Score") or "nan"),
                (stamped.get_header("X-DSPAM-Signature") or b"").decode())

    def correct(signature, is_spam: bool) -> None:
        subprocess.run([spamsift, "filter", "--user", "bench",
                        "--addspam" if is_spam else "--falsepositive",
                        f"--signature={signature}"], env=env, capture_output=True, check=True)
    try:
        return _online(messages, classify, correct)
    finally:
        shutil.rmtree(home, ignore_errors=True)


_MESSAGES: list[tuple[bool, bytes]] = []


def _init_worker(root: str, seed: int, limit: int | None) -> None:
    _MESSAGES.extend(load_corpus(root, seed, limit))


def _run_case(case: tuple[str, dict[str, object]]) -> tuple[str, dict[str, object], dict]:
    name, changes = case
    return name, changes, run_online(_MESSAGES, changes)


def tokenize_time(messages: list[tuple[bool, bytes]], modes: tuple[str, ...]) -> None:
    from spamsift.filter.engine.tokenizer import Tokenizer, token_id

    for mode in modes:
        tok = Tokenizer(mode, ("X-Spam-*", "X-Virus-*"))
        started = time.perf_counter()
        total = 0
        for _spam, raw in messages:
            total += len(tok.tokenize(raw))
        mid = time.perf_counter()
        for _spam, raw in messages:
            freq = tok.tokenize(raw)
            [token_id(t) for t in freq]
        done = time.perf_counter()
        n = len(messages)
        print(f"tokenizer {mode:5}: tokenize {1000 * (mid - started) / n:.2f} ms/message, "
              f"tokenize+ids {1000 * (done - mid) / n:.2f} ms/message, "
              f"{total / n:.0f} distinct tokens/message")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", help="corpus folder with an `index` file "
                   "(default $SPAMSIFT_CORPUS or /tmp/spamsift-corpus)")
    p.add_argument("--seed", type=int, default=1, help="shuffle seed (default 1)")
    p.add_argument("--limit", type=int, help="only the first N shuffled messages")
    p.add_argument("--tokenizers", default=",".join(TOKENIZERS),
                   help="comma-separated tokenizers for the combination table")
    p.add_argument("--algorithms", default=",".join(ALGORITHM_SETS),
                   help="comma-separated algorithm sets, '+' joins algorithms in one set")
    p.add_argument("--modes", default="teft", help="comma-separated training modes (teft,toe)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra setting for every row, e.g. --set whitelist=false")
    p.add_argument("--only-defaults", action="store_true", help="only the default settings")
    p.add_argument("--no-defaults", action="store_true", help="skip the default-settings row")
    p.add_argument("--processes", type=int, default=2, choices=(1, 2),
                   help="worker processes for the rows (at most 2)")
    p.add_argument("--tokenize-time", action="store_true",
                   help="print the tokenize and token-id cost per message, then exit")
    p.add_argument("--progress", action="store_true", help="running error counts (1 process)")
    p.add_argument("--outside", type=int, metavar="N", default=0,
                   help="also run the first N messages through real `spamsift filter` "
                        "processes and compare (1-ROCA)%% from their X-DSPAM-Score headers "
                        "with the in-process figure on the same messages")
    return p


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    root = corpus_dir(opts.corpus)
    if not os.path.exists(os.path.join(root, "index")):
        print(f"accuracy: no corpus index in {root}", file=sys.stderr)
        return 66
    extra: dict[str, object] = {}
    for item in opts.set:
        key, _, value = item.partition("=")
        extra[key.strip()] = value.strip()
    if opts.tokenize_time:
        tokenize_time(load_corpus(root, opts.seed, opts.limit),
                      tuple(opts.tokenizers.split(",")))
        return 0
    cases: list[tuple[str, dict[str, object]]] = []
    if not opts.no_defaults:
        cases.append(("defaults", dict(extra)))
    if not opts.only_defaults:
        for mode in opts.modes.split(","):
            for tok in opts.tokenizers.split(","):
                for algs in opts.algorithms.split(","):
                    changes = dict(extra, tokenizer=tok, algorithm=algs.replace("+", " "),
                                   training_mode=mode)
                    cases.append((f"{mode:4} {tok:5} {algs}", changes))
    print(f"corpus {root}, seed {opts.seed}, limit {opts.limit or 'none'}", flush=True)
    print(f"{'configuration':40} {'ham miscl.':>16} {'spam miscl.':>16} {'(1-ROCA)%':>10} "
          f"{'ms/msg':>7}", flush=True)
    if opts.processes == 1 or len(cases) == 1:
        _init_worker(root, opts.seed, opts.limit)
        results = (_run_case(c) for c in cases)
        pool = None
    else:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(
            opts.processes, _init_worker, (root, opts.seed, opts.limit))
        results = pool.imap(_run_case, cases)
    for name, _changes, r in results:
        print(f"{name:40} {r['ham_pct']:7.3f}% ({r['ham_errors']:3}/{r['ham']}) "
              f"{r['spam_pct']:6.2f}% ({r['spam_errors']:3}/{r['spam']}) "
              f"{r['roca_pct']:10.4f} {r['ms']:7.2f}", flush=True)
    if pool is not None:
        pool.close()
        pool.join()
    if opts.outside:
        sample = load_corpus(root, opts.seed, opts.outside)
        inside = run_online(sample, dict(extra))
        spamsift = os.path.join(os.path.dirname(sys.executable), "spamsift")
        outside = run_outside(sample, spamsift)
        same = [round(a, 6) for a in inside["scores"]] == [round(b, 6)
                                                           for b in outside["scores"]]
        print(f"outside view, first {len(sample)} messages: (1-ROCA)% from X-DSPAM-Score "
              f"headers of real processes {outside['roca_pct']:.4f}, in-process "
              f"{inside['roca_pct']:.4f}; errors ham {outside['ham_errors']} / "
              f"{inside['ham_errors']}, spam {outside['spam_errors']} / "
              f"{inside['spam_errors']}; every score the same: {same}", flush=True)
    if not opts.no_defaults:
        from spamsift.filter.engine import config

        d = config.Settings({})
        print(f"defaults: tokenizer={d.tokenizer} algorithm={'+'.join(d.algorithm)} "
              f"training_mode={d.training_mode} test_conditional_training="
              f"{d.test_conditional_training} whitelist={d.whitelist}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
