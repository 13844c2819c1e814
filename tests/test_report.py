"""`spamsift report`, `stats` and `sources` against databases built by the real filter.

Each backend (SQLite, MariaDB) gets one database, built once through `spamsift.filter.cli.main` with
a clock seam, over four days (D-3 .. D, D = `NOW`):

* alice@example.com: D-3 corpus 12 spam + 12 ham; D-2 inbound 4 spam + 3 ham; D-1 inbound
  1 spam + 2 ham; D inbound 2 spam + 2 ham, and two error reports: one of D-2's spams was ham
  (a false positive), one of D-1's hams was spam (a false negative).
  So TP 6, TN 6, FP 1, FN 1, SC 12, NC 12: SHR 85.71, HSR 14.29, OCA 85.71; innocent
  learned 12 + 3 + 2 + 2 + 1 - 1 = 19, so 2481 left to train.
* bob@example.com: D-3 corpus 12 + 12; D-1 inbound 2 spam + 2 ham. TP 2 TN 2, OCA 100.
* carol@example.org: untrained; D one message (Innocent), reported as spam: FN 1, OCA 0.
* dave (no domain, opted out by preference): D-3 corpus 3 spam only; no filtered mail.

Inbound spam comes from 203.0.113.5 (and one from 203.0.113.9), ham from 198.51.100.7.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid

import pytest

from conftest import MYSQL_SERVER, need
from spamsift.filter.cli import main as filter_main
from spamsift.filter.engine import users
from spamsift.filter.engine.store.base import STAT_FIELDS, open_store
from spamsift.trainer import report, sources, stats

NOW = time.mktime((2026, 3, 10, 12, 0, 0, 0, 0, -1))  # noon, local time
DAY = 86400
D = ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"]  # D-3 .. D

SPAM = ("From: Deals <d@promo.biz>\nSubject: cheap pills {n}\n\n"
        "Buy cheap pills now, click here, best price viagra offer {n}\n")
HAM = ("From: Bob <bob@example.com>\nSubject: lunch {n}\n\n"
       "Hello Alice, lunch tomorrow at noon? The meeting notes are attached {n}\n")
SPAM_IP, SPAM_IP2, HAM_IP = "203.0.113.5", "203.0.113.9", "198.51.100.7"


def received(ip: str, text: str) -> bytes:
    return (f"Received: from relay.example ([{ip}]) by mx.example.com\n" + text).encode()


class Builder:
    """Runs the real filter for the scenario, at chosen days."""

    def __init__(self, home: str, url: str, now: float = NOW) -> None:
        self.env = {"SPAMSIFT_HOME": home, "SPAMSIFT_STORAGE": url}
        self.now = now
        self.n = 0

    def run(self, day: int, argv: list[str], data: bytes = b"") -> bytes:
        out, err = io.BytesIO(), io.StringIO()
        code = filter_main(argv, stdin=io.BytesIO(data), stdout=out, stderr=err,
                           environ=self.env, clock=lambda: self.now - (3 - day) * DAY)
        assert code == 0, err.getvalue()
        return out.getvalue()

    def text(self, template: str) -> str:
        self.n += 1
        return template.format(n=f"n{self.n}")

    def corpus(self, day: int, user: str, klass: str, count: int) -> None:
        for _ in range(count):
            template = SPAM if klass == "spam" else HAM
            self.run(day, ["--user", user, f"--class={klass}", "--source=corpus"],
                     self.text(template).encode())

    def inbound(self, day: int, user: str, template: str, ip: str, expect: str) -> str:
        """Filter one message; check the result; return its signature."""
        out = self.run(day, ["--user", user, "--stdout", "--deliver=innocent,spam"],
                       received(ip, self.text(template)))
        head = out.split(b"\n\n", 1)[0].decode()
        fields = dict(line.split(": ", 1) for line in head.split("\n") if ": " in line)
        result = fields["X-DSPAM-Result"]
        assert (result == "Spam") == (expect == "Spam"), f"{user}: {result}, wanted {expect}"
        return fields["X-DSPAM-Signature"]

    def correct(self, day: int, user: str, klass: str, signature: str) -> None:
        self.run(day, ["--user", user, f"--class={klass}", "--source=error",
                       f"--signature={signature}"])


def build(url: str, home: str, now: float = NOW) -> Builder:
    """Run the scenario (module docstring) with D = the day of `now`."""
    b = Builder(home, url, now)
    for user in ("alice@example.com", "bob@example.com"):
        b.corpus(0, user, "spam", 12)
        b.corpus(0, user, "innocent", 12)
    b.corpus(0, "dave", "spam", 3)
    alice = "alice@example.com"
    d2_spam = [b.inbound(1, alice, SPAM, SPAM_IP if i < 3 else SPAM_IP2, "Spam")
               for i in range(4)]
    for _ in range(3):
        b.inbound(1, alice, HAM, HAM_IP, "Innocent")
    b.inbound(2, alice, SPAM, SPAM_IP, "Spam")
    d1_ham = [b.inbound(2, alice, HAM, HAM_IP, "Innocent") for _ in range(2)]
    for _ in range(2):
        b.inbound(2, "bob@example.com", SPAM, SPAM_IP, "Spam")
        b.inbound(2, "bob@example.com", HAM, HAM_IP, "Innocent")
    for _ in range(2):
        b.inbound(3, alice, SPAM, SPAM_IP, "Spam")
        b.inbound(3, alice, HAM, HAM_IP, "Innocent")
    b.correct(3, alice, "innocent", d2_spam[0])   # a false positive, reported on D
    b.correct(3, alice, "spam", d1_ham[0])        # a false negative, reported on D
    b.correct(3, alice, "spam", d1_ham[0])        # the same report twice changes nothing
    carol = b.inbound(3, "carol@example.org", SPAM, SPAM_IP, "Innocent")
    b.correct(3, "carol@example.org", "spam", carol)
    store = open_store(url)
    try:
        store.set_preference(store.uid("dave", create=False), "opt", "out")
    finally:
        store.close()
    return b


@pytest.fixture(scope="module", params=["sqlite", "mysql"])
def db(request, tmp_path_factory):
    """The scenario's storage URL, per backend."""
    home = str(tmp_path_factory.mktemp(f"report-{request.param}"))
    if request.param == "sqlite":
        url = f"sqlite://{home}/spamsift.db"
        build(url, home)
        yield url
        return
    try:
        import pymysql

        from spamsift.filter.engine.store.mysql import parse_url

        params = parse_url(MYSQL_SERVER + "/mysql")
        params.pop("database")
        admin = pymysql.connect(**params, connect_timeout=3, autocommit=True)
    except Exception as exc:  # noqa: BLE001 - no server to test against
        need(f"no MySQL/MariaDB at {MYSQL_SERVER}: {exc}")
    name = "spamsift_test_" + uuid.uuid4().hex[:12]
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    url = f"{MYSQL_SERVER}/{name}"
    try:
        store = open_store(url)
        store.initialize()
        store.close()
        build(url, home)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


ROOT = users.Caller(0, "root")


def render(db: str, *argv: str, width: int = 160) -> str:
    from rich.console import Console

    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    assert report.main(["--storage", db, *argv], caller=ROOT, console=console,
                       clock=NOW) == 0
    return console.export_text()


NAMES = ("alice@example.com", "bob@example.com", "carol@example.org", "dave")


def table_rows(text: str) -> dict[str, list[str]]:
    """User name -> the words of its line in the rendered table (a name cut short with an
    ellipsis counts as the name it starts)."""
    rows = {}
    for line in text.splitlines():
        words = line.split()
        for name in NAMES:
            if words and (words[0] == name or words[0].endswith("…")
                          and name.startswith(words[0][:-1])):
                rows[name] = words
    return rows


def captured(capsys, fn, *argv, **kw) -> tuple[int, str]:
    code = fn(list(argv), **kw)
    return code, capsys.readouterr().out


# -- the history -----------------------------------------------------------------------------

def test_history_is_written_with_the_counters_by_filtering_and_retraining(db):
    """Every user's per-day history adds up to their counters, and the day of a correction
    holds the correction's own signed deltas: retraining writes the history in the same
    commit as the counters (Store.commit, one transaction)."""
    store = open_store(db)
    try:
        counters = {uid: s.as_tuple() for uid, s in store.all_stats().items()}
        history = store.daily_stats("2000-01-01")
        alice = store.uid("alice@example.com", create=False)
        carol = store.uid("carol@example.org", create=False)
    finally:
        store.close()
    sums: dict[int, list[int]] = {}
    for uid, _day, deltas in history:
        row = sums.setdefault(uid, [0] * len(STAT_FIELDS))
        for i, d in enumerate(deltas):
            row[i] += d
    assert {uid: tuple(v) for uid, v in sums.items()} == counters
    by_day = {(uid, day): dict(zip(STAT_FIELDS, deltas)) for uid, day, deltas in history}
    today = by_day[(alice, D[3])]
    # D: 2 spam + 2 ham filtered; FP: innocent +1, spam -1; FN: spam +1, innocent -1.
    assert (today["spam_learned"], today["innocent_learned"]) == (2, 2)
    assert (today["spam_misclassified"], today["innocent_misclassified"]) == (1, 1)
    assert by_day[(alice, D[1])]["spam_learned"] == 4  # the FP stays on the day it was filtered
    # carol: filtered as innocent and corrected on the same day: only the result remains.
    assert by_day[(carol, D[3])] == dict(zip(STAT_FIELDS, (1, 0, 1, 0, 0, 0, 0, 0)))


# -- the rendered report ---------------------------------------------------------------------

def test_rendered_report_shows_dspam_figures(db):
    text = render(db, "--sort", "name")
    rows = table_rows(text)
    #                    TP   TN   FP   FN   SC/NC    SHR      HSR      OCA      TL     last
    assert rows["alice@example.com"][1:11] == ["6", "6", "1", "1", "12/12", "85.71", "14.29",
                                               "85.71", "2481", D[3]]
    assert rows["bob@example.com"][1:11] == ["2", "2", "0", "0", "12/12", "100.00", "0.00",
                                             "100.00", "2486", "-"]
    assert rows["carol@example.org"][1:11] == ["0", "0", "0", "1", "0/0", "0.00", "-", "0.00",
                                               "2500", D[3]]
    assert rows["dave"][1:11] == ["0", "0", "0", "0", "3/0", "-", "-", "-", "2500", "-"]
    # Trend (30 days): alice D-2 100 %, D-1 100 %, D 2 errors in 4 messages; no mail before.
    assert rows["alice@example.com"][11] == "·" * 27 + "██▁"
    assert rows["bob@example.com"][11] == "·" * 28 + "█·"
    lines = text.splitlines()
    assert lines[1].split() == ["Users", "4", "opted", "in", "3", "mature", "0"]
    # Today: alice 4 + carol 1; 7 days: + alice 7 + 3, bob 4. Errors: alice 2, carol 1.
    assert lines[2].split() == ["Messages", "today", "5", "(errors", "3)", "7", "days", "19",
                                "(errors", "3)", "all", "time", "19"]
    # All users: TP 8, TN 8, FP 1, FN 2: SHR 80, HSR 11.11, OCA 100 - 300/19.
    assert lines[3].split() == ["Accuracy", "84.21", "%", "spam", "hit", "rate", "80.00", "%",
                                "ham", "strike", "rate", "11.11", "%", "FP", "1", "FN", "2"]
    order = [line.split()[0] for line in lines if line.split() and line.split()[0] in rows]
    assert order == list(NAMES)


@pytest.mark.parametrize("argv, expected", [
    (["--sort", "accuracy"], ["carol@example.org", "alice@example.com", "bob@example.com",
                              "dave"]),
    (["--sort", "accuracy", "--reverse"], ["bob@example.com", "alice@example.com",
                                           "carol@example.org", "dave"]),
    (["--sort", "fp"], ["alice@example.com", "bob@example.com", "carol@example.org", "dave"]),
    (["--sort", "fn", "--limit", "1"], ["alice@example.com"]),
    (["--sort", "messages"], ["alice@example.com", "bob@example.com", "carol@example.org",
                              "dave"]),
    (["--domain", "example.com"], ["alice@example.com", "bob@example.com"]),
    (["--domain", "local"], ["dave"]),
    (["--match", "CAR"], ["carol@example.org"]),
    (["--below", "90"], ["alice@example.com", "carol@example.org"]),
    (["--min-messages", "5"], ["alice@example.com"]),
    (["--user", "bob@example.com", "dave"], ["bob@example.com", "dave"]),
])
def test_sort_and_filter(db, argv, expected):
    text = render(db, *argv)
    order = [line.split()[0] for line in text.splitlines()
             if line.split() and line.split()[0] in table_rows(text)]
    assert order == expected


def test_narrow_terminal_keeps_numbers_whole(db):
    text = render(db, "--sort", "name", width=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    rows = table_rows(text)
    # SC/NC, HSR and TL give way, the trend is left out and the name is cut; TP TN FP FN SHR
    # OCA and the last error stay whole.
    assert rows["alice@example.com"] == ["alice@example.c…", "6", "6", "1", "1", "85.71",
                                         "85.71", D[3]]


# -- JSON and CSV ----------------------------------------------------------------------------

ALICE = {
    "user": "alice@example.com", "domain": "example.com", "opted_in": True,
    "tp": 6, "tn": 6, "fp": 1, "fn": 1, "sc": 12, "nc": 12, "corpus_fed": 24,
    "messages": 14, "messages_today": 4, "messages_7_days": 14,
    "spam_hit_rate": 85.71, "ham_strike_rate": 14.29, "ppv": 85.71, "accuracy": 85.71,
    "training_left": 2481, "mature": False, "last_error": D[3], "errors_before": None,
}


def test_json_field_by_field(db, capsys):
    code, out = captured(capsys, report.main, "--storage", db, "--json", "--sort", "fp",
                         caller=ROOT, clock=NOW)
    assert code == 0
    doc = json.loads(out)
    assert doc["today"] == D[3] and len(doc["trend_days"]) == 30
    assert doc["trend_days"][-4:] == D
    assert doc["storage"] == db  # no password here to hide
    assert doc["view"]["sort"] == "fp"
    assert doc["summary"] == {
        "users": 4, "opted_in": 3, "mature": 0, "messages_today": 5, "messages_7_days": 19,
        "messages_all_time": 19, "errors_today": 3, "errors_7_days": 3,
        "tp": 8, "tn": 8, "fp": 1, "fn": 2, "sc": 27, "nc": 24,
        "spam_hit_rate": 80.0, "ham_strike_rate": 11.11, "accuracy": 84.21}
    assert [u["user"] for u in doc["users"]] == ["alice@example.com", "bob@example.com",
                                                 "carol@example.org", "dave"]
    alice = doc["users"][0]
    assert {k: alice[k] for k in ALICE} == ALICE
    assert isinstance(alice["uid"], int)
    assert alice["trend_messages"] == [0] * 27 + [7, 3, 4]
    assert alice["trend_errors"] == [0] * 29 + [2]
    assert alice["trend_accuracy"] == [None] * 27 + [100.0, 100.0, 50.0]
    dave = doc["users"][3]
    assert (dave["opted_in"], dave["accuracy"], dave["spam_hit_rate"], dave["sc"]) == \
        (False, None, None, 3)
    carol = doc["users"][2]
    assert (carol["fn"], carol["accuracy"], carol["ham_strike_rate"], carol["trend_errors"][-1],
            carol["trend_accuracy"][-1]) == (1, 0.0, None, 1, 0.0)


def test_csv_has_the_same_data(db, capsys):
    code, out = captured(capsys, report.main, "--storage", db, "--csv", caller=ROOT,
                         clock=NOW)
    assert code == 0
    rows = {r["user"]: r for r in csv.DictReader(io.StringIO(out))}
    assert list(rows) == ["alice@example.com", "bob@example.com", "carol@example.org", "dave"]
    alice = rows["alice@example.com"]
    for key, value in ALICE.items():
        shown = "" if value is None else str(value).lower() if isinstance(value, bool) \
            else str(value)
        assert alice[key] == shown, key
    assert alice["trend_accuracy"].split(" ")[-3:] == ["100.0", "100.0", "50.0"]
    assert alice["trend_messages"].split(" ") == ["0"] * 27 + ["7", "3", "4"]
    assert rows["dave"]["accuracy"] == "" and rows["dave"]["opted_in"] == "false"


# -- trust -----------------------------------------------------------------------------------

def test_untrusted_user_sees_only_their_own_line(db, capsys):
    dave = users.Caller(54321, "dave")
    code, out = captured(capsys, report.main, "--storage", db, "--json", caller=dave,
                         clock=NOW)
    assert code == 0
    doc = json.loads(out)
    assert [u["user"] for u in doc["users"]] == ["dave"]
    assert doc["summary"]["users"] == 1 and doc["summary"]["messages_all_time"] == 0
    code = report.main(["--storage", db, "--user", "alice@example.com"], caller=dave)
    err = capsys.readouterr().err
    assert code == 77 and err.count("\n") == 1 and "not a trusted user" in err
    assert stats.main(["--storage", db, "alice@example.com"], caller=dave) == 77
    capsys.readouterr()
    code, out = captured(capsys, stats.main, "--storage", db, caller=dave)
    assert code == 0 and out.split()[0] == "dave"
    assert sources.main(["--storage", db, "--user", "alice@example.com"], caller=dave) == 77


def test_bad_input_is_one_line(db, capsys):
    assert report.main(["--storage", db, "--user", "../etc"], caller=ROOT) == 65
    assert report.main(["--storage", "nosuch://x"], caller=ROOT) == 78
    assert stats.main(["--storage", db, "--since", "yesterday"], caller=ROOT) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err


# -- stats -----------------------------------------------------------------------------------

def test_stats_lines(db, capsys):
    code, out = captured(capsys, stats.main, "--storage", db, "-S", "alice@example.com",
                         "carol@example.org", caller=ROOT)
    assert code == 0
    assert out.splitlines() == [
        "alice@example.com  TP:     6 TN:     6 FP:     1 FN:     1 SC:    12 NC:    12",
        "                  SHR:   85.71%       HSR:   14.29%       OCA:   85.71%",
        "carol@example.org  TP:     0 TN:     0 FP:     0 FN:     1 SC:     0 NC:     0",
        "                  SHR:    0.00%       HSR:    0.00%       OCA:    0.00%",
    ]
    code, out = captured(capsys, stats.main, "--storage", db, caller=ROOT)
    assert [line.split()[0] for line in out.splitlines()] == [
        "alice@example.com", "bob@example.com", "carol@example.org", "dave"]
    assert out.splitlines()[3] == ("dave              TP:     0 TN:     0 FP:     0 FN:     0 "
                                   "SC:     3 NC:     0")


def test_stats_long_form_and_total(db, capsys):
    code, out = captured(capsys, stats.main, "--storage", db, "-H", "-t", "alice@example.com",
                         "bob@example.com", caller=ROOT)
    assert code == 0
    blocks = out.split("\n\n")
    alice = blocks[0].splitlines()
    assert alice[0] == "alice@example.com:"
    assert alice[1] == "        \tTP True Positives:                     6"
    assert alice[7] == "        \tTL Training Left:                   2481"
    assert alice[8] == "        \tSHR Spam Hit Rate                 85.71%"
    assert alice[10] == "        \tPPV Positive predictive value:    85.71%"
    assert alice[11] == "        \tOCA Overall Accuracy:             85.71%"
    total = blocks[2].splitlines()
    assert total[0] == "TOTAL:" and total[1].split()[-1] == "8"  # TP 6 + 2
    assert total[4].split()[-1] == "1"  # FN
    assert total[11].split()[-1] == "88.89%"  # OCA: 2 errors in 18


def test_stats_since_the_history(db, capsys):
    # D-1 and D only: alice filtered 3 + 4, corrected 2 on D (the FP's message was D-2's).
    code, out = captured(capsys, stats.main, "--storage", db, "--since", D[2], "-S",
                         "alice@example.com", caller=ROOT)
    assert code == 0
    # spam_learned: 1 + 2 - 1 + 1 = 3, minus 1 misclassified: TP 2; innocent: 2 + 2 + 1 - 1
    # = 4, minus 1: TN 3.
    assert out.splitlines()[0] == ("alice@example.com  TP:     2 TN:     3 FP:     1 FN:     1 "
                                   "SC:     0 NC:     0")
    code, out2 = captured(capsys, stats.main, "--storage", db, "--since", "2d", "-S",
                          "alice@example.com", caller=ROOT, clock=NOW)
    assert out2 == out


def test_stats_reset_and_since_reset(tmp_path, capsys):
    """-r keeps a snapshot in the store; -s subtracts it; mail after it shows alone."""
    url = f"sqlite://{tmp_path}/s.db"
    b = Builder(str(tmp_path), url)
    b.corpus(0, "erin", "spam", 12)
    b.corpus(0, "erin", "innocent", 12)
    b.inbound(1, "erin", SPAM, SPAM_IP, "Spam")
    code, out = captured(capsys, stats.main, "--storage", url, "-r", "erin", caller=ROOT,
                         clock=NOW)
    assert out.split()[:3] == ["erin", "TP:", "1"]
    store = open_store(url)
    snap = store.preferences(store.uid("erin"))["stats_reset"]
    store.close()
    assert snap == f"{D[3]} 1,0,0,0,12,12"   # date, then TP,TN,FN,FP,SC,NC as in .rstats
    b.inbound(2, "erin", HAM, HAM_IP, "Innocent")
    code, out = captured(capsys, stats.main, "--storage", url, "-s", "erin", caller=ROOT)
    assert out == "erin              TP:     0 TN:     1 FP:     0 FN:     0 SC:     0 NC:     0\n"


# -- sources ---------------------------------------------------------------------------------

def test_sources_json(db, capsys):
    code, out = captured(capsys, sources.main, "--storage", db, "--json", "--days", "0",
                         caller=ROOT, clock=NOW)
    assert code == 0
    doc = json.loads(out)
    # Spam from 203.0.113.5: alice 3 (D-2) + 1 (D-1) + 2 (D) - 1 (the FP report moved it to
    # ham) + bob 2 + carol 1 (filtered as ham, corrected to spam); 203.0.113.9: D-2's fourth
    # spam. Ham from 198.51.100.7: alice 3 + 2 + 2 - 1 (the FN moved it to spam) + bob 2.
    assert doc["addresses"] == [
        {"ip": SPAM_IP, "spam": 8, "ham": 1, "users": 3},
        {"ip": SPAM_IP2, "spam": 1, "ham": 0, "users": 1},   # equal spam: less ham first
        {"ip": HAM_IP, "spam": 1, "ham": 8, "users": 2},
    ]
    assert doc["networks"] == [
        {"network": "203.0.113.0/24", "spam": 9, "ham": 1, "users": 3, "addresses": 2},
        {"network": "198.51.100.0/24", "spam": 1, "ham": 8, "users": 2, "addresses": 1},
    ]


def test_sources_table_and_period(db, capsys):
    from rich.console import Console

    console = Console(record=True, width=120, file=io.StringIO(), color_system=None)
    assert sources.main(["--storage", db, "--top", "1", "--user", "bob@example.com"],
                        caller=ROOT, clock=NOW, console=console) == 0
    text = console.export_text()
    assert "Top spam sources (since 2026-02-09)" in text
    line = next(line for line in text.splitlines() if "203.0.113.5 " in line)
    assert [cell.strip() for cell in line.split("│")[1:-1]] == ["203.0.113.5", "2", "0",
                                                                "100.0", "1"]
    assert "198.51.100.7" not in text  # bob got no spam from there
    # Nothing seen in the future.
    code, out = captured(capsys, sources.main, "--storage", db, "--json", "--since",
                         "2030-01-01", caller=ROOT)
    assert json.loads(out)["addresses"] == []


def test_storage_url_is_shown_without_password():
    from spamsift.trainer.report_data import _shown_url

    assert _shown_url("mysql://spam:secret@db.example:3306/spamsift") == \
        "mysql://spam@db.example:3306/spamsift"
    assert _shown_url("sqlite:///var/lib/spamsift/spamsift.db") == \
        "sqlite:///var/lib/spamsift/spamsift.db"


def test_network_of():
    assert sources.network_of("203.0.113.77") == "203.0.113.0/24"
    assert sources.network_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert sources.network_of("::ffff:198.51.100.9") == "198.51.100.0/24"


def test_report_json_needs_no_rich(db):
    """--json and --csv are for monitoring scripts: they must not pay for rich's import."""
    import subprocess
    import sys

    code = ("import sys; from trainer import report; "
            f"rc = report.main(['--storage', {db!r}, '--json']); "
            "sys.stdout.flush(); assert 'rich' not in sys.modules, 'rich imported'; "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          env={**os.environ, "SPAMSIFT_CONFIG": ""})
    assert done.returncode == 0, done.stderr.decode()[-400:]
    assert json.loads(done.stdout)["summary"]["users"] == 4


# -- the terminal UI's key handling, without a terminal ---------------------------------------

def test_view_keys():
    from spamsift.trainer.report_tui import View, split_keys

    assert split_keys("a\x1b[B\x1b[6~/x\x1b\r") == ["a", "down", "pgdn", "/", "x", "\x1b", "\r"]
    view = View()
    view.total, view.page = 100, 10
    assert view.key("a", []) and view.sort == "accuracy"
    view.key("f", [])
    assert view.sort == "fp" and not view.reverse
    view.key("r", [])
    assert view.reverse
    view.key("s", [])
    assert view.sort == "fn"  # the next in SORTS
    view.key("pgdn", [])
    view.key("down", [])
    assert view.offset == 11
    view.key("end", [])
    assert view.offset == 90  # the last page, not past it
    view.key("home", [])
    view.key("up", [])
    assert view.offset == 0
    for key in "/ali":
        view.key(key, [])
    assert view.typing == "ali" and view.match == ""
    view.key("q", [])  # typed, not quit
    view.key("\x7f", [])
    view.key("\r", [])
    assert (view.typing, view.match) == (None, "aliq"[:3])
    view.key("/", [])
    view.key("z", [])
    view.key("\x1b", [])  # Esc drops what was typed
    assert (view.typing, view.match) == (None, "ali")
    view.key("d", ["example.com", "", "example.org"])
    assert view.domain == "example.com"
    view.key("d", ["example.com", "", "example.org"])
    assert view.domain == ""
    view.key("c", [])
    assert (view.domain, view.match) == (None, "")
    assert not view.key("q", [])


def test_opted_in_counts_user_preference_then_configuration():
    """A user's ``opt`` preference, else the configuration's `opt` ("out" filters everyone
    not opted out, "in" only those who opted in): what the filter decides by. A row for uid 0
    is not a site default (the filter never reads one), so it changes nothing."""
    from spamsift.filter.engine.config import Settings
    from spamsift.filter.engine.store.base import Batch
    from spamsift.trainer import report_data

    store = open_store("memory://")
    uids = {name: store.uid(name) for name in ("in-user", "out-user", "plain")}
    for uid in uids.values():
        batch = Batch(D[3])
        batch.add_stat("innocent_learned", 1)
        store.commit(uid, batch)
    store.set_preference(uids["in-user"], "opt", "in")
    store.set_preference(uids["out-user"], "opt", "out")

    def opted(settings) -> dict[str, bool]:
        return {r.name: r.opted_in for r in report_data.load(store, settings, clock=NOW).rows}

    assert opted(Settings({})) == {"in-user": True, "out-user": False, "plain": True}
    assert opted(Settings({"opt": "in"})) == {"in-user": True, "out-user": False,
                                              "plain": False}
    store.set_preference(0, "opt", "in")
    assert opted(Settings({"opt": "in"}))["plain"] is False
    store.set_preference(0, "opt", "out")
    assert opted(Settings({}))["plain"] is True
    assert report_data.summary(report_data.load(store, Settings({}), clock=NOW).rows)[
        "opted_in"] == 2


def test_names_other_tools_wrote_cannot_break_or_hijack_the_report(tmp_path, admin_cli):
    # One user row that is not UTF-8 (migrated DSPAM data) made report and stats fail for
    # every user; names with escape sequences reached the terminal raw, and a name starting
    # with = was a formula to a spreadsheet opening the CSV.
    import sqlite3
    import subprocess

    spamsift, env = admin_cli
    db = sqlite3.connect(tmp_path / "spamsift.db")
    db.execute("INSERT INTO dspam_virtual_uids (uid, username) VALUES (7, CAST(? AS TEXT))",
               (b"caf\xe9",))
    db.execute("INSERT INTO dspam_virtual_uids (uid, username) VALUES (8, ?)",
               ("evil\x1b]0;pwned\x07",))
    db.execute("INSERT INTO dspam_virtual_uids (uid, username) VALUES (9, ?)",
               ("=cmd|' /C calc'!A0",))
    db.commit()
    db.close()
    for command in (["report"], ["report", "--json"], ["report", "--csv"], ["stats"]):
        done = subprocess.run([spamsift, *command], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        if command != ["report", "--json"]:  # JSON escapes control characters itself
            assert b"\x1b" not in done.stdout and b"\x07" not in done.stdout, command
    csv_out = subprocess.run([spamsift, "report", "--csv"], env=env, capture_output=True,
                             text=True).stdout
    assert "'=cmd" in csv_out and "\n=cmd" not in csv_out and "caf\ufffd" in csv_out
