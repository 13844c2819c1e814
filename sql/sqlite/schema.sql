-- spamsift schema for SQLite (the embedded default). One database file holds every user.
-- Table and column names follow DSPAM's MySQL schema (dspam_*), so administrators who know
-- DSPAM find their way; spamsift_* tables are what spamsift keeps beyond DSPAM.
-- Token ids are unsigned 64-bit in spamsift; SQLite integers are signed, so ids >= 2^63 are
-- stored as id - 2^64 (two's complement), which keeps them unique and indexable.

-- Users: name <-> numeric id (DSPAM's virtual users table).
CREATE TABLE dspam_virtual_uids (
    uid      INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT    NOT NULL UNIQUE
);

-- Per-user token counts: the statistical memory of the filter.
CREATE TABLE dspam_token_data (
    uid           INTEGER NOT NULL,
    token         INTEGER NOT NULL,
    spam_hits     INTEGER NOT NULL DEFAULT 0,
    innocent_hits INTEGER NOT NULL DEFAULT 0,
    last_hit      TEXT    NOT NULL,           -- YYYY-MM-DD, for purging stale tokens
    weight        REAL    NOT NULL DEFAULT 0, -- the logistic model's weight (schema 2)
    PRIMARY KEY (uid, token)
) WITHOUT ROWID;
-- No index on last_hit here (MySQL has one): every message rewrites last_hit of its tokens,
-- and the index doubled the pages a message writes (652 -> 336 WAL frames, 16.3 -> 10.6 ms
-- per message on a 900,000-token database). Purge scans the table instead, which takes well
-- under a second at that size.

-- Signatures: what each classification did, so a later report retrains exactly that.
CREATE TABLE dspam_signature_data (
    uid        INTEGER NOT NULL,
    signature  TEXT    NOT NULL PRIMARY KEY,  -- 120 random bits, hex; unguessable
    data       BLOB    NOT NULL,              -- packed token ids, frequencies, applied deltas
    length     INTEGER NOT NULL,              -- number of tokens
    created_on TEXT    NOT NULL,              -- YYYY-MM-DD, for purging
    created_at INTEGER NOT NULL,              -- unix time of the classification
    result     TEXT    NOT NULL,              -- spam | innocent | whitelisted, as classified
    trained    TEXT    NOT NULL,              -- class the message counts as now, '' if none
    counter    TEXT    NOT NULL,              -- statistics counter bumped at classification
    source_ip  TEXT    NOT NULL DEFAULT ''    -- first external Received IP, '' if none
);
CREATE INDEX id_signature_data_uid ON dspam_signature_data (uid);
CREATE INDEX id_signature_data_created ON dspam_signature_data (created_on);

-- DSPAM's eight statistics counters per user.
CREATE TABLE dspam_stats (
    uid                    INTEGER PRIMARY KEY,
    spam_learned           INTEGER NOT NULL DEFAULT 0,
    innocent_learned       INTEGER NOT NULL DEFAULT 0,
    spam_misclassified     INTEGER NOT NULL DEFAULT 0,
    innocent_misclassified INTEGER NOT NULL DEFAULT 0,
    spam_corpusfed         INTEGER NOT NULL DEFAULT 0,
    innocent_corpusfed     INTEGER NOT NULL DEFAULT 0,
    spam_classified        INTEGER NOT NULL DEFAULT 0,
    innocent_classified    INTEGER NOT NULL DEFAULT 0
);

-- Per-user preferences (uid 0 = site-wide defaults), keys as in the configuration file.
CREATE TABLE dspam_preferences (
    uid        INTEGER NOT NULL,
    preference TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    PRIMARY KEY (uid, preference)
);

-- Source-address tracking: messages per first external Received IP, per user and class.
CREATE TABLE spamsift_sources (
    uid           INTEGER NOT NULL,
    ip            TEXT    NOT NULL,
    spam_hits     INTEGER NOT NULL DEFAULT 0,
    innocent_hits INTEGER NOT NULL DEFAULT 0,
    last_seen     TEXT    NOT NULL,           -- YYYY-MM-DD
    PRIMARY KEY (uid, ip)
) WITHOUT ROWID;
CREATE INDEX id_sources_last_seen ON spamsift_sources (last_seen);

-- Per-day history of the statistics counters (same deltas as dspam_stats), for trends.
CREATE TABLE spamsift_stats_daily (
    uid                    INTEGER NOT NULL,
    day                    TEXT    NOT NULL,  -- YYYY-MM-DD
    spam_learned           INTEGER NOT NULL DEFAULT 0,
    innocent_learned       INTEGER NOT NULL DEFAULT 0,
    spam_misclassified     INTEGER NOT NULL DEFAULT 0,
    innocent_misclassified INTEGER NOT NULL DEFAULT 0,
    spam_corpusfed         INTEGER NOT NULL DEFAULT 0,
    innocent_corpusfed     INTEGER NOT NULL DEFAULT 0,
    spam_classified        INTEGER NOT NULL DEFAULT 0,
    innocent_classified    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (uid, day)
) WITHOUT ROWID;

-- Watcher state: the class each message was last seen in, per user (see the MySQL schema).
CREATE TABLE spamsift_watch_messages (
    uid          INTEGER NOT NULL,
    message_key  TEXT    NOT NULL,   -- X-DSPAM-Signature, or a content digest
    folder_class TEXT    NOT NULL,   -- spam | innocent, as last seen
    updated_at   INTEGER NOT NULL,   -- unix time
    PRIMARY KEY (uid, message_key)
) WITHOUT ROWID;

-- What corpus training learned, per message (schema 3): reclassify judges each message
-- without its own part, and corrects what training learned from it exactly once.
CREATE TABLE spamsift_learned_messages (
    uid           INTEGER NOT NULL,
    message_key   TEXT    NOT NULL,            -- X-DSPAM-Signature, or a content digest
    learned_class TEXT    NOT NULL,            -- spam | innocent, as learned
    copies        INTEGER NOT NULL,            -- times learned as that class (duplicates)
    step          REAL    NOT NULL DEFAULT 0,  -- the logistic model's steps, summed
    learned_at    INTEGER NOT NULL,            -- unix time
    PRIMARY KEY (uid, message_key, learned_class)
) WITHOUT ROWID;

-- Schema metadata (the version is also PRAGMA user_version).
CREATE TABLE spamsift_meta (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

PRAGMA user_version = 1;
