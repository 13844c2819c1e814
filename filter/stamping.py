"""What the inline filter adds to a message: our headers, the Subject and body tags, and
the one-line summary (``--deliver=summary``)."""

from __future__ import annotations

import time


def score_text(score: float) -> str:
    """X-DSPAM-Score's value: signed, six decimals (DSPAM's probability saturates at 0.0000
    or 1.0000 for nearly every message; this ranks them). Never "-0.000000" for a score
    below 0 that rounds to 0: the sign says the result."""
    text = f"{score:.6f}"
    if score < 0 and text.lstrip("-") == "0.000000":
        text = "-0.000001"
    elif score >= 0 and text.startswith("-"):
        text = "0.000000"
    return text


def summary_line(outcome) -> str:
    result = "Spam" if outcome.is_spam else "Innocent"
    return (f'X-DSPAM-Result: {outcome.user}; result="{result}"; class="{outcome.result}"; '
            f"probability={outcome.probability:.4f}; confidence={outcome.confidence:.2f}; "
            f"score={score_text(outcome.score)}; "
            f"signature={outcome.signature or 'N/A'}\n")


def _escape_token(token: str) -> str:
    out = []
    for byte in token.encode("utf-8", "surrogatepass"):
        out.append(chr(byte) if 32 < byte < 127 and byte not in (37, 44) else f"%{byte:02X}")
    return "".join(out)


def stamp(message, outcome, settings, factors: bool, clock) -> bytes:
    """The message with our headers (and Subject / body tags the user asked for)."""
    prefix = settings.header_prefix
    headers = [
        (f"{prefix}-Result", outcome.result),
        (f"{prefix}-Processed", time.ctime(clock())),
        (f"{prefix}-Confidence", f"{outcome.confidence:.4f}"),
        (f"{prefix}-Probability", f"{outcome.probability:.4f}"),
        (f"{prefix}-Score", score_text(outcome.score)),
    ]
    if outcome.unsure:
        # A marker beside the result, not a new result: recipes that test
        # X-DSPAM-Result: Spam or Innocent (DSPAM's) keep working (docs/unsure.md).
        headers.append((f"{prefix}-Unsure", "yes"))
    if outcome.signature:
        headers.append((f"{prefix}-Signature", outcome.signature))
    if factors or settings.show_factors:
        eol = message.eol.decode()
        lines = [f"{_escape_token(t)}, {p:.5f}" for t, p in outcome.factors]
        headers.append((f"{prefix}-Factors",
                        f"{len(lines)}," + "".join(f"{eol}\t{line}" + ("," if k < len(lines) - 1
                                                                        else "")
                                                   for k, line in enumerate(lines))))
    subject = settings.spam_subject if settings.subject_tag and outcome.is_spam else None
    body_tag = None
    if settings.signature_location == "body" and outcome.signature:
        body_tag = f"!DSPAM:{outcome.signature}!".encode()
    return message.stamp(headers, prefix, subject, body_tag)
