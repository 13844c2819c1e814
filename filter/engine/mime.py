"""Tolerant MIME decoding for tokenizing: parts, transfer encodings, charsets, RFC 2047.

This never changes the message that is delivered (that is `message.py`'s job); it produces
text to tokenize. Every function accepts broken input (truncated MIME, bad base64, unknown
charsets, NUL bytes) and degrades to the raw bytes instead of raising. The stdlib `email`
package is not used: it costs ~25 ms to import, more than the per-message budget.
"""

from __future__ import annotations

import binascii
import re

# Nested multiparts / message/rfc822 deeper than this are taken raw. Each level holds a copy
# of what it contains while the ones below are walked: 12 levels around a 4 MB part took
# 127 MB. The SpamAssassin corpus nests 3 deep at most.
MAX_DEPTH = 8
# Parts walked in a whole message, all levels together (mail bombs): per level, 65,000
# parts each a multipart of its own took 3.4 s.
MAX_PARTS = 500

MAX_HEAD_LINES = 10_000   # header lines of one block parsed for tokenizing (the rest: not)
MAX_HEAD_BYTES = 1 << 20  # bytes of one header block parsed for tokenizing

# The header block ends before the first blank line: a line of nothing but CRs. This is the one
# definition, for stamping (`message.Message`), tokenizing and unstamping alike: when they
# differed (CR CR LF), the tokenizer read as header what the stamp put after the header block.
_BLANK_LINE = re.compile(rb"\n\r*\n")
_LEADING_BLANK_LINE = re.compile(rb"\r*\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_SPACE_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)")
_QP_UNDERSCORE = re.compile(rb"_")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(c for c in range(256) if c not in _BASE64_ALPHABET)


def head_bounds(data: bytes) -> tuple[int, int]:
    """(where the header block ends, where the body starts): the header block runs through
    the line ending of its last line; a message without a blank line is all head."""
    m = _LEADING_BLANK_LINE.match(data)
    if m is not None:
        return 0, m.end()
    m = _BLANK_LINE.search(data)
    if m is None:
        return len(data), len(data)
    return m.start() + 1, m.end()


def split_head_body(data: bytes) -> tuple[bytes, bytes]:
    """The header block and the body (`head_bounds`)."""
    head_end, body_start = head_bounds(data)
    return data[:head_end], data[body_start:]


def bytes_to_text(data: bytes, charset: str | None = None) -> str:
    """Decode bytes to str: the declared charset, else UTF-8, else Latin-1 (never fails).

    Any codec trouble (unknown names, names with NULs, non-text codecs such as "undefined",
    codecs that reject "replace" such as idna) falls back as if no charset was declared.
    """
    if charset:
        cs = charset.strip().strip('"').lower()
        if cs in ("us-ascii", "ascii", "ansi_x3.4-1968"):
            cs = "utf-8"  # 8-bit bytes in "ascii" mail are nearly always UTF-8 or Latin-1
        if cs not in ("utf-8", "utf8") and len(cs) <= 40:
            try:
                return data.decode(cs, "replace")
            except LookupError:
                _forget_codec()
            except Exception:  # noqa: BLE001 - a hostile charset name must not stop mail
                pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _forget_codec() -> None:
    """Drop a charset name no codec knows from the `encodings` package's lookup cache, which
    keeps every one for good: 120 messages with made-up names grew a daemon by 530 MB."""
    import encodings

    cache = getattr(encodings, "_cache", None)
    if isinstance(cache, dict):
        # Whatever key the lookup used (normalized or not): every miss goes, hits stay.
        for key in [k for k, v in cache.items() if v is None]:
            cache.pop(key, None)


def _decode_word(charset: str, encoding: str, payload: str) -> str:
    raw = payload.encode("latin-1", "replace")
    try:
        if encoding in "bB":
            raw = binascii.a2b_base64(raw + b"===")
        else:
            raw = binascii.a2b_qp(_QP_UNDERSCORE.sub(b" ", raw))
    except (binascii.Error, ValueError):
        return payload
    return bytes_to_text(raw, charset.split("*", 1)[0])


def decode_header_value(value: str) -> str:
    """Decode RFC 2047 encoded words anywhere in a header value (all of them, not just one)."""
    if "=?" not in value:
        return value
    value = _SPACE_BETWEEN_WORDS.sub(r"\1\2", value)
    return _ENCODED_WORD.sub(lambda m: _decode_word(m.group(1), m.group(2), m.group(3)), value)


def parse_headers(head: bytes) -> list[tuple[str, str]]:
    """Header (name, unfolded raw value) pairs in order; lines that are not headers are skipped.

    Values are decoded as UTF-8, falling back to Latin-1 for raw 8-bit headers; RFC 2047 is
    left to `decode_header_value` so callers can choose.
    """
    headers: list[tuple[str, str]] = []
    name = None
    value: list[bytes] = []
    # Bounded: the tokenizer reads 512 fields at most; 1.4 million header lines within 4 MB
    # made as many objects. Only what is tokenized is cut here, never a delivered byte.
    head = head[:MAX_HEAD_BYTES]
    for count, line in enumerate(head.split(b"\n", MAX_HEAD_LINES)):
        if count >= MAX_HEAD_LINES:
            break
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value.append(line.strip())
            continue
        if name is not None:
            headers.append((name, bytes_to_text(b" ".join(value))))
            name = None
        colon = line.find(b":")
        if colon <= 0:
            continue  # the mbox "From " line, or garbage
        raw_name = line[:colon].rstrip()
        if not raw_name or b" " in raw_name or b"\t" in raw_name:
            continue
        name = raw_name.decode("latin-1")
        value = [line[colon + 1:].strip()]
    if name is not None:
        headers.append((name, bytes_to_text(b" ".join(value))))
    return headers


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/sub; a=b; c="d"`` into the lowercased main value and its parameters."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, eq, val = item.partition("=")
        if eq:
            params[key.strip().lower()] = val.strip().strip('"')
    return main.strip().lower(), params


def decode_transfer(body: bytes, encoding: str) -> bytes:
    """Undo base64 / quoted-printable; broken input comes back as far as it decodes, or raw."""
    encoding = encoding.strip().lower()
    if encoding == "base64":
        # Drop everything outside the alphabet (line breaks, padding, junk), then decode
        # whole quanta only, so a truncated or corrupt part still yields what it can.
        core = body.translate(None, _NOT_BASE64)
        rest = len(core) % 4
        core = core[:-1] if rest == 1 else core + b"=" * (-rest % 4)  # 1 char holds no byte
        try:
            return binascii.a2b_base64(core)
        except (binascii.Error, ValueError):
            return body
    if encoding == "quoted-printable":
        try:
            return binascii.a2b_qp(body)
        except (binascii.Error, ValueError):
            return body
    return body


class Part:
    """One leaf of a message: its headers, content type, and decoded payload bytes."""

    __slots__ = ("headers", "content_type", "params", "payload", "is_attachment")

    def __init__(self, headers: list[tuple[str, str]], content_type: str,
                 params: dict[str, str], payload: bytes, is_attachment: bool) -> None:
        self.headers = headers
        self.content_type = content_type
        self.params = params
        self.payload = payload
        self.is_attachment = is_attachment

    def text(self, limit: int | None = None) -> str:
        """The payload as text; with `limit`, at most that many bytes of it are decoded."""
        payload = self.payload
        if limit is not None and len(payload) > limit:
            payload = payload[:limit]
            # Not in the middle of a UTF-8 sequence: a cut one would make the whole text
            # fail to decode as UTF-8 and be read as Latin-1.
            end = len(payload)
            while end > len(payload) - 4 and end > 0 and payload[end - 1] & 0xC0 == 0x80:
                end -= 1
            if end > 0 and payload[end - 1] >= 0xC0:
                payload = payload[:end - 1]
        return bytes_to_text(payload, self.params.get("charset"))


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    delim = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$", re.M)
    parts: list[bytes] = []
    start = None
    for m in delim.finditer(body):
        if start is not None:
            end = m.start()
            if end and body[end - 1:end] == b"\n":
                end -= 1
                if end and body[end - 1:end] == b"\r":
                    end -= 1
            parts.append(body[start:end])
        if m.group(1):
            start = None
            break
        start = m.end() + 1
        if len(parts) >= MAX_PARTS:
            break
    if start is not None and start < len(body):
        parts.append(body[start:])  # truncated: no closing boundary
    return parts


def walk(data: bytes, depth: int = 0, headers: list[tuple[str, str]] | None = None,
         budget: list[int] | None = None):
    """Yield the parts of a message (head + body bytes) as `Part`s, depth first: at most
    MAX_PARTS of them (`budget`, shared by the levels), MAX_DEPTH levels deep."""
    if budget is None:
        budget = [MAX_PARTS]
    if budget[0] <= 0:
        return
    budget[0] -= 1
    head, body = split_head_body(data)
    if headers is None:
        headers = parse_headers(head)
    params: dict[str, str] = {}
    ctype, cte, disposition = "text/plain", "", ""
    for name, value in headers:
        lname = name.lower()
        if lname == "content-type":
            ctype, params = header_params(value)
            if "/" not in ctype:
                ctype = "text/plain"
        elif lname == "content-transfer-encoding":
            cte = value
        elif lname == "content-disposition":
            disposition = value.lower()
    boundary = params.get("boundary")
    if ctype.startswith("multipart/") and boundary and depth < MAX_DEPTH:
        pieces = _split_multipart(body, boundary.encode("latin-1", "replace"))
        if pieces:
            del head, body  # the pieces are copies: do not hold the whole twice per level
            pieces.reverse()
            while pieces and budget[0] > 0:
                yield from walk(pieces.pop(), depth + 1, budget=budget)
            return
    if ctype == "message/rfc822" and depth < MAX_DEPTH:
        inner = decode_transfer(body, cte)
        del head, body
        yield Part(headers, ctype, params, b"", False)
        yield from walk(inner, depth + 1, budget=budget)
        return
    is_attachment = disposition.startswith("attachment")
    yield Part(headers, ctype, params, decode_transfer(body, cte), is_attachment)
