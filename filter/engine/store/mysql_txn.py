"""What the MySQL store (mysql.py) and its maintenance (mysql_maintenance.py) share, so
neither imports the other back: the server's error numbers and what they mean, the schema
version, and how token ids are written into IN lists.
"""

from __future__ import annotations

import pymysql

from spamsift.filter.engine.errors import (CorruptDatabaseError, StorageError,
                                           StorageUnavailableError)

SCHEMA_VERSION = "3"  # 2: dspam_token_data.weight (the logistic model); 3: learned messages
LOOKUP_CHUNK = 10000         # token ids per SELECT: ~210 KB of SQL, max_allowed_packet >= 1 MB
RETRIES = 5                  # deadlock / lock wait timeout retries per commit
RETRY_CODES = (1205, 1213)   # ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK
NO_TABLE = 1146              # ER_NO_SUCH_TABLE
_NO_COLUMN = 1054            # ER_BAD_FIELD_ERROR
DUPLICATE_KEY = 1062         # ER_DUP_ENTRY


def token_lists(tokens, size: int = LOOKUP_CHUNK):
    """Token ids as SQL IN-list texts, each holding ids of one half of the 64-bit range only.

    MariaDB 10.11 stops using the (uid, token) index for a long IN list that mixes ids below
    and above 2^63 (the literals are then of different types) and reads every row of the
    user instead: 6 s a message on a 1.2M-row table, measured. Lists of one kind use it.
    """
    low = sorted(int(t) for t in tokens if int(t) < 1 << 63)
    high = sorted(int(t) for t in tokens if int(t) >= 1 << 63)
    for ids in (low, high):
        for i in range(0, len(ids), size):
            yield ",".join(map(str, ids[i:i + size]))


def error_code(exc: BaseException) -> int:
    """The server's error number of a PyMySQL exception (0 when it has none)."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0


def translate(exc: BaseException) -> StorageError:
    """The `StorageError` that says what `exc`, a PyMySQL exception, means."""
    code = error_code(exc)
    if isinstance(exc, pymysql.IntegrityError):
        return StorageError(f"MySQL: {exc.args[-1] if exc.args else exc}")
    if code == NO_TABLE:
        return CorruptDatabaseError(f"spamsift tables missing ({exc.args[-1]}): run "
                                    "'spamsift db init'")
    if code == _NO_COLUMN:  # an older schema, e.g. 1 without the weight column
        return CorruptDatabaseError(f"spamsift schema is older than this spamsift "
                                    f"({exc.args[-1]}): run 'spamsift db init'")
    return StorageUnavailableError(f"MySQL: {exc.args[-1] if exc.args else exc}")
