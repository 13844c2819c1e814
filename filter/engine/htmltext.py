"""HTML to text for tokenizing: tags dropped, link targets kept as URLs, entities decoded.

Kept out of `tokenizer.py` so plain-text mail does not pay for the `html` module's entity table.
"""

from __future__ import annotations

import re
from html import unescape

# Content that is never shown to the reader: tokens from it would teach nothing a human saw.
_INVISIBLE = re.compile(r"<(script|style|head|object|applet|noscript|iframe)\b.*?(?:</\1\s*>|$)",
                        re.I | re.S)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
# Attribute values that name a link target; they are kept as text so the URL tokenizer sees them.
_LINK = re.compile(r"""\b(?:href|src|action|background|cite)\s*=\s*["']?([^"'\s>]+)""", re.I)
# One run of white space and slashes, and no "<" inside: "<" and 20 KB of spaces took 11 s
# (the two \s* split the run every way), and "<p" * 128,000 scanned to the end from each "<p".
_BLOCK = re.compile(r"<[\s/]*(?:p|br|div|tr|li|td|table|h[1-6]|blockquote|option)\b[^<>]*>",
                    re.I)
_TAG = re.compile(r"<[!/?A-Za-z][^>]*(?:>|$)")


def html_to_text(markup: str) -> str:
    """The visible text of an HTML document, plus its link targets, on separate words."""
    markup = _COMMENT.sub(" ", markup)
    markup = _INVISIBLE.sub(" ", markup)
    links = [m for m in _LINK.findall(markup) if "://" in m or m.lower().startswith("www.")]
    markup = _BLOCK.sub("\n", markup)
    text = _TAG.sub(" ", markup)
    text = unescape(text)
    if links:
        text += "\n" + " ".join(links)
    return text
