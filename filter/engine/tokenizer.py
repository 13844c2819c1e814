"""Message -> tagged tokens with frequencies -> 64-bit token ids.

Tokens are strings; their tag says where they came from. Every tag this module produces:

| token                    | from                                                          |
|--------------------------|---------------------------------------------------------------|
| ``word``                 | a word of the decoded, HTML-stripped body text (CJK: a pair   |
|                          | of adjacent characters)                                       |
| ``prev+word``            | chain tokenizer: two consecutive body words                   |
| ``w1+#+w3`` …            | osb tokenizer: anchor word + one word 1-4 positions later     |
| ``Heading*word``         | a word of header `Heading` (RFC 2047 decoded), as written     |
| ``Heading*prev+word``    | chain/osb pairs inside one header line                        |
| ``Url*piece``            | a piece of a URL in the body (scheme, host parts, path parts) |
| ``wl:addr@example.org``  | the sender address (From), lowercased; the whitelist token    |

Synthetic tokens carry a ``:`` in their tag; words never contain ``:`` (it is a delimiter), so
a header or body word can never collide with them.

Headers named ``<prefix>-*`` (our own) and `ignore_headers` are not tokenized. Bodies: text/*
parts that are not attachments, transfer-decoded and converted to Unicode from their charset;
text/html is reduced to its text, with link targets kept as URLs. Words are 1-49 characters
(DSPAM's limit: longer runs are base64 or junk and never repeat); a trailing run of ``!`` is
cut to one (``FREE!!!`` -> ``FREE!``).

What was measured (issue 7; benchmarks/accuracy.py, SpamAssassin corpus, 6,046 messages seed 1
online TEFT, graham+burton; ham errors / spam errors / (1-ROCA)%, on the engine's path or, where
marked *, an equivalent replay of the same tokens with full-feedback training):

* chain 4 / 163 / 0.0968; osb 5 / 184 / 0.1918; word 5 / 222 / 0.1118: chain stays the default.
  Tokenize + ids per message: chain 1.36 ms, osb 1.94 ms, word 0.74 ms.
* Header-aware tokens carry much of it (*, baseline 4 / 170 / 0.106): without Received lines
  8 / 216 / 0.184; only ten common headers 7 / 244 / 0.229; Subject only 6 / 314 / 0.428.
* Every token counted once per message instead of its frequency (*): 5 / 169 / 0.0948 -- a
  better ranking but one more ham error (0.12%, over issue 7's 0.1% limit), so repeats count.
* With the logistic default (graham+burton+logistic), seeds 1 / 2 / 3: CJK text as
  overlapping character pairs, ham 3 / 8 / 9 and spam 146 / 151 / 156 -> 144 / 147 / 156,
  (1-ROCA)% 0.0740 / 0.1394 / 0.0837 -> 0.0719 / 0.1393 / 0.0823: kept. A lowercased copy of
  every capitalised body word: spam 143 / 145 / 150 but ham 4 / 10 / 10 and (1-ROCA)% 0.0868 /
  0.1450 / 0.0839: not kept. Tokens for the first external IP's /24 and /16 networks: ham
  4 / 8 / 9, spam 141 / 148 / 150, (1-ROCA)% 0.0742 / 0.1368 / 0.0812 -- mixed, not kept.
* A text/plain part that opens as an HTML document (``<html``, ``<head`` or ``<body`` in its
  first 2,000 characters; before, only other text types, and only ``<html``) is reduced to its
  text like text/html (issue 21): 3 such parts in the corpus's ham, 60 in its spam. Seed 1's
  worst ham, a newsletter whose plain part began ``<head><title>``, scored spam on its tags
  (br+br, font+size, td+tr). Alone, seeds 1 / 2 / 3: 3 / 6 / 6 -> 4 / 6 / 6 ham, 148 / 143 / 142 ->
  146 / 139 / 141 spam, (1-ROCA)% 0.0595 / 0.0744 / 0.0564 -> 0.0528 / 0.0751 / 0.0548 (worse
  on seed 1's ham); with logistic.py's reputation features and ham-side Bayes scale, 3 / 5 / 6,
  135 / 143 / 137, 0.0452 / 0.0608 / 0.0487, against 4 / 5 / 6, 138 / 143 / 144, 0.0517 /
  0.0611 / 0.0501 without it: kept with them.

Bounded work per message: whatever a message holds, the tokenizer reads at most
`MAX_HEADER_FIELDS` header fields (all parts together) of at most `MAX_HEADER_VALUE` characters
each, `MAX_PART_TEXT` characters of each body part's text and `MAX_BODY_TEXT` of all of them,
and a message yields at most `MAX_TOKENS` distinct tokens (the first ones seen: headers, then
the body in order). No message of the SpamAssassin corpus reaches any of these caps (its
largest: 16,933 distinct tokens, 125 header fields, a 14,285-character header, a text part of
194,824 bytes), so they change no verdict there; what they bound is an attacker's message:
4 MB of unique words made 1.48 million tokens (20-31 s, ~700 MB) before them, see
benchmarks/hostile.py for what they cost now.

Token ids are the first 8 bytes of BLAKE2b over the UTF-8 token, as an unsigned 64-bit int.
DSPAM's table-driven CRC-64 would cost ~4 ms a message in pure Python; BLAKE2b is C, spreads
ids evenly, and no DSPAM database is migrated token-for-token anyway.
"""

from __future__ import annotations

import re

try:
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - CPython always has it; hashlib is slower to import
    from hashlib import blake2b

from spamsift.filter.engine import mime

MAX_WORD = 49
MAX_TOKENS = 20_000            # distinct tokens of one message (see the module docstring)
MAX_HEADER_FIELDS = 512        # header fields tokenized, all parts together
MAX_HEADER_VALUE = 16 * 1024   # characters of one header value
MAX_PART_TEXT = 256 * 1024     # characters of one body part's text
MAX_BODY_TEXT = 1024 * 1024    # characters of all body parts' text

_BODY_DELIMS = " \t\r\n\f\v\x00.,;:\"/\\[]{}=+_()<>|&@*~`?#^"
_HEADER_DELIMS = " \t\r\n\f\v\x00,;:\"/\\[]{}=+()<>|&@*~`?#^"
_BODY_TABLE = str.maketrans({c: " " for c in _BODY_DELIMS} | {"\u00a0": " ", "\u200b": " "})
_HEADER_TABLE = str.maketrans({c: " " for c in _HEADER_DELIMS})

_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.I)
_URL_SPLIT = str.maketrans({c: " " for c in ":/?&=#.%;,+_~"})
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                         ".+-=!#$%&'*/?^_`{|}~")
_DOMAIN = re.compile(r"[\w\-]+(?:\.[\w\-]+)+")

_OSB_GAPS = ("", "+", "+#+", "+#+#+", "+#+#+#+")


def parse_top_headers(raw: bytes) -> list[tuple[str, str]]:
    """The (name, value) headers of a message's top-level header block."""
    return mime.parse_headers(mime.split_head_body(raw)[0])


def token_id(token: str) -> int:
    """The 64-bit id of a token text (unsigned)."""
    return int.from_bytes(
        blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def token_ids(tokens) -> dict[str, int]:
    """`token_id` of many token texts: text -> id. The call inlined: over a million tokens it
    is a third of the cost."""
    digest, number = blake2b, int.from_bytes
    return {t: number(digest(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                      "little") for t in tokens}


def is_body_token(token: str) -> bool:
    """Whether `token` came from the body: a word, a pair of words or a URL piece (``Url*``);
    not a header's (``Heading*``) nor a synthetic one (``wl:``).

    Body words hold neither ``*`` nor ``:`` (both delimit them), so a tag is one of those."""
    return ("*" not in token and ":" not in token) or token.startswith("Url*")


def sender_address(headers: list[tuple[str, str]]) -> str | None:
    """The lowercased address in the first From header, or None.

    Found from each '@' outwards rather than by one regex search: a search for
    ``local@domain`` over a long run of local-part characters without an '@' is quadratic
    (a 100 KB From header took 35 s).
    """
    for name, value in headers:
        if name.lower() != "from":
            continue
        value = mime.decode_header_value(value)
        at = value.find("@")
        while at > 0:
            start = at
            while start > 0 and at - start < 64 and value[start - 1] in _LOCAL_CHARS:
                start -= 1
            domain = _DOMAIN.match(value, at + 1, at + 256)
            if start < at and domain:
                return (value[start:at] + "@" + domain.group(0)).lower()
            at = value.find("@", at + 1)
        return None
    return None


# Han, kana, hangul and fullwidth forms: scripts written without spaces between words.
_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uffdc]+")


def _cjk_bigrams(m: re.Match) -> str:
    run = m.group(0)
    if len(run) < 3:
        return " " + run + " "
    return " " + " ".join(run[i:i + 2] for i in range(len(run) - 1)) + " "


def _words(text: str, table: dict[int, str]) -> list[str]:
    if not text.isascii() and _CJK.search(text):  # isascii() is O(1)
        # A CJK sentence has no spaces, so it was one word: unique, or over MAX_WORD and
        # dropped. Overlapping character pairs are the words of such text (as CJK search
        # engines index it). Measured (module docstring): spam errors 146 / 151 / 156 ->
        # 144 / 147 / 156 on seeds 1 / 2 / 3, ham errors unchanged.
        text = _CJK.sub(_cjk_bigrams, text)
    out = []
    for w in text.translate(table).split():
        if len(w) > MAX_WORD:
            continue
        if w.endswith("!!"):
            w = w.rstrip("!") + "!"
        w = w.strip("-'")
        if w:
            out.append(w)
    return out


# The opening tags that say a part's text is an HTML document, whatever its type says. A
# text/plain part needs one of them: "<html" alone missed a newsletter whose plain part begins
# "<head><title>...", scored spam on its tags (br+br, font+size, td+tr) at message 3,653 of
# seed 1 (module docstring).
_PLAIN_HTML = ("<html", "<head", "<body")


def _is_html(head: str, ctype: str) -> bool:
    """Whether a text part of type `ctype` (not text/html) opening with `head` (lowercased)
    is an HTML document to reduce to its text."""
    if ctype == "text/plain":
        return any(tag in head for tag in _PLAIN_HTML)
    return "<html" in head


class Tokenizer:
    """Turns message bytes into {token: frequency}; one instance per settings."""

    __slots__ = ("mode", "ignore_exact", "ignore_prefixes", "own_prefix")

    def __init__(self, mode: str = "chain", ignore_headers: tuple[str, ...] = (),
                 header_prefix: str = "X-DSPAM") -> None:
        if mode not in ("chain", "osb", "word"):
            raise ValueError(f"unknown tokenizer {mode!r}")
        self.mode = mode
        self.ignore_exact = frozenset(h.lower() for h in ignore_headers if not h.endswith("*"))
        self.ignore_prefixes = tuple(h[:-1].lower() for h in ignore_headers if h.endswith("*"))
        self.own_prefix = header_prefix.lower() + "-"

    def _ignored(self, lname: str) -> bool:
        return (lname.startswith(self.own_prefix) or lname in self.ignore_exact
                or (bool(self.ignore_prefixes) and lname.startswith(self.ignore_prefixes)))

    def tokenize(self, raw: bytes,
                 headers: list[tuple[str, str]] | None = None) -> dict[str, int]:
        """All tokens of a message with their frequencies, in first-seen order.

        `headers` are the message's parsed top-level headers, when the caller has them.
        """
        freq: dict[str, int] = {}
        if headers is None:
            headers = parse_top_headers(raw)
        sender = sender_address(headers)
        if sender:
            freq["wl:" + sender] = 1
        fields = self._headers(headers, freq, MAX_HEADER_FIELDS)
        body_words: list[str] = []
        first = True
        text_left = MAX_BODY_TEXT
        for part in mime.walk(raw, headers=headers):
            if not first and fields > 0:
                fields = self._headers(part.headers, freq, fields)
            first = False
            ctype = part.content_type
            if part.is_attachment or not part.payload or not ctype.startswith("text/"):
                continue
            if text_left <= 0:
                break
            text = part.text(min(MAX_PART_TEXT, text_left))
            if ctype == "text/html" or _is_html(text[:2000].lower(), ctype):
                from spamsift.filter.engine.htmltext import html_to_text

                text = html_to_text(text)
            text_left -= len(text)
            body_words.extend(self._body_words(text, freq))
        self._pairs(body_words, "", freq)
        return freq

    def _headers(self, headers: list[tuple[str, str]], freq: dict[str, int],
                 fields: int) -> int:
        """Tokenize up to `fields` header fields; how many more may be tokenized."""
        for name, value in headers:
            if fields <= 0:
                break
            if self._ignored(name.lower()):
                continue
            fields -= 1
            words = _words(mime.decode_header_value(value[:MAX_HEADER_VALUE]), _HEADER_TABLE)
            self._pairs(words, name + "*", freq)
        return fields

    def _body_words(self, text: str, freq: dict[str, int]) -> list[str]:
        if "://" in text or "www." in text or "WWW." in text:
            for url in _URL.findall(text):
                for piece in url.translate(_URL_SPLIT).split():
                    if len(piece) <= MAX_WORD:
                        key = "Url*" + piece.lower()
                        if key in freq:
                            freq[key] += 1
                        elif len(freq) < MAX_TOKENS:  # URL pieces count against the cap too
                            freq[key] = 1
            text = _URL.sub(" ", text)
        return _words(text, _BODY_TABLE)

    def _pairs(self, words: list[str], tag: str, freq: dict[str, int]) -> None:
        if len(freq) + 5 * len(words) > MAX_TOKENS:  # at most 5 tokens a word (osb)
            self._pairs_capped(words, tag, freq)
            return
        get = freq.get
        mode = self.mode
        if mode == "osb":
            for i, w in enumerate(words):
                for d in range(1, 5 if i >= 4 else i + 1):
                    key = tag + words[i - d] + _OSB_GAPS[d] + w
                    freq[key] = get(key, 0) + 1
            return
        prev = None
        for w in words:
            key = tag + w
            freq[key] = get(key, 0) + 1
            if prev is not None and mode == "chain":
                key = tag + prev + "+" + w
                freq[key] = get(key, 0) + 1
            prev = w

    def _pairs_capped(self, words: list[str], tag: str, freq: dict[str, int]) -> None:
        """`_pairs` near `MAX_TOKENS`: word by word while there is room, then nothing more
        (the first tokens seen are the message's). The loop above is the hot path, without a
        check per token."""
        for end in range(len(words)):
            if len(freq) >= MAX_TOKENS:
                return
            # The tokens ending at this word, with the words before it as context.
            scratch: dict[str, int] = {}
            self._pairs(words[max(0, end - 4):end + 1], tag, scratch)
            if end:
                before: dict[str, int] = {}
                self._pairs(words[max(0, end - 4):end], tag, before)
                for key, n in before.items():
                    scratch[key] -= n
            for key, n in scratch.items():
                if n > 0 and (key in freq or len(freq) < MAX_TOKENS):
                    freq[key] = freq.get(key, 0) + n
