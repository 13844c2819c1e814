"""Tokenizer, MIME decoding, HTML stripping and source addresses."""

from __future__ import annotations

import base64

from spamsift.filter.engine import mime
from spamsift.filter.engine.sources import first_external_ip
from spamsift.filter.engine.tokenizer import Tokenizer, is_body_token, token_id


def tokens(raw: bytes, mode: str = "chain", **kw) -> dict[str, int]:
    return Tokenizer(mode, **kw).tokenize(raw)


def test_header_tokens_are_tagged_with_their_heading_and_chained_per_line():
    t = tokens(b"Subject: Cheap watches\nX-Mailer: Foo 1.0\n\nhi\n")
    assert t["Subject*Cheap"] == 1 and t["Subject*watches"] == 1
    assert t["Subject*Cheap+watches"] == 1
    assert "X-Mailer*Foo" in t
    # Chains restart at each header: no pair across Subject and X-Mailer.
    assert "Subject*watches+Foo" not in t and "X-Mailer*watches+Foo" not in t


def test_body_words_and_chain_bigrams_and_frequencies():
    t = tokens(b"Subject: x\n\nbuy now buy now\n")
    assert t["buy"] == 2 and t["now"] == 2
    assert t["buy+now"] == 2 and t["now+buy"] == 1


def test_osb_pairs_have_no_unigrams():
    t = tokens(b"\nthe quick brown fox jumped over\n", mode="osb")
    body = {k for k in t if "*" not in k and ":" not in k}
    # Six words, window 5: 5 + 4 + 3 + 2 pairs at distances 1-4.
    assert len(body) == 14
    assert {"the+quick", "the+#+brown", "the+#+#+fox", "the+#+#+#+jumped"} <= body
    assert "the" not in body


def test_word_mode_is_unigrams():
    t = tokens(b"\nalpha beta\n", mode="word")
    assert "alpha" in t and "alpha+beta" not in t


def test_rfc2047_all_encoded_words_are_decoded_with_charsets():
    raw = ("Subject: =?UTF-8?Q?Caf=C3=A9_menu?= FREE!!! offer =?iso-8859-1?b?"
           + base64.b64encode("déjà".encode("latin-1")).decode() + "?=\n\nx\n").encode()
    t = tokens(raw)
    # DSPAM lost everything after the first encoded word and kept '_': we keep it all.
    assert {"Subject*Café", "Subject*menu", "Subject*FREE!", "Subject*offer",
            "Subject*déjà"} <= set(t)


def test_base64_and_quoted_printable_bodies_are_decoded_and_charsets_converted():
    text = "Gratuit: café crème, offre spéciale".encode("iso-8859-1")
    raw = (b"Content-Type: multipart/mixed; boundary=BB\n\n--BB\n"
           b"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: base64\n\n"
           + base64.encodebytes(text) +
           b"--BB\nContent-Type: text/plain; charset=utf-8\n"
           b"Content-Transfer-Encoding: quoted-printable\n\nna=C3=AFve soft=\nline\n--BB--\n")
    t = tokens(raw)
    assert {"café", "crème", "spéciale", "naïve", "softline"} <= set(t)
    assert "Z3JhdHVpdA" not in "".join(t)  # no raw base64 leaks in


def test_html_is_reduced_to_visible_text_and_links():
    raw = (b"Content-Type: text/html\n\n<html><head><style>.hidden{color:red}</style>"
           b"<script>var tracker=1;</script></head><body><p>Hello&nbsp;there &amp; "
           b"<a href=\"http://Shop.Example.com/buy?id=7\">click</a><!-- secret --></p>"
           b"</body></html>\n")
    t = tokens(raw)
    assert {"Hello", "there", "click"} <= set(t)
    assert {"Url*shop", "Url*example", "Url*buy"} <= set(t)
    for hidden in ("tracker", "hidden", "secret", "color", "href", "html", "body"):
        assert hidden not in t


def test_url_tokens_are_not_also_body_words():
    t = tokens(b"\nvisit http://www.example.com/deals today\n")
    assert "Url*deals" in t and "Url*www" in t
    assert "deals" not in t and "visit+today" in t


def test_is_body_token_tells_body_words_pairs_and_urls_from_header_and_synthetic_ones():
    raw = (b"From: Bob <bob@example.com>\nSubject: cheap* deals: now\nContent-Type: "
           b"text/plain\n\nbuy now at http://shop.example.com/x *star* ratio:2\n")
    body = {t for t in tokens(raw) if is_body_token(t)}
    assert body == {"buy", "now", "at", "star", "ratio", "2", "buy+now", "now+at", "at+star",
                    "star+ratio", "ratio+2", "Url*http", "Url*shop", "Url*example",
                    "Url*com", "Url*x"}


def test_long_words_dropped_and_exclamation_runs_collapsed():
    t = tokens(b"\n" + b"x" * 50 + b" FREE!!! ok\n")
    assert "x" * 50 not in t and "FREE!" in t and "FREE!!!" not in t


def test_whitelist_token_is_the_lowercased_sender_address():
    t = tokens(b'From: "Bob B." <Bob@Example.COM>\n\nhi\n')
    assert t["wl:bob@example.com"] == 1


def test_own_and_ignored_headers_are_not_tokenized():
    raw = (b"X-DSPAM-Result: Innocent\nx-dspam-signature: 1\nX-Spam-Status: Yes\n"
           b"X-Other: kept\n\nbody\n")
    t = tokens(raw, ignore_headers=("X-Spam-*",))
    assert not any(k.lower().startswith(("x-dspam", "x-spam")) for k in t)
    assert "X-Other*kept" in t


def test_token_ids_are_stable_unsigned_64_bit():
    a = token_id("Subject*Lunch")
    assert a == token_id("Subject*Lunch") and 0 <= a < 1 << 64
    assert token_id("Subject*Lunch") != token_id("Subject*lunch")


def test_broken_mime_still_tokenizes():
    raw = (b"Content-Type: multipart/mixed; boundary=Z\n\n--Z\nContent-Type: text/plain; "
           b"charset=x-unknown\nContent-Transfer-Encoding: base64\n\nSGVsbG8gd29y!!bGQ\n")
    t = tokens(raw)  # truncated: no closing boundary, junk in base64, unknown charset
    assert t  # never raises, always yields something
    parts = list(mime.walk(raw))
    assert parts and parts[-1].payload.startswith(b"Hello")


def test_first_external_received_ip_skips_private_and_local_relays():
    headers = [("Received", "from relay.local (relay.local [10.1.2.3]) by mx"),
               ("Received", "from mx2 (mx2.example.org [192.0.2.50]) by relay.local"),
               ("Received", "from evil (dsl.example.net [203.0.113.77]) by mx2")]
    assert first_external_ip(headers) == "192.0.2.50"
    assert first_external_ip(headers, ("192.0.2.50",)) == "203.0.113.77"
    assert first_external_ip([("Received", "by mx with local")]) is None


def test_cjk_text_is_tokenized_as_overlapping_character_pairs():
    # Chinese in a GB2312 base64 body and an RFC 2047 subject: no spaces between words.
    body = "免费发票代开，联系我们".encode("gb2312")
    subject = base64.b64encode("特价优惠".encode("gb2312")).decode()
    raw = (f"Subject: =?GB2312?B?{subject}?= now\nContent-Type: text/plain; charset=gb2312\n"
           "Content-Transfer-Encoding: base64\n\n").encode() + base64.encodebytes(body)
    t = tokens(raw)
    assert {"免费", "费发", "发票", "联系", "我们", "联系+系我"} <= set(t)
    assert "免费发票代开" not in t and "我们" in t  # the run is split, the comma ends it
    assert {"Subject*特价", "Subject*价优", "Subject*优惠", "Subject*now"} <= set(t)
    # Mixed text: Latin words stay words; a run of one or two characters stays whole.
    mixed = tokens("\n\nBuy 中国 goods 好\n".encode())
    assert {"Buy", "中国", "goods", "好"} <= set(mixed)


def test_stamping_and_tokenizing_agree_where_the_header_block_ends():
    """One header splitter: the stamp goes at the end of the header block the tokenizer reads.

    A blank line of CRs (CR CR LF) ended the header for the stamper but not for the tokenizer,
    which then read body text, and our own stamped headers after it, as header fields."""
    from spamsift.filter.engine.message import Message

    for raw in (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\n\nbody\n",
                b"Subject: a\n\r\r\nX-Body-Looks-Like: header\n", b"\r\nbody only\n",
                b"\r\r\nbody only\n", b"Subject: no body at all", b"Subject: a\n\r\n\r\nb\n"):
        head, body = mime.split_head_body(raw)
        assert head == Message(raw).head, raw
        assert raw.endswith(body) and len(head) + len(body) <= len(raw), raw
    tokens = Tokenizer().tokenize(b"Subject: a\n\r\r\nX-Body-Looks-Like: header\n")
    assert "X-Body-Looks-Like*header" not in tokens and "header" in tokens  # body words
