"""``spamsift stats``: DSPAM's ``dspam_stats`` lines, for scripts and people used to them.

Output is dspam_stats 3.10.2's, format for format::

    alice             TP:    12 TN:    40 FP:     1 FN:     2 SC:     0 NC:     0
                      SHR:   85.71%       HSR:    2.44%       OCA:   94.55%      (with -S)

``-H`` prints the long form (each figure on its own line, with TL, training left, and PPV,
including dspam_stats' eight spaces before each tab). The figures are defined in
`spamsift.trainer.report_data`. Differences from dspam_stats: a rate with nothing to divide by
prints as DSPAM's -S does (SHR 100, HSR 0, OCA 100) in both forms (-H printed a 100 % ham strike
rate for a user without ham); ``-t`` (a TOTAL line) works (3.10.2 rejected it); an untrusted
user without names gets their own line (dspam_stats refused).

Snapshots (``-r``/``--reset``, ``-s``/``--since-reset``): dspam_stats kept ``USER.rstats``
files in its home, which on a cluster would differ per node. spamsift keeps the snapshot in
the shared store, as the preference ``stats_reset`` = ``YYYY-MM-DD TP,TN,FN,FP,SC,NC`` (the
date it was taken, then rstats' six numbers in rstats' order); `spamsift prefs USER` shows
it. ``--since DATE`` (or ``--since 7d``) instead sums the per-day history from that date,
which needs no snapshot at all.
"""

from __future__ import annotations

import argparse
import sys

from spamsift.filter.engine import config, users
from spamsift.filter.engine.errors import SpamsiftError, UsageError, command_failed
from spamsift.trainer.report_data import (Figures, first_day, shown, today_string, training_left,
                                 write_out)

SNAPSHOT_KEY = "stats_reset"
PREFERENCE_MAX = 64  # dspam_preferences.value is VARCHAR(64)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift stats",
        description="Print DSPAM's statistics lines (dspam_stats) for users; no USER: every "
                    "user (trusted callers) or your own.")
    parser.add_argument("users", nargs="*", metavar="USER")
    parser.add_argument("-H", dest="human", action="store_true",
                        help="long, human-friendly form (with TL and PPV)")
    parser.add_argument("-S", dest="rates", action="store_true",
                        help="add spam hit rate, ham strike rate and overall accuracy")
    parser.add_argument("-r", "--reset", action="store_true",
                        help="take a snapshot after printing (for -s later)")
    parser.add_argument("-s", "--since-reset", action="store_true",
                        help="figures since the last snapshot (-r)")
    parser.add_argument("--since", metavar="WHEN",
                        help="figures from the per-day history since a date (YYYY-MM-DD), "
                             "or the last N days (Nd)")
    parser.add_argument("-t", "--total", action="store_true",
                        help="add a TOTAL of the users shown")
    parser.add_argument("--groups", action="store_true",
                        help="add a line per configured group: its type, members and what it "
                             "contributed (docs/groups.md)")
    parser.add_argument("--config", help="configuration file")
    parser.add_argument("--storage", help="storage URL (default: the configuration's)")
    return parser


def since_day(when: str, clock: float | None = None) -> str:
    """The first day of `--since`: a date, or ``Nd`` for the last N days (today included)."""
    import time

    if when.endswith("d") and when[:-1].isdigit() and int(when[:-1]) > 0:
        return first_day(today_string(clock), int(when[:-1]))
    try:
        time.strptime(when, "%Y-%m-%d")
    except ValueError:
        raise UsageError(f"--since takes YYYY-MM-DD or a number of days like 7d, "
                         f"not {when[:40]!r}") from None
    return when


def rates(f: Figures) -> tuple[float, float, float]:
    """SHR, HSR, OCA with dspam_stats -S's values when there is nothing to divide by."""
    shr = f.spam_hit_rate
    hsr = f.ham_strike_rate
    oca = f.accuracy
    return (100.0 if shr is None else shr, 0.0 if hsr is None else hsr,
            100.0 if oca is None else oca)


def short_lines(name: str, f: Figures, with_rates: bool) -> list[str]:
    name = shown(name)
    lines = [f"{name:<16}  TP:{f.tp:6d} TN:{f.tn:6d} FP:{f.fp:6d} FN:{f.fn:6d} "
             f"SC:{f.sc:6d} NC:{f.nc:6d}"]
    if with_rates:
        shr, hsr, oca = rates(f)
        lines.append(" " * 18 + f"SHR: {shr: 7.2f}%       HSR: {hsr: 7.2f}%       "
                                f"OCA: {oca: 7.2f}%")
    return lines


def long_lines(name: str, f: Figures, left: int) -> list[str]:
    name = shown(name)
    shr, hsr, oca = rates(f)
    ppv = f.ppv
    pad = " " * 8  # dspam_stats' format string carried its source indentation: kept as is
    return [
        f"{name}:",
        f"{pad}\tTP True Positives:                {f.tp:6d}",
        f"{pad}\tTN True Negatives:                {f.tn:6d}",
        f"{pad}\tFP False Positives:               {f.fp:6d}",
        f"{pad}\tFN False Negatives:               {f.fn:6d}",
        f"{pad}\tSC Spam Corpusfed:                {f.sc:6d}",
        f"{pad}\tNC Nonspam Corpusfed:             {f.nc:6d}",
        f"{pad}\tTL Training Left:                 {left:6d}",
        f"{pad}\tSHR Spam Hit Rate               {shr: 7.2f}%",
        f"{pad}\tHSR Ham Strike Rate:            {hsr: 7.2f}%",
        f"{pad}\tPPV Positive predictive value:  {100.0 if ppv is None else ppv: 7.2f}%",
        f"{pad}\tOCA Overall Accuracy:           {oca: 7.2f}%",
        "",
    ]


def parse_snapshot(value: str | None) -> tuple[str, Figures] | None:
    """(date taken, figures) from a `SNAPSHOT_KEY` preference; None if absent or unreadable."""
    if not value:
        return None
    words = value.split()
    base = 16 if words[:1] == ["x"] else 10
    try:
        tp, tn, fn, fp, sc, nc = (int(v, base) for v in words[-1].split(","))
    except ValueError:
        return None
    day = words[0] if len(words) == 2 and base == 10 else ""
    return day, Figures(tp, tn, fp, fn, sc, nc)


def format_snapshot(day: str, f: Figures) -> str:
    """``DATE TP,TN,FN,FP,SC,NC``; counts too large for that to fit the preference's 64
    characters are written as ``x`` and hexadecimal numbers, without the date."""
    values = (f.tp, f.tn, f.fn, f.fp, f.sc, f.nc)
    value = f"{day} " + ",".join(map(str, values))
    if len(value) <= PREFERENCE_MAX:
        return value
    return "x " + ",".join(f"{v:x}" for v in values)


def _unfiltered_by_user(home: str, clock: float | None) -> dict[str, str]:
    """User -> "N (reason n, ...)" of the last 7 days' messages not filtered (passlog), for
    the -H listing (DSPAM's short lines stay as dspam_stats prints them)."""
    import time

    from spamsift.filter.engine import passlog

    now = time.time() if clock is None else clock
    by_user: dict[str, dict[str, int]] = {}
    try:
        found = passlog.counts(home, now - 7 * 86400)
    except OSError as exc:
        import sys

        print(f"spamsift stats: cannot count unfiltered mail: {exc.filename}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return {}
    for (_day, reason, user), n in found.items():
        reasons = by_user.setdefault(user, {})
        reasons[reason] = reasons.get(reason, 0) + n
    return {user: f"{sum(r.values())} ({', '.join(f'{k} {v}' for k, v in sorted(r.items()))})"
            for user, r in by_user.items()}


def main(argv: list[str] | None = None, caller: users.Caller | None = None,
         clock: float | None = None, out=None) -> int:
    """`caller` (who asks), `clock` and `out` (a text stream) are test seams."""
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    from spamsift.filter.engine.store.base import STAT_FIELDS, open_store

    try:
        if args.since and args.since_reset:
            raise UsageError("--since and -s/--since-reset exclude each other")
        first_day = since_day(args.since, clock) if args.since else None
        settings = config.load(args.config)
        caller = caller or users.this_process()
        names = [users.validate(n) for n in args.users]
        users.authorize(caller, names, settings.trusted_users)
        store = open_store(args.storage or settings.storage_url, settings.storage_timeout,
                           create=False)
        try:
            if names:
                wanted = [(store.uid(n, create=False), n) for n in names]
            elif users.is_trusted(caller, settings.trusted_users):
                wanted = [(uid, name) for uid, name in store.users()]
            else:
                own = users.validate(caller.name)
                wanted = [(store.uid(own, create=False), own)]
            zero = (0,) * len(STAT_FIELDS)
            # One query for every user's counters (and snapshots) rather than one per user.
            if names:
                counters_of = {uid: store.stats(uid).as_tuple() for uid, _n in wanted
                               if uid is not None}
            else:
                counters_of = {uid: s.as_tuple() for uid, s in store.all_stats().items()}
            snapshots = store.preference_values(SNAPSHOT_KEY) if args.since_reset else {}
            history: dict[int, list[int]] = {}
            if first_day is not None:
                for day_uid, _day, deltas in store.daily_stats(first_day):
                    sums = history.setdefault(day_uid, [0] * len(STAT_FIELDS))
                    for i, d in enumerate(deltas):
                        sums[i] += d
            total = Figures()
            total_counters = [0] * len(STAT_FIELDS)
            lines: list[str] = []
            unfiltered = _unfiltered_by_user(settings.home, clock) if args.human else {}
            for uid, name in wanted:
                counters = counters_of.get(uid, zero) if uid is not None else zero
                figures = Figures.of(counters)
                if first_day is not None:
                    figures = Figures.of(tuple(history.get(uid, zero)) if uid is not None
                                         else zero, clamp=False)
                elif args.since_reset and uid is not None:
                    snap = parse_snapshot(snapshots.get(uid))
                    if snap is not None:
                        figures = figures - snap[1]
                total = total + figures
                total_counters = [a + b for a, b in zip(total_counters, counters)]
                lines += (long_lines(name, figures, training_left(counters)) if args.human
                          else short_lines(name, figures, args.rates))
                if name in unfiltered:
                    lines.append(f"        Not filtered (7 days): {unfiltered[name]}")
                if args.reset and uid is not None:
                    store.set_preference(uid, SNAPSHOT_KEY,
                                         format_snapshot(today_string(clock),
                                                         Figures.of(counters)))
            if args.total:
                lines += (long_lines("TOTAL", total, training_left(tuple(total_counters)))
                          if args.human else short_lines("TOTAL", total, args.rates))
            if args.groups:
                from spamsift.filter.engine.groups import contributions

                lines += ["Group " + c.line() for c in contributions(store, settings.groups)]
        finally:
            store.close()
    except SpamsiftError as exc:
        return command_failed("stats", exc)
    return write_out(out, "".join(line + "\n" for line in lines))

