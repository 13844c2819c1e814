"""The accuracy report's figures: DSPAM's per-user numbers, the daily trend, sorting, filters.

No presentation here: `spamsift report --json`/`--csv` and `spamsift stats` load only this
module and the store, never rich. Everything comes from four bulk reads (users, counters,
the per-day history of the window, the ``opt`` preference), so a report over 10,000 users
with 30 days of history is a handful of queries and one pass over some 300,000 history rows.

DSPAM's figures (``dspam_stats``, reference §7), from a user's eight counters:

* TP = max(0, spam_learned + spam_classified - spam_misclassified - spam_corpusfed), TN the
  same for innocent; FP = innocent_misclassified; FN = spam_misclassified; SC/NC corpus-fed.
* spam hit rate SHR = 100 - 100 FN/(TP+FN); ham strike rate HSR = 100 FP/(TN+FP); overall
  accuracy OCA = 100 - 100 (FN+FP)/(TP+TN+FP+FN); PPV = 100 TP/(TP+FP).
* TL, training left = max(0, 2500 - (innocent_learned + innocent_classified)): DSPAM calls a
  user's data mature at 2,500 innocent messages (TUM's and BNR's threshold).

Here a rate with nothing to divide by is None ("-", JSON null) rather than DSPAM's 100 %: a
user who never got mail has no accuracy, and must not sort as a perfect one. `spamsift stats`
prints DSPAM's values for compatibility.

The trend: TP+TN+FP+FN is exactly the sum of learned + classified - corpusfed over both
classes, so the same sum over one day's history deltas is the number of messages filtered that
day (a correction moves a message between counters and adds nothing), and the day's
misclassified deltas are the errors reported that day. A day's accuracy is OCA over those
two numbers; errors count on the day they were reported, which is when users noticed them.
"""

from __future__ import annotations

import time

from spamsift.filter.engine.days import day_of, days_before
from spamsift.filter.engine.store.base import STAT_FIELDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MATURE_INNOCENT = 2500   # dspam_stats' TL: innocent messages until a user's data is mature
TREND_DAYS = 30

# Positions in STAT_FIELDS order.
_SL, _IL, _SM, _IM, _SC, _IC, _SCL, _ICL = range(len(STAT_FIELDS))


def _rate(numerator: int, denominator: int) -> float | None:
    return None if denominator <= 0 else 100.0 * numerator / denominator


class Figures:
    """DSPAM's six dspam_stats numbers and the rates derived from them."""

    __slots__ = ("tp", "tn", "fp", "fn", "sc", "nc")

    def __init__(self, tp: int = 0, tn: int = 0, fp: int = 0, fn: int = 0, sc: int = 0,
                 nc: int = 0) -> None:
        self.tp, self.tn, self.fp, self.fn, self.sc, self.nc = tp, tn, fp, fn, sc, nc

    @classmethod
    def of(cls, counters: tuple[int, ...], clamp: bool = True) -> Figures:
        """From eight counters in `STAT_FIELDS` order; `clamp=False` for signed deltas."""
        c = counters
        tp = c[_SL] + c[_SCL] - c[_SM] - c[_SC]
        tn = c[_IL] + c[_ICL] - c[_IM] - c[_IC]
        if clamp:
            tp, tn = max(0, tp), max(0, tn)
        return cls(tp, tn, c[_IM], c[_SM], c[_SC], c[_IC])

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return (self.tp, self.tn, self.fp, self.fn, self.sc, self.nc)

    def __add__(self, other: Figures) -> Figures:
        return Figures(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def __sub__(self, other: Figures) -> Figures:
        return Figures(*(a - b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Figures) and self.as_tuple() == other.as_tuple()

    def __repr__(self) -> str:
        return "Figures(tp={}, tn={}, fp={}, fn={}, sc={}, nc={})".format(*self.as_tuple())

    @property
    def messages(self) -> int:
        return self.tp + self.tn + self.fp + self.fn

    @property
    def spam_hit_rate(self) -> float | None:
        all_spam = self.tp + self.fn
        return None if all_spam <= 0 else 100.0 - 100.0 * self.fn / all_spam

    @property
    def ham_strike_rate(self) -> float | None:
        return _rate(self.fp, self.tn + self.fp)

    @property
    def accuracy(self) -> float | None:
        total = self.messages
        return None if total <= 0 else 100.0 - 100.0 * (self.fn + self.fp) / total

    @property
    def ppv(self) -> float | None:
        return _rate(self.tp, self.tp + self.fp)


def training_left(counters: tuple[int, ...]) -> int:
    return max(0, MATURE_INNOCENT - (counters[_IL] + counters[_ICL]))


def day_accuracy(messages: int, errors: int) -> float | None:
    """OCA of one day; None without mail (a day of corrections only has no accuracy)."""
    if messages <= 0:
        return None
    return max(0.0, 100.0 - 100.0 * errors / messages)


def today_string(clock: float | None = None) -> str:
    """The local date, as the filter writes it into the history (`Agent._day`)."""
    return day_of(time.time() if clock is None else clock)


MAX_DAYS = 36_600  # a period longer than a century is all of the history


def first_day(today: str, days: int) -> str:
    """The first of the `days` dates ending with `today` (`window(today, days)[0]`, without
    making the list: ``--since 99999999d`` built one entry a day and hung)."""
    return days_before(today, min(days, MAX_DAYS) - 1)


def window(today: str, days: int) -> list[str]:
    """The `days` dates ending with `today`, oldest first."""
    return [days_before(today, k) for k in range(days - 1, -1, -1)]


def domain_of(name: str) -> str:
    return name.partition("@")[2]


class UserRow:
    """One user's line of the report."""

    __slots__ = ("uid", "name", "domain", "opted_in", "counters", "figures", "training_left",
                 "accuracy", "trend_messages", "trend_errors", "last_error", "errors_before")

    def __init__(self, uid: int, name: str, counters: tuple[int, ...], opted_in: bool,
                 days: int) -> None:
        self.uid = uid
        self.name = name
        self.domain = domain_of(name)
        self.opted_in = opted_in
        self.counters = counters
        self.figures = Figures.of(counters)
        self.training_left = training_left(counters)
        self.accuracy = self.figures.accuracy
        self.trend_messages = [0] * days
        self.trend_errors = [0] * days
        self.last_error: str | None = None     # the last day in the window with an error
        self.errors_before: str | None = None  # set to the window's start when errors are older

    @property
    def messages(self) -> int:
        return self.figures.messages

    def trend_accuracy(self) -> list[float | None]:
        return [day_accuracy(m, e) for m, e in zip(self.trend_messages, self.trend_errors)]

    def messages_last(self, days: int) -> int:
        return sum(self.trend_messages[-days:])

    def errors_last(self, days: int) -> int:
        return sum(self.trend_errors[-days:])


class Report:
    """The rows of every user visible to the caller, with the window they were read for."""

    def __init__(self, rows: list[UserRow], days: list[str], storage: str,
                 generated: float, has_history: bool = True,
                 passed: dict[tuple[str, str, str], int] | None = None,
                 passed_problem: str = "") -> None:
        self.rows = rows
        self.days = days
        self.storage = storage
        self.generated = generated
        self.has_history = has_history  # False: counters only, the trend is still coming
        # (day, reason, user) -> messages not filtered, the last 7 days (passlog)
        self.passed = passed or {}
        self.passed_problem = passed_problem  # why the passlog could not be read, if so
        self.passed_forged: list[str] = []  # files that hide a uid's count (passlog.forged)
        self.groups: list = []  # `groups.Contribution` of each configured group

    @property
    def today(self) -> str:
        return self.days[-1]


def load(store, settings, only: set[str] | None = None, days: int = TREND_DAYS,
         clock: float | None = None, history: bool = True) -> Report:
    """Read the report from `store`; `only` limits it to those user names. Without
    `history` only the counters are read (the terminal UI's quick first screen)."""
    from spamsift.filter.engine import users as users_mod

    now = time.time() if clock is None else clock
    dates = window(today_string(now), days)
    index = {d: i for i, d in enumerate(dates)}
    names = store.users()
    counters = {uid: s.as_tuple() for uid, s in store.all_stats().items()}
    opt = store.preference_values("opt")
    # The filter decides by the user's own preference, else the configuration (site-wide
    # defaults live in the configuration file; `spamsift prefs` keeps nothing for uid 0),
    # so the report counts the same way.
    site = None
    zero = (0,) * len(STAT_FIELDS)
    rows: dict[int, UserRow] = {}
    for uid, name in names:
        if only is not None and name not in only:
            continue
        filtered = users_mod.opted_in(opt.get(uid) or site, settings.opt, None, "", "")
        rows[uid] = UserRow(uid, name, counters.get(uid, zero), filtered, days)
    if only is None:
        # Counters without a name (a user row deleted by hand) are still mail that was filtered.
        for uid, values in counters.items():
            if uid not in rows:
                filtered = users_mod.opted_in(opt.get(uid) or site, settings.opt, None, "", "")
                rows[uid] = UserRow(uid, f"#{uid}", values, filtered, days)
    for uid, day, messages, errors in store.daily_totals(dates[0]) if history else ():
        row = rows.get(uid)
        i = index.get(day)
        if row is None or i is None:
            continue
        row.trend_messages[i] += messages
        if errors:
            row.trend_errors[i] += errors
            if row.last_error is None or day > row.last_error:
                row.last_error = day
    for row in rows.values() if history else ():
        if row.last_error is None and row.figures.fp + row.figures.fn > 0:
            row.errors_before = dates[0]
    ordered = sorted(rows.values(), key=lambda r: r.name)
    from spamsift.filter.engine import passlog

    week = window(today_string(now), 7)
    start = time.mktime(time.strptime(week[0], "%Y-%m-%d"))
    problem = ""
    try:
        passed = {key: n for key, n in passlog.counts(settings.home, start).items()
                  if only is None or key[2] in only}
    except OSError as exc:
        passed, problem = {}, f"{exc.filename}: {exc.strerror or exc}"
    report_forged = passlog.forged(settings.home)
    report = Report(ordered, dates, _shown_url(store.url), now, history, passed, problem)
    report.passed_forged = report_forged
    configured = getattr(settings, "groups", ())
    if configured:
        from spamsift.filter.engine.groups import contributions

        report.groups = contributions(store, configured)
    return report


def passed_through(report: Report) -> dict[str, Any]:
    """Messages not filtered (passed through, tempfailed) and in-process fallbacks, by reason:
    for the site and each user, today and the last 7 days. Fallbacks are the site's only (the
    thin client does not know the user)."""
    today = report.today

    def tally(keys) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for period, days in (("today", {today}), ("7_days", None)):
            by_reason: dict[str, int] = {}
            for (day, reason, _user), n in keys:
                if days is None or day in days:
                    by_reason[reason] = by_reason.get(reason, 0) + n
            by_reason["total"] = sum(by_reason.values())
            out[period] = by_reason
        return out

    users: dict[str, list] = {}
    for key, n in report.passed.items():
        if key[2] != "-":
            users.setdefault(key[2], []).append((key, n))
    out: dict[str, Any] = {"site": tally(report.passed.items()),
                           "users": {name: tally(items) for name, items in sorted(users.items())}}
    if report.passed_problem:
        out["unreadable"] = report.passed_problem  # the counts above are not the truth
    if report.passed_forged:
        out["forged"] = report.passed_forged  # the uids they are named for count nothing
    return out


def _shown_url(url: str) -> str:
    """The storage URL without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        cred, _, host = rest.partition("@")
        rest = cred.split(":", 1)[0] + "@" + host
    return scheme + sep + rest


# -- summary -------------------------------------------------------------------------------

def summary(rows: list[UserRow]) -> dict[str, Any]:
    """Totals over `rows` (the whole site for a trusted caller)."""
    total = Figures()
    for row in rows:
        total = total + row.figures
    return {
        "users": len(rows),
        "opted_in": sum(1 for r in rows if r.opted_in),
        "mature": sum(1 for r in rows if r.training_left == 0),
        "messages_today": sum(r.messages_last(1) for r in rows),
        "messages_7_days": sum(r.messages_last(7) for r in rows),
        "messages_all_time": total.messages,
        "errors_today": sum(r.errors_last(1) for r in rows),
        "errors_7_days": sum(r.errors_last(7) for r in rows),
        "tp": total.tp, "tn": total.tn, "fp": total.fp, "fn": total.fn,
        "sc": total.sc, "nc": total.nc,
        "spam_hit_rate": _round(total.spam_hit_rate),
        "ham_strike_rate": _round(total.ham_strike_rate),
        "accuracy": _round(total.accuracy),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- sorting and filtering -----------------------------------------------------------------

# name -> (what it means, for --help and the TUI's status line)
SORTS = {
    "name": "user name",
    "accuracy": "worst accuracy first",
    "fp": "most false positives first",
    "fn": "most false negatives first",
    "messages": "most messages first",
    "training": "most training left first",
    "last-error": "most recent error first",
}


def sort_rows(rows: list[UserRow], key: str, reverse: bool = False) -> list[UserRow]:
    """`rows` ordered by `key` (see `SORTS`); users without a value (no mail) stay last."""
    if key == "name":
        return sorted(rows, key=lambda r: r.name, reverse=reverse)
    if key == "accuracy":
        known = [r for r in rows if r.accuracy is not None]
        rest = [r for r in rows if r.accuracy is None]
        # Worst first; among equals the user with more mail matters more.
        known.sort(key=lambda r: (r.accuracy, -r.messages, r.name))
        if reverse:
            known.reverse()
        return known + sorted(rest, key=lambda r: r.name)
    if key == "last-error":
        known = [r for r in rows if r.last_error or r.errors_before]
        rest = [r for r in rows if not (r.last_error or r.errors_before)]
        known.sort(key=lambda r: (r.last_error or "", r.figures.fp + r.figures.fn),
                   reverse=not reverse)
        return known + sorted(rest, key=lambda r: r.name)
    value = {
        "fp": lambda r: r.figures.fp,
        "fn": lambda r: r.figures.fn,
        "messages": lambda r: r.messages,
        "training": lambda r: r.training_left,
    }[key]
    ordered = sorted(rows, key=lambda r: (-value(r), r.name))
    if reverse:
        ordered.reverse()
    return ordered


def filter_rows(rows: list[UserRow], domain: str | None = None, match: str | None = None,
                below: float | None = None, min_messages: int = 0) -> list[UserRow]:
    """Rows of one `domain` ("" or "local": names without one), whose name contains `match`,
    with accuracy under `below`, with at least `min_messages` messages."""
    out = rows
    if domain is not None:
        wanted = "" if domain.lower() in ("", "local", "(local)") else domain.lower().lstrip("@")
        out = [r for r in out if r.domain.lower() == wanted]
    if match:
        needle = match.lower()
        out = [r for r in out if needle in r.name.lower()]
    if below is not None:
        out = [r for r in out if r.accuracy is not None and r.accuracy < below]
    if min_messages:
        out = [r for r in out if r.messages >= min_messages]
    return out


def domains(rows: list[UserRow]) -> list[str]:
    """Domains by number of users, most first ("" for names without a domain)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.domain] = counts.get(row.domain, 0) + 1
    return sorted(counts, key=lambda d: (-counts[d], d))


# -- JSON and CSV --------------------------------------------------------------------------

CSV_FIELDS = ("user", "uid", "domain", "opted_in", "tp", "tn", "fp", "fn", "sc", "nc",
              "corpus_fed", "messages", "messages_today", "messages_7_days",
              "spam_hit_rate", "ham_strike_rate", "ppv", "accuracy", "training_left",
              "mature", "last_error", "errors_before", "trend_accuracy", "trend_messages",
              "trend_errors")


def row_dict(row: UserRow) -> dict[str, object]:
    f = row.figures
    return {
        "user": row.name, "uid": row.uid, "domain": row.domain, "opted_in": row.opted_in,
        "tp": f.tp, "tn": f.tn, "fp": f.fp, "fn": f.fn, "sc": f.sc, "nc": f.nc,
        "corpus_fed": f.sc + f.nc,
        "messages": f.messages,
        "messages_today": row.messages_last(1),
        "messages_7_days": row.messages_last(7),
        "spam_hit_rate": _round(f.spam_hit_rate),
        "ham_strike_rate": _round(f.ham_strike_rate),
        "ppv": _round(f.ppv),
        "accuracy": _round(row.accuracy),
        "training_left": row.training_left,
        "mature": row.training_left == 0,
        "last_error": row.last_error,
        "errors_before": row.errors_before,
        "trend_accuracy": [_round(a) for a in row.trend_accuracy()],
        "trend_messages": list(row.trend_messages),
        "trend_errors": list(row.trend_errors),
    }


def as_json(report: Report, rows: list[UserRow], view: dict[str, object]) -> dict[str, object]:
    """The whole report as plain values: what --json prints."""
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(report.generated)),
        "storage": report.storage,
        "today": report.today,
        "trend_days": report.days,
        "view": view,
        "summary": summary(report.rows),
        "passed_through": passed_through(report),
        "groups": [c.as_dict() for c in report.groups],
        "users": [row_dict(r) for r in rows],
    }


_CONTROL = {c: "?" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}


def shown(name: str) -> str:
    """A user name for a terminal or a spreadsheet: control characters (an escape sequence
    would reach the terminal) as "?". Names spamsift writes never have any; names another
    tool wrote (migrated DSPAM data) may."""
    return name.translate(_CONTROL)


def write_csv(rows: list[UserRow], out) -> None:
    """One line per user, `CSV_FIELDS`; trend lists joined by spaces, empty for no value."""
    import csv

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        d = row_dict(row)
        for key in ("trend_accuracy", "trend_messages", "trend_errors"):
            d[key] = " ".join("" if v is None else str(v) for v in d[key])  # type: ignore[attr-defined]
        name = shown(str(d["user"]))
        # A cell starting with = + - @ is a formula to a spreadsheet: kept as text.
        d["user"] = "'" + name if name[:1] in ("=", "+", "-", "@") else name
        writer.writerow(["" if d[k] is None else str(d[k]).lower() if isinstance(d[k], bool)
                         else d[k] for k in CSV_FIELDS])


def write_out(out, text: str) -> int:
    """Write the output; a reader that went away (``| head``) is not an error."""
    import os

    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    return 0  # exitcodes.OK
