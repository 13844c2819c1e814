"""``spamsift train``: bootstrap a user's filter from the mail they already have.

Strategies:

* ``corpus`` (default): learn every message once, in bulk (`spamsift.trainer.learner`): one
  transaction per `--flush` messages. This is DSPAM's ``dspam_train`` and the fast path.
* ``error``: train on error in repeated passes: classify each message with what is known so
  far and learn it only when it comes out wrong; repeat until a pass makes no error or
  `--passes` is reached. Smaller databases, and what TOE users expect.

Sources are read as streams (`spamsift.trainer.corpus`), spam and ham interleaved in proportion.
Progress goes to stderr (a rich bar: messages, rate, errors so far); the summary to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from spamsift.filter.engine import config, exitcodes, users
from spamsift.filter.engine.errors import SpamsiftError, UsageError, command_failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift train",
        description="Train a user's filter from existing mail. SOURCE is a Maildir++ (spam "
                    "folders are spam, ignored folders skipped, the rest ham), an index file "
                    "('spam PATH' / 'ham PATH' lines), or imap://user@host/FOLDER; --spam and "
                    "--ham label any source (also mbox files, MH folders and directories of "
                    "one-message files).")
    from spamsift.trainer.corpus import add_source_arguments

    add_source_arguments(parser)
    parser.add_argument("--user", required=True, help="the user to train")
    parser.add_argument("--strategy", choices=("corpus", "error"), default="corpus",
                        help="corpus: learn every message (default); error: train on error "
                             "in repeated passes")
    parser.add_argument("--passes", type=int, default=5,
                        help="most passes for --strategy error (default 5)")
    parser.add_argument("--flush", type=int, default=2000,
                        help="messages per transaction for --strategy corpus (default 2000)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="helper processes that tokenize for --strategy corpus (default: "
                             "none on one CPU; else 1 with the logistic model, whose learning "
                             "is the bottleneck, and one per CPU up to 2 without it; 0 "
                             "tokenizes in the training process)")
    parser.add_argument("--clean", action="store_true",
                        help="after training, judge every message without its own learning "
                             "(as 'spamsift reclassify') and retrain the ones that look "
                             "misfiled as the other class, leaving the files where they are; "
                             "reports what it corrected per folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--config", help="configuration file")
    return parser


class Tally:
    """What a run did, per class."""

    FIELDS = ("read", "learned", "corrected", "known", "skipped")

    def __init__(self) -> None:
        self.by_class = {k: dict.fromkeys(self.FIELDS, 0) for k in ("spam", "innocent")}
        self.errors_per_pass: list[int] = []

    def add(self, klass: str, field: str) -> None:
        self.by_class[klass][field] += 1


def _open(args, settings):
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.store.base import open_store

    store = open_store(settings.storage_url, settings.storage_timeout)
    return Agent(settings, store)


def run_corpus(agent, user: str, streams, tally: Tally, progress, flush_every: int,
               max_size: int, jobs: int | None = 0) -> None:
    from spamsift.trainer.learner import CorpusLearner
    from spamsift.trainer.corpus import interleave

    learner = CorpusLearner(agent, user, flush_every=flush_every, jobs=jobs)
    interrupted = False
    try:
        for klass, raw, _name in interleave(streams):
            tally.add(klass, "read")
            if raw is None or (max_size and len(raw) > max_size):
                tally.add(klass, "skipped")
            else:
                tally.add(klass, learner.add(raw, klass))
            progress.advance()
    except KeyboardInterrupt:
        interrupted = True
        learner.abandon()  # what is pending may hold a half-learned message
        raise
    finally:
        if not interrupted:
            learner.close()


def run_on_error(agent, user: str, streams, tally: Tally, progress, passes: int,
                 max_size: int) -> None:
    from spamsift.filter.engine.message import unstamp
    from spamsift.trainer.learner import CorpusLearner
    from spamsift.trainer.corpus import interleave

    learner = CorpusLearner(agent, user, flush_every=1, background=False)
    ctx = learner.ctx
    for number in range(1, passes + 1):
        errors = 0
        progress.new_pass(number)
        for klass, raw, _name in interleave(streams):
            if number == 1:
                tally.add(klass, "read")
            if raw is None or (max_size and len(raw) > max_size):
                if number == 1:
                    tally.add(klass, "skipped")
                progress.advance()
                continue
            scored = agent.score(ctx, agent.tokenize(ctx, unstamp(raw, ctx.settings)))
            said = "innocent" if scored.whitelisted or not scored.verdict.is_spam else "spam"
            if said != klass:
                errors += 1
                tally.add(klass, learner.add(raw, klass))
            progress.advance(errors)
        tally.errors_per_pass.append(errors)
        if errors == 0:
            break


class Progress:
    """A rich progress bar on stderr (or nothing with --quiet)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.bar = None
        self.task: Any = None
        if quiet:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]:>6.0f} msg/s"),
                       TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.bar.start()
        self.started = time.monotonic()
        self.done = 0
        self.task = self.bar.add_task("training", total=total, rate=0.0, errors=0)

    def new_pass(self, number: int) -> None:
        if self.bar is not None and number > 1:
            self.task = self.bar.add_task(f"pass {number}", total=self.total, rate=0.0,
                                          errors=0)
            self.started = time.monotonic()
            self.done = 0

    def advance(self, errors: int | None = None) -> None:
        if self.bar is None:
            return
        self.done += 1
        if self.done % 50 == 0 or self.done == self.total:
            rate = self.done / max(time.monotonic() - self.started, 1e-6)
            if errors is None:
                self.bar.update(self.task, completed=self.done, rate=rate)
            else:
                self.bar.update(self.task, completed=self.done, rate=rate, errors=errors)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def clean(store, settings, user: str, streams, jobs: int | None = None
          ) -> dict[str, dict[str, int]]:
    """Judge each message of `streams` without its own learning and retrain what looks
    misfiled (`spamsift.trainer.reclassify`'s judge, cut and correction, files left where
    they are; `jobs` tokenizing helpers, as `reclassify.scan`'s); per source folder:
    messages judged and corrected, spam and ham among them."""
    import time

    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.errors import ConflictError
    from spamsift.filter.engine.leaveoneout import Without
    from spamsift.filter.engine.mailfolders import Folder
    from spamsift.filter.engine.store.base import WatchUpdate
    from spamsift.filter.engine.watchstate import StateCarrier, record_batch
    from spamsift.trainer import reclassify
    from spamsift.trainer.corpus import interleave_streams

    view = Without(store)
    judge = Agent(settings, view)
    ctx = judge.user(user, create=False)
    folders: dict[str, dict[str, int]] = {}
    if ctx.uid is None:
        return folders
    full = ctx.settings
    ctx.settings = reclassify.judging_settings(full)
    places: dict[int, Folder] = {}

    def entries():
        for stream, raw, name in interleave_streams(streams):
            if raw is None or (settings.max_message_size
                               and len(raw) > settings.max_message_size):
                continue
            folder = places.get(id(stream))
            if folder is None:
                folder = places[id(stream)] = Folder(stream.where, "", stream.label)
                folders[stream.where] = {"judged": 0, "to_spam": 0, "to_ham": 0}
            folders[stream.where]["judged"] += 1
            yield folder, "", name, raw

    found = reclassify.scan(judge, ctx, None, settings, entries(), jobs)
    ctx.settings = full
    # The file stays where it is, now counting as the other class: its folder's class is
    # recorded for the watchers in the correction's own transaction. Without it a watcher
    # would take the class the message now counts as for where train found it, and "correct"
    # it back when it sees it in its folder (docs/watch.md).
    carrier = StateCarrier(store)
    corrector = reclassify.Corrector(Agent(settings, carrier), ctx, judge)
    for finding in reclassify.ranked(found.findings):
        now = int(time.time())
        carrier.pending = [WatchUpdate(finding.key, WatchUpdate.ANY, finding.klass, now)]
        try:
            done = corrector.correct_in_place(finding)
        finally:
            carrier.pending = []
        if done == "retrained":
            side = "to_spam" if finding.verdict == "spam" else "to_ham"
            folders[finding.folder.name][side] += 1
        elif done == "corrected already" and ctx.uid is not None:
            # By an earlier run, or another process: record the place unless one is.
            try:
                store.commit(ctx.uid, record_batch(now, [
                    WatchUpdate(finding.key, None, finding.klass, now)]))
            except ConflictError:
                pass
    return folders


def clean_summary(folders: dict[str, dict[str, int]]) -> str:
    """What `clean` corrected, a line per folder."""
    lines = ["  cleaned (judged without its own learning; retrained as the other class):"]
    for where, t in folders.items():
        lines.append(f"    {where}: {t['judged']} judged, {t['to_spam']} retrained as spam, "
                     f"{t['to_ham']} as ham")
    return "\n".join(lines) + "\n"


def summary(tally: Tally, stats, seconds: float, strategy: str, user: str) -> str:
    """The final report as plain text lines (also readable in logs)."""
    lines = [f"spamsift train: {user} ({strategy})"]
    read = 0
    for klass in ("spam", "innocent"):
        t = tally.by_class[klass]
        read += t["read"]
        lines.append(f"  {klass:<9} read {t['read']:>7}  learned {t['learned']:>7}  "
                     f"corrected {t['corrected']:>5}  already known {t['known']:>5}  "
                     f"skipped {t['skipped']:>5}")
    if tally.errors_per_pass:
        lines.append("  errors per pass: " + ", ".join(map(str, tally.errors_per_pass)))
    lines.append(f"  now learned: {stats.spam_learned} spam, {stats.innocent_learned} ham "
                 f"(corpus-fed {stats.spam_corpusfed} / {stats.innocent_corpusfed})")
    rate = read / seconds if seconds > 0 else 0.0
    lines.append(f"  {read} messages in {seconds:.1f} s ({rate:.0f} msg/s)")
    if stats.innocent_learned < 2500:
        lines.append(f"  note: {2500 - stats.innocent_learned} more ham before the filter "
                     "is mature (DSPAM's 2,500); until then expect more errors")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
        user = users.acting_for(args.user, settings)
        from spamsift.filter.engine import groups

        shared = groups.membership(settings.groups, user).shared
        if shared is not None:
            # Bulk training writes one user's rows; a shared member's are the group's.
            raise UsageError(f"{user} shares the dictionary of group {shared.name}: train "
                             f"--user {shared.name}")
        from spamsift.trainer.corpus import batch_gc, planned_streams, require_sources

        require_sources(args, "train")
        batch_gc()
        if args.passes < 1 or args.flush < 1:
            raise UsageError("--passes and --flush must be at least 1")
        if args.jobs is not None and args.jobs < 0:
            raise UsageError("--jobs must be 0 or more")
        if args.clean and args.strategy != "corpus":
            # Train on error learns a few of the messages: the rest have no learning to
            # take back and nothing to correct.
            raise UsageError("--clean corrects what corpus training learned: not with "
                             "--strategy error")
        streams = planned_streams(args, settings)
        total = sum(s.count for s in streams)
        agent = _open(args, settings)
        started = time.monotonic()
        progress = Progress(total, args.quiet)
        tally = Tally()
        try:
            if args.strategy == "corpus":
                run_corpus(agent, user, streams, tally, progress, args.flush,
                           settings.max_message_size, args.jobs)
            else:
                run_on_error(agent, user, streams, tally, progress, args.passes,
                             settings.max_message_size)
        finally:
            progress.stop()
        cleaned = None
        if args.clean:
            cleaned = clean(agent.store, settings, user, planned_streams(args, settings),
                            args.jobs)
        uid = agent.store.uid(user, create=False)
        stats = agent.store.stats(uid) if uid is not None else None
        agent.store.close()
        sys.stdout.write(summary(tally, stats, time.monotonic() - started, args.strategy,
                                 user))
        if cleaned is not None:
            sys.stdout.write(clean_summary(cleaned))
    except (SpamsiftError, OSError) as exc:
        return command_failed("train", exc)
    except KeyboardInterrupt:
        print("spamsift train: interrupted; the flushes already written stay learned, the "
              "rest was dropped (the same sources trained again count those twice)",
              file=sys.stderr)
        return exitcodes.TEMPFAIL
    return exitcodes.OK
