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

from spamsift.filter.engine.mime import head_bounds

# A signature id is 30 lowercase hex digits (120 random bits); DSPAM's own ids are
# alphanumerics and commas, so the finder accepts those too for migrated mail.
_SIG_TAG = re.compile(rb"!DSPAM:([A-Za-z0-9,]{1,127})!")


class UnstampableError(ValueError):
    """Raised by `Message.stamp` when headers cannot be added without changing other bytes."""


_NEXT_FIELD = re.compile(rb"\n(?![ \t])")  # a line ending not followed by a continuation
_STARTS: dict[bytes, re.Pattern[bytes]] = {}


def _lines_starting(text: bytes) -> re.Pattern[bytes]:
    """Lines (after an LF, or at the start) that begin with `text`, case-blind."""
    pattern = _STARTS.get(text)
    if pattern is None:
        pattern = _STARTS[text] = re.compile(rb"(?mi)^" + re.escape(text))
    return pattern


class Message:
    """A message as bytes, with the offsets of its header block.

    `head_end` is where the header block ends: the offset just after the last header line's
    line ending (or the end of the data when the message has no line ending at all).

    Header lines are found by regular expressions over the bytes, never split into one
    Python object per line: 1.4 million header lines within 4 MB took 344 MB that way.
    """

    __slots__ = ("raw", "head_end", "eol")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        nl = raw.find(b"\n")
        self.eol = b"\r\n" if nl > 0 and raw[nl - 1] == 13 else b"\n"
        self.head_end = head_bounds(raw)[0]

    @property
    def head(self) -> bytes:
        return self.raw[:self.head_end]

    def _field_end(self, start: int, limit: int) -> int:
        """Where the header field starting at `start` ends, folded lines included."""
        m = _NEXT_FIELD.search(self.raw, start, limit)
        return m.end() if m else limit

    def _fields_starting(self, text: bytes, limit: int | None = None):
        """(start, end) of each header field whose first line begins with `text`, in the
        header block or up to `limit`."""
        limit = self.head_end if limit is None else limit
        for m in _lines_starting(text).finditer(self.raw, 0, limit):
            yield m.start(), self._field_end(m.start(), limit)

    def get_header(self, name: str) -> bytes | None:
        """The raw value (unfolded, stripped) of the first header called `name`, or None."""
        want = name.lower().encode("latin-1")
        for start, end in self._fields_starting(want):
            if _field_name(self.raw, start, end) == want:
                value = self.raw[self.raw.find(b":", start, end) + 1:end]
                return b" ".join(value.split())
        return None

    def stamp(self, headers: list[tuple[str, str]], strip_prefix: str,
              subject_tag: str | None = None, body_tag: bytes | None = None) -> bytes:
        """The message with `headers` added and headers starting with `strip_prefix` removed.

        `subject_tag` prefixes the Subject (added when missing); `body_tag` is appended as a
        line to the body of a single-part, non-base64 text message, else it is not added.
        """
        raw, eol, end = self.raw, self.eol, self.head_end
        prefix = strip_prefix.lower().encode("latin-1") + b"-"
        edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement)
        # Spoofs go wherever a reader of the delivered message may take them for headers: a
        # blank line of two or more CRs ends the header block here and for maildrop's
        # /.../:h, but not for reformail, which reads on to the next empty line. A spoofed
        # "X-DSPAM-Result: Innocent" there made `reformail -x` answer "Spam Innocent".
        for start, stop in self._fields_starting(prefix, _reader_head_end(raw, end)):
            if _field_name(raw, start, stop).startswith(prefix):
                edits.append((start, stop, _without_ours(raw[start:stop], prefix)))
        subject_done = subject_tag is None
        if not subject_done:
            for start, stop in self._fields_starting(b"subject"):
                if _field_name(raw, start, stop) == b"subject":
                    edits.append((start, stop, _tag_subject(raw[start:stop], subject_tag)))  # type: ignore[arg-type]
                    subject_done = True
                    break
        edits.sort()
        pieces, pos = [], 0
        for start, stop, replacement in edits:
            if start >= end:
                break
            pieces += [raw[pos:start], replacement]
            pos = stop
        pieces.append(raw[pos:end])
        head = b"".join(pieces)
        ours = [f"{name}: {value}".encode("utf-8") + eol for name, value in headers]
        if not subject_done:
            ours.insert(0, b"Subject: " + subject_tag.encode("utf-8") + eol)  # type: ignore[union-attr]
        if head and not head.endswith(b"\n"):
            # No line ending after the last header (the message ends there): put ours before
            # that field, so the original bytes stay exactly as they were.
            last = 0
            for m in _NEXT_FIELD.finditer(head):
                last = m.end()
            if head[last:last + 1] in (b" ", b"\t"):
                # A last field that starts with white space would continue our header:
                # there is no byte-preserving place for ours. The caller passes it on.
                raise UnstampableError("message ends in an unterminated line that starts "
                                       "with white space; passed on without headers")
            out = head[:last] + b"".join(ours) + head[last:]
        else:
            out = head + b"".join(ours)
        body = _edited(raw, end, [e for e in edits if e[0] >= end])
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


_STRICT_BLANK = re.compile(rb"\n\r?\n")


def _reader_head_end(raw: bytes, head_end: int) -> int:
    """Where a reader that ends the header block only at an empty line (LF LF or LF CR LF, as
    reformail does) ends it: past `head_end` when the blank line there is two or more CRs."""
    if head_end >= len(raw) or raw.startswith((b"\n", b"\r\n"), head_end):
        return head_end
    m = _STRICT_BLANK.search(raw, max(head_end - 1, 0))
    return m.start() + 1 if m else len(raw)


def _edited(raw: bytes, start: int, edits: list[tuple[int, int, bytes]]) -> bytes:
    """raw[start:] with `edits` (sorted (start, end, replacement), all at or after `start`)."""
    if not edits:
        return raw[start:]
    pieces, pos = [], start
    for begin, stop, replacement in edits:
        pieces += [raw[pos:begin], replacement]
        pos = stop
    pieces.append(raw[pos:])
    return b"".join(pieces)


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
    if b"\r" not in line:
        return b""  # the common case: no bare CR, the whole field is ours
    # Pieces as (start, end) offsets, kept ones merged into ranges: a field of a million
    # bare CRs must not become a million objects.
    kept: list[list[int]] = []
    ending = b""
    dropping = True
    start = 0
    from itertools import chain

    bounds = chain((m.start() for m in _AFTER_BARE_CR.finditer(line)), (len(line),))
    for n, stop in enumerate(bounds):
        if stop == start and n:
            continue
        if n and line[start:start + 1] not in (b" ", b"\t"):  # the first is ours
            end = line.find(b":", start, stop)
            dropping = end > start and line[start:end].strip().lower().startswith(prefix)
        if not dropping:
            if kept and kept[-1][1] == start:
                kept[-1][1] = stop
            else:
                kept.append([start, stop])
        elif stop == len(line) and line.endswith(b"\n"):
            ending = b"\r\n" if line.endswith(b"\r\n") else b"\n"
        start = stop
    rest = b"".join(line[a:b] for a, b in kept)
    if kept and ending:
        rest += ending
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


_BODY_TAG = re.compile(rb"\r?\n?!DSPAM:[A-Za-z0-9,]{1,127}!")


def unstamp(raw: bytes, settings) -> bytes:
    """The message without what spamsift's own stamp put into tokenized text.

    Our ``<prefix>-*`` headers are never tokenized, but the Subject tag and the body tag are
    text; learning them would teach the filter its own verdict instead of the mail's content.
    Only a message carrying our Result header is touched."""
    # The one header splitter: a private one took the first CRLFCRLF anywhere, after an
    # earlier LFLF had ended the header block, and so "unstamped" body text.
    head_end = head_bounds(raw)[0]
    head = raw[:head_end]
    marker = ("\n" + settings.header_prefix + "-Result:").lower().encode("latin-1", "replace")
    if marker not in b"\n" + head.lower():
        return raw
    tag = settings.spam_subject.encode("utf-8", "replace")
    if tag:
        head = re.sub(rb"(?im)^(subject:[ \t]*)" + re.escape(tag) + rb"[ \t]?", rb"\1", head)
    body = raw[head_end:]
    if b"!DSPAM:" in body:
        body = _BODY_TAG.sub(b"", body)
    return head + body
