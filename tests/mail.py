"""The two plain messages most tests filter: a ham and a spam, from tests/messages/."""

from __future__ import annotations

from pathlib import Path

MESSAGES = Path(__file__).parent / "messages"
HAM = (MESSAGES / "lunch.eml").read_bytes()
SPAM = (MESSAGES / "pills.eml").read_bytes()
