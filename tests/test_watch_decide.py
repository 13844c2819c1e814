"""spamsift.watchers.decide: every rule with plain values, no files, no threads, no store."""

from __future__ import annotations

import pytest

from spamsift.watchers.decide import (CORRECT, IGNORED, INNOCENT, LEARN, NOTHING, RECORD,
                                      RETRAIN, SPAM, Decision, decide, verdict_class)


def d(seen, recorded=None, verdict=None, learn_unsigned=False, trust_verdict=True,
      learned=None):
    return decide(frozenset(seen), recorded, verdict, learn_unsigned, trust_verdict, learned)


def test_drag_into_spam_of_mail_classified_innocent_is_a_source_error():
    assert d({SPAM}, verdict="innocent") == Decision(RETRAIN, SPAM)
    assert d({SPAM}, verdict="whitelisted") == Decision(RETRAIN, SPAM)
    assert d({SPAM}, recorded=INNOCENT, verdict="spam") == Decision(RETRAIN, SPAM)


def test_drag_out_of_spam_is_a_false_positive():
    assert d({INNOCENT}, verdict="spam") == Decision(RETRAIN, INNOCENT)
    assert d({INNOCENT}, recorded=SPAM, verdict="innocent") == Decision(RETRAIN, INNOCENT)
    assert "false positive" in d({INNOCENT}, verdict="spam").reason


def test_delivery_where_the_verdict_says_is_nothing():
    assert d({SPAM}, verdict="spam").action == NOTHING
    assert d({INNOCENT}, verdict="innocent").action == NOTHING
    assert d({INNOCENT}, verdict="whitelisted").action == NOTHING


def test_recorded_class_wins_over_the_verdict():
    # Trained spam earlier (a drag); seen in Spam again (flag change after lost scanner
    # state, the same message twice): nothing.
    assert d({SPAM}, recorded=SPAM, verdict="innocent").action == NOTHING
    # Moved out and back before anything was trained: the net change is none.
    assert d({INNOCENT}, recorded=INNOCENT, verdict="spam").action == NOTHING


def test_ignored_folders_are_never_training_events():
    assert d({IGNORED}, verdict="innocent").action == NOTHING
    assert d({IGNORED}, recorded=SPAM, verdict="spam").action == NOTHING
    assert d({IGNORED}, learn_unsigned=True).action == NOTHING
    # Spam -> Trash -> INBOX: the INBOX sighting is the move out of Spam.
    assert d({INNOCENT}, recorded=SPAM, verdict="spam") == Decision(RETRAIN, INNOCENT)
    # A copy in Trash besides the real one in Spam changes nothing.
    assert d({IGNORED, SPAM}, recorded=SPAM, verdict="spam").action == NOTHING


def test_copies_in_both_classes():
    # IMAP copy into Spam seen together with the original still in INBOX.
    assert d({SPAM, INNOCENT}, verdict="innocent").action == NOTHING
    assert d({SPAM, INNOCENT}, recorded=SPAM).action == NOTHING
    # No baseline at all: ambiguous, wait for the next observation.
    assert d({SPAM, INNOCENT}, learn_unsigned=True).action == NOTHING


def test_unsigned_mail_is_learned_only_when_configured_and_only_from_spam_folders():
    assert d({SPAM}).action == NOTHING
    assert "watch_learn_unsigned" in d({SPAM}).reason
    assert d({SPAM}, learn_unsigned=True) == Decision(LEARN, SPAM)
    assert d({INNOCENT}, learn_unsigned=True).action == NOTHING
    # Once learned (recorded), a move retrains its derived signature, configured or not.
    assert d({INNOCENT}, recorded=SPAM, learn_unsigned=True) == Decision(RETRAIN, INNOCENT)
    assert d({INNOCENT}, recorded=SPAM) == Decision(RETRAIN, INNOCENT)
    assert d({SPAM}, recorded=SPAM, learn_unsigned=True).action == NOTHING


def test_without_trusting_the_verdict_the_first_sighting_is_recorded():
    # Sites delivering tagged spam into the INBOX: spam in the INBOX is not a drag out.
    assert d({INNOCENT}, verdict="spam", trust_verdict=False) == Decision(RECORD, INNOCENT)
    assert d({SPAM}, verdict="spam", trust_verdict=False) == Decision(RECORD, SPAM)
    # ... and later changes from the recorded class train.
    assert d({SPAM}, recorded=INNOCENT, verdict="spam",
             trust_verdict=False) == Decision(RETRAIN, SPAM)
    assert d({INNOCENT}, recorded=INNOCENT, verdict="spam",
             trust_verdict=False).action == NOTHING


@pytest.mark.parametrize("result,expected", [("spam", SPAM), ("Spam", SPAM),
                                             ("innocent", INNOCENT),
                                             ("whitelisted", INNOCENT), ("", None),
                                             (None, None)])
def test_verdict_class(result, expected):
    assert verdict_class(result) == expected


@pytest.mark.parametrize("learn_unsigned", [False, True])
@pytest.mark.parametrize("trust_verdict", [False, True])
def test_mail_train_learned_is_corrected_through_its_record_never_learned_again(
        learn_unsigned, trust_verdict):
    def t(seen, recorded=None, learned=None, verdict=None):
        return d(seen, recorded, verdict, learn_unsigned, trust_verdict, learned)

    # Where train found it: nothing (not learned once more, whatever watch_learn_unsigned).
    assert t({SPAM}, learned=SPAM).action == NOTHING
    assert t({INNOCENT}, learned=INNOCENT).action == NOTHING
    # Moved since train learned it (also while no watcher ran): corrected through the record.
    assert t({SPAM}, learned=INNOCENT) == Decision(CORRECT, SPAM)
    assert t({INNOCENT}, learned=SPAM) == Decision(CORRECT, INNOCENT)
    # The recorded place wins: train --clean corrected it where it stayed (recorded there),
    # reclassify --move recorded where it put it.
    assert t({INNOCENT}, recorded=INNOCENT, learned=SPAM).action == NOTHING
    assert t({SPAM}, recorded=INNOCENT, learned=SPAM) == Decision(CORRECT, SPAM)
    assert t({INNOCENT}, recorded=SPAM, learned=SPAM) == Decision(CORRECT, INNOCENT)
    # Both classes at once, ignored folders: nothing.
    assert t({SPAM, INNOCENT}, learned=INNOCENT).action == NOTHING
    assert t({IGNORED}, learned=INNOCENT).action == NOTHING
    # A live signature comes first (the filter's own training of it).
    assert t({SPAM}, recorded=INNOCENT, learned=INNOCENT, verdict="innocent").action == RETRAIN
