"""The records of the message flow (`agent.Agent` and its group parts, `groupscore`): a user
as one message sees them, the message scored for them, and what happened to it."""

from __future__ import annotations

from spamsift.filter.engine import groups

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spamsift.filter.engine.classifier import Verdict
    from spamsift.filter.engine.learning import Tokenized
    from spamsift.filter.engine.store.base import Stats


class UserContext:
    """A user as one message sees them: numeric id, stored preferences, effective settings."""

    __slots__ = ("name", "uid", "prefs", "settings", "groups", "data_uid")

    def __init__(self, name: str, uid: int | None, prefs: dict[str, str], settings,
                 membership: groups.Membership = groups.NO_GROUPS,
                 data_uid: int | None = None) -> None:
        self.name = name
        self.uid = uid
        self.prefs = prefs
        self.settings = settings
        # The groups that apply (filter/engine/groups.py), and whose token counts, totals and
        # model weights the user's messages read and train: a shared group's, else the
        # user's own (`uid`).
        self.groups = membership
        self.data_uid = uid if data_uid is None else data_uid


class Scored:
    """A message scored for a user: its tokens (`message`), their stored (spam, innocent)
    counts, the user's totals, the classifier's verdict, and whether the sender's whitelist
    entry overrode it.

    `counts` and `stats` are the user's own (what training decisions read) even when a merged
    group's were added for `verdict`; then `alone` is the verdict of the user's own data, and
    `consulted` the verdict of a global group that was consulted (else None)."""

    __slots__ = ("message", "counts", "stats", "verdict", "whitelisted", "alone", "consulted")

    def __init__(self, message: Tokenized, counts: dict[int, tuple[int, int]], stats: Stats,
                 verdict: Verdict, whitelisted: bool) -> None:
        self.message = message
        self.counts = counts
        self.stats = stats
        self.verdict = verdict
        self.whitelisted = whitelisted
        self.alone: Verdict | None = None
        self.consulted: Verdict | None = None


WHITELISTED = 1000.0  # subtracted from a whitelisted message's score (see Agent.outcome)


class Outcome:
    """What happened to one message for one user.

    `result` is "Spam", "Innocent" or "Whitelisted"; `action` one of "classified" (nothing
    written), "learned", "retrained", "unlearned" or "unchanged" (a correction that was
    already in effect, e.g. the same report twice). `score` is the classifier's unsaturated
    spamminess (`classifier.Verdict.score`), >= 0 exactly when the result is Spam; a
    whitelisted message's is below -`WHITELISTED`. It is X-DSPAM-Score, for ranking and
    thresholds.
    """

    __slots__ = ("user", "result", "probability", "confidence", "signature", "factors",
                 "action", "reclassified", "score", "unsure")

    def __init__(self, user: str, result: str, probability: float = 0.0,
                 confidence: float = 0.0, signature: str | None = None,
                 factors: list[tuple[str, float]] | None = None, action: str = "classified",
                 reclassified: bool = False) -> None:
        self.user = user
        self.result = result
        self.probability = probability
        self.confidence = confidence
        self.signature = signature
        self.factors = factors or []
        self.action = action
        self.reclassified = reclassified
        self.score = 0.0
        self.unsure = False  # the score is in the user's unsure_band

    @property
    def is_spam(self) -> bool:
        return self.result == "Spam"
