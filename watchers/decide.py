"""Was this a drag into Spam, out of it, or nothing?  One pure function of plain values.

Both watchers feed `decide`: the Maildir watcher when a file appears in a folder (a new base
name in ``new/`` or ``cur/``), the IMAP watcher when a UID appears in a mailbox. Nothing here
reads files, the store or the clock, so every rule is tested with plain values
(tests/test_watch_decide.py).

The inputs, for one message of one user (a message is named by its *key*: its
``X-DSPAM-Signature``, or ``sha256:...`` of its bytes when it has none, see
`spamsift.filter.engine.mailfolders.message_key`):

``seen_in``
    The classes (`SPAM`, `INNOCENT`, `IGNORED`) of the folders the message was just seen
    in. Usually one; several when a client copied it (IMAP COPY before the delete) or when
    one scan finds both copies. Deletions, flag changes and ``new/`` -> ``cur/`` are never
    observations: the scanner knows those base names already.
``recorded``
    The class stored for the message in ``spamsift_watch_messages`` (`Store.watch_states`):
    what a watcher last trained or saw it as, or what ``reclassify --move`` placed it as;
    None when nothing is stored.
``verdict``
    For a message whose signature is stored: the filter's classification (the signature's
    ``result``: "spam", "innocent" or "whitelisted"). None for a message without signature,
    or whose signature is unknown (purged after ``purge_signatures`` days, or not ours).
``learned``
    For a message without a known signature that corpus training learned
    (``spamsift_learned_messages``, `Store.learned_records`): the class that learning counts
    as now ("spam" or "innocent"; corrected by ``train --clean`` or ``reclassify --retrain``
    perhaps). None when training has no record of it.
``learn_unsigned``
    The ``watch_learn_unsigned`` setting.
``trust_verdict``
    The ``watch_trust_verdict`` setting: delivery puts spam into a spam folder (as
    examples/maildroprc does), so a message found outside the folder class of its verdict
    was moved there by its user, even if no watcher saw the move (it happened while the
    watcher was down). False for sites that deliver spam into the INBOX, tagged: then only a
    change from a recorded class trains, and the first sighting is recorded.

The rules:

* Only spam and innocent folders count; a message seen only in ignored folders (Trash,
  Drafts, Sent) is nothing, and its recorded class stays (so Spam -> Trash -> INBOX is one
  move out of Spam, trained when it reaches the INBOX).
* The *baseline* is the recorded class, else (with `trust_verdict`) the verdict. A message
  seen where its baseline says it belongs is nothing: a new delivery, the same message seen
  twice, a copy left behind, or a move out and back before anything was trained (net
  change: none).
* Otherwise it moved to the other class: a message with a known signature is retrained to
  that class (`RETRAIN`; `Agent.retrain` undoes exactly what its signature applied). An
  unsigned message (or one whose signature is gone) is learned as corpus when
  `learn_unsigned` (`LEARN` the first time: kept under a signature derived from the user and
  key, so a later move back is a `RETRAIN` of exactly that), and only in a spam folder: mail
  merely sitting in an innocent folder is not a user's statement. Once learned (recorded),
  moves retrain it.
* A message ``spamsift train`` learned (`learned`, no known signature) is corrected through
  that record (`CORRECT`: its learning as the other class taken back and learned as the
  target, `Agent.correct_learned`), never learned once more. Its baseline is the recorded
  class, else the class it was learned as: train learned it from the folder it was in, so
  finding it in the other class's folder is a move made since (a watcher that was down when
  it happened catches up). ``train --clean``, which corrects mail where it stays, records
  that folder as the message's class, and ``reclassify --move`` records the new one, so
  neither is taken for a drag. A correction toward the class the learning counts as already
  changes only the record.
* Seen in both a spam and an innocent folder with no baseline: ambiguous, nothing. Both
  watchers keep such messages (also when the baseline decided nothing) and, since deleting
  a copy is no observation, look for the copies each cycle: once only one class holds any,
  the message is decided as seen there (`Scanner._settle`, `ImapWatcher._settle`).
* A first sighting that trains nothing but must be remembered (no `trust_verdict`) is
  `RECORD`.

The caller applies a decision with compare-and-set on the recorded class, in the same
transaction as the training (`spamsift.watchers.applier`), so two watchers, a crash or a
restart never train a message twice.
"""

from __future__ import annotations

SPAM = "spam"
INNOCENT = "innocent"
IGNORED = "ignored"

NOTHING = "nothing"   # not a training event
RECORD = "record"     # remember `klass` as the message's class; train nothing
RETRAIN = "retrain"   # Agent.retrain(signature, klass): undo what it counts as, learn klass
LEARN = "learn"       # learn the message as corpus of `klass` (first training of unsigned mail)
CORRECT = "correct"   # correct what corpus training learned of it to `klass`, by its record


class Decision:
    """What to do about one message: `action` (`NOTHING`, `RECORD`, `RETRAIN`, `LEARN`),
    the class to record or train (`klass`, "" for NOTHING) and why (`reason`, for logs)."""

    __slots__ = ("action", "klass", "reason")

    def __init__(self, action: str, klass: str = "", reason: str = "") -> None:
        self.action = action
        self.klass = klass
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Decision)
                and (self.action, self.klass) == (other.action, other.klass))

    def __repr__(self) -> str:
        return f"Decision({self.action!r}, {self.klass!r}, {self.reason!r})"


def verdict_class(result: str | None) -> str | None:
    """The class a classification result delivers as ("whitelisted" is innocent)."""
    if result is None or result == "":
        return None
    return SPAM if result.lower() == SPAM else INNOCENT


def decide(seen_in, recorded: str | None, verdict: str | None, learn_unsigned: bool,
           trust_verdict: bool = True, learned: str | None = None) -> Decision:
    """The training event (if any) of a message just seen in folders of the classes
    `seen_in`; see the module docstring for every input and rule."""
    classes = {c for c in seen_in if c in (SPAM, INNOCENT)}
    if not classes:
        return Decision(NOTHING, reason="only in ignored folders")
    known = verdict_class(verdict)
    if known is None and learned is not None:
        if (recorded or learned) in classes:
            return Decision(NOTHING, reason="where it was" if recorded else "where trained")
        if len(classes) > 1:
            return Decision(NOTHING, reason="in spam and innocent folders at once")
        target = classes.pop()
        return Decision(CORRECT, target, "source error, trained in bulk" if target == SPAM
                        else "false positive, trained in bulk")
    baseline = recorded
    if baseline is None and known is not None and trust_verdict:
        baseline = known
    if baseline in classes:
        return Decision(NOTHING, reason="where it was" if recorded else "where it was delivered")
    if len(classes) > 1:
        return Decision(NOTHING, reason="in spam and innocent folders at once")
    target = classes.pop()
    if known is not None:
        if baseline is None:  # first sighting without trust_verdict: only remember it
            return Decision(RECORD, target, "first seen")
        return Decision(RETRAIN, target,
                        "source error" if target == SPAM else "false positive")
    # No known signature: corpus learning, only when configured.
    if recorded is not None:
        return Decision(RETRAIN, target, "unsigned, moved")
    if not learn_unsigned:
        return Decision(NOTHING, reason="no signature (watch_learn_unsigned is off)")
    if target == SPAM:
        return Decision(LEARN, SPAM, "unsigned, in a spam folder")
    return Decision(NOTHING, reason="unsigned, in an innocent folder")
