"""Where the Maildir watcher's mailboxes are: (mailbox path, user) under the watched roots.

A `Template` (``watch_path_template``) says where a user's mailbox lies below a root
(``%d/%u/Maildir`` -> user u@d) or in each passwd home (``~/Maildir``). The `MailboxFinder`
walks the template's path and re-lists a directory only when its mtime changed, so an idle
cycle costs one stat per directory on the way.

A ``~/Maildir`` not owned by its user (passwd's uid) is skipped: a user can point it
anywhere, and the watcher (root) would read and learn what the user cannot.
"""

from __future__ import annotations

import os
import re
import time

from spamsift.filter.engine.errors import InvalidUserError

PASSWD_RECHECK = 300.0  # seconds between passwd enumerations for a ~/Maildir template


class Template:
    """A mailbox path template relative to a root (``%d/%u/Maildir``): %u the local part,
    %d the domain, %U the whole user name, * any name; ``~/X``: X in each passwd home."""

    def __init__(self, text: str) -> None:
        from spamsift.filter.engine.errors import ConfigError

        self.text = text
        self.home_relative = text.startswith("~/")
        body = text[2:] if self.home_relative else text.strip("/")
        parts = [p for p in body.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ConfigError(f"watch_path_template {text!r}: needs a relative path such as "
                              "%d/%u/Maildir or ~/Maildir")
        if not self.home_relative and not any("%u" in p or "%U" in p for p in parts):
            raise ConfigError(f"watch_path_template {text!r} names no user (%u or %U)")
        self.parts: list[tuple[str, re.Pattern | None]] = []
        for part in parts:
            if "%" in part or "*" in part:
                pattern = ""
                i = 0
                while i < len(part):
                    two = part[i:i + 2]
                    if two in ("%u", "%d", "%U"):
                        group = {"%u": "u", "%d": "d", "%U": "U"}[two]
                        if f"(?P<{group}>" in pattern:
                            pattern += f"(?P={group})"
                        else:
                            pattern += f"(?P<{group}>[^/]+?)"
                        i += 2
                    elif part[i] == "*":
                        pattern += "[^/]*"
                        i += 1
                    else:
                        pattern += re.escape(part[i])
                        i += 1
                self.parts.append((part, re.compile(pattern + r"\Z")))
            else:
                self.parts.append((part, None))

    @staticmethod
    def user_of(bindings: dict[str, str]) -> str:
        if bindings.get("U"):
            return bindings["U"]
        if bindings.get("d"):
            return f"{bindings['u']}@{bindings['d']}"
        return bindings["u"]


class MailboxFinder:
    """Finds (user, mailbox path) under roots; re-lists a directory only when its mtime
    changed, so an idle cycle costs one stat per directory on the template's path."""

    def __init__(self, roots: list[str], template: Template, stat=os.stat, listdir=os.listdir,
                 clock=time.monotonic, log=None, passwd=None) -> None:
        """`passwd()` lists (name, home[, uid]) of the system's users (default:
        pwd.getpwall)."""
        self.roots = [os.path.abspath(r) for r in roots]
        self.template = template
        self.stat = stat
        self.listdir = listdir
        self.clock = clock
        self.log = log or (lambda line: None)
        self._listings: dict[str, tuple[int, list[str]]] = {}
        self._passwd: tuple[float, list[tuple[str, str, int | None]]] | None = None
        self._invalid: set[str] = set()
        self.passwd = passwd or _passwd_entries

    def _entries(self, path: str) -> list[str] | None:
        try:
            mtime = self.stat(path).st_mtime_ns
        except OSError:
            self._listings.pop(path, None)
            return None
        cached = self._listings.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            names = sorted(n for n in self.listdir(path) if not n.startswith("."))
        except OSError as exc:
            self.log(f"cannot list {path}: {exc.strerror or exc}")
            return None
        self._listings[path] = (mtime, names)
        return names

    def find(self) -> dict[str, str]:
        """mailbox path -> user name."""
        found: dict[str, str] = {}
        if self.template.home_relative:
            for user, home, owner in self._passwd_homes():
                path = os.path.join(home, *(p for p, _ in self.template.parts))
                if any(path.startswith(r.rstrip("/") + "/") for r in self.roots):
                    try:
                        real = os.path.realpath(path)
                        box_owner = self.stat(real).st_uid
                        if owner is None:
                            owner = self.stat(home).st_uid
                    except OSError:
                        continue  # no such mailbox (yet)
                    if box_owner != owner:
                        # A user can point ~/Maildir anywhere, and the watcher (root) would
                        # read and learn what the user cannot: only their own mailbox counts.
                        if path not in self._invalid:
                            self._invalid.add(path)
                            self.log(f"skipping {path}: not owned by {user}")
                        continue
                    # Its resolved path is what is read (`Scanner.strict`: no symlink in
                    # it is followed), so swapping ~/Maildir later changes nothing.
                    self._add(found, real, user)
            return found
        for root in self.roots:
            self._walk(root, 0, {}, found)
        return found

    def _walk(self, path: str, depth: int, bindings: dict[str, str],
              found: dict[str, str]) -> None:
        if depth == len(self.template.parts):
            self._add(found, path, self.template.user_of(bindings))
            return
        entries = self._entries(path)
        if entries is None:
            return
        text, pattern = self.template.parts[depth]
        if pattern is None:
            if text in entries:
                self._walk(os.path.join(path, text), depth + 1, bindings, found)
            return
        for name in entries:
            match = pattern.match(name)
            if match is None:
                continue
            merged = dict(bindings)
            conflict = False
            for key, value in match.groupdict().items():
                if merged.setdefault(key, value) != value:
                    conflict = True
            if not conflict:
                self._walk(os.path.join(path, name), depth + 1, merged, found)

    def _add(self, found: dict[str, str], path: str, user: str) -> None:
        from spamsift.filter.engine import users

        try:
            found[path] = users.validate(user)
        except InvalidUserError as exc:
            if path not in self._invalid:
                self._invalid.add(path)
                self.log(f"skipping {path}: {exc}")

    def _passwd_homes(self) -> list[tuple[str, str, int | None]]:
        """(name, home, uid) of the system's users; uid None when `passwd` gives none (the
        home's owner stands in for it)."""
        now = self.clock()
        if self._passwd is None or now - self._passwd[0] > PASSWD_RECHECK:
            entries = [(e[0], e[1], e[2] if len(e) > 2 else None) for e in self.passwd()]
            self._passwd = (now, [e for e in entries if e[1] and e[1] != "/"])
        return self._passwd[1]


def _passwd_entries() -> list[tuple[str, str, int]]:
    import pwd

    return [(p.pw_name, p.pw_dir, p.pw_uid) for p in pwd.getpwall()]
