"""Training rules: what a classification, a corpus message or a correction writes.

Pure functions from plain values to per-token deltas and counter names; `agent.py` puts
them into a storage `Batch`. The rules are DSPAM's (reference §4.7), with its bookkeeping
mistakes fixed by recording in each signature exactly what the message contributes:

* `applied[k]`: how much token k's count in the trained class was raised (0 = untouched), so a
  correction removes exactly that, whatever the mode was (DSPAM decremented every token, even
  ones TUM or TOE never wrote).
* `counters`: the statistics counters the message currently adds one to, so a correction of a
  TOE classification decrements ``innocent_classified`` (DSPAM left it, inflating TN).
"""

from __future__ import annotations

# TEFT stays the default (issue 7, benchmarks/accuracy.py, SpamAssassin corpus, 6,046 messages
# online, chain graham+burton; ham errors / spam errors / (1-ROCA)%): TEFT 4 / 163 / 0.0968,
# TOE 19 / 168 / 0.2435. Test-conditional training on corrections: 4 / 163 / 0.0968 with,
# 4 / 170 / 0.0988 without.
TEFT, TOE, TUM, NOTRAIN = "teft", "toe", "tum", "notrain"
TOE_MATURE = 100         # TOE trains everything until >100 spam and >100 innocent are learned
TUM_MATURE_HITS = 50     # TUM stops writing a token once it has this many hits ...
TUM_UNSURE = 0.70        # ... unless the classification's confidence is below this
TCT_PASSES = 5           # test-conditional training: at most this many passes in total
TCT_MIN_INNOCENT = 1000  # ... and for spam reports only once this much innocent is known
MAX_APPLIED = 255        # applied amounts are stored in one byte


def other(klass: str) -> str:
    return "innocent" if klass == "spam" else "spam"


def effective_mode(mode: str, spam_learned: int, innocent_learned: int) -> str:
    """TOE acts as TEFT until the user has enough of both classes learned."""
    if mode == TOE and (spam_learned <= TOE_MATURE or innocent_learned <= TOE_MATURE):
        return TEFT
    return mode


def inbound(mode: str, klass: str, hits: list[int], confidence: float,
            whitelist_index: int | None) -> tuple[bytearray, list[str]]:
    """What classifying a message as `klass` writes: (applied per token, counters).

    `hits` is each token's spam+innocent count before this message; mode is the effective one.
    """
    n = len(hits)
    if mode == NOTRAIN:
        return bytearray(n), []
    if mode == TOE:
        applied = bytearray(n)
        # DSPAM keeps learning the sender even when it only classifies: the whitelist needs it.
        if whitelist_index is not None:
            applied[whitelist_index] = 1
        return applied, [klass + "_classified"]
    if mode == TUM and confidence >= TUM_UNSURE:
        applied = bytearray(1 if h < TUM_MATURE_HITS else 0 for h in hits)
        if whitelist_index is not None:
            applied[whitelist_index] = 1
        return applied, [klass + "_learned"]
    return bytearray(b"\x01" * n), [klass + "_learned"]


def corpus(klass: str, n: int) -> tuple[bytearray, list[str]]:
    """A message fed as corpus: every token +1, learned and corpusfed counted."""
    return bytearray(b"\x01" * n), [klass + "_learned", klass + "_corpusfed"]


def inoculation(klass: str, counts: list[tuple[int, int]]) -> tuple[bytearray, list[str]]:
    """Heavy training: tokens new to the class's opposite and rare get +5, the rest +2.

    DSPAM applies this to spam only (innocent inoculation added 1); it is symmetric here.
    """
    applied = bytearray()
    for spam, innocent in counts:
        own, opposite = (spam, innocent) if klass == "spam" else (innocent, spam)
        applied.append(5 if opposite < 2 and own < 5 else 2)
    return applied, [klass + "_learned", klass + "_corpusfed"]


def correction(klass: str, result: str) -> list[str]:
    """Counters a message counts towards once a user said it is `klass`.

    `result` is what the filter first said ("spam", "innocent" or "whitelisted").
    """
    first = "innocent" if result == "whitelisted" else result
    if klass == first:
        return [klass + "_learned"]  # the user took back an earlier report
    return [klass + "_learned", klass + "_misclassified"]


def wants_more_passes(klass: str, stats_innocent: int, enabled: bool) -> bool:
    """Whether test-conditional training applies to a correction into `klass`."""
    if not enabled:
        return False
    return klass == "innocent" or stats_innocent >= TCT_MIN_INNOCENT
