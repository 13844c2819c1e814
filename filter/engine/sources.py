"""Source-address tracking: the first external IP in a message's Received chain.

Received headers are read top-down (newest first, added by our own relays); the first address
that is neither private, loopback, link-local nor one of the configured `local_mx` relays is
the host that handed the message to us. `ipaddress` is not imported: it costs more than the
check below on the per-message path.
"""

from __future__ import annotations

import re

_BRACKETED = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_FROM_PART = re.compile(r"^\s*from\s", re.I)


def _ipv4_private(parts: list[int]) -> bool:
    a, b = parts[0], parts[1]
    return (a in (0, 10, 127) or (a == 169 and b == 254) or (a == 172 and 16 <= b <= 31)
            or (a == 192 and b == 168) or (a == 100 and 64 <= b <= 127) or a >= 224)


def normalize_ip(text: str) -> str | None:
    """A canonical form of an IPv4/IPv6 address, or None if `text` is not one."""
    if "." in text and ":" not in text:
        pieces = text.split(".")
        if len(pieces) != 4 or not all(p.isdigit() and len(p) <= 3 for p in pieces):
            return None
        nums = [int(p) for p in pieces]
        if any(n > 255 for n in nums):
            return None
        return ".".join(map(str, nums))
    if ":" in text and all(c in "0123456789abcdefABCDEF:." for c in text) and text.count("::") <= 1:
        if "." in text:  # IPv4-mapped: the dotted part must be an address itself
            head, _, tail = text.rpartition(":")
            v4 = normalize_ip(tail)
            return None if v4 is None else f"{head.lower()}:{v4}"
        return text.lower()
    return None


def is_external(ip: str) -> bool:
    if ":" not in ip:
        return not _ipv4_private([int(p) for p in ip.split(".")])
    low = ip.lower()
    if low.startswith("::ffff:") and "." in low:
        mapped = normalize_ip(low[7:])
        return mapped is not None and is_external(mapped)
    return not (low in ("::1", "::") or low.startswith(("fe8", "fe9", "fea", "feb", "fc", "fd")))


def first_external_ip(headers: list[tuple[str, str]], local_mx: tuple[str, ...] = ()) -> str | None:
    """The first external address in the Received headers, newest first, or None."""
    skip = {normalize_ip(ip) for ip in local_mx}
    for name, value in headers:
        if name.lower() != "received" or not _FROM_PART.match(value):
            continue
        # Only the "from" clause names the sending host; "by" names our own.
        from_clause = re.split(r"\sby\s", value, maxsplit=1, flags=re.I)[0]
        for candidate in _BRACKETED.findall(from_clause):
            ip = normalize_ip(candidate)
            if ip and ip not in skip and is_external(ip):
                return ip
    return None
