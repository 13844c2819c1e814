"""Byte-exact message handling: the header block, stamping our headers, finding signatures.

The delivered message is always the input bytes with exactly these changes: header lines whose
name starts with our prefix are removed (an incoming ``X-DSPAM-Result: Innocent`` is a spoof;
only up to a bare CR, which may hide other bytes behind it: `_without_ours`), ours are
inserted at the end of the header block using the message's own line ending, and optionally
the Subject gets a tag or the body a ``!DSPAM:id!`` line. Nothing else is re-encoded: CRLF,
8-bit bytes, NULs, missing final newlines all pass through.
"""

from __future__ import annotations

import re

# A signature id is 30 lowercase hex digits (120 random bits); DSPAM's own ids are
# alphanumerics and commas, so the finder accepts those too for migrated mail.
_SIG_TAG = re.compile(rb"!DSPAM:([A-Za-z0-9,]{1,127})!")


class UnstampableError(ValueError):
    """Raised by `Message.stamp` when headers cannot be added without changing other bytes."""


class Message:
    """A message as bytes, with the offsets of its header block.

    `head_end` is where the header block ends: the offset just after the last header line's
    line ending (or the end of the data when the message has no line ending at all).
    """

    __slots__ = ("raw", "head_end", "eol", "_lines")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._lines: list[tuple[int, int]] | None = None
        nl = raw.find(b"\n")
        self.eol = b"\r\n" if nl > 0 and raw[nl - 1] == 13 else b"\n"
        pos = 0
        end = len(raw)
        while pos < end:
            nl = raw.find(b"\n", pos)
            line_end = end if nl < 0 else nl + 1
            content = raw[pos:line_end].rstrip(b"\r\n")
            if not content and nl >= 0:
                break  # the blank line that separates header block and body
            pos = line_end
        self.head_end = pos

    @property
    def head(self) -> bytes:
        return self.raw[:self.head_end]

    def header_lines(self) -> list[tuple[int, int]]:
        """(start, end) byte offsets of each logical header, folded lines included."""
        if self._lines is None:
            lines: list[tuple[int, int]] = []
            raw, pos = self.raw, 0
            while pos < self.head_end:
                nl = raw.find(b"\n", pos, self.head_end)
                line_end = self.head_end if nl < 0 else nl + 1
                if raw[pos:pos + 1] in (b" ", b"\t") and lines:
                    lines[-1] = (lines[-1][0], line_end)
                else:
                    lines.append((pos, line_end))
                pos = line_end
            self._lines = lines
        return self._lines

    def header_name(self, start: int, end: int) -> bytes:
        return _field_name(self.raw, start, end)

    def get_header(self, name: str) -> bytes | None:
        """The raw value (unfolded, stripped) of the first header called `name`, or None."""
        want = name.lower().encode("latin-1")
        for start, end in self.header_lines():
            if self.header_name(start, end) == want:
                value = self.raw[self.raw.find(b":", start, end) + 1:end]
                return b" ".join(value.split())
        return None

    def stamp(self, headers: list[tuple[str, str]], strip_prefix: str,
              subject_tag: str | None = None, body_tag: bytes | None = None) -> bytes:
        """The message with `headers` added and headers starting with `strip_prefix` removed.

        `subject_tag` prefixes the Subject (added when missing); `body_tag` is appended as a
        line to the body of a single-part, non-base64 text message, else it is not added.
        """
        raw, eol = self.raw, self.eol
        prefix = strip_prefix.lower().encode("latin-1") + b"-"
        kept: list[bytes] = []
        subject_done = subject_tag is None
        for start, end in self.header_lines():
            name = self.header_name(start, end)
            line = raw[start:end]
            if name.startswith(prefix):
                line = _without_ours(line, prefix)
                if not line:
                    continue
            if not subject_done and name == b"subject":
                line = _tag_subject(line, subject_tag)  # type: ignore[arg-type]
                subject_done = True
            kept.append(line)
        last_unterminated = bool(kept) and not kept[-1].endswith(b"\n")
        if last_unterminated and kept[-1][:1] in (b" ", b"\t"):
            # A last line that starts with white space would continue our header: there is
            # no byte-preserving place for ours. The caller passes the message on unchanged.
            raise UnstampableError("message ends in an unterminated line that starts with "
                                   "white space; passed on without headers")
        ours = [f"{name}: {value}".encode("utf-8") + eol for name, value in headers]
        if not subject_done:
            ours.insert(0, b"Subject: " + subject_tag.encode("utf-8") + eol)  # type: ignore[union-attr]
        if last_unterminated:
            # No line ending after the last header (the message ends there): put ours before
            # it, so the original bytes stay exactly as they were.
            out = b"".join(kept[:-1]) + b"".join(ours) + kept[-1]
        else:
            out = b"".join(kept) + b"".join(ours)
        body = raw[self.head_end:]
        # Only when a blank line separates a body: without one, a tag would become a header.
        if body_tag is not None and body and self._body_taggable():
            if not body.endswith(b"\n"):
                body += eol
            body += body_tag + eol
        return out + body

    def _body_taggable(self) -> bool:
        ctype = (self.get_header("content-type") or b"text/plain").lower()
        cte = (self.get_header("content-transfer-encoding") or b"").lower()
        return ctype.startswith(b"text/plain") and b"base64" not in cte


def _field_name(data: bytes, start: int, end: int) -> bytes:
    """The lowercased name of the header field at data[start:end] (b"" without a colon, or
    for a line that starts with white space: a continuation, never a field of its own, even
    as the first line of a message, where removing it as one of ours lost its bytes)."""
    if data[start:start + 1] in (b" ", b"\t"):
        return b""
    colon = data.find(b":", start, end)
    return data[start:colon].strip().lower() if colon > start else b""


_AFTER_BARE_CR = re.compile(rb"(?<=\r)(?!\n)")


def _without_ours(line: bytes, prefix: bytes) -> bytes:
    """What stays of a header line (folds included) whose name starts with our prefix.

    Lines are split at LF only, so a bare CR (one before no LF) may end a line in a CR-only
    message (classic Mac) or hide a header behind it: dropping the whole line as one of ours
    dropped what followed the CR (a CR-only message starting with ``X-DSPAM-Result`` lost all
    its bytes), and keeping what follows kept a spoofed signature after a second bare CR
    (``X-DSPAM-Result: x\rX-Evil: y\rX-DSPAM-Signature: zz``). So the line is taken apart at
    every bare CR: each piece that is one of ours goes, with the pieces that continue it (they
    start with white space); every other piece stays as it was. The line's own ending stays
    when anything does; a rest of nothing but line endings goes too: kept, it would be a blank
    line ending the header block early."""
    kept: list[bytes] = []
    dropping = True
    for n, piece in enumerate(_AFTER_BARE_CR.split(line)):
        if n and piece[:1] not in (b" ", b"\t"):  # the first is ours (its name may hold a CR)
            dropping = _field_name(piece, 0, len(piece)).startswith(prefix)
        if not dropping:
            kept.append(piece)
        elif piece.endswith(b"\n") and kept:
            kept.append(b"\r\n" if piece.endswith(b"\r\n") else b"\n")
    rest = b"".join(kept)
    return rest if rest.strip(b"\r\n") else b""


def _tag_subject(line: bytes, tag: str) -> bytes:
    colon = line.index(b":")
    value = line[colon + 1:]
    stripped = value.lstrip(b" \t")
    btag = tag.encode("utf-8")
    if stripped.startswith(btag):
        return line
    return line[:colon + 1] + b" " + btag + b" " + stripped


def find_signature(raw: bytes, header_name: str) -> str | None:
    """The signature id carried by a message: our header, a ``!DSPAM:id!`` tag, or a quoted
    header inside a forwarded message (also base64/QP-encoded forwarded parts)."""
    msg = Message(raw)
    value = msg.get_header(header_name)
    if value:
        sig = _leading_signature(value.decode("latin-1", "replace"))
        if sig:
            return sig
    found = _search(raw, header_name)
    if found:
        return found
    from spamsift.filter.engine import mime

    wanted = header_name.lower()
    for part in mime.walk(raw):
        # A forwarded message/rfc822 part, once transfer-decoded, is parsed: its header
        # block is only in the part's headers, not in any payload.
        for name, text in part.headers:
            if name.lower() == wanted and (sig := _leading_signature(text)):
                return sig
        if part.payload and part.payload is not raw:
            found = _search(part.payload, header_name)
            if found:
                return found
    return None


def _leading_signature(value: str) -> str | None:
    """The signature id a signature header's value starts with, if it has one."""
    words = value.split()
    return words[0] if words and valid_signature(words[0]) else None


def valid_signature(sig: str) -> bool:
    """Whether `sig` has the form of a signature id (what every reader of one accepts)."""
    return 0 < len(sig) <= 127 and all(c.isalnum() or c == "," for c in sig) and sig.isascii()


def _search(data: bytes, header_name: str) -> str | None:
    m = _SIG_TAG.search(data)
    if m:
        return m.group(1).decode("ascii")
    loose = re.search(re.escape(header_name.encode("latin-1")) + rb":[ \t]*([A-Za-z0-9,]{1,127})",
                      data, re.I)
    if loose:
        return loose.group(1).decode("ascii")
    return None
