"""`spamsift stats` formatting and snapshots, as plain functions (the command itself runs
against real databases in test_report.py)."""

from __future__ import annotations

import time

import pytest

from spamsift.filter.engine.errors import UsageError
from spamsift.trainer import stats
from spamsift.trainer.report_data import Figures, training_left


def test_short_form_is_dspam_stats_format():
    f = Figures(tp=1234, tn=56789, fp=3, fn=45, sc=100, nc=2000)
    assert stats.short_lines("alice", f, with_rates=True) == [
        "alice             TP:  1234 TN: 56789 FP:     3 FN:    45 SC:   100 NC:  2000",
        "                  SHR:   96.48%       HSR:    0.01%       OCA:   99.92%",
    ]
    # Names longer than 16 characters push the line right, as %-16s does.
    assert stats.short_lines("a-rather-long-name@example.com", f, False)[0].startswith(
        "a-rather-long-name@example.com  TP:  1234")
    # Wider numbers are not cut (%6ld).
    assert "TN:1234567" in stats.short_lines("x", Figures(tn=1234567), False)[0]


def test_rates_without_mail_are_dspams():
    assert stats.rates(Figures()) == (100.0, 0.0, 100.0)
    assert stats.short_lines("new", Figures(), True)[1] == (
        "                  SHR:  100.00%       HSR:    0.00%       OCA:  100.00%")


def test_long_form():
    lines = stats.long_lines("bob", Figures(tp=90, tn=900, fp=1, fn=10, sc=5, nc=6), 1600)
    assert lines[0] == "bob:"
    assert lines[1:8] == [
        "        \tTP True Positives:                    90",
        "        \tTN True Negatives:                   900",
        "        \tFP False Positives:                    1",
        "        \tFN False Negatives:                   10",
        "        \tSC Spam Corpusfed:                     5",
        "        \tNC Nonspam Corpusfed:                  6",
        "        \tTL Training Left:                   1600",
    ]
    assert lines[8:] == [
        "        \tSHR Spam Hit Rate                 90.00%",
        "        \tHSR Ham Strike Rate:               0.11%",
        "        \tPPV Positive predictive value:    98.90%",
        "        \tOCA Overall Accuracy:             98.90%",
        "",
    ]


def test_figures_from_counters():
    # spam_learned, innocent_learned, spam_mis, innocent_mis, spam_corpus, innocent_corpus,
    # spam_classified, innocent_classified
    counters = (30, 50, 2, 1, 10, 20, 5, 7)
    assert Figures.of(counters) == Figures(tp=23, tn=36, fp=1, fn=2, sc=10, nc=20)
    assert training_left(counters) == 2500 - 57
    assert training_left((0, 3000, 0, 0, 0, 0, 0, 0)) == 0
    # Counters are clamped like dspam_stats' MAX(0, ...); signed history deltas are not.
    assert Figures.of((0, 0, 1, 0, 0, 0, 0, 0)).tp == 0
    assert Figures.of((-1, 1, 0, 0, 0, 0, 0, 0), clamp=False).as_tuple()[:2] == (-1, 1)


def test_snapshot_value_round_trip():
    f = Figures(tp=1, tn=2, fp=4, fn=3, sc=5, nc=6)
    value = stats.format_snapshot("2026-03-10", f)
    assert value == "2026-03-10 1,2,3,4,5,6"  # TP,TN,FN,FP,SC,NC: dspam_stats' .rstats order
    assert stats.parse_snapshot(value) == ("2026-03-10", f)
    huge = Figures(*(10 ** 9,) * 6)
    assert len(stats.format_snapshot("2026-03-10", huge)) <= 64  # fits dspam_preferences
    assert stats.parse_snapshot(stats.format_snapshot("2026-03-10", huge)) == ("", huge)
    assert stats.parse_snapshot("garbage") is None and stats.parse_snapshot(None) is None


def test_since_day():
    clock = time.mktime((2026, 3, 10, 12, 0, 0, 0, 0, -1))
    assert stats.since_day("1d", clock) == "2026-03-10"
    assert stats.since_day("7d", clock) == "2026-03-04"
    assert stats.since_day("2026-01-31", clock) == "2026-01-31"
    for bad in ("0d", "yesterday", "2026-13-01", "-3d"):
        with pytest.raises(UsageError):
            stats.since_day(bad, clock)


def test_huge_periods_are_bounded_not_built_day_by_day():
    # `--since 99999999d` built a list with one entry a day before taking its first: it
    # hung and grew memory. The first day alone is computed, bounded at a century.
    from spamsift.trainer.report_data import MAX_DAYS, first_day, window

    assert first_day("2026-11-25", 7) == window("2026-11-25", 7)[0] == "2026-11-19"
    assert first_day("2026-11-25", 1) == "2026-11-25"
    assert first_day("2026-11-25", 99_999_999) == first_day("2026-11-25", MAX_DAYS)
    assert first_day("2026-11-25", MAX_DAYS) < "1927-01-01"


def test_output_that_cannot_be_written_is_one_line_and_exit_74(admin_cli):
    # A closed standard output or a full disk gave tracebacks (exit 1) from report, stats,
    # config and sources; now one line on stderr and sysexits' EX_IOERR.
    import os
    import subprocess

    spamsift, env = admin_cli
    for command in ("report --json", "report --csv", "config", "sources"):
        for redirect in (">&-", "> /dev/full"):
            done = subprocess.run(f"{spamsift} {command} {redirect}", shell=True, env=env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 74, (command, redirect, done.stderr)
            assert done.stderr.count("\n") == 1 and "cannot write to standard output" in \
                done.stderr, (command, redirect, done.stderr)
    # A command that prints nothing still runs with standard output closed.
    empty = os.path.join(env["SPAMSIFT_HOME"], "mail")
    os.mkdir(empty)
    done = subprocess.run(f"{spamsift} watch --once {empty} >&-", shell=True, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_read_only_commands_never_create_a_database(tmp_path):
    # `db check`, report, stats and sources on a mistyped home or path created an empty
    # database (root-owned) and reported "ok" or a site without mail.
    import os
    import subprocess
    import sys

    spamsift = os.path.join(os.path.dirname(sys.executable), "spamsift")
    env = dict(os.environ, SPAMSIFT_HOME=str(tmp_path / "typo"))
    env.pop("SPAMSIFT_CONFIG", None)
    env.pop("SPAMSIFT_STORAGE", None)
    for command, code in (("db check", 65), ("report --json", 66), ("stats", 66),
                          ("sources", 66)):
        done = subprocess.run(f"{spamsift} {command}", shell=True, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == code, (command, done.stdout, done.stderr)
        assert "no database at" in done.stdout + done.stderr
    assert not (tmp_path / "typo").exists()
    # db init still creates one, and then check is content.
    assert subprocess.run(f"{spamsift} db init", shell=True, env=env,
                          capture_output=True).returncode == 0
    done = subprocess.run(f"{spamsift} db check", shell=True, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stdout == "ok\n"
