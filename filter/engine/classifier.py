"""Token probabilities and the combining algorithms: graham, burton, robinson, chi-square.

Each enabled algorithm votes; the message is spam when any one says spam (DSPAM's
``Algorithm graham burton`` semantics). The ``logistic`` algorithm (logistic.py, the default
beside graham and burton) is not scored here: `Agent.score` adds it to this module's verdict,
and then the decision is the model's margin plus this verdict's score.

Where DSPAM 3.10.2 has a known bug this module does what the algorithm's author meant instead:

* Robinson's shrink uses each token's own hit count, not the heap size.
* chi-square uses Robinson's f(w) with strength 0.45 and a 0.1 exclusion radius (SpamBayes'
  tested defaults) instead of DSPAM's 0.45 radius, which ignored all but the most extreme tokens.
* Confidence without any significant token is 0.5 (we know nothing), not DSPAM's 1.00.

And where DSPAM is merely worse: graham, burton and robinson choose among the most significant
tokens with at most SAME_COUNTS of them sharing one (spam, innocent) count pair, so one fact
split into many tokens (a mailing list's headers) cannot fill the selection (figures below).
"""

from __future__ import annotations

import math

# Measured with benchmarks/accuracy.py (SpamAssassin corpus, 6,046 messages, seed 1, online
# TEFT, chain tokens; figures are ham errors / spam errors / (1-ROCA)%), issue 7:
#   graham+burton as here ........................................ 4 / 163 / 0.0968
#   15 -> 27 graham tokens (burton 27) ............................ 4 / 196 / 0.108
#   50 graham and 50 burton tokens ................................ 6 / 245 / 0.153
#   Robinson's smoothed f(w) (s=0.45) for DSPAM's clamped p ....... 1 / 191 / 0.194
#   ... with s=1 ................................................... 2 / 218 / 0.216
#   every token's smoothed log-odds summed (plain naive Bayes) ..... 33 / 93 / 0.284
#   ... the 150 strongest only ..................................... 27 / 90 / 0.195
#   no innocent bias (processor_bias=false) ....................... 22 / 66 / 0.114
# so DSPAM's rules stay: few, clamped, significant tokens rank best on this mail.
#
# What DSPAM gets wrong is redundancy: one fact split into many tokens fills the selection.
# A post from a mailing list whose earlier mail was all spam has 15+ list-header tokens
# (List-Post, List-Help, Sender, Errors-To, ...) that each count, say, 6 spam and 0 innocent:
# they took all 15 of graham's places and scored a plain question to the list as spam, with
# everything else in it unheard. Tokens that always occurred together have the same counts, so
# at most SAME_COUNTS tokens with one (spam, innocent) count pair are selected. Seeds 1 / 2 /
# 3, ham errors, spam errors, (1-ROCA)%:
#   graham+burton ....................... 4 / 9 / 8, 162 / 193 / 180, 0.0964 / 0.1837 / 0.1553
#   ... SAME_COUNTS = 3 ................. 5 / 6 / 7, 163 / 189 / 180, 0.0863 / 0.1186 / 0.1346
#   robinson ............................ 5 / 8 / 8, 187 / 228 / 225, 0.1215 / 0.1924 / 0.1535
#   ... SAME_COUNTS = 3 ................. 4 / 6 / 6, 192 / 219 / 225, 0.1264 / 0.1413 / 0.1412
#   graham+burton+logistic (the default)  3 / 8 / 9, 144 / 147 / 156, 0.0719 / 0.1393 / 0.0823
#   ... SAME_COUNTS = 1 ................. 3 / 4 / 4, 169 / 170 / 168, 0.0678 / 0.0870 / 0.0744
#   ... SAME_COUNTS = 2 ................. 3 / 5 / 7, 151 / 152 / 153, 0.0645 / 0.0941 / 0.0580
#   ... SAME_COUNTS = 3 ................. 3 / 5 / 7, 148 / 150 / 147, 0.0615 / 0.0927 / 0.0616
# (then logistic.py's BAYES_SCALE and SPAM_MARGIN were re-tuned on top of it).
# Issue 21, with the tokenizer's HTML-in-plain rule (4 / 146 / 0.0528, 6 / 139 / 0.0751,
# 6 / 141 / 0.0548 on seeds 1 / 2 / 3): MIN_HITS 4, 7 / 149 / 0.0519, 5 / 141 / 0.0762, 8 / 141 /
# 0.0531; MIN_HITS 6, 1 / 149 / 0.0561, 5 / 144 / 0.0776, 7 / 142 / 0.0566. Neither is better on
# all three seeds: MIN_HITS stays 5.
GRAHAM_TOKENS = 15
BURTON_TOKENS = 27
ROBINSON_TOKENS = 25
SAME_COUNTS = 3                # selected tokens with one (spam, innocent) count pair (the
                               # same_counts setting's default)
CHI_MAX_TOKENS = 150
SPAM_THRESHOLD = 0.9          # graham and burton
ROBINSON_THRESHOLD = 0.5
CHI_THRESHOLD = 0.5
MIN_HITS = 5                  # DSPAM's hapax rule: rarer tokens count as 0.4
HAPAX_P = 0.4
CHI_STRENGTH = 0.45           # Robinson's s
CHI_RADIUS = 0.1              # tokens with |f - 0.5| below this carry no evidence
ORDER = ("graham", "burton", "robinson", "chi-square")
_SPAM_LOGIT = math.log(SPAM_THRESHOLD / (1.0 - SPAM_THRESHOLD))


class Verdict:
    """The outcome of scoring one message."""

    __slots__ = ("is_spam", "probability", "confidence", "factors", "votes", "score", "model")

    def __init__(self, is_spam: bool, probability: float, confidence: float,
                 factors: list[tuple[str, float]], votes: dict[str, float],
                 score: float = 0.0) -> None:
        self.is_spam = is_spam
        self.probability = probability
        self.confidence = confidence
        self.factors = factors
        self.votes = votes
        # A spamminess with full resolution, >= 0 exactly when is_spam: the largest of the
        # enabled algorithms' log-odds margins over their thresholds. Probabilities saturate
        # at 0.0000/1.0000 on most mail, which would tie them when ranking for a ROC curve.
        self.score = score
        # With the logistic algorithm: (margin z, Bayes score beside it, feature ids), which
        # training needs (filter/engine/logistic.py); None without it.
        self.model: tuple[float, float, list[int]] | None = None


def token_probability(s: int, i: int, ts: int, ti: int, bias: bool) -> float:
    """DSPAM's per-token probability (Graham's Bayesian chain rule, with innocent bias)."""
    w = 2 if bias else 1
    if s + w * i < MIN_HITS:
        return HAPAX_P
    if ts > 0 and ti > 0:
        if s and i:
            p = (s / ts) / (s / ts + w * i / ti)
        elif i:
            p = min(0.01, (1 / ts) / ((1 / ts) + (w * i / ti)))
        else:
            p = max(0.99, (s / ts) / ((s / ts) + (w / ti)))
    else:
        p = 0.01 if s == 0 else 0.99 if i == 0 else 0.5
    return 0.0001 if p < 0.0001 else 0.9999 if p > 0.9999 else p


def _combine(ps: list[float]) -> tuple[float, float]:
    """Graham's combined probability of `ps`, and its log-odds (which never saturates)."""
    # Products in log space: 27 probabilities of 0.0001 underflow no double, but logs keep
    # the ratio exact where a product of many small values would lose precision.
    log_p = sum(math.log(p) for p in ps)
    log_q = sum(math.log(1.0 - p) for p in ps)
    m = max(log_p, log_q)
    a, b = math.exp(log_p - m), math.exp(log_q - m)
    return a / (a + b), log_p - log_q


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def _log_chi2q(x2: float, v: int) -> float:
    """log of `_chi2q`, exact where the tail itself underflows to 0."""
    m = x2 / 2.0
    if m <= 0.0:
        return 0.0
    log_m = math.log(m)
    log_term = best = 0.0
    terms = [0.0]
    for i in range(1, v // 2):
        log_term += log_m - math.log(i)
        terms.append(log_term)
        if log_term > best:
            best = log_term
    total = sum(math.exp(t - best) for t in terms)
    return min(-m + best + math.log(total), 0.0)


def _chi2q(x2: float, v: int) -> float:
    """Upper tail of the chi-squared distribution with an even number `v` of degrees."""
    m = x2 / 2.0
    total = term = math.exp(-m)
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def classify(freq: dict, ids: dict[str, int] | None, counts: dict[int, tuple[int, int]],
             ts: int, ti: int, algorithms: tuple[str, ...], bias: bool = True,
             same_counts: int = SAME_COUNTS) -> Verdict:
    """Score tokens: `freq` token -> frequency, `ids` token text -> id (None when the tokens
    are ids already, as when retraining from a signature), `counts` id -> (spam, innocent);
    `same_counts`: selected tokens per count pair at most (0: no limit)."""
    # Rows sort by significance: |0.5 - p| descending, then frequency, then complexity
    # (DSPAM's heap order), then first seen. Keys are negated and the position is the fourth
    # element, so a plain tuple sort does it without a key function (a key function call per
    # token was a fifth of classifying): (-distance, -frequency, -complexity, n, p, token,
    # hits, (spam, innocent) or None under the hapax rule). Tokens under the hapax rule, most
    # of a message's, skip the probability call.
    scored: list[tuple] = []
    probability = token_probability
    get = counts.get
    rare = 2 if bias else 1
    hapax_distance = -abs(0.5 - HAPAX_P)
    zero = (0, 0)
    for n, (token, f) in enumerate(freq.items()):
        if ids is None:
            s, i = get(token, zero)
            complexity = 0
        else:
            s, i = get(ids[token], zero)
            complexity = token.count("+")
        if s + rare * i < MIN_HITS:
            scored.append((hapax_distance, -f, -complexity, n, HAPAX_P, token, s + i, None))
            continue
        p = probability(s, i, ts, ti, bias)
        scored.append((-abs(0.5 - p), -f, -complexity, n, p, token, s + i, (s, i)))
    scored.sort()
    scored = _selectable(scored, same_counts)

    votes: dict[str, float] = {}
    margins: dict[str, float] = {}
    factors: dict[str, list[tuple[str, float]]] = {}
    enabled = [a for a in ORDER if a in algorithms]
    for name in enabled:
        if name == "graham":
            top = scored[:GRAHAM_TOKENS]
            votes[name], margins[name] = _combine([r[4] for r in top]) if top else (0.5, 0.0)
            margins[name] -= _SPAM_LOGIT
            factors[name] = [(r[5], r[4]) for r in top]
        elif name == "burton":
            ps: list[float] = []
            used = []
            for r in scored:
                if len(ps) >= BURTON_TOKENS:
                    break
                ps.append(r[4])
                if r[1] < -1 and len(ps) < BURTON_TOKENS:
                    ps.append(r[4])
                used.append((r[5], r[4]))
            votes[name], margins[name] = _combine(ps) if ps else (0.5, 0.0)
            margins[name] -= _SPAM_LOGIT
            factors[name] = used
        elif name == "robinson":
            votes[name], factors[name] = _robinson(scored)
            margins[name] = _logit(votes[name])
        else:
            votes[name], factors[name], margins[name] = _chi_square(freq, ids, counts, ts, ti)

    thresholds = {"graham": SPAM_THRESHOLD, "burton": SPAM_THRESHOLD,
                  "robinson": ROBINSON_THRESHOLD, "chi-square": CHI_THRESHOLD}
    spam_votes = [a for a in enabled if votes[a] >= thresholds[a]]
    is_spam = bool(spam_votes)
    if is_spam:
        # DSPAM reports Burton's figure over Graham's, and the others only without either.
        bayesian = [a for a in spam_votes if a in ("graham", "burton")]
        reporter = bayesian[-1] if bayesian else spam_votes[0]
    else:
        reporter = enabled[0]
    robinson = votes.get("robinson")
    if robinson is None:
        robinson = _robinson(scored)[0]
    confidence = robinson if is_spam else 1.0 - robinson
    chosen = factors[spam_votes[0]] if is_spam else factors[enabled[-1]]
    score = max(margins[a] for a in enabled)
    # The margins' signs are the votes, except where rounding puts a vote exactly on its
    # threshold; keep `score >= 0` equivalent to `is_spam` there too.
    if is_spam and score < 0.0:
        score = 0.0
    elif not is_spam and score >= 0.0:
        score = -1e-12
    return Verdict(is_spam, votes[reporter], confidence, chosen, votes, score)


_SELECTED = max(GRAHAM_TOKENS, BURTON_TOKENS, ROBINSON_TOKENS)  # rows any algorithm reads


def _selectable(scored: list[tuple], same_counts: int) -> list[tuple]:
    """The most significant rows (sorted), at most `same_counts` of them (0: any number) with
    one count pair: the rows graham, burton and robinson choose from. Rows under the hapax
    rule carry no count pair and are never dropped."""
    if same_counts <= 0:
        return scored[:_SELECTED]
    seen: dict[tuple[int, int], int] = {}
    kept = []
    for row in scored:
        pair = row[7]
        if pair is not None:
            n = seen.get(pair, 0)
            if n >= same_counts:
                continue
            seen[pair] = n + 1
        kept.append(row)
        if len(kept) >= _SELECTED:
            break
    return kept


def _robinson(scored: list[tuple]) -> tuple[float, list[tuple[str, float]]]:
    logs_p = logs_q = 0.0
    n = 0
    used = []
    for r in scored[:ROBINSON_TOKENS]:
        hits = r[6]
        p = (0.01 * 0.5 + hits * r[4]) / (0.01 + hits) if hits else r[4]
        if 0.3 <= p <= 0.7:
            continue
        for _ in range(2 if r[1] < -1 else 1):
            logs_p += math.log(1.0 - p)
            logs_q += math.log(p)
            n += 1
        used.append((r[5], p))
    if n == 0:
        return 0.5, used
    big_p = 1.0 - math.exp(logs_p / n)
    big_q = 1.0 - math.exp(logs_q / n)
    if big_p + big_q == 0:
        return 0.5, used
    return (1.0 + (big_p - big_q) / (big_p + big_q)) / 2.0, used


def _chi_square(freq: dict, ids: dict[str, int] | None, counts: dict[int, tuple[int, int]],
                ts: int, ti: int) -> tuple[float, list[tuple[str, float]], float]:
    """(indicator, clues, margin): the margin is log Q(ham) - log Q(spam), the log-ratio of
    the two chi-squared tails, >= 0 exactly when the indicator is >= 0.5."""
    clues = []
    for token in freq:
        s, i = counts.get(token if ids is None else ids[token], (0, 0))
        n = s + i
        if n == 0 or ts == 0 or ti == 0:
            continue
        sr, hr = s / ts, i / ti
        p = sr / (sr + hr)
        f = (CHI_STRENGTH * 0.5 + n * p) / (CHI_STRENGTH + n)
        if abs(f - 0.5) >= CHI_RADIUS:
            clues.append((abs(f - 0.5), f, token))
    if not clues:
        return 0.5, [], 0.0
    clues.sort(reverse=True)
    clues = clues[:CHI_MAX_TOKENS]
    ln_h = ln_s = 0.0
    for _, f, _t in clues:
        f = min(max(f, 1e-9), 1 - 1e-9)
        ln_h += math.log(f)
        ln_s += math.log(1.0 - f)
    n = len(clues)
    ham = 1.0 - _chi2q(-2.0 * ln_h, 2 * n)    # near 1 when many f are near 0
    spam = 1.0 - _chi2q(-2.0 * ln_s, 2 * n)   # near 1 when many f are near 1
    margin = _log_chi2q(-2.0 * ln_h, 2 * n) - _log_chi2q(-2.0 * ln_s, 2 * n)
    return (spam - ham + 1.0) / 2.0, [(t, f) for _, f, t in clues], margin


EVIDENCE_PSEUDOCOUNT = 0.5  # Jeffreys' prior on each token's presence in each class


def mean_evidence(ids, counts: dict[int, tuple[int, int]], ts: int, ti: int) -> float:
    """The mean over the message's distinct token `ids` that training has seen of each
    token's log-likelihood ratio ln P(token | spam) / P(token | ham), in nats per token;
    >= 0 leans spam.

    A plain naive Bayes over all of the message's tokens, made for judging whether a message
    is in the wrong folder (``spamsift reclassify``), not for filtering: no innocent bias, no
    token selection, no class prior; each class's presence rate smoothed with
    `EVIDENCE_PSEUDOCOUNT` per outcome. The mean rather than the sum, because the chain
    tokenizer's pairs repeat the evidence of the words in them: summed, a long message's
    score is large whatever its content. Leave-one-out on the SpamAssassin corpus (the
    scenarios of tests/test_reclassify.py, seeds 1-6 of 480 messages and 1-3 of 3,000), the
    misfiled messages a ranking by it finds at 90% recall cost 2-19 others where the sum
    cost 4-18 and graham+burton without innocent bias 2-27."""
    if ts <= 0 or ti <= 0:
        return 0.0
    a = EVIDENCE_PSEUDOCOUNT
    spam_total, ham_total = ts + 2 * a, ti + 2 * a
    log = math.log
    total, n = 0.0, 0
    zero = (0, 0)
    get = counts.get
    for token in ids:
        s, i = get(token, zero)
        if s or i:
            total += log((s + a) * ham_total / ((i + a) * spam_total))
            n += 1
    return total / n if n else 0.0
