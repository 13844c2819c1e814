"""``spamsift evaluate``: how accurate will this user's filter be, before it goes live?

Two honest estimates, neither touching the user's stored data (everything runs on a private
memory store; only the user's preferences are read, so their settings are the ones tested):

* **Chronological replay** — what the user would have experienced: messages in Date order, each
  one filtered exactly as ``spamsift filter`` would (`Agent.process`, with the user's training
  mode), and every mistake then reported as the user would (`Agent.retrain`, source error).
  Because it is the filter's own code path, its figures match a replay through real
  ``spamsift filter`` processes (benchmarks/evaluate_vs_filter.py checks that).
* **Label noise** — each message judged by a filter trained on all the others (leave-one-out,
  as ``spamsift reclassify`` judges it): per folder, how many look like the other class, so
  an error rate measured against labels that are themselves wrong can be read for what it is.
* **k-fold cross-validation** — the messages dealt round-robin into k folds; each fold is
  classified by a filter trained (as corpus) on the other k-1. This estimates the accuracy of a
  *bootstrapped* user (`spamsift train`) rather than one who learns as mail comes. With the
  Bayesian algorithms alone the counts of k-1 folds are their sum, so every message is
  tokenized three times whatever k is. The logistic model's weights are not a sum (each step
  depends on what was learned before it), so with `logistic` enabled each fold's filter is
  trained message by message, in reading order, as `spamsift train` would: k times the
  learning work, for figures of the algorithms the user will actually run.

Reported: ham and spam misclassified %, (1-ROCA)% from the per-message scores, a score
histogram, the learning curve (errors per 100 messages of the replay), and the threshold at
which at most 0.1% of ham would be called spam.

Messages are spooled to one temporary file while the sources are read (the replay needs them in
Date order, and sources are streams); memory holds four numbers per message, plus the token
counts of the model under test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from spamsift.filter.engine import config, exitcodes, users
from spamsift.filter.engine.errors import SpamsiftError, UsageError, command_failed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

    from spamsift.filter.engine.store.base import Batch, Stats
    from spamsift.filter.engine.store.signature import Signature

FP_TARGET = 0.001  # the threshold report: at most 0.1% of ham called spam


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift evaluate",
        description="Estimate a user's accuracy on existing mail, without changing the "
                    "user's data: a chronological replay and k-fold cross-validation. "
                    "Sources as for 'spamsift train'.")
    from spamsift.trainer.corpus import add_source_arguments

    add_source_arguments(parser)
    parser.add_argument("--user", required=True,
                        help="whose settings to evaluate (their data is not touched)")
    parser.add_argument("--folds", type=int, default=5,
                        help="k for cross-validation (default 5; 0 skips it)")
    parser.add_argument("--no-replay", action="store_true", help="skip the replay")
    parser.add_argument("--no-noise", action="store_true",
                        help="skip the label-noise estimate (how many messages of each "
                             "folder look misfiled)")
    parser.add_argument("--order", choices=("date", "input"), default="date",
                        help="replay order: by Date header (default) or as read")
    parser.add_argument("--order-file", metavar="FILE",
                        help="write the replay order ('spam|ham NAME' lines) to FILE")
    parser.add_argument("--group", metavar="NAME",
                        help="also replay as a new member of this merged or global group "
                             "(its data is read from the store, never written): the user "
                             "with and without the group (docs/groups.md)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--config", help="configuration file")
    return parser


# -- figures ---------------------------------------------------------------------------------
def roc_area(scored: list[tuple[float, bool]]) -> float:
    """Area under the ROC curve of (score, is_spam) pairs: the chance that a random spam
    scores above a random ham, ties counting half (Mann-Whitney)."""
    spam = sum(1 for _s, is_spam in scored if is_spam)
    ham = len(scored) - spam
    if not spam or not ham:
        return 1.0
    ordered = sorted(scored, key=lambda p: p[0])
    rank_sum = 0.0
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += mean_rank * sum(1 for k in range(i, j) if ordered[k][1])
        i = j
    return (rank_sum - spam * (spam + 1) / 2) / (spam * ham)


def threshold_for(scored: list[tuple[float, bool]], fp_rate: float = FP_TARGET):
    """The lowest score threshold (spam when score > t) calling at most `fp_rate` of ham
    spam, and the share of spam it would then miss: (t, ham %, spam missed %)."""
    hams = sorted((s for s, is_spam in scored if not is_spam), reverse=True)
    spams = [s for s, is_spam in scored if is_spam]
    if not hams or not spams:
        return None
    allowed = int(fp_rate * len(hams))
    t = hams[allowed] if allowed < len(hams) else hams[-1]
    fp = sum(1 for s in hams if s > t)
    missed = sum(1 for s in spams if s <= t)
    return t, 100.0 * fp / len(hams), 100.0 * missed / len(spams)


def histogram(probabilities: list[tuple[float, bool]], bins: int = 10) -> list[dict]:
    """Messages per tenth of the filter's spam probability (the X-DSPAM-Probability header)."""
    rows = [{"from": i / bins, "to": (i + 1) / bins, "spam": 0, "ham": 0} for i in range(bins)]
    for p, is_spam in probabilities:
        rows[min(max(int(p * bins), 0), bins - 1)]["spam" if is_spam else "ham"] += 1
    return rows


def score_figures(results: list[tuple[bool, bool, float, float]],
                  band: tuple[float, float] | tuple[()]) -> dict:
    """X-DSPAM-Score quantiles of ham and spam, and what `band` (unsure_band) would hold:
    what a site needs to choose its own thresholds."""
    out: dict = {}
    for label, is_spam in (("ham", False), ("spam", True)):
        scores = sorted(r[2] for r in results if r[0] == is_spam)
        out[f"{label}_quantiles"] = ({str(q): round(scores[min(len(scores) - 1,
                                                              int(q * len(scores)))], 6)
                                      for q in (0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0)}
                                     if scores else {})
    if band:
        low, high = band
        inside = [r for r in results if low <= r[2] < high]
        out["unsure_band"] = {
            "band": [low, high], "ham": sum(1 for r in inside if not r[0]),
            "spam": sum(1 for r in inside if r[0]),
            "spam_misclassified_inside": sum(1 for r in inside if r[0] and not r[1])}
    return out


def figures(results: list[tuple[bool, bool, float, float]],
            band: tuple[float, float] | tuple[()] = ()) -> dict:
    """results: (is_spam, called_spam, score, probability) per message, in order."""
    spam = sum(1 for r in results if r[0])
    ham = len(results) - spam
    fn = sum(1 for r in results if r[0] and not r[1])
    fp = sum(1 for r in results if not r[0] and r[1])
    scored = [(r[2], r[0]) for r in results]
    area = roc_area(scored)
    curve = []
    for start in range(0, len(results), 100):
        chunk = results[start:start + 100]
        curve.append(round(100.0 * sum(1 for r in chunk if r[0] != r[1]) / len(chunk), 2))
    limit = threshold_for(scored)
    return {
        "messages": len(results), "spam": spam, "ham": ham,
        "ham_misclassified": fp, "spam_misclassified": fn,
        "ham_misclassified_pct": round(100.0 * fp / ham, 4) if ham else 0.0,
        "spam_misclassified_pct": round(100.0 * fn / spam, 4) if spam else 0.0,
        "one_minus_roca_pct": round(100.0 * (1.0 - area), 4),
        "histogram": histogram([(r[3], r[0]) for r in results]),
        "learning_curve": curve,
        "threshold_fp_0.1pct": None if limit is None else {
            "threshold": limit[0], "ham_misclassified_pct": round(limit[1], 4),
            "spam_misclassified_pct": round(limit[2], 4)},
        "score": score_figures(results, band),
    }


def result_of(is_spam: bool, outcome) -> tuple[bool, bool, float, float]:
    """One message's entry for `figures`. The ROC ranks by the classifier's unsaturated
    score: DSPAM's probability is 0.0000 or 1.0000 for most mail, and ties rank half."""
    return is_spam, outcome.is_spam, float(outcome.score), float(outcome.probability)


# -- the spool -------------------------------------------------------------------------------
class Spool:
    """Messages written once to a temporary file and read back in any order."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="spamsift-evaluate-")
        # date, seq, offset, length, label, name, the folder (source) it was read from
        self.entries: list[tuple[float, int, int, int, str, str, str]] = []

    def add(self, label: str, raw: bytes, name: str, when: float, where: str = "") -> None:
        offset = self.file.seek(0, 2)
        self.file.write(raw)
        self.entries.append((when, len(self.entries), offset, len(raw), label, name, where))

    def read(self, entry) -> bytes:
        self.file.seek(entry[2])
        return self.file.read(entry[3])

    def ordered(self, by_date: bool):
        return sorted(self.entries) if by_date else list(self.entries)


def message_date(raw: bytes) -> float | None:
    from email.utils import parsedate_to_datetime

    from spamsift.filter.engine.tokenizer import parse_top_headers

    for name, value in parse_top_headers(raw[:65536]):
        if name.lower() == "date":
            try:
                return parsedate_to_datetime(value.strip()).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
    return None


# -- the two estimates -----------------------------------------------------------------------
def replay(settings, spool: Spool, user: str, order, progress,
           store=None) -> list[tuple[bool, bool, float, float]]:
    """Filter each message as `spamsift filter` would, then report its errors (on `store`,
    default a fresh memory store)."""
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.store.memory import MemoryStore

    agent = Agent(settings, store if store is not None else MemoryStore())
    ctx = agent.user(user, create=True)
    results = []
    for entry in order:
        raw = spool.read(entry)
        is_spam = entry[4] == "spam"
        outcome = agent.process(ctx, raw)
        called_spam = outcome.is_spam
        if called_spam != is_spam and outcome.signature is not None:
            agent.retrain(user, outcome.signature, entry[4])
        results.append(result_of(is_spam, outcome))
        progress()
    return results


class FoldView:
    """A read-only `AgentStore`: all training counts minus those of the fold under test.
    Cross-validation only classifies: a write is a bug."""

    def __init__(self, totals: dict[int, tuple[int, int]], fold: dict[int, tuple[int, int]],
                 stats: Stats) -> None:
        self.totals = totals
        self.fold = fold
        self._stats = stats

    def uid(self, username: str, create: bool = True) -> int:
        return 1

    def username(self, uid: int) -> str | None:
        return "evaluate"

    def preferences(self, uid: int) -> dict[str, str]:
        return {}

    def stats(self, uid: int) -> Stats:
        return self._stats

    def signature(self, signature_id: str) -> Signature | None:
        return None

    def commit(self, uid: int, batch: Batch) -> None:
        raise AssertionError("cross-validation only classifies")

    def commit_group(self, items: list[tuple[int, Batch]]) -> None:
        raise AssertionError("cross-validation only classifies")

    def lookup(self, uid: int, tokens: Collection[int]) -> dict[int, tuple[int, int]]:
        found = {}
        totals, fold = self.totals, self.fold
        for t in tokens:
            row = totals.get(t)
            if row is None:
                continue
            minus = fold.get(t)
            s, i = (row[0] - minus[0], row[1] - minus[1]) if minus else row
            if s or i:
                found[t] = (s, i)
        return found

    def weights(self, uid: int, tokens: Collection[int]) -> dict[int, float]:
        return {}  # the counting path only: the logistic model trains a filter per fold

    def counts_and_weights(self, uid: int, tokens: Collection[int]
                           ) -> tuple[dict[int, tuple[int, int]], dict[int, float]]:
        return self.lookup(uid, tokens), {}

    def counts_and_weights_of(self, uids: Collection[int], tokens: Collection[int]
                              ) -> dict[int, tuple[dict[int, tuple[int, int]],
                                                   dict[int, float]]]:
        tokens = list(tokens)
        return {uid: self.counts_and_weights(uid, tokens) for uid in uids}


def cross_validate(settings, spool: Spool, k: int, progress) -> list[tuple[bool, bool, float, float]]:
    """k-fold: each fold classified by a corpus-trained filter of the other folds."""
    from spamsift.filter.engine.agent import Agent, UserContext
    from spamsift.filter.engine.learning import CorpusCounts, tokenize
    from spamsift.filter.engine.store.base import Stats
    from spamsift.filter.engine.tokenizer import Tokenizer

    tokenizer = Tokenizer(settings.tokenizer, settings.ignore_headers, settings.header_prefix)

    def count(members, after_each=None) -> tuple[dict[int, tuple[int, int]], dict[str, int]]:
        """Per token (spam, innocent) messages of `members`, and messages per class: what
        corpus training of them would store."""
        counts = CorpusCounts()
        for entry in members:
            counts.add(entry[4], tokenize(tokenizer, spool.read(entry), None))
            if after_each is not None:
                after_each()
        return counts.rows(), dict(counts.messages)

    from spamsift.filter.engine import logistic

    if logistic.enabled(settings.algorithm):
        return _cross_validate_trained(settings, spool, k, progress)
    entries = spool.ordered(by_date=False)
    folds = [[e for n, e in enumerate(entries) if n % k == f] for f in range(k)]
    totals, count_all = count(entries, progress)
    results = []
    for members in folds:
        fold, fcount = count(members)
        stats = Stats()
        stats.spam_learned = count_all["spam"] - fcount["spam"]
        stats.innocent_learned = count_all["innocent"] - fcount["innocent"]
        agent = Agent(settings, FoldView(totals, fold, stats))
        ctx = UserContext("evaluate", 1, {}, settings)
        for entry in members:
            outcome = agent.process(ctx, spool.read(entry), classify_only=True)
            results.append(result_of(entry[4] == "spam", outcome))
            progress()
    return results


def label_noise(settings, spool: Spool, progress) -> dict:
    """Per folder (source), how many of its messages look misfiled: judged by a corpus
    training on all the other messages, with `spamsift.trainer.reclassify`'s judge and
    default cut."""
    from spamsift.filter.engine.agent import Agent, UserContext
    from spamsift.filter.engine.learning import CorpusCounts, tokenize
    from spamsift.filter.engine.store.base import Stats
    from spamsift.filter.engine.tokenizer import Tokenizer
    from spamsift.trainer.reclassify import MIN_EVIDENCE, judge, judging_settings

    tokenizer = Tokenizer(settings.tokenizer, settings.ignore_headers, settings.header_prefix)
    entries = spool.ordered(by_date=False)
    counts = CorpusCounts()
    for entry in entries:
        counts.add(entry[4], tokenize(tokenizer, spool.read(entry), None))
        progress()
    totals, messages = counts.rows(), dict(counts.messages)
    judging = judging_settings(settings)
    view = FoldView(totals, {}, Stats())
    agent = Agent(judging, view)
    ctx = UserContext("evaluate", 1, {}, judging)
    folders: dict[str, dict] = {}
    for entry in entries:
        klass, where = entry[4], entry[6]
        message = tokenize(tokenizer, spool.read(entry), None)
        own = (1, 0) if klass == "spam" else (0, 1)
        view.fold = dict.fromkeys(message.ids.values(), own)
        stats = Stats()
        stats.spam_learned = messages.get("spam", 0) - own[0]
        stats.innocent_learned = messages.get("innocent", 0) - own[1]
        view._stats = stats
        row = folders.setdefault(where, {"folder": where, "class": klass, "messages": 0,
                                         "look_misfiled": 0})
        row["messages"] += 1
        judged = judge(agent, ctx, message, klass)
        if judged is not None and abs(judged[1]) >= MIN_EVIDENCE:
            row["look_misfiled"] += 1
        progress()
    for row in folders.values():
        row["look_misfiled_pct"] = round(100.0 * row["look_misfiled"] / row["messages"], 2)
    return {"min_score": MIN_EVIDENCE, "folders": list(folders.values())}


def _cross_validate_trained(settings, spool: Spool, k: int,
                            progress) -> list[tuple[bool, bool, float, float]]:
    """k-fold with a filter per fold, trained message by message on the other folds
    (`Agent.learn` as corpus: what `spamsift train` does with the logistic model)."""
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.store.memory import MemoryStore

    entries = spool.ordered(by_date=False)
    results = []
    for f in range(k):
        agent = Agent(settings, MemoryStore())
        ctx = agent.user("evaluate", create=True)
        for n, entry in enumerate(entries):
            if n % k != f:
                agent.learn(ctx, spool.read(entry), entry[4])
                progress()
        for entry in entries[f::k]:
            outcome = agent.process(ctx, spool.read(entry), classify_only=True)
            results.append(result_of(entry[4] == "spam", outcome))
            progress()
    return results


def fold_runs(settings, k: int) -> int:
    """How many passes over the messages k-fold takes (for the progress bar)."""
    from spamsift.filter.engine import logistic

    return k if logistic.enabled(settings.algorithm) else 2


# -- output ----------------------------------------------------------------------------------
def render(report: dict, console) -> None:
    from rich.table import Table

    noise = report.get("label_noise")
    if noise is not None:
        table = Table(title=f"{report['user']}: label noise (each message judged by the "
                            "others; reclassify's judge and cut)")
        for column in ("folder", "class", "messages", "look misfiled", "%"):
            table.add_column(column, justify="left" if column == "folder" else "right")
        for row in noise["folders"]:
            table.add_row(row["folder"], row["class"], str(row["messages"]),
                          str(row["look_misfiled"]), f"{row['look_misfiled_pct']:.2f}")
        console.print(table)

    for name in ("replay", "replay_with_group", "cross_validation"):
        fig = report.get(name)
        if fig is None:
            continue
        title = ("chronological replay" + (" without groups" if "group" in report else "")
                 if name == "replay" else
                 f"chronological replay as a new member of {report.get('group')}"
                 if name == "replay_with_group" else
                 f"{report['folds']}-fold cross-validation ("
                 + " ".join(fig.get("algorithms", ())) + ")")
        table = Table(title=f"{report['user']}: {title} ({fig['messages']} messages, "
                            f"{fig['spam']} spam, {fig['ham']} ham)")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row("ham misclassified",
                      f"{fig['ham_misclassified_pct']:.3f}% ({fig['ham_misclassified']})")
        table.add_row("spam misclassified",
                      f"{fig['spam_misclassified_pct']:.3f}% ({fig['spam_misclassified']})")
        table.add_row("(1-ROCA)%", f"{fig['one_minus_roca_pct']:.4f}")
        limit = fig["threshold_fp_0.1pct"]
        if limit is not None:
            table.add_row("threshold for <= 0.1% ham errors",
                          f"score > {limit['threshold']:.4g}: ham {limit['ham_misclassified_pct']:.3f}%"
                          f", spam missed {limit['spam_misclassified_pct']:.2f}%")
        console.print(table)
        hist = Table(title="score histogram", show_edge=False)
        for column in ("score", "ham", "spam"):
            hist.add_column(column, justify="right")
        for row in fig["histogram"]:
            hist.add_row(f"{row['from']:.1f}-{row['to']:.1f}", str(row["ham"]), str(row["spam"]))
        console.print(hist)
        if name.startswith("replay"):
            console.print("learning curve (errors % per 100 messages): "
                          + " ".join(f"{v:g}" for v in fig["learning_curve"]))
    console.print(f"{report['seconds']:.1f} s, {report['ms_per_message']:.2f} ms a message")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
        user = users.acting_for(args.user, settings)
        from spamsift.trainer.corpus import (batch_gc, interleave_streams, planned_streams,
                                             require_sources)
        from spamsift.trainer.train import Progress

        require_sources(args, "evaluate")
        batch_gc()
        if args.folds == 1 or args.folds < 0:
            raise UsageError("--folds must be 0 (skip) or at least 2")
        settings = _user_settings(settings, user)
        streams = planned_streams(args, settings)
        started = time.monotonic()
        spool = Spool()
        last = 0.0
        for stream, raw, name in interleave_streams(streams):
            label = stream.label
            if raw is None or (settings.max_message_size and len(raw) > settings.max_message_size):
                continue
            when = message_date(raw)
            last = when if when is not None else last
            spool.add(label, raw, name, last, stream.where)
        if args.folds > len(spool.entries):
            # k folds of n messages train k filters on n messages each (k x n learning):
            # more folds than messages only makes empty folds, slowly.
            raise UsageError(f"--folds {args.folds}: more folds than the {len(spool.entries)} "
                             "messages read")
        report: dict = {"user": user, "folds": args.folds, "settings": {
            "tokenizer": settings.tokenizer, "algorithm": list(settings.algorithm),
            "training_mode": settings.training_mode}}
        if args.group and args.no_replay:
            raise UsageError("--group needs the replay (not --no-replay)")
        runs = ((0 if args.no_replay else 1 + bool(args.group))
                + (fold_runs(settings, args.folds) if args.folds else 0)
                + (0 if args.no_noise else 2))
        progress = Progress(len(spool.entries) * runs, args.quiet)
        try:
            if not args.no_replay:
                order = spool.ordered(by_date=args.order == "date")
                if args.order_file:
                    with open(args.order_file, "w") as f:
                        for entry in order:
                            f.write(("spam" if entry[4] == "spam" else "ham") + " "
                                    + entry[5] + "\n")
                band = tuple(settings.unsure_band)
                report["replay"] = figures(replay(settings.with_groups(()) if args.group
                                                  else settings, spool, user, order,
                                                  progress.advance), band)
                if args.group:  # the replay again, as a new member of the group
                    from spamsift.trainer.evaluate_group import as_member

                    report["group"] = args.group
                    with as_member(settings, args.group) as (member, store):
                        report["replay_with_group"] = figures(replay(
                            member, spool, user, order, progress.advance, store), band)
            if not args.no_noise:
                report["label_noise"] = label_noise(settings, spool, progress.advance)
            if args.folds:
                report["cross_validation"] = figures(cross_validate(
                    settings, spool, args.folds, progress.advance), tuple(settings.unsure_band))
                report["cross_validation"]["algorithms"] = list(settings.algorithm)
        finally:
            progress.stop()
        seconds = time.monotonic() - started
        report["seconds"] = round(seconds, 2)
        report["ms_per_message"] = round(1000.0 * seconds / max(len(spool.entries) * max(runs, 1), 1), 3)
        if args.json:
            json.dump(report, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            from rich.console import Console

            render(report, Console())
    except (SpamsiftError, OSError) as exc:
        return command_failed("evaluate", exc)
    return exitcodes.OK


def _user_settings(settings, user: str):
    """The user's effective settings: their stored preferences when the store can say."""
    from spamsift.filter.engine.errors import NoDatabaseError, StorageError
    from spamsift.filter.engine.store.base import open_store

    try:
        # Without create: no database yet is no preferences, not a new database.
        store = open_store(settings.storage_url, settings.storage_timeout, create=False)
    except (NoDatabaseError, StorageError):
        return settings
    try:
        uid = store.uid(user, create=False)
        return settings.for_user(store.preferences(uid) if uid is not None else {})
    except StorageError:
        return settings
    finally:
        store.close()
