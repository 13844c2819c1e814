"""Purge rules: which stale tokens and signatures go (DSPAM's purge-4.1.sql, as values).

The rules, each with its age from the configuration ("older than N days" means the row's
date is before today minus N):

| rule             | table                  | condition                                        |
|------------------|------------------------|--------------------------------------------------|
| hapaxes          | dspam_token_data       | 2 * innocent_hits + spam_hits < 5                |
| single spam hit  | dspam_token_data       | innocent_hits = 0 and spam_hits = 1              |
| single innocent  | dspam_token_data       | innocent_hits = 1 and spam_hits = 0              |
| unused (TEFT)    | dspam_token_data       | any, for users whose training mode is TEFT       |
| unused (TUM)     | dspam_token_data       | innocent_hits + spam_hits < 50, TUM users        |
| signatures       | dspam_signature_data   | created_on is old                                |
| sources          | spamsift_sources       | last_seen is old (same age as unused tokens)     |
| watch_records    | spamsift_watch_messages| updated_at is old (same age) and the message's   |
|                  |                        | signature is gone                                |
| learned          | spamsift_learned_messages | learned_at is old (purge_learned)             |

TOE and NOTRAIN users keep tokens that are merely unused: under TOE a mature token is read
much more often than written, so its last_hit says little (DSPAM's rule). A watcher record is kept while its
signature exists: without the record, a watcher that rescans from scratch would compare the
message with its signature's verdict again and could retrain it. Once the signature is purged
the record only matters with `watch_learn_unsigned` (the message could be learned as corpus once
more after a full rescan), so it goes after `purge_unused` days. The record of what corpus
training learned of each message (``spamsift reclassify`` judges and corrects by it, a watcher
corrects a user's drag of bulk-trained mail through it) goes after `purge_learned` days, by
default `purge_signatures`': like a signature, it is what makes a message correctable, and a
message learned longer ago than that can no longer be corrected, whichever way it was learned
(its token counts stay). A store applies a
rule in small batches (`Store.purge_step`) so that no delete holds locks for long.
"""

from __future__ import annotations

import time

from spamsift.filter.engine.days import DAY, day_of

# name -> (table, SQL condition on the row, configuration key holding the age in days)
RULES = {
    "hapaxes": ("dspam_token_data", "2 * innocent_hits + spam_hits < 5", "purge_hapaxes"),
    "single_spam": ("dspam_token_data", "innocent_hits = 0 AND spam_hits = 1",
                    "purge_hits1s"),
    "single_innocent": ("dspam_token_data", "innocent_hits = 1 AND spam_hits = 0",
                        "purge_hits1i"),
    "unused_teft": ("dspam_token_data", "1 = 1", "purge_unused"),
    "unused_tum": ("dspam_token_data", "innocent_hits + spam_hits < 50", "purge_unused"),
    "signatures": ("dspam_signature_data", "1 = 1", "purge_signatures"),
    "sources": ("spamsift_sources", "1 = 1", "purge_unused"),
    "watch_records": ("spamsift_watch_messages",
                      "NOT EXISTS (SELECT 1 FROM dspam_signature_data s "
                      "WHERE s.signature = message_key)", "purge_unused"),
    "learned": ("spamsift_learned_messages", "1 = 1", "purge_learned"),
}
# The same conditions in Python, for the memory store: (spam_hits, innocent_hits) -> bool.
PREDICATES = {
    "hapaxes": lambda s, i: 2 * i + s < 5,
    "single_spam": lambda s, i: i == 0 and s == 1,
    "single_innocent": lambda s, i: i == 1 and s == 0,
    "unused_teft": lambda s, i: True,
    "unused_tum": lambda s, i: i + s < 50,
    "signatures": lambda s, i: True,
    "sources": lambda s, i: True,
    "watch_records": lambda s, i: True,  # the memory store checks the signature itself
    "learned": lambda s, i: True,
}
DATE_COLUMN = {"dspam_token_data": "last_hit", "dspam_signature_data": "created_on",
               "spamsift_sources": "last_seen", "spamsift_watch_messages": "updated_at",
               "spamsift_learned_messages": "learned_at"}
# Tables whose date column is unix time: their rule's `before` is a number (as text).
UNIX_TIME = ("spamsift_watch_messages", "spamsift_learned_messages")


class Rule:
    """One rule made concrete: rows of `table` matching `condition`, dated before `before`,
    of the users in `uids` (None: every user)."""

    __slots__ = ("name", "table", "condition", "before", "uids")

    def __init__(self, name: str, table: str, condition: str, before: str,
                 uids: list[int] | None) -> None:
        self.name = name
        self.table = table
        self.condition = condition
        self.before = before
        self.uids = uids


def cutoff(days: int, now: float) -> str:
    return day_of(now - days * DAY)


def plan(settings, store, now: float | None = None) -> list[Rule]:
    """The rules to run now, with dates and (for mode-dependent rules) the users."""
    now = time.time() if now is None else now
    modes: dict[str, list[int]] = {"teft": [], "tum": [], "toe": [], "notrain": []}
    for uid, _name in store.users():
        mode = store.preferences(uid).get("training_mode", settings.training_mode).lower()
        modes.setdefault(mode, []).append(uid)
    rules = []
    for name, (table, condition, key) in RULES.items():
        days = getattr(settings, key)
        if days <= 0:
            continue  # 0 disables a rule
        uids = None
        if name == "unused_teft":
            uids = modes["teft"]
        elif name == "unused_tum":
            uids = modes["tum"]
        if uids is not None and not uids:
            continue
        before = (str(int(now - days * 86400)) if table in UNIX_TIME
                  else cutoff(days, now))
        rules.append(Rule(name, table, condition, before, uids))
    return rules
