"""``spamsift config`` and ``spamsift prefs``: look at and change settings."""

from __future__ import annotations

import argparse
import json
import os
import sys

from spamsift.filter.engine import config, exitcodes
from spamsift.filter.engine.errors import (NoDatabaseError, SpamsiftError, StorageError,
                                           command_failed)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def config_main(argv: list[str] | None = None) -> int:
    """Print the effective settings as TOML, each key with its documentation."""
    parser = argparse.ArgumentParser(prog="spamsift config",
                                     description="Print the effective configuration as TOML.")
    parser.add_argument("--config", help="configuration file (default $SPAMSIFT_CONFIG or "
                        f"{config.DEFAULT_CONFIG_PATH})")
    parser.add_argument("--defaults", action="store_true",
                        help="print the built-in defaults instead (a sample file)")
    args = parser.parse_args(argv)
    try:
        settings = config.Settings({}) if args.defaults else config.load(args.config,
                                                                         use_cache=False)
    except SpamsiftError as exc:
        return command_failed("config", exc)
    print(f"# effective spamsift configuration (from {settings.origin})")
    print(f"# storage in use: {settings.storage_url}")
    for key, (default, _kind, choices, doc) in config.KEYS.items():
        print()
        print(f"# {doc}")
        if choices:
            print(f"# one of: {', '.join(choices)}")
        print(f"# default: {_toml_value(default)}")
        print(f"{key} = {_toml_value(getattr(settings, key))}")
    return exitcodes.OK


def prefs_main(argv: list[str] | None = None) -> int:
    """Show, set or delete a user's stored preferences (like dspam_admin)."""
    parser = argparse.ArgumentParser(
        prog="spamsift prefs",
        description="Show or change a user's preferences. Keys: " + ", ".join(config.USER_KEYS)
        + ". User 'default' holds nothing: site defaults live in the configuration file.")
    parser.add_argument("user")
    parser.add_argument("key", nargs="?")
    parser.add_argument("value", nargs="?")
    parser.add_argument("--delete", action="store_true", help="remove KEY")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    from spamsift.filter.engine import users
    from spamsift.filter.engine.store.base import open_store

    try:
        settings = config.load(args.config)
        name = users.acting_for(args.user, settings)
        store = open_store(settings.storage_url, settings.storage_timeout)
        try:
            if args.key is None:
                known = store.uid(name, create=False)
                for key, value in sorted((store.preferences(known) if known else {}).items()):
                    print(f"{key}={value}")
                return exitcodes.OK
            if args.key not in config.USER_KEYS:
                print(f"spamsift prefs: {args.key!r} is not a user preference "
                      f"({', '.join(config.USER_KEYS)})", file=sys.stderr)
                return exitcodes.USAGE
            uid = store.uid(name, create=True)
            assert uid is not None  # create=True always yields one
            if args.delete:
                store.set_preference(uid, args.key, None)
            elif args.value is None:
                print(store.preferences(uid).get(args.key, ""))
                return exitcodes.OK
            else:
                checked = config.Settings({}).replace(**{args.key: args.value})  # or raises
                value = getattr(checked, args.key)
                # Stored as validated: a choice in its canonical case ("OUT" -> "out").
                store.set_preference(uid, args.key,
                                     value if isinstance(value, str) else args.value)
        finally:
            store.close()
    except SpamsiftError as exc:
        return command_failed("prefs", exc)
    return exitcodes.OK


def db_main(argv: list[str] | None = None) -> int:
    """``spamsift db init|check|compact``: create or upgrade the schema; say what is wrong;
    rewrite an SQLite file at the current page size."""
    parser = argparse.ArgumentParser(
        prog="spamsift db", description="Create or upgrade the database schema (init), "
        "check a database and list what is wrong with it (check; exit 65 when anything is), "
        "or rewrite an SQLite database with the page size new ones get, which writes a third "
        "as much per message (compact; needs the database to itself).")
    parser.add_argument("action", choices=("init", "check", "compact"))
    parser.add_argument("--config")
    parser.add_argument("--storage", help="storage URL (default: the configuration's)")
    args = parser.parse_args(argv)
    from spamsift.filter.engine.store.base import open_store

    try:
        settings = config.load(args.config)
        url = args.storage or settings.storage_url
        try:
            store = open_store(url, settings.storage_timeout, create=args.action == "init")
        except NoDatabaseError as exc:
            print(exc)  # a problem like any other that check finds: exit 65
            return exitcodes.DATAERR
        except StorageError as exc:
            if args.action != "check":
                raise
            # What this uid's deliveries would hit: a problem to report, with who.
            print(f"{exc} (as uid {os.geteuid()}: deliveries as this uid pass mail through "
                  "unfiltered; fix: the spamsift user owns the database and deliveries go "
                  "through the daemon)")
            return exitcodes.DATAERR
        try:
            if args.action == "compact":
                return _compact(store, url)
            if args.action == "init":
                for line in store.initialize():
                    print(line)
                print(f"{url.split('@')[-1]}: schema ready")
                try:
                    from spamsift.filter.engine import passlog

                    passlog.prepare(settings.home)
                except OSError as exc:
                    print(f"{settings.home}/{passlog.FOLDER}: {exc.strerror}: mail passed "
                          "through unfiltered is counted only in syslog")
                return exitcodes.OK
            problems = store.check()
        finally:
            store.close()
    except SpamsiftError as exc:
        return command_failed("db", exc)
    for problem in problems:
        print(problem)
    if problems:
        return exitcodes.DATAERR
    print("ok")
    return exitcodes.OK


def _compact(store, url: str) -> int:
    compact = getattr(store, "compact", None)
    if compact is None:
        print(f"spamsift db: compact rewrites SQLite databases; {url.split('@')[-1]} is not "
              "one (MySQL/MariaDB: OPTIMIZE TABLE)", file=sys.stderr)
        return exitcodes.USAGE
    page_before, size_before, page_after, size_after = compact()
    print(f"{url.split('@')[-1]}: page size {page_before} -> {page_after}, "
          f"{size_before / 1e6:.1f} -> {size_after / 1e6:.1f} MB")
    return exitcodes.OK


def groups_main(argv: list[str] | None = None) -> int:
    """``spamsift groups [list|show USER|import FILE]``: DSPAM's groups (docs/groups.md)."""
    parser = argparse.ArgumentParser(
        prog="spamsift groups",
        description="List the configured groups and what each contributed (list, the "
                    "default), the groups that apply to one user (show USER), or print DSPAM's "
                    "GroupConfig file as [groups.NAME] tables for the configuration (import "
                    "FILE; - reads standard input).")
    parser.add_argument("action", nargs="?", default="list", choices=("list", "show", "import"))
    parser.add_argument("argument", nargs="?", metavar="USER|FILE")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    from spamsift.filter.engine import groups

    try:
        if args.action == "import":
            if not args.argument:
                parser.error("import needs a GroupConfig file (- for standard input)")
            if args.argument == "-":
                text, origin = sys.stdin.read(), "<stdin>"
            else:
                try:
                    with open(args.argument, encoding="utf-8", errors="replace") as fh:
                        text = fh.read()
                except OSError as exc:
                    print(f"spamsift groups: cannot read {args.argument}: {exc.strerror}",
                          file=sys.stderr)
                    return exitcodes.NOINPUT
                origin = args.argument
            imported = groups.import_groupconfig(text, origin)
            if args.json:
                print(json.dumps([{"name": g.name, "type": g.type, "members": list(g.members)}
                                  for g in imported], indent=2))
            else:
                print(f"# DSPAM groups from {origin}: add these tables to the configuration")
                print("\n".join(g.as_toml() for g in imported), end="")
            return exitcodes.OK
        settings = config.load(args.config)
        if args.action == "show":
            from spamsift.filter.engine import users

            if not args.argument:
                parser.error("show needs a USER")
            name = users.validate(args.argument)
            found = groups.membership(settings.groups, name).all()
            if args.json:
                print(json.dumps({"user": name, "groups": [
                    {"name": g.name, "type": g.type} for g in found]}, indent=2))
            else:
                for g in found:
                    print(f"{g.name} ({g.type})")
                if not found:
                    print(f"{name}: no group applies")
            return exitcodes.OK
        from spamsift.filter.engine.store.base import open_store

        store = open_store(settings.storage_url, settings.storage_timeout, create=False)
        try:
            done = groups.contributions(store, settings.groups)
        finally:
            store.close()
    except SpamsiftError as exc:
        return command_failed("groups", exc)
    if args.json:
        print(json.dumps([c.as_dict() for c in done], indent=2))
    else:
        for c in done:
            print(c.line())
        if not done:
            print(f"no groups in {settings.origin} ([groups.NAME] tables, docs/groups.md)")
    return exitcodes.OK
