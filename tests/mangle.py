"""Synthetic seed messages, a seeded message mangler, and the stamping checker.

Used by ``test_mangled.py`` (1,000 mangled messages through the real ``spamsift filter``) and
``test_golden.py`` (the generic stamping property).  Every message here is made up: nothing
comes from a real mail corpus.

The stamping rule that `check_stamped` enforces (see ``filter/engine/message.py``): the
delivered message is the input with its ``X-DSPAM-*`` header lines (and their continuation
lines) removed and our ``X-DSPAM-*`` lines inserted at the end of the header block; every other
byte is unchanged.  The header block is parsed here independently of spamsift's code:

* it ends before the first blank line (a line of only ``\\r`` characters and a ``\\n``), or at
  the end of the data;
* a line starting with a space or tab continues the header before it (the first line of the
  block is always a header of its own);
* a header's name is what comes before its first ``:``; no ``:`` means no name.

Run ``python tests/mangle.py OUTDIR`` to write the 1,000 mangled messages to a folder.
"""

from __future__ import annotations

import base64
import random
import re
import sys

PREFIX = b"x-dspam-"

# -- the header block and the stamping check ------------------------------------------------


def split_lines(data: bytes) -> list[bytes]:
    """`data` cut after each ``\\n`` (the last piece may have no line ending)."""
    lines = []
    pos = 0
    end = len(data)
    while pos < end:
        nl = data.find(b"\n", pos)
        stop = end if nl < 0 else nl + 1
        lines.append(data[pos:stop])
        pos = stop
    return lines


def _is_blank(line: bytes) -> bool:
    return line.endswith(b"\n") and not line.rstrip(b"\r\n")


def header_block(data: bytes) -> tuple[list[list[bytes]], bytes]:
    """(logical headers, each a list of its physical lines; the rest of the message)."""
    headers: list[list[bytes]] = []
    lines = split_lines(data)
    for i, line in enumerate(lines):
        if _is_blank(line):
            return headers, b"".join(lines[i:])
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1].append(line)
        else:
            headers.append([line])
    return headers, b""


def header_name(header: list[bytes]) -> bytes:
    text = b"".join(header)
    colon = text.find(b":")
    return text[:colon].strip().lower() if colon > 0 else b""


_BARE_CR = re.compile(rb"\r(?!\n)")


def _spoof_rest(joined: bytes) -> bytes:
    """What the filter must keep of an incoming ``X-DSPAM-*`` header: nothing, or what follows
    a bare CR that is not our header again. The filter's own rule: `spoof_left` is the
    independent check that no incoming header survives it."""
    from spamsift.filter.engine.message import _without_ours

    return _without_ours(joined, PREFIX)


def is_ours(header: list[bytes]) -> bool:
    """An ``X-DSPAM-*`` header (any case)."""
    return header_name(header).startswith(PREFIX)


def remove_ours(data: bytes) -> bytes:
    """`data` without its ``X-DSPAM-*`` headers, keeping what a bare CR in one may hide."""
    headers, rest = header_block(data)
    kept = [_spoof_rest(b"".join(h)) if is_ours(h) else b"".join(h) for h in headers]
    return b"".join(kept) + rest


def our_headers(data: bytes) -> list[bytes]:
    """The ``X-DSPAM-*`` headers of `data`'s header block, as bytes (continuations included)."""
    headers, _ = header_block(data)
    return [b"".join(h) for h in headers if is_ours(h)]


def spoof_left(out: bytes, ours: list[int]) -> bytes | None:
    """An incoming ``X-DSPAM-*`` header the filter kept, found among ours (the block at
    indexes `ours` of the output's headers): a name twice, or a bare CR inside (ours have
    none: behind one, an incoming header hides). None when there is none. Header lines are
    split at LF, as maildrop and the filter's own parsers read them."""
    headers, _ = header_block(out)
    seen: set[bytes] = set()
    for i in ours:
        joined = b"".join(headers[i])
        name = header_name(headers[i])
        if name in seen or _BARE_CR.search(joined):
            return joined
        seen.add(name)
    return None


def eol_of(data: bytes) -> bytes:
    nl = data.find(b"\n")
    return b"\r\n" if nl > 0 and data[nl - 1:nl] == b"\r" else b"\n"


def check_stamped(inp: bytes, out: bytes) -> tuple[str, str]:
    """Classify a filter output: ("stamped" | "passed" | "wrong", explanation)."""
    if out == inp:
        return "passed", ""
    if remove_ours(out) != remove_ours(inp):
        return "wrong", _explain(remove_ours(inp), remove_ours(out))
    ours = our_headers(out)
    names = [header_name([h]) for h in ours]
    if b"x-dspam-result" not in names:
        return "wrong", f"output differs but has no X-DSPAM-Result header (ours: {names})"
    eol = eol_of(inp)
    for h in ours:
        for line in split_lines(h):
            if not line.endswith(eol) or line[:-len(eol)].find(b"\n") >= 0 \
                    or line[:-len(eol)].endswith(b"\r"):
                return "wrong", f"added header line {line[:80]!r} does not end with {eol!r}"
    # Ours must be one contiguous run at the end of the header block (or just before a last
    # header that has no line ending, when the message ends there).
    headers, rest = header_block(out)
    idx = [i for i, h in enumerate(headers) if is_ours(h)]
    if idx != list(range(idx[0], idx[-1] + 1)):
        return "wrong", "the added X-DSPAM headers are not one contiguous block"
    spoof = spoof_left(out, idx)
    if spoof is not None:
        return "wrong", f"an incoming X-DSPAM header survived: {spoof[:80]!r}"
    after = headers[idx[-1] + 1:]
    if after and not (len(after) == 1 and not rest and not after[0][-1].endswith(b"\n")):
        return "wrong", (f"{len(after)} header(s) follow the added X-DSPAM headers: "
                         f"{b''.join(after[0])[:80]!r}")
    return "stamped", ""


def _explain(want: bytes, got: bytes) -> str:
    n = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    return (f"after removing X-DSPAM headers, bytes differ at offset {n} "
            f"(lengths {len(want)} vs {len(got)}): want {want[max(0, n - 40):n + 40]!r}, "
            f"got {got[max(0, n - 40):n + 40]!r}")


# -- synthetic seed messages ----------------------------------------------------------------

def _lf(text: str, charset: str = "latin-1") -> bytes:
    return text.encode(charset)


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


_PDFISH = bytes(range(256)) * 3 + b"%PDF-1.4 synthetic not a real pdf\n" + bytes(range(255, -1, -1))


def _b64(data: bytes) -> bytes:
    enc = base64.b64encode(data)
    return b"\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)) + b"\n"


SEEDS: dict[str, bytes] = {
    "plain": _lf("""Return-Path: <alice@example.org>
Received: from mail.example.org (mail.example.org [203.0.113.5])
\tby mx.example.net with ESMTP id A1B2C3; Mon, 6 Jan 2025 10:00:00 +0000
From: Alice Example <alice@example.org>
To: Bob Example <bob@example.net>
Subject: Plans for the weekend
Date: Mon, 6 Jan 2025 10:00:00 +0000
Message-ID: <plain.1@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hi Bob,

what about a walk along the river on Saturday, and dinner afterwards?
I can book a table for seven. Let me know by Thursday.

Cheers,
Alice
"""),
    "alternative_html": _crlf(_lf("""From: "Deals Team" <deals@shop.example.com>
To: carol@example.net
Subject: Your exclusive offer inside
Date: Tue, 7 Jan 2025 11:00:00 +0000
Message-ID: <alt.2@shop.example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="=_alt_boundary_42"

--=_alt_boundary_42
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Exclusive offer: 70% off everything today only. Visit http://shop.example.com/sale now!

--=_alt_boundary_42
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

<html><head><style>p {color: red}</style></head><body>
<p>Exclusive offer: <b>70% off</b> everything today only.</p>
<a href="http://shop.example.com/sale?id=123">Visit the sale</a>
<script>var tracking = 1;</script><!-- comment -->
<img src="http://img.example.com/pixel.gif" width=1 height=1>
</body></html>

--=_alt_boundary_42--
""")),
    "attachment_base64": _lf("""From: Dave <dave@example.org>
To: erin@example.net
Subject: The quarterly figures
Date: Wed, 8 Jan 2025 12:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mixed-7f3a"

This is a multi-part message in MIME format.

--mixed-7f3a
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

""") + _b64("Hi Erin, the figures are attached. Grüße, Dave\n".encode("utf-8")) + _lf("""
--mixed-7f3a
Content-Type: application/pdf; name="figures.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="figures.pdf"

""") + _b64(_PDFISH) + b"--mixed-7f3a--\n",
    "quoted_printable": _lf("""From: =?iso-8859-1?q?Fran=E7ois?= <francois@example.org>
To: gaelle@example.net
Subject: =?iso-8859-1?q?R=E9union_de_d=E9cembre?=
Date: Thu, 9 Jan 2025 13:00:00 +0100
MIME-Version: 1.0
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

Bonjour Ga=EBlle,

la r=E9union de d=E9cembre aura lieu au caf=E9 pr=E8s de la gare. Une tr=
=E8s longue ligne coup=E9e par un saut de ligne doux =3D soft break.

Fran=E7ois
"""),
    "rfc2047_subjects": _lf("""From: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <juergen@example.org>
To: =?utf-8?q?Hei=C3=B0ur?= <heidur@example.net>
Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4=?= =?ISO-8859-2?Q?_=B9koda?=
 =?koi8-r?B?8NLJ18XU?= plain words =?utf-8?Q?caf=C3=A9?=
Date: Fri, 10 Jan 2025 14:00:00 +0100
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

""") + "Grüße aus München, ich freue mich auf das Treffen. Привет! 你好\n".encode("utf-8"),
    "charsets": _lf("""From: Ivan <ivan@example.org>
To: judy@example.net
Subject: several charsets
Date: Sat, 11 Jan 2025 15:00:00 +0300
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="cs-boundary"

--cs-boundary
Content-Type: text/plain; charset=koi8-r
Content-Transfer-Encoding: 8bit

""") + "Привет, как дела? Встреча в пятницу.\n".encode("koi8-r") + _lf("""
--cs-boundary
Content-Type: text/plain; charset=shift_jis
Content-Transfer-Encoding: 8bit

""") + "会議は金曜日です。よろしくお願いします。\n".encode("shift_jis") + _lf("""
--cs-boundary
Content-Type: text/plain; charset=windows-1252
Content-Transfer-Encoding: 8bit

""") + "“Smart quotes” – and a euro sign € in cp1252.\n".encode("cp1252") + _lf("""
--cs-boundary
Content-Type: text/html; charset=iso-2022-jp

""") + "<p>日本語のHTML</p>\n".encode("iso-2022-jp") + b"--cs-boundary--\n",
    "forwarded": _lf("""From mallory@example.org Sun Jan 12 16:00:00 2025
From: Mallory <mallory@example.org>
To: niaj@example.net
Subject: Fwd: you were right
X-DSPAM-Result: Innocent
Date: Sun, 12 Jan 2025 16:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd"

--fwd
Content-Type: text/plain

See below.

--fwd
Content-Type: message/rfc822

From: olivia@example.org
Subject: original
X-DSPAM-Result: Spam
X-DSPAM-Signature: 0123456789abcdef0123456789abcd

The original message, with its own X-DSPAM headers (body bytes: they stay).
--fwd--
"""),
}


# -- mutations ------------------------------------------------------------------------------
# Each takes (rng, message bytes) and returns new bytes.  They never need valid input.

_CHARSETS = [b"x-unknown", b"utf-8", b"UTF8", b"undefined", b"idna", b"punycode", b"utf-16",
             b"utf-32", b"utf-7", b"rot13", b"base64", b"", b"\"\"", b"utf-8\x00", b"iso-8859-1*",
             b"cp65001", b"x-mac-roman", b"binary", b"../../etc/passwd", b"ISO-2022-JP",
             b"gb18030", b"big5", b"latin1'en'", b"utf-8''%C3%A9"]


def m_truncate(rng: random.Random, msg: bytes) -> bytes:
    return msg[:rng.randrange(0, len(msg) + 1)]


def m_bad_base64(rng: random.Random, msg: bytes) -> bytes:
    out = bytearray(msg)
    # Corrupt lines that look like base64, or add a base64 part whose data is junk.
    spans = [m.span() for m in re.finditer(rb"(?m)^[A-Za-z0-9+/]{16,}={0,2}\r?$", msg)]
    if spans and rng.random() < 0.7:
        for _ in range(rng.randint(1, 6)):
            a, b = rng.choice(spans)
            pos = rng.randrange(a, b)
            out[pos:pos + 1] = rng.choice([b"=", b"!", b"====", b"\xff", b"-_", b"\x00", b" ",
                                           b"=\n==", b""])
        return bytes(out)
    junk = rng.choice([b"@@@not base64@@@", b"QUJD=RE", b"====", b"A", b"QQ", b"\xff\xfe\x00",
                       b"SGVsbG8gV29ybGQ" * 50, b"=?=?=?"])
    return (b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n" + junk
            if rng.random() < 0.3 else _replace_headers(msg, b"Content-Transfer-Encoding: base64")
            + b"\n" + junk)


def _replace_headers(msg: bytes, extra: bytes) -> bytes:
    head, sep, body = msg.partition(b"\n\n")
    if not sep:
        return msg + b"\n" + extra + b"\n"
    return head + b"\n" + extra + b"\n\n" + body


def m_nul_bytes(rng: random.Random, msg: bytes) -> bytes:
    out = bytearray(msg)
    for _ in range(rng.randint(1, 20)):
        pos = rng.randrange(0, len(out) + 1)
        out[pos:pos] = b"\x00" * rng.choice([1, 1, 2, 50])
    return bytes(out)


def m_huge_line(rng: random.Random, msg: bytes) -> bytes:
    """A 1 MB line with no line ending, at the end of the message or inside the body."""
    size = 1_000_000 + rng.randrange(0, 40_000)
    kind = rng.randrange(4)
    if kind == 0:
        line = b"x" * size
    elif kind == 1:
        line = (b"lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    elif kind == 2:
        line = bytes(rng.getrandbits(8) for _ in range(2000)) * (size // 2000)
    else:
        line = base64.b64encode(rng.randbytes(size * 3 // 4))
    if rng.random() < 0.6:
        return msg + line
    pos = msg.find(b"\n\n")
    pos = len(msg) if pos < 0 else pos + 2
    return msg[:pos] + line + msg[pos:]


def m_charset(rng: random.Random, msg: bytes) -> bytes:
    cs = rng.choice(_CHARSETS)
    if rng.random() < 0.3:
        # utf-8 declared, latin-1 (or worse) bytes sent
        body_bytes = rng.choice(["Café crème, déjà vu, Ærø".encode("latin-1"),
                                 b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\xff\xfe",
                                 "Привет".encode("koi8-r")])
        msg = re.sub(rb"(?i)charset=\"?[^\";\s]*\"?", b"charset=utf-8", msg) or msg
        pos = msg.rfind(b"\n", 0, max(1, len(msg) - 2))
        return msg[:pos + 1] + body_bytes + b"\n" + msg[pos + 1:]
    found = list(re.finditer(rb"(?i)charset=\"?[^\";\s]*\"?", msg))
    if found:
        m = rng.choice(found)
        quoted = b'"' + cs + b'"' if rng.random() < 0.5 else cs
        return msg[:m.start()] + b"charset=" + quoted + msg[m.end():]
    return _replace_headers(msg, b"Content-Type: text/plain; charset=\"" + cs + b"\"")


def m_encoded_words(rng: random.Random, msg: bytes) -> bytes:
    cs = rng.choice(_CHARSETS).replace(b"?", b"")
    word = rng.choice([b"=?" + cs + b"?B?" + base64.b64encode(rng.randbytes(9)) + b"?=",
                       b"=?" + cs + b"?Q?=FF=FE_=C3=A9_=ZZ?=",
                       b"=?" + cs + b"?B?@@@?=", b"=?" + cs + b"?X?abc?=", b"=??B??=",
                       b"=?utf-8?B?" + b"QUJD" * 2000 + b"?=",
                       b"=?" + cs + b"*en?Q?hello?=", b"=?=?=?=?" * 100])
    name = rng.choice([b"Subject", b"From", b"To", b"Content-Type", b"X-Note"])
    value = rng.choice([word, word + b" " + word, b"prefix " + word + b"\n " + word])
    if name == b"From":
        value += b" <x@example.org>"
    elif name == b"Content-Type":
        value = b"text/plain; charset=" + word
    return _insert_header(rng, msg, name + b": " + value)


def _insert_header(rng: random.Random, msg: bytes, header: bytes) -> bytes:
    lines = split_lines(msg)
    blank = next((i for i, line in enumerate(lines) if _is_blank(line)), len(lines))
    pos = rng.randrange(0, blank + 1)
    eol = eol_of(msg)
    if pos == len(lines) and lines and not lines[-1].endswith(b"\n"):
        lines[-1] += eol
    lines.insert(pos, header + eol)
    return b"".join(lines)


def m_deep_nesting(rng: random.Random, msg: bytes) -> bytes:
    depth = rng.choice([5, 13, 40, 200])
    inner = msg
    for level in range(depth):
        b = f"nest{level}".encode()
        kind = rng.choice([b"multipart/mixed", b"multipart/alternative", b"message/rfc822"])
        if kind == b"message/rfc822":
            inner = b"Content-Type: message/rfc822\n\n" + inner
        else:
            close = b"--" + b + b"--\n" if rng.random() < 0.8 else b""
            inner = (b"Content-Type: " + kind + b"; boundary=\"" + b + b"\"\n\n--" + b + b"\n"
                     + inner + b"\n" + close)
    return b"From: nest@example.org\nSubject: nested\nMIME-Version: 1.0\n" + inner


def m_boundaries(rng: random.Random, msg: bytes) -> bytes:
    m = re.search(rb"boundary=\"?([^\";\s]+)\"?", msg)
    if not m:
        return msg + b"\n--stray-boundary\nContent-Type: text/plain\n\nstray\n"
    b = m.group(1)
    choice = rng.randrange(6)
    if choice == 0:   # no closing boundary
        return msg.replace(b"--" + b + b"--", b"")
    if choice == 1:   # no boundaries at all
        return msg.replace(b"--" + b, b"")
    if choice == 2:   # duplicate boundary lines
        return msg.replace(b"--" + b + b"\n", b"--" + b + b"\n--" + b + b"\n")
    if choice == 3:   # boundary parameter gone
        return msg[:m.start()] + msg[m.end():]
    if choice == 4:   # parameter names another boundary
        return msg[:m.start(1)] + b"other" + msg[m.end(1):]
    weird = rng.choice([b"", b"(", b"*", b"\\", b"a" * 300, b"[]+?."])
    return msg[:m.start(1)] + weird + msg[m.end(1):]


def m_garbage(rng: random.Random, msg: bytes) -> bytes:
    out = bytearray(msg)
    choice = rng.randrange(4)
    junk = rng.randbytes(rng.choice([1, 16, 300, 5000]))
    if choice == 0:
        pos = rng.randrange(0, len(out) + 1)
        out[pos:pos] = junk
    elif choice == 1 and out:
        pos = rng.randrange(0, len(out))
        out[pos:pos + len(junk)] = junk
    elif choice == 2:
        for _ in range(rng.randint(1, 30)):
            if out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    else:
        head, sep, _body = msg.partition(b"\n\n")
        return head + sep + junk
    return bytes(out)


def m_eol(rng: random.Random, msg: bytes) -> bytes:
    choice = rng.randrange(4)
    lf = msg.replace(b"\r\n", b"\n")
    if choice == 0:
        return lf.replace(b"\n", b"\r\n")
    if choice == 1:
        return lf
    lines = split_lines(lf)
    out = []
    for line in lines:
        if line.endswith(b"\n") and rng.random() < 0.5:
            line = line[:-1] + (b"\r\n" if choice == 2 else rng.choice([b"\r\r\n", b"\n\r"]))
        out.append(line)
    return b"".join(out)


def m_lone_cr(rng: random.Random, msg: bytes) -> bytes:
    out = bytearray(msg)
    if rng.random() < 0.2:
        return bytes(out).replace(b"\r\n", b"\n").replace(b"\n", b"\r")
    for _ in range(rng.randint(1, 10)):
        pos = rng.randrange(0, len(out) + 1)
        if rng.random() < 0.5:
            nl = out.find(b"\n", pos)
            if nl >= 0:
                out[nl:nl + 1] = b"\r"
                continue
        out[pos:pos] = b"\r"
    return bytes(out)


def m_huge_header(rng: random.Random, msg: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:     # one long folded header
        words = b" ".join(rng.choice([b"alpha", b"beta", b"gamma", b"delta", b"x" * 40])
                          for _ in range(rng.choice([1000, 10000])))
        value = re.sub(rb"(.{70}) ", rb"\1\n ", words)
        return _insert_header(rng, msg, b"X-Huge: " + value)
    if choice == 1:     # many headers
        n = rng.choice([1000, 5000])
        hdrs = b"".join(b"X-Many-%d: value %d\n" % (i, i) for i in range(n))
        return _insert_header(rng, msg, hdrs.rstrip(b"\n"))
    if choice == 2:     # a long recipient list
        value = b", ".join(b"user%d@example.net" % i for i in range(rng.choice([500, 3000])))
        return _insert_header(rng, msg, b"To: " + value)
    # one very long unfolded line of words
    value = b" ".join(b"w%d" % rng.randrange(10**6) for _ in range(20000))
    return _insert_header(rng, msg, b"X-Long-Line: " + value)


def m_header_syntax(rng: random.Random, msg: bytes) -> bytes:
    header = rng.choice([
        b": empty header name", b":", b"   : spaces for a name", b"No colon on this header line",
        b"X-DSPAM-Result no colon either", b"\tcontinuation at a random place",
        b"Bad Name With Spaces: value", b"\x00: nul name", b"\xff\xfe: 8-bit name",
        b"Subject:", b"Content-Type:", b"Content-Type: multipart/mixed",
        b"Content-Type: text/html; charset=utf-8", b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable", b"Content-Type: message/rfc822",
        b"From:", b"From: <>", b"From: @", b"From: " + b"a" * 200 + b"@",
        b"Received: from x ([::ffff:1.2.3.])", b"Received: from x ([1.2.3.4.5])",
        b"Received: from x ([999.1.1.1]) by y", b"Received: from x ([::ffff:a.b.c.d])",
        b"Received: from x ([IPv6:::ffff:198.51.100.7])", b"Received: from ([:::])",
        b"Content-Disposition: attachment", b"MIME-Version: 1.0\n\n",
    ])
    return _insert_header(rng, msg, header)


def m_spoof(rng: random.Random, msg: bytes) -> bytes:
    name = bytes(c ^ 32 if rng.random() < 0.5 and chr(c).isalpha() else c
                 for c in b"X-DSPAM-" + rng.choice([b"Result", b"Signature", b"Processed",
                                                    b"Probability", b"Factors", b"X"]))
    value = rng.choice([b"Innocent", b" Spam", b"", b"Whitelisted\n continued",
                        b"1,\n\tfoo, 0.1\n\tbar, 0.2"])
    return _insert_header(rng, msg, name + rng.choice([b": ", b":", b" : "]) + value)


def m_duplicate(rng: random.Random, msg: bytes) -> bytes:
    if not msg:
        return msg
    a = rng.randrange(len(msg))
    b = min(len(msg), a + rng.randrange(1, 4000))
    pos = rng.randrange(len(msg) + 1)
    return msg[:pos] + msg[a:b] + msg[pos:]


def m_delete_lines(rng: random.Random, msg: bytes) -> bytes:
    lines = split_lines(msg)
    for _ in range(rng.randint(1, 5)):
        if lines:
            del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def m_cut_prefix(rng: random.Random, msg: bytes) -> bytes:
    """Lose the start: the message may now begin mid-line, with a continuation or the body."""
    return msg[rng.randrange(0, len(msg) + 1):]


def m_single_line(rng: random.Random, msg: bytes) -> bytes:
    """One line of the message, without its line ending (or with white space in front)."""
    lines = split_lines(msg) or [b"x"]
    line = rng.choice(lines).rstrip(b"\r\n")
    return rng.choice([b"", b"", b" ", b"\t", b"\r", b"\n"]) + line


# (mutation, weight); the 1 MB line is rare so the run stays fast.
MUTATIONS = [
    (m_truncate, 10), (m_bad_base64, 8), (m_nul_bytes, 8), (m_huge_line, 1), (m_charset, 10),
    (m_encoded_words, 8), (m_deep_nesting, 4), (m_boundaries, 8), (m_garbage, 8), (m_eol, 8),
    (m_lone_cr, 6), (m_huge_header, 2), (m_header_syntax, 10), (m_spoof, 6), (m_duplicate, 4),
    (m_delete_lines, 4), (m_cut_prefix, 3), (m_single_line, 3),
]

SEED = 20250117
COUNT = 1000


def generate(count: int = COUNT, seed: int = SEED) -> list[tuple[str, bytes]]:
    """`count` mangled messages: (name listing seed message and mutations, bytes)."""
    rng = random.Random(seed)
    funcs = [f for f, _ in MUTATIONS]
    weights = [w for _, w in MUTATIONS]
    names = sorted(SEEDS)
    out = []
    for i in range(count):
        seed_name = rng.choice(names)
        msg = SEEDS[seed_name]
        applied = []
        for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
            f = rng.choices(funcs, weights)[0]
            if f is m_huge_line and any(a == "huge_line" for a in applied):
                continue
            msg = f(rng, msg)
            applied.append(f.__name__[2:])
        if not msg:
            msg = b"\n"  # empty input is an error by design (exit 65), not a mangling
        out.append((f"{i:04d}-{seed_name}-{'+'.join(applied)}", msg))
    return out


if __name__ == "__main__":
    from pathlib import Path

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "mangled")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in generate():
        (folder / f"{name}.eml").write_bytes(data)
