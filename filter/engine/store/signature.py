"""The stored signature: what one classification did, and its packed token data.

A record of the storage contract (`store.base`), in a module of its own: its blob format is
the one part of the contract that is code rather than rules. Signature ids and who may
retrain by one are `spamsift.filter.engine.signatures`.
"""

from __future__ import annotations

from array import array


class Signature:
    """What one classification did, so it can be undone and retrained exactly later.

    `tokens`/`freqs` are the message's token ids and in-message frequencies. `applied` holds,
    per token, how much was added to the `trained` class's count (0 where nothing was written,
    e.g. TOE, or TUM for a mature token). `counter` names the statistics counter that was
    incremented when the message was classified, so a correction decrements the right one.
    `counter` is a comma-separated list. `trained` is the class the message currently counts as
    in the token data and statistics, or "" when it counts as nothing (unlearned, NOTRAIN); it is
    the compare-and-set field.
    """

    __slots__ = ("id", "uid", "created", "result", "trained", "counter", "source_ip",
                 "tokens", "freqs", "applied", "model", "data_uid", "flags")

    # `flags` bits.
    INOCULATED = 1  # a spam report of this message inoculated the owner's groups (once only)

    def __init__(self, id: str, uid: int, created: int, result: str, trained: str,
                 counter: str, source_ip: str, tokens: array, freqs: bytes,
                 applied: bytes, model: tuple[float, float] = (0.0, 0.0),
                 data_uid: int = 0, flags: int = 0) -> None:
        self.id = id
        self.uid = uid
        self.created = created
        self.result = result
        self.trained = trained
        self.counter = counter
        self.source_ip = source_ip
        self.tokens = tokens
        self.freqs = freqs
        self.applied = applied
        # The logistic model's part (filter/engine/logistic.py): (weight step applied to
        # every token and the bias, other algorithms' score it was trained beside).
        self.model = model
        # Whose token counts and weights `applied` went to when not the owner's: a shared
        # group's (filter/engine/groups.py). The statistics and the signature stay the
        # owner's. 0: the owner's own.
        self.data_uid = data_uid
        self.flags = flags

    @property
    def token_uid(self) -> int:
        """The uid whose token counts this signature's `applied` changed."""
        return self.data_uid or self.uid

    # The columns an SQL backend selects for `from_row`, in that order.
    COLUMNS = "uid, created_at, result, trained, counter, source_ip, data"

    @classmethod
    def from_row(cls, signature_id: str, row) -> Signature:
        """A signature from a row of `COLUMNS`."""
        uid, created, result, trained, counter, source_ip, blob = row
        blob = bytes(blob)
        tokens, freqs, applied = cls.unpack_data(blob)
        return cls(signature_id, uid, created, result, trained, counter, source_ip,
                   tokens, freqs, applied, cls.unpack_model(blob), *cls.unpack_groups(blob))

    def pack(self) -> bytes:
        """The token data as one blob: version, count, ids (u64 LE), freqs (u8), applied (u8);
        version S2 adds the model's two floats (f64 LE) when they are not zero; version S3
        (groups) adds them always, then `data_uid` (u64 LE) and `flags` (u8)."""
        tokens = self.tokens if self.tokens.typecode == "Q" else array("Q", self.tokens)
        count = len(tokens)
        if _BIG_ENDIAN:
            tokens = array("Q", tokens)
            tokens.byteswap()
        body = count.to_bytes(4, "little") + tokens.tobytes() + self.freqs + self.applied
        if self.data_uid or self.flags:
            import struct

            return b"S3" + body + struct.pack("<ddQB", *self.model, self.data_uid, self.flags)
        if self.model == (0.0, 0.0):
            return b"S1" + body
        import struct

        return b"S2" + body + struct.pack("<dd", *self.model)

    @staticmethod
    def unpack_data(blob: bytes) -> tuple[array, bytes, bytes]:
        from spamsift.filter.engine.errors import CorruptDatabaseError

        if blob[:2] not in (b"S1", b"S2", b"S3") or len(blob) < 6:
            raise CorruptDatabaseError("signature data has an unknown format")
        count = int.from_bytes(blob[2:6], "little")
        if blob[:2] == b"S2":
            blob = blob[:-16]
        elif blob[:2] == b"S3":
            blob = blob[:-_S3_TAIL]
        if len(blob) != 6 + count * 10:
            raise CorruptDatabaseError("signature data is truncated")
        tokens = array("Q")
        tokens.frombytes(blob[6:6 + count * 8])
        if _BIG_ENDIAN:
            tokens.byteswap()
        freqs = blob[6 + count * 8:6 + count * 9]
        applied = blob[6 + count * 9:]
        return tokens, freqs, applied

    @staticmethod
    def unpack_model(blob: bytes) -> tuple[float, float]:
        """The model floats of packed data ((0.0, 0.0) for version S1)."""
        import struct

        if blob[:2] == b"S3" and len(blob) >= 6 + _S3_TAIL:
            delta, base = struct.unpack("<dd", blob[-_S3_TAIL:-9])
            return (delta, base)
        if blob[:2] != b"S2" or len(blob) < 22:
            return (0.0, 0.0)
        delta, base = struct.unpack("<dd", blob[-16:])
        return (delta, base)

    @staticmethod
    def unpack_groups(blob: bytes) -> tuple[int, int]:
        """(data_uid, flags) of packed data ((0, 0) before version S3)."""
        if blob[:2] != b"S3" or len(blob) < 6 + _S3_TAIL:
            return (0, 0)
        return int.from_bytes(blob[-9:-1], "little"), blob[-1]


_BIG_ENDIAN = array("H", [1]).tobytes() == b"\x00\x01"
_S3_TAIL = 25  # the model's two f64, data_uid u64, flags u8
