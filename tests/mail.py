"""Test mail: the two plain messages most tests filter (a ham and a spam, from
tests/messages/), and generated corpora (`mails`, from the demo's generator)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

MESSAGES = Path(__file__).parent / "messages"
HAM = (MESSAGES / "lunch.eml").read_bytes()
SPAM = (MESSAGES / "pills.eml").read_bytes()

_spec = importlib.util.spec_from_file_location(
    "make_corpus", Path(__file__).resolve().parent.parent / "examples/demo/make_corpus.py")
make_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_corpus)


def mails(n: int, spam: bool, seed: int = 1) -> list[bytes]:
    """`n` generated spam or ham messages, the same ones for the same seed."""
    rng = random.Random(seed * 2 + spam)
    return [make_corpus.message(rng, spam, k) for k in range(n)]
