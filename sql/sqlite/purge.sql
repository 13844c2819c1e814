-- spamsift purge for SQLite, for sites that prefer SQL to `spamsift purge` (which does the
-- same in small batches and is kinder to mail flow). DSPAM's rules (purge-3.sql, plus its
-- MySQL script's per-mode rules). Ages in days are set in the `ages` table below: edit them
-- there. Run: sqlite3 /var/lib/spamsift/spamsift.db < purge.sql

CREATE TEMP TABLE ages AS SELECT
    30 AS hapaxes,      -- rare tokens: 2 * innocent_hits + spam_hits < 5
    15 AS hits1s,       -- seen once, in spam
    15 AS hits1i,       -- seen once, in ham
    90 AS unused,       -- any token of a TEFT user; TUM: under 50 hits; source addresses
    14 AS signatures,   -- signatures
    14 AS learned,      -- records of what corpus training learned, per message
    'teft' AS default_mode;

DELETE FROM dspam_token_data
 WHERE last_hit < date('now', '-' || (SELECT hapaxes FROM ages) || ' days')
   AND 2 * innocent_hits + spam_hits < 5;

DELETE FROM dspam_token_data
 WHERE last_hit < date('now', '-' || (SELECT hits1s FROM ages) || ' days')
   AND innocent_hits = 0 AND spam_hits = 1;

DELETE FROM dspam_token_data
 WHERE last_hit < date('now', '-' || (SELECT hits1i FROM ages) || ' days')
   AND innocent_hits = 1 AND spam_hits = 0;

DELETE FROM dspam_token_data
 WHERE last_hit < date('now', '-' || (SELECT unused FROM ages) || ' days')
   AND COALESCE((SELECT value FROM dspam_preferences p
                  WHERE p.uid = dspam_token_data.uid AND p.preference = 'training_mode'),
                (SELECT default_mode FROM ages)) = 'teft';

DELETE FROM dspam_token_data
 WHERE last_hit < date('now', '-' || (SELECT unused FROM ages) || ' days')
   AND innocent_hits + spam_hits < 50
   AND COALESCE((SELECT value FROM dspam_preferences p
                  WHERE p.uid = dspam_token_data.uid AND p.preference = 'training_mode'),
                (SELECT default_mode FROM ages)) = 'tum';

DELETE FROM dspam_signature_data
 WHERE created_on < date('now', '-' || (SELECT signatures FROM ages) || ' days');

DELETE FROM spamsift_sources
 WHERE last_seen < date('now', '-' || (SELECT unused FROM ages) || ' days');

-- Watcher records whose signature is gone (updated_at is unix time).
DELETE FROM spamsift_watch_messages
 WHERE updated_at < CAST(strftime('%s', 'now') AS INTEGER) - (SELECT unused FROM ages) * 86400
   AND NOT EXISTS (SELECT 1 FROM dspam_signature_data s
                    WHERE s.signature = spamsift_watch_messages.message_key);

-- Records of what corpus training learned (learned_at is unix time); the counts stay.
DELETE FROM spamsift_learned_messages
 WHERE learned_at < CAST(strftime('%s', 'now') AS INTEGER) - (SELECT learned FROM ages) * 86400;

DROP TABLE ages;
