"""Signature ids and the ownership rules for retraining.

An id is 120 bits from the OS's CSPRNG as 30 hex digits: unguessable, so holding one proves
the message was delivered to its owner (DSPAM's time+pid+rand() ids could be guessed). A
retraining request is honoured only for the signature's owner: an id that is not stored is
`UnknownSignatureError`, one stored for another user `ForeignSignatureError`; neither ever
touches anybody's data.
"""

from __future__ import annotations

import os

from spamsift.filter.engine.errors import ForeignSignatureError, UnknownSignatureError
from spamsift.filter.engine.message import find_signature as find_in_message  # noqa: F401 - re-export
from spamsift.filter.engine.message import valid_signature

ID_BYTES = 15


def new_id() -> str:
    return os.urandom(ID_BYTES).hex()


def load_owned(store, signature_id: str, uid: int | None):
    """The stored signature if it belongs to `uid` (None: to whoever owns it), else raise."""
    sig = store.signature(signature_id) if valid_signature(signature_id) else None
    if sig is None:
        raise UnknownSignatureError(
            f"signature {signature_id[:40]!r} is unknown (never issued, or purged)")
    if uid is not None and sig.uid != uid:
        raise ForeignSignatureError(
            f"signature {signature_id[:40]!r} does not belong to this user")
    return sig
