"""Classification, training modes, corrections and the bookkeeping behind DSPAM's statistics."""

from __future__ import annotations

import itertools

import pytest

from spamsift.filter.engine import classifier, config
from spamsift.filter.engine.agent import Agent
from spamsift.filter.engine.errors import ForeignSignatureError, UnknownSignatureError
from spamsift.filter.engine.store.base import open_store
from spamsift.filter.engine.tokenizer import token_id

HAM = [f"From: Bob <bob@example.com>\nSubject: lunch {n}\n\nHello Alice, lunch at noon "
       f"tomorrow? Regards, Bob {n}\n".encode() for n in range(150)]
SPAM = [f"From: Deals <deals{n}@promo.biz>\nSubject: cheap pills {n}\nReceived: from x "
        f"([203.0.113.{n + 1}]) by mx\n\nBuy cheap pills now, limited offer, click {n}\n".encode()
        for n in range(150)]


def make_agent(**settings) -> Agent:
    counter = itertools.count()
    agent = Agent(config.Settings({}).replace(**settings) if settings else config.Settings({}),
                  open_store("memory://"), clock=lambda: 1764000000.0,
                  make_id=lambda: f"{next(counter):030x}")
    return agent


def token_counts(agent: Agent, user: str, raw: bytes) -> dict[str, tuple[int, int]]:
    ctx = agent.user(user)
    freq = agent.tokenizer(ctx.settings).tokenize(raw)
    found = agent.store.lookup(ctx.uid, [token_id(t) for t in freq])
    return {t: found.get(token_id(t), (0, 0)) for t in freq}


def snapshot(agent: Agent, user: str):
    ctx = agent.user(user)
    store = agent.store
    # Copies of the rows, without last_hit: the memory store updates rows in place.
    tokens = {k: tuple(v[:2]) for k, v in store.tokens.items() if v[0] or v[1]}
    sources = sorted(r for r in store.sources(ctx.uid) if r[2] or r[3])
    return (tokens, store.stats(ctx.uid).as_tuple(), sources)


def trained(n: int = 20, **settings) -> Agent:
    agent = make_agent(**settings)
    ctx = agent.user("alice")
    for ham, spam in zip(HAM[:n], SPAM[:n]):
        agent.learn(ctx, ham, "innocent")
        agent.learn(ctx, spam, "spam")
    return agent


def test_dspam_probability_figures():
    # Verified against DSPAM 3.10.2 (reference §4.1).
    assert classifier.token_probability(1, 3, 11, 10, True) == pytest.approx(0.13158, abs=1e-5)
    assert classifier.token_probability(5, 6, 11, 10, True) == pytest.approx(0.27473, abs=1e-5)
    assert classifier.token_probability(1, 1, 11, 10, True) == classifier.HAPAX_P


def test_untrained_user_gets_dspams_neutral_probability():
    agent = make_agent()
    out = agent.process(agent.user("new"), HAM[0])
    assert out.result == "Innocent"
    assert out.probability == pytest.approx(1 / (1 + 1.5 ** 15), abs=1e-4)  # 0.0023
    assert out.confidence == 0.5


@pytest.mark.parametrize("algorithms", [("graham",), ("burton",), ("robinson",),
                                        ("chi-square",), ("graham", "burton")])
def test_every_algorithm_separates_trained_classes(algorithms):
    agent = trained(algorithm=list(algorithms), whitelist=False)
    ctx = agent.user("alice")
    assert agent.process(ctx, SPAM[30], classify_only=True).result == "Spam"
    assert agent.process(ctx, HAM[30], classify_only=True).result == "Innocent"


def test_teft_learns_every_message_and_signature_records_it():
    agent = trained(3)
    ctx = agent.user("alice")
    before = token_counts(agent, "alice", SPAM[10])
    out = agent.process(ctx, SPAM[10])
    after = token_counts(agent, "alice", SPAM[10])
    klass = 0 if out.is_spam else 1
    assert all(after[t][klass] == before[t][klass] + 1 for t in after)
    sig = agent.store.signature(out.signature)
    assert sig.trained == ("spam" if out.is_spam else "innocent")
    assert set(sig.applied) == {1} and len(sig.tokens) == len(after)
    assert sig.source_ip == "203.0.113.11"


def test_toe_only_classifies_a_mature_user_but_learns_the_sender():
    agent = trained(101, training_mode="toe")
    ctx = agent.user("alice")
    tokens_before = {k: tuple(v[:2]) for k, v in agent.store.tokens.items()}
    stats_before = agent.store.stats(ctx.uid)
    out = agent.process(ctx, HAM[5])
    changed = {k for k, v in agent.store.tokens.items() if tuple(v[:2]) != tokens_before.get(k)}
    assert changed == {(ctx.uid, token_id("wl:bob@example.com"))}
    stats = agent.store.stats(ctx.uid)
    assert stats.innocent_classified == stats_before.innocent_classified + 1
    assert stats.innocent_learned == stats_before.innocent_learned
    assert out.result in ("Innocent", "Whitelisted")


def test_toe_acts_as_teft_until_mature():
    agent = trained(5, training_mode="toe")
    ctx = agent.user("alice")
    out = agent.process(ctx, HAM[10])
    assert out.action == "learned"
    assert set(agent.store.signature(out.signature).applied) == {1}


def test_tum_skips_mature_tokens_when_confident():
    agent = trained(60, training_mode="tum", whitelist=False)
    ctx = agent.user("alice")
    out = agent.process(ctx, SPAM[61])
    sig = agent.store.signature(out.signature)
    assert out.confidence >= 0.7
    assert 0 in sig.applied and 1 in sig.applied  # common tokens skipped, rare ones written


def test_notrain_and_classify_write_nothing():
    agent = trained(3)
    ctx = agent.user("alice")
    before = snapshot(agent, "alice")
    assert agent.process(ctx, SPAM[9], mode="notrain").signature is None
    assert agent.process(ctx, SPAM[9], classify_only=True).signature is None
    assert snapshot(agent, "alice") == before


def test_correction_then_reversal_restores_every_count_exactly():
    agent = trained(10, test_conditional_training=False)
    ctx = agent.user("alice")
    out = agent.process(ctx, HAM[20])
    assert out.result in ("Innocent", "Whitelisted")
    after_filtering = snapshot(agent, "alice")
    counts = token_counts(agent, "alice", HAM[20])
    done = agent.retrain("alice", out.signature, "spam")
    assert done.action == "retrained"
    moved = token_counts(agent, "alice", HAM[20])
    assert all(moved[t] == (counts[t][0] + 1, counts[t][1] - 1) for t in counts)
    stats = agent.store.stats(ctx.uid)
    assert stats.spam_misclassified == 1
    # The same report again is a no-op, never a second training.
    assert agent.retrain("alice", out.signature, "spam").action == "unchanged"
    assert token_counts(agent, "alice", HAM[20]) == moved
    # Taking the report back returns to exactly the state after filtering.
    assert agent.retrain("alice", out.signature, "innocent").action == "retrained"
    assert snapshot(agent, "alice") == after_filtering


def test_toe_correction_does_not_inflate_true_negatives():
    # DSPAM left innocent_classified counted after a TOE miss was reported, so TN grew.
    agent = trained(101, training_mode="toe", whitelist=False)
    ctx = agent.user("alice")
    stats0 = agent.store.stats(ctx.uid)
    out = agent.process(ctx, HAM[7])
    agent.retrain("alice", out.signature, "spam")
    stats = agent.store.stats(ctx.uid)
    assert stats.innocent_classified == stats0.innocent_classified
    assert stats.spam_learned == stats0.spam_learned + 1
    assert stats.spam_misclassified == stats0.spam_misclassified + 1


def test_toe_report_back_to_the_first_verdict_learns_it_fully():
    # docs/aliases.md: in TOE a report back to the first verdict learns the message as that class;
    # it does not restore "classified only" (the signature keeps the last training, not the
    # classification's own record).
    agent = trained(101, training_mode="toe", whitelist=False,
                    test_conditional_training=False)
    ctx = agent.user("alice")
    out = agent.process(ctx, HAM[7])
    assert out.result == "Innocent"
    assert sum(agent.store.signature(out.signature).applied) == 1  # classified; sender only
    before = agent.store.stats(ctx.uid)
    counts = token_counts(agent, "alice", HAM[7])
    agent.retrain("alice", out.signature, "spam")
    agent.retrain("alice", out.signature, "innocent")
    stats = agent.store.stats(ctx.uid)
    assert stats.innocent_classified == before.innocent_classified - 1
    assert stats.innocent_learned == before.innocent_learned + 1
    assert stats.spam_learned == before.spam_learned
    back = token_counts(agent, "alice", HAM[7])
    sender = "wl:bob@example.com"
    assert back[sender] == counts[sender]  # learned at classification already
    assert all(back[t] == (counts[t][0], counts[t][1] + 1) for t in counts if t != sender)


def test_test_conditional_training_repeats_until_the_message_scores_right():
    agent = trained(20, whitelist=False)
    ctx = agent.user("alice")
    out = agent.process(ctx, SPAM[25])
    assert out.result == "Spam"
    agent.retrain("alice", out.signature, "innocent")
    sig = agent.store.signature(out.signature)
    assert max(sig.applied) > 1  # more than one pass was needed to flip a clear spam
    assert agent.process(ctx, SPAM[25], classify_only=True).result == "Innocent"
    # And the undo removes all passes.
    agent.retrain("alice", out.signature, "spam")
    assert agent.store.signature(out.signature).applied == bytes([1]) * len(sig.tokens)


def test_spam_reports_train_once_until_enough_innocent_is_known():
    # DSPAM: no test-conditional passes for spam reports below 1000 innocent messages.
    agent = trained(20, whitelist=False)
    out = agent.process(agent.user("alice"), HAM[25])
    agent.retrain("alice", out.signature, "spam")
    assert set(agent.store.signature(out.signature).applied) == {1}


def test_unlearn_removes_the_message_entirely():
    agent = trained(5)
    ctx = agent.user("alice")
    before = snapshot(agent, "alice")
    out = agent.process(ctx, SPAM[12])
    assert agent.retrain("alice", out.signature, None, unlearn=True).action == "unlearned"
    assert snapshot(agent, "alice") == before


def test_signatures_belong_to_their_user():
    agent = trained(3)
    out = agent.process(agent.user("alice"), SPAM[15])
    agent.user("mallory")
    with pytest.raises(ForeignSignatureError):
        agent.retrain("mallory", out.signature, "innocent")
    with pytest.raises(UnknownSignatureError):
        agent.retrain("alice", "f" * 30, "innocent")
    with pytest.raises(UnknownSignatureError):
        agent.retrain("nobody-yet", out.signature, "innocent")
    # The owner is found from the signature when no user is named (global alias).
    assert agent.retrain(None, out.signature, "innocent").user == "alice"


def test_auto_whitelist_after_threshold_and_false_positive_fixes_the_sender():
    agent = make_agent(whitelist_threshold=3)
    ctx = agent.user("alice")
    for ham in HAM[:4]:
        agent.learn(ctx, ham, "innocent")
    out = agent.process(ctx, b"From: bob@example.com\nSubject: x\n\nanything\n")
    assert out.result == "Whitelisted"


def test_inoculation_weights_rare_tokens_more():
    agent = trained(3)
    ctx = agent.user("alice")
    raw = b"Subject: brand new scam\n\nfreshword pills\n"
    before = token_counts(agent, "alice", raw)
    fed = agent.store.stats(ctx.uid).spam_corpusfed
    agent.learn(ctx, raw, "spam", source="inoculation")
    after = token_counts(agent, "alice", raw)
    assert after["freshword"][0] - before["freshword"][0] == 5
    assert agent.store.stats(ctx.uid).spam_corpusfed == fed + 1


def test_source_addresses_follow_corrections():
    agent = trained(5, whitelist=False)
    ctx = agent.user("alice")
    out = agent.process(ctx, SPAM[33])
    ip = "203.0.113.34"
    row = [r for r in agent.store.sources(ctx.uid) if r[1] == ip][0]
    assert row[2:] == ((1, 0) if out.is_spam else (0, 1))
    agent.retrain("alice", out.signature, "innocent" if out.is_spam else "spam")
    row = [r for r in agent.store.sources(ctx.uid) if r[1] == ip][0]
    assert row[2:] == ((0, 1) if out.is_spam else (1, 0))


def weights_of(agent: Agent, user: str) -> dict[int, float]:
    uid = agent.user(user).uid
    return {tok: row[3] for (u, tok), row in agent.store.tokens.items() if u == uid and row[3]}


def test_logistic_model_learns_and_a_correction_applies_exactly_once():
    from spamsift.filter.engine import logistic

    agent = trained(10, algorithm=["graham", "burton", "logistic"],
                    test_conditional_training=False)
    ctx = agent.user("alice")
    assert weights_of(agent, "alice")  # corpus learning trained the model too
    before = weights_of(agent, "alice")
    out = agent.process(ctx, HAM[20])
    assert out.result in ("Innocent", "Whitelisted")
    sig = agent.store.signature(out.signature)
    step, base = sig.model
    feats = logistic.features(sig.tokens)
    after = weights_of(agent, "alice")
    # TEFT: the inbound step went to every token of the message and to the bias, nothing else.
    for tok in feats:
        assert after.get(tok, 0.0) == pytest.approx(before.get(tok, 0.0) + step)
    assert {t for t in after if t not in feats} == {t for t in before if t not in feats}
    assert agent.retrain("alice", out.signature, "spam").action == "retrained"
    spam_step = agent.store.signature(out.signature).model[0]
    assert spam_step > 0 and agent.store.signature(out.signature).model[1] == base
    moved = weights_of(agent, "alice")
    for tok in feats:  # the inbound step taken back, the spam step applied: once
        assert moved.get(tok, 0.0) == pytest.approx(before.get(tok, 0.0) + spam_step)
    assert agent.retrain("alice", out.signature, "spam").action == "unchanged"
    assert weights_of(agent, "alice") == moved
    assert agent.retrain("alice", out.signature, None, unlearn=True).action == "unlearned"
    assert agent.store.signature(out.signature).model == (0.0, base)
    restored = weights_of(agent, "alice")
    # The reputation features the signature's flags recorded took their steps too (rounding
    # may leave a residue of 1e-17 there, as on any feature).
    own = set(feats) | set(logistic.flagged_reputation(agent.store.signature(out.signature).flags))
    assert set(restored) <= set(before) | own
    for tok in set(before) | own:
        assert restored.get(tok, 0.0) == pytest.approx(before.get(tok, 0.0), abs=1e-12)


def test_logistic_toe_learns_only_corrections():
    agent = trained(101, training_mode="toe", whitelist=False,
                    algorithm=["graham", "burton", "logistic"])
    ctx = agent.user("alice")
    before = weights_of(agent, "alice")
    out = agent.process(ctx, HAM[120])
    assert out.result == "Innocent" and weights_of(agent, "alice") == before
    assert agent.store.signature(out.signature).model[0] == 0.0
    agent.retrain("alice", out.signature, "spam")
    assert agent.store.signature(out.signature).model[0] > 0
    assert weights_of(agent, "alice") != before


def test_logistic_alone_separates_classes_and_survives_corrections():
    agent = trained(20, algorithm=["logistic"], whitelist=False)
    ctx = agent.user("alice")
    spam = agent.process(ctx, SPAM[30], classify_only=True)
    ham = agent.process(ctx, HAM[30], classify_only=True)
    assert (spam.result, ham.result) == ("Spam", "Innocent")
    assert spam.score > 0 > ham.score and spam.probability > 0.5 > ham.probability
    out = agent.process(ctx, SPAM[31])
    agent.retrain("alice", out.signature, "innocent")  # test-conditional passes, Bayes-only
    assert agent.store.signature(out.signature).trained == "innocent"


def test_tokens_sharing_one_count_pair_cannot_fill_the_selection():
    """20 tokens that always came together (6 spam, 0 innocent each: one fact, such as a
    list's headers) and 10 distinct innocent tokens, the redundant ones first: DSPAM's
    selection (same_counts 0) takes 15 of the redundant tokens and calls it spam; with the
    limit, 3 of them sit beside the innocent evidence."""
    freq = {n: 1 for n in range(30)}
    counts = {n: (6, 0) for n in range(20)} | {20 + k: (0, 5 + k) for k in range(10)}
    dspam = classifier.classify(freq, None, counts, 100, 100, ("graham", "burton"), True, 0)
    limited = classifier.classify(freq, None, counts, 100, 100, ("graham", "burton"), True, 3)
    assert dspam.is_spam and not limited.is_spam
    assert sum(1 for token, _p in dspam.factors if token < 20) == 15
    assert sum(1 for token, _p in limited.factors if token < 20) == 3
    # tokens whose counts differ are all selectable, however alike their probabilities
    distinct = {n: (6 + n, 0) for n in range(20)} | {20 + k: (0, 5 + k) for k in range(10)}
    assert classifier.classify(freq, None, distinct, 100, 100, ("graham",), True, 3).is_spam


LIST_HEADERS = ("List-Id: Talk <talk.lists.example.org>\nList-Post: <mailto:talk@lists.example.org>"
                "\nList-Help: <mailto:talk-request@lists.example.org?subject=help>\n"
                "List-Subscribe: <https://lists.example.org/listinfo/talk>\n"
                "List-Unsubscribe: <https://lists.example.org/listinfo/talk>\n"
                "Sender: talk-admin@lists.example.org\nErrors-To: talk-admin@lists.example.org\n"
                "X-Beenthere: talk@lists.example.org\nPrecedence: bulk\n")


@pytest.mark.parametrize("same_counts, called", [(0, "Spam"), (3, "Innocent")])
def test_a_first_ham_post_to_a_list_that_brought_only_spam(same_counts, called):
    """The case behind `same_counts` (docs/classifier.md, "Redundant tokens"): a list whose six
    earlier messages were spam; a plain question to it. DSPAM's selection is all list headers."""
    agent = trained(40, algorithm=["graham", "burton"], same_counts=same_counts)
    ctx = agent.user("alice")
    for n in range(6):
        agent.learn(ctx, (f"From: Offer {n} <offer{n}@deals{n}.biz>\nTo: talk@lists.example.org\n"
                          f"Subject: money {n}\n{LIST_HEADERS}\nWin money fast, act now "
                          f"{n}\n").encode(), "spam")
    post = (f"From: Carol <carol@example.net>\nTo: talk@lists.example.org\nSubject: lunch\n"
            f"{LIST_HEADERS}\nHello Alice, lunch at noon tomorrow? Regards, Bob\n").encode()
    assert agent.process(ctx, post, classify_only=True).result == called


def test_the_score_is_signed_by_the_result_and_whitelisted_mail_ranks_last():
    """X-DSPAM-Score (Outcome.score): at least 0 exactly when the result is Spam, and a
    whitelisted message below every other even when the words said spam."""
    from spamsift.filter.engine.agent import WHITELISTED

    plain = trained(5, whitelist=False)
    spam = [plain.process(plain.user("alice"), raw) for raw in SPAM[20:26]]
    ham = [plain.process(plain.user("alice"), raw) for raw in HAM[20:26]]
    assert all(o.score >= 0 and o.is_spam for o in spam)
    assert all(o.score < 0 and not o.is_spam for o in ham)
    agent = trained(5, whitelist_threshold=3)
    ctx = agent.user("alice")
    outcomes = [agent.process(ctx, raw) for raw in SPAM[20:26]]
    for ham_raw in HAM[:4]:
        agent.learn(ctx, ham_raw, "innocent")
    spammy = SPAM[30].replace(b"From: ", b"From: bob@example.com\nX-Old-From: ", 1)
    white = agent.process(ctx, spammy)
    assert white.result == "Whitelisted" and white.score < -WHITELISTED
    assert white.score < min(o.score for o in outcomes)


def test_unsure_band_marks_scores_inside_it_and_can_be_turned_off():
    from spamsift.filter.engine.errors import ConfigError

    fresh = make_agent()
    out = fresh.process(fresh.user("alice"), HAM[0])
    low, high = config.Settings({}).unsure_band
    assert low <= out.score < high and out.unsure  # a new user's filter is unsure
    off = make_agent(unsure_band=[])
    assert not off.process(off.user("alice"), HAM[0]).unsure
    narrow = make_agent(unsure_band=[out.score + 0.5, out.score + 1.0])
    assert not narrow.process(narrow.user("alice"), HAM[0]).unsure
    for bad in ([1.0], [0.0, -1.0], ["x", 1], [0.0, float("inf")]):
        with pytest.raises(ConfigError):
            config.Settings({}).replace(unsure_band=bad)


def test_unstamp_never_touches_the_body_after_an_lf_header_block():
    """A header block ended by LF LF, and a body holding CRLF CRLF and a line that looks like
    a tagged Subject: only the header's Subject tag goes (the private splitter took the first
    CRLFCRLF anywhere as the end of the header, and unstamped body text)."""
    from spamsift.filter.engine.message import unstamp

    settings = config.Settings({}).replace(spam_subject="[SPAM]")
    body = b"Subject: [SPAM] quoted in the body\nmore\r\n\r\nend\n"
    raw = b"From: a@b\nSubject: [SPAM] hello\nX-DSPAM-Result: Spam\n\n" + body
    out = unstamp(raw, settings)
    assert out == b"From: a@b\nSubject: hello\nX-DSPAM-Result: Spam\n\n" + body
