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
                 "tokens", "freqs", "applied", "model")

    def __init__(self, id: str, uid: int, created: int, result: str, trained: str,
                 counter: str, source_ip: str, tokens: array, freqs: bytes,
                 applied: bytes, model: tuple[float, float] = (0.0, 0.0)) -> None:
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

    # The columns an SQL backend selects for `from_row`, in that order.
    COLUMNS = "uid, created_at, result, trained, counter, source_ip, data"

    @classmethod
    def from_row(cls, signature_id: str, row) -> Signature:
        """A signature from a row of `COLUMNS`."""
        uid, created, result, trained, counter, source_ip, blob = row
        tokens, freqs, applied = cls.unpack_data(bytes(blob))
        return cls(signature_id, uid, created, result, trained, counter, source_ip,
                   tokens, freqs, applied, cls.unpack_model(bytes(blob)))

    def pack(self) -> bytes:
        """The token data as one blob: version, count, ids (u64 LE), freqs (u8), applied (u8);
        version S2 adds the model's two floats (f64 LE) when they are not zero."""
        tokens = self.tokens if self.tokens.typecode == "Q" else array("Q", self.tokens)
        count = len(tokens)
        if _BIG_ENDIAN:
            tokens = array("Q", tokens)
            tokens.byteswap()
        body = count.to_bytes(4, "little") + tokens.tobytes() + self.freqs + self.applied
        if self.model == (0.0, 0.0):
            return b"S1" + body
        import struct

        return b"S2" + body + struct.pack("<dd", *self.model)

    @staticmethod
    def unpack_data(blob: bytes) -> tuple[array, bytes, bytes]:
        from spamsift.filter.engine.errors import CorruptDatabaseError

        if blob[:2] not in (b"S1", b"S2") or len(blob) < 6:
            raise CorruptDatabaseError("signature data has an unknown format")
        count = int.from_bytes(blob[2:6], "little")
        if blob[:2] == b"S2":
            blob = blob[:-16]
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
        if blob[:2] != b"S2" or len(blob) < 22:
            return (0.0, 0.0)
        import struct

        delta, base = struct.unpack("<dd", blob[-16:])
        return (delta, base)


_BIG_ENDIAN = array("H", [1]).tobytes() == b"\x00\x01"
