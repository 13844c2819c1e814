-- Users: name <-> numeric id, DSPAM's virtual users table (virtual_users.sql).
-- Every spamsift user is a "virtual" user: names come from maildrop ($LOGNAME), not passwd.
CREATE TABLE IF NOT EXISTS dspam_virtual_uids (
    uid      INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(128) NOT NULL,
    UNIQUE KEY id_virtual_uids_01 (username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin COMMENT='user names and ids';
