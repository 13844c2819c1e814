-- spamsift purge for MySQL / MariaDB, for sites that prefer SQL in cron to `spamsift purge`.
-- The rules are DSPAM's purge-4.1.sql. `spamsift purge` does the same in small batches with
-- pauses and lock retries, which is kinder to mail flow; this script deletes in chunks of
-- 100 rows too (LIMIT takes no variable outside prepared statements: edit the literal), ordered
-- by the last_hit index; repeat a statement until it deletes fewer than 100 rows.
-- "Older than N days" is written as date < CURRENT_DATE - INTERVAL N DAY, which uses the index
-- (DSPAM's early scripts wrapped last_hit in to_days() and scanned the whole table).

SET @hapaxes    = 30;   -- rare tokens: 2 * innocent_hits + spam_hits < 5
SET @hits1s     = 15;   -- seen once, in spam
SET @hits1i     = 15;   -- seen once, in ham
SET @unused     = 90;   -- any token of a TEFT user; TUM users: under 50 hits; source addresses
SET @signatures = 14;   -- signatures (messages older than this cannot be retrained)
SET @learned = 14;      -- records of what corpus training learned, per message
SET @default_mode = 'teft';  -- the configuration's training_mode

DELETE FROM dspam_token_data
 WHERE last_hit < CURRENT_DATE - INTERVAL @hapaxes DAY AND 2 * innocent_hits + spam_hits < 5
 ORDER BY last_hit LIMIT 100;

DELETE FROM dspam_token_data
 WHERE last_hit < CURRENT_DATE - INTERVAL @hits1s DAY AND innocent_hits = 0 AND spam_hits = 1
 ORDER BY last_hit LIMIT 100;

DELETE FROM dspam_token_data
 WHERE last_hit < CURRENT_DATE - INTERVAL @hits1i DAY AND innocent_hits = 1 AND spam_hits = 0
 ORDER BY last_hit LIMIT 100;

-- Unused tokens of TEFT users (TOE and NOTRAIN users keep them; TUM users: next statement).
DELETE FROM dspam_token_data
 WHERE last_hit < CURRENT_DATE - INTERVAL @unused DAY
   AND COALESCE((SELECT value FROM dspam_preferences p
                  WHERE p.uid = dspam_token_data.uid AND p.preference = 'training_mode'),
                @default_mode) = 'teft'
 ORDER BY last_hit LIMIT 100;

DELETE FROM dspam_token_data
 WHERE last_hit < CURRENT_DATE - INTERVAL @unused DAY AND innocent_hits + spam_hits < 50
   AND COALESCE((SELECT value FROM dspam_preferences p
                  WHERE p.uid = dspam_token_data.uid AND p.preference = 'training_mode'),
                @default_mode) = 'tum'
 ORDER BY last_hit LIMIT 100;

DELETE FROM dspam_signature_data
 WHERE created_on < CURRENT_DATE - INTERVAL @signatures DAY ORDER BY created_on LIMIT 100;

DELETE FROM spamsift_sources
 WHERE last_seen < CURRENT_DATE - INTERVAL @unused DAY ORDER BY last_seen LIMIT 100;

-- Watcher records whose signature is gone (updated_at is unix time).
DELETE FROM spamsift_watch_messages
 WHERE updated_at < UNIX_TIMESTAMP() - @unused * 86400
   AND NOT EXISTS (SELECT 1 FROM dspam_signature_data s
                    WHERE s.signature = spamsift_watch_messages.message_key)
 ORDER BY updated_at LIMIT 100;

-- Records of what corpus training learned (learned_at is unix time); the counts stay.
DELETE FROM spamsift_learned_messages
 WHERE learned_at < UNIX_TIMESTAMP() - @learned * 86400 LIMIT 100;
