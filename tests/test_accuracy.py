"""Regression guard for accuracy: a fixed slice of the SpamAssassin corpus, online protocol.

The first 1,500 messages of the corpus shuffled with seed 1 (1,056 ham, 444 spam) go through
`benchmarks/accuracy.py`'s online protocol -- classify with `Agent.process` on a fresh memory
store, correct errors with `Agent.retrain` -- with the default settings. Measured when this was
written (tokenizer chain, graham+burton+logistic, TEFT, test-conditional training, whitelist
on): 1 ham misclassified (0.095%), 81 spam misclassified (18.2%: the slice includes the cold
start, where every filter misses spam), (1-ROCA)% 0.3784 (0.3858 before CJK pairs), ~8 s;
graham+burton alone, the previous default, measured 1 / 90 / 0.5595 here. With at most three
selected tokens per count pair (classifier.SAME_COUNTS) and the model's re-tuned offset and
margin: 1 / 79 / 0.2913. With issue 21's reputation features, ham-side Bayes scale and HTML in
text/plain: 1 / 74 / 0.2628; with the innocent step (logistic.HAM_STEP): 1 / 74 / 0.2587. The
ceilings below leave a margin for harmless changes (tie order,
a token more or less) but fail on any real loss of accuracy.
Skipped when the corpus is missing (conftest's ``corpus_dir``; a failure in CI).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import accuracy  # noqa: E402

SLICE = 1500
SEED = 1
MAX_HAM_ERRORS = 3          # measured 1 of 1,056
MAX_SPAM_ERRORS = 95        # measured 74 of 444
MAX_ONE_MINUS_ROCA = 0.40   # percent; measured 0.2587


@pytest.fixture(scope="module")
def figures(corpus_dir: str) -> dict[str, float]:
    messages = accuracy.load_corpus(corpus_dir, SEED, SLICE)
    return accuracy.run_online(messages, {})


def test_slice_is_the_measured_one(figures: dict[str, float]) -> None:
    # The ceilings only mean something for the slice they were measured on.
    assert (figures["ham"], figures["spam"]) == (1056, 444)


def test_ham_errors_under_ceiling(figures: dict[str, float]) -> None:
    assert figures["ham_errors"] <= MAX_HAM_ERRORS, figures


def test_spam_errors_under_ceiling(figures: dict[str, float]) -> None:
    assert figures["spam_errors"] <= MAX_SPAM_ERRORS, figures


def test_ranking_under_ceiling(figures: dict[str, float]) -> None:
    assert figures["roca_pct"] <= MAX_ONE_MINUS_ROCA, figures


def test_issue_21_targets_on_the_whole_corpus_seed_1(corpus_dir: str) -> None:
    """Issue 21's figures with the defaults, on all 6,046 messages of seed 1's shuffle: at
    most 2 of 4,150 ham and 7.8% of 1,896 spam misclassified, (1-ROCA)% at most 0.05.
    Measured 2 / 134 / 0.0472 (logistic.py's docstring has seeds 2-6), about 60 s."""
    whole = accuracy.run_online(accuracy.load_corpus(corpus_dir, SEED, None), {})
    print(f"\nseed 1, whole corpus: {whole['ham_errors']} ham / {whole['spam_errors']} spam "
          f"errors, (1-ROCA)% {whole['roca_pct']:.4f}")
    assert (whole["ham"], whole["spam"]) == (4150, 1896)
    assert whole["ham_errors"] <= 2, whole["ham_errors"]
    assert whole["spam_errors"] <= int(0.078 * 1896), whole["spam_errors"]
    assert whole["roca_pct"] <= 0.05, whole["roca_pct"]


def test_strip_x_spam_removes_only_those_fields() -> None:
    raw = (b"Received: from a\r\nX-Spam-Status: Yes, score=9\r\n\tfolded\r\n"
           b"Subject: hi\r\nx-spam-flag: YES\r\n\r\nX-Spam-Status: body stays\r\n")
    assert accuracy.strip_x_spam(raw) == (b"Received: from a\r\nSubject: hi\r\n\r\n"
                                          b"X-Spam-Status: body stays\r\n")


def test_roc_area_counts_ties_half() -> None:
    assert accuracy.roc_area([0.0, 1.0], [False, True]) == 1.0
    assert accuracy.roc_area([1.0, 0.0], [False, True]) == 0.0
    assert accuracy.roc_area([0.5, 0.5], [False, True]) == 0.5
    # 2 spam x 2 ham pairs: (s=3 > h=1), (s=3 > h=2), (s=2 = h=2: half), (s=2 > h=1)
    assert accuracy.roc_area([1.0, 2.0, 2.0, 3.0], [False, False, True, True]) == 3.5 / 4


def test_header_scores_of_real_processes_rank_as_the_engine_does(corpus_dir: str) -> None:
    """The outside view: 150 messages through real `spamsift filter` processes, corrected by
    signature as a user would, give the same X-DSPAM-Score for every message (six decimals)
    as the in-process protocol, so (1-ROCA)% from the headers equals the engine's."""
    import os

    spamsift = os.path.join(os.path.dirname(sys.executable), "spamsift")
    if not os.path.exists(spamsift):
        pytest.skip("spamsift console script not installed")
    sample = accuracy.load_corpus(corpus_dir, SEED, 150)
    inside = accuracy.run_online(sample, {})
    outside = accuracy.run_outside(sample, spamsift)
    assert [round(s, 6) for s in outside["scores"]] == [round(s, 6) for s in inside["scores"]]
    assert outside["roca_pct"] == pytest.approx(inside["roca_pct"], abs=1e-9)
    assert (outside["ham_errors"], outside["spam_errors"]) == (inside["ham_errors"],
                                                               inside["spam_errors"])
