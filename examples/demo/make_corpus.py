"""Write a small synthetic corpus (spam/ and ham/ folders of one-message files) for the demo.

The messages are generated from word lists with a fixed seed, so every run writes the same
corpus; no real mail is shipped. Usage: make_corpus.py DEST [COUNT] [SEED]
"""

from __future__ import annotations

import os
import random
import sys

SPAM_SUBJECTS = ["Cheap meds online", "You have WON a prize", "Lose weight fast",
                 "Exclusive offer just for you", "Make money from home",
                 "Your account needs verification", "Best prices on watches",
                 "Limited time: 90% off", "Claim your reward now", "Hot singles near you"]
SPAM_WORDS = ("free money offer click here now buy cheap discount winner prize guaranteed "
              "limited act today viagra pills credit loan casino bonus unsubscribe order "
              "save deal exclusive risk-free cash instant approval lowest price million "
              "dollars urgent verify account password bank transfer lottery").split()
HAM_SUBJECTS = ["Meeting notes for Tuesday", "Re: build failure on the test server",
                "Lunch tomorrow?", "Draft of the quarterly report", "Re: patch review",
                "Holiday schedule", "Minutes of the board meeting", "Re: kernel upgrade",
                "Photos from the weekend", "Question about the invoice"]
HAM_WORDS = ("meeting agenda project schedule report review patch build server release "
             "thanks regards team tomorrow lunch discuss notes draft attached question "
             "budget kernel upgrade deadline weekend family photos invoice contract "
             "colleague feedback version branch merge test documentation minutes").split()
SPAM_SENDERS = ["deals@promo-mail.biz", "winner@lucky-draw.info", "support@secure-verify.net",
                "offers@cheap-pharma.ru", "news@best-watches.cn"]
HAM_SENDERS = ["alice@example.org", "bob@example.com", "carol@lists.example.net",
               "dave@example.org", "erin@work.example.com"]


def message(rng: random.Random, spam: bool, n: int) -> bytes:
    subjects, words, senders = ((SPAM_SUBJECTS, SPAM_WORDS, SPAM_SENDERS) if spam else
                                (HAM_SUBJECTS, HAM_WORDS, HAM_SENDERS))
    sender = rng.choice(senders)
    ip = (f"203.0.113.{rng.randint(1, 254)}" if spam else f"198.51.100.{rng.randint(1, 20)}")
    lines = []
    for _ in range(rng.randint(3, 8)):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + ".")
    if spam:
        lines.append(f"http://www.{sender.split('@')[1]}/offer?id={rng.randint(1000, 9999)}")
    body = "\n".join(lines)
    return (f"Received: from mail.{sender.split('@')[1]} ([{ip}]) by mx.example.org\n"
            f"From: {sender}\nTo: demo@example.org\nSubject: {rng.choice(subjects)}\n"
            f"Message-ID: <{n}.{rng.randint(0, 10**9)}@{sender.split('@')[1]}>\n"
            f"Date: Mon, 2 Nov 2026 10:{n % 60:02d}:00 +0000\n\n{body}\n").encode()


def main(argv: list[str]) -> int:
    dest = argv[1]
    count = int(argv[2]) if len(argv) > 2 else 60
    rng = random.Random(int(argv[3]) if len(argv) > 3 else 2026)
    for label in ("spam", "ham"):
        os.makedirs(os.path.join(dest, label), exist_ok=True)
        for n in range(count):
            with open(os.path.join(dest, label, f"{n:04d}.eml"), "wb") as fh:
                fh.write(message(rng, label == "spam", n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
