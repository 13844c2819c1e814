"""`Stream`: what every training source (Maildir, mbox, MH, directory, IMAP folder) becomes."""

from __future__ import annotations


class Stream:
    """Messages of one class from one place: `count` of them, read by `open()`.

    `open()` yields (raw bytes, name) pairs; `name` says where a message came from (for error
    lines and `reclassify`). A message that cannot be read is yielded as (None, name)."""

    __slots__ = ("label", "where", "count", "open")

    def __init__(self, label: str, where: str, count: int, opener) -> None:
        self.label = label
        self.where = where
        self.count = count
        self.open = opener

    def __repr__(self) -> str:
        return f"Stream({self.label}, {self.where!r}, {self.count})"
