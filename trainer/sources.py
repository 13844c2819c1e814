"""``spamsift sources``: the addresses and networks spam comes from, by source tracking.

The filter counts, per user, the first external Received address of each message and its
class (``track_sources``; corrections move the count). This command adds those counts up
over the users the caller may see and lists the top addresses and the top networks by spam,
with their ham alongside: a network that sends both is a shared relay, not a spammer.

Networks are IPv4 /24s (the usual unit of a block list and of a hosting customer) and IPv6
/64s (one customer LAN: an IPv6 spammer rotates addresses within it as an IPv4 one cannot).

The period (``--days``, ``--since``) selects addresses seen in it; the store keeps one
running count per user and address, not a count per day, so an address's numbers are those
since it was first seen (or since purge dropped it: ``purge_unused`` days without mail).
"""

from __future__ import annotations

import argparse
import sys

from spamsift.filter.engine import config, users
from spamsift.filter.engine.errors import SpamsiftError, UsageError, command_failed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

IPV4_PREFIX = 24
IPV6_PREFIX = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift sources",
        description="Top spam source addresses and networks (IPv4 /24, IPv6 /64) seen by "
                    "source-address tracking, with their ham counts.")
    period = parser.add_mutually_exclusive_group()
    period.add_argument("--days", type=int, default=30,
                        help="addresses seen in the last N days (default 30; 0: all)")
    period.add_argument("--since", metavar="YYYY-MM-DD", help="addresses seen since this day")
    parser.add_argument("--top", type=int, default=20, help="rows per list (default 20)")
    parser.add_argument("--user", nargs="+", default=[], metavar="NAME",
                        help="only mail of these users (default: every user you may see)")
    parser.add_argument("--json", action="store_true", help="print the lists as JSON")
    parser.add_argument("--width", type=int, help="render for this many columns")
    parser.add_argument("--config", help="configuration file")
    parser.add_argument("--storage", help="storage URL (default: the configuration's)")
    return parser


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) holding `ip`, as ``a.b.c.0/24``; IPv4-mapped IPv6
    addresses count as IPv4."""
    import ipaddress

    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class Source:
    """Counts of one address or network, over users."""

    __slots__ = ("key", "spam", "ham", "users", "addresses")

    def __init__(self, key: str) -> None:
        self.key = key
        self.spam = 0
        self.ham = 0
        self.users: set[int] = set()
        self.addresses: set[str] = set()

    def as_dict(self, with_addresses: bool) -> dict[str, object]:
        d: dict[str, object] = {"spam": self.spam, "ham": self.ham, "users": len(self.users)}
        if with_addresses:
            d["addresses"] = len(self.addresses)
        return d


def tally(rows: Iterable[tuple[int, str, int, int]],
          uids: set[int] | None) -> tuple[dict[str, Source], dict[str, Source]]:
    """(by address, by network) from store rows (uid, ip, spam, ham) of the users `uids`
    (None: all)."""
    by_ip: dict[str, Source] = {}
    by_net: dict[str, Source] = {}
    for uid, ip, spam, ham in rows:
        if uids is not None and uid not in uids:
            continue
        net = network_of(ip)
        for table, key in ((by_ip, ip), (by_net, net)):
            entry = table.get(key)
            if entry is None:
                entry = table[key] = Source(key)
            entry.spam += spam
            entry.ham += ham
            entry.users.add(uid)
            entry.addresses.add(ip)
    return by_ip, by_net


def top(entries: dict[str, Source], n: int) -> list[Source]:
    """The `n` entries with the most spam (ties: less ham first), leaving out spam-free ones."""
    spammy = [e for e in entries.values() if e.spam > 0]
    spammy.sort(key=lambda e: (-e.spam, e.ham, e.key))
    return spammy[:n]


def main(argv: list[str] | None = None, caller: users.Caller | None = None,
         clock: float | None = None, console=None) -> int:
    """`caller`, `clock` and `console` (a rich Console) are test seams."""
    args = build_parser().parse_args(argv)
    from spamsift.filter.engine.store.base import open_store
    from spamsift.trainer.report_data import first_day, today_string, write_out

    try:
        if args.top < 1 or args.days < 0:
            raise UsageError("--top must be positive and --days not negative")
        if args.since is not None:
            from spamsift.trainer.stats import since_day

            since: str | None = since_day(args.since)
        else:
            since = first_day(today_string(clock), args.days) if args.days else None
        settings = config.load(args.config)
        caller = caller or users.this_process()
        names = [users.validate(n) for n in args.user]
        users.authorize(caller, names, settings.trusted_users)
        if not names and not users.is_trusted(caller, settings.trusted_users):
            names = [users.validate(caller.name)]
        store = open_store(args.storage or settings.storage_url, settings.storage_timeout,
                           create=False)
        try:
            uids: set[int] | None = None
            if names:
                uids = {u for u in (store.uid(n, create=False) for n in names) if u is not None}
            if uids is not None and len(uids) == 1:
                rows = store.sources(next(iter(uids)), since)
            elif uids == set():
                rows = []
            else:
                rows = store.sources(None, since)
            by_ip, by_net = tally(rows, uids)
        finally:
            store.close()
    except SpamsiftError as exc:
        return command_failed("sources", exc)
    ips, nets = top(by_ip, args.top), top(by_net, args.top)
    if args.json:
        import json

        doc = {"since": since, "users": sorted(names) or None,
               "addresses": [{"ip": e.key, **e.as_dict(False)} for e in ips],
               "networks": [{"network": e.key, **e.as_dict(True)} for e in nets]}
        return write_out(sys.stdout, json.dumps(doc, indent=1) + "\n")
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console(width=args.width) if args.width else Console()
    period = f"since {since}" if since else "all time"
    for title, entries, first, with_addresses in (
            (f"Top spam sources ({period})", ips, "address", False),
            (f"Top spam networks ({period})", nets, "network", True)):
        table = Table(title=title, title_justify="left")
        table.add_column(first)
        for column in ("spam", "ham", "spam %", "users") + (("addresses",) if with_addresses
                                                           else ()):
            table.add_column(column, justify="right")
        for e in entries:
            share = f"{100.0 * e.spam / (e.spam + e.ham):.1f}"
            cells = [e.key, str(e.spam), str(e.ham), share, str(len(e.users))]
            if with_addresses:
                cells.append(str(len(e.addresses)))
            table.add_row(*cells)
        if not entries:
            table.add_row("(no spam sources in this period)", *[""] * (len(table.columns) - 1))
        console.print(table)
    return 0
