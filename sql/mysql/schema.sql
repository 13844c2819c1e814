-- spamsift schema for MySQL / MariaDB (InnoDB), for clusters that share one database.
-- The dspam_* tables keep DSPAM's shape (mysql_objects-4.1.sql) so administrators and tools
-- that know DSPAM find their way; spamsift_* tables are what spamsift keeps beyond DSPAM.
-- Users are in dspam_virtual_uids (virtual_users.sql). `spamsift db init` applies both files;
-- sql/sqlite/schema.sql defines the same tables and columns (a test checks it).
-- Token ids are unsigned 64-bit (BLAKE2b of the token text), stored as bigint unsigned.

-- Per-user token counts: the statistical memory of the filter.
CREATE TABLE IF NOT EXISTS dspam_token_data (
    uid           INT UNSIGNED    NOT NULL,
    token         BIGINT UNSIGNED NOT NULL,
    spam_hits     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    innocent_hits BIGINT UNSIGNED NOT NULL DEFAULT 0,
    last_hit      DATE            NOT NULL,   -- for purging stale tokens
    weight        DOUBLE          NOT NULL DEFAULT 0,  -- the logistic model's weight (schema 2)
    UNIQUE KEY id_token_data_01 (uid, token),
    KEY id_token_data_last_hit (last_hit)     -- purge deletes ORDER BY last_hit LIMIT n
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='token counts per user';

-- Signatures: what each classification did, so a later report retrains exactly that.
CREATE TABLE IF NOT EXISTS dspam_signature_data (
    uid        INT UNSIGNED NOT NULL,
    signature  VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- 120 random bits
    data       LONGBLOB     NOT NULL,         -- packed token ids, frequencies, applied deltas
    length     INT UNSIGNED NOT NULL,         -- number of tokens
    created_on DATE         NOT NULL,         -- for purging
    created_at BIGINT       NOT NULL,         -- unix time of the classification
    result     VARCHAR(16)  NOT NULL,         -- spam | innocent | whitelisted, as classified
    trained    VARCHAR(16)  NOT NULL,         -- class the message counts as now, '' if none
    counter    VARCHAR(128) NOT NULL,         -- statistics counters the message counts towards
    source_ip  VARCHAR(45)  NOT NULL DEFAULT '',  -- first external Received IP
    PRIMARY KEY (signature),
    KEY id_signature_data_uid (uid),
    KEY id_signature_data_created (created_on)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='signatures for exact retraining';

-- DSPAM's eight statistics counters per user.
CREATE TABLE IF NOT EXISTS dspam_stats (
    uid                    INT UNSIGNED    NOT NULL PRIMARY KEY,
    spam_learned           BIGINT UNSIGNED NOT NULL DEFAULT 0,
    innocent_learned       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    spam_misclassified     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    innocent_misclassified BIGINT UNSIGNED NOT NULL DEFAULT 0,
    spam_corpusfed         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    innocent_corpusfed     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    spam_classified        BIGINT UNSIGNED NOT NULL DEFAULT 0,
    innocent_classified    BIGINT UNSIGNED NOT NULL DEFAULT 0
) ENGINE=InnoDB COMMENT='DSPAM statistics counters';

-- Per-user preferences (uid 0 = site-wide), keys as in the configuration file.
CREATE TABLE IF NOT EXISTS dspam_preferences (
    uid        INT UNSIGNED NOT NULL,
    preference VARCHAR(32)  NOT NULL,
    value      VARCHAR(64)  NOT NULL,
    UNIQUE KEY id_preferences_01 (uid, preference)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='per-user preferences';

-- Source-address tracking: messages per first external Received IP, per user and class.
CREATE TABLE IF NOT EXISTS spamsift_sources (
    uid           INT UNSIGNED    NOT NULL,
    ip            VARCHAR(45)     NOT NULL,
    spam_hits     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    innocent_hits BIGINT UNSIGNED NOT NULL DEFAULT 0,
    last_seen     DATE            NOT NULL,
    PRIMARY KEY (uid, ip),
    KEY id_sources_last_seen (last_seen)
) ENGINE=InnoDB DEFAULT CHARSET=ascii COMMENT='spam sources per user';

-- Per-day history of the statistics counters (signed: a correction on a later day is a
-- negative entry there), for trends in the report.
CREATE TABLE IF NOT EXISTS spamsift_stats_daily (
    uid                    INT UNSIGNED NOT NULL,
    day                    DATE         NOT NULL,
    spam_learned           BIGINT       NOT NULL DEFAULT 0,
    innocent_learned       BIGINT       NOT NULL DEFAULT 0,
    spam_misclassified     BIGINT       NOT NULL DEFAULT 0,
    innocent_misclassified BIGINT       NOT NULL DEFAULT 0,
    spam_corpusfed         BIGINT       NOT NULL DEFAULT 0,
    innocent_corpusfed     BIGINT       NOT NULL DEFAULT 0,
    spam_classified        BIGINT       NOT NULL DEFAULT 0,
    innocent_classified    BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (uid, day)
) ENGINE=InnoDB COMMENT='statistics history per user and day';

-- Watcher state: the class each message was last seen in, per user, so that the Maildir and
-- IMAP watchers train only changes (a drag into or out of .Spam), exactly once across
-- restarts and nodes. message_key is the X-DSPAM-Signature, or a content digest for mail
-- that was never filtered.
CREATE TABLE IF NOT EXISTS spamsift_watch_messages (
    uid         INT UNSIGNED NOT NULL,
    message_key VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    folder_class VARCHAR(16) NOT NULL,           -- spam | innocent, as last seen
    updated_at  BIGINT       NOT NULL,           -- unix time
    PRIMARY KEY (uid, message_key),
    KEY id_watch_updated (updated_at)
) ENGINE=InnoDB COMMENT='watcher: last folder class per message';

-- What corpus training learned, per message (schema 3): reclassify judges each message
-- without its own part, and corrects what training learned from it exactly once.
CREATE TABLE IF NOT EXISTS spamsift_learned_messages (
    uid           INT UNSIGNED NOT NULL,
    message_key   VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    learned_class VARCHAR(16)  NOT NULL,         -- spam | innocent, as learned
    copies        INT          NOT NULL,         -- times learned as that class (duplicates)
    step          DOUBLE       NOT NULL DEFAULT 0, -- the logistic model's steps, summed
    learned_at    BIGINT       NOT NULL,         -- unix time
    PRIMARY KEY (uid, message_key, learned_class),
    KEY id_learned_at (learned_at)                -- purge walks it (`db init` adds it)
) ENGINE=InnoDB COMMENT='corpus training: what was learned, per message';

-- Schema version, so `spamsift db init` can upgrade and `db check` can tell.
CREATE TABLE IF NOT EXISTS spamsift_meta (
    name  VARCHAR(64)  NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=ascii COMMENT='spamsift schema metadata';
