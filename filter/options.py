"""The inline filter's command line: DSPAM's flags, parsed left to right as DSPAM does.

``--user a b`` takes names until the next flag. argparse is not used because it alone costs
a third of the per-message time budget.
"""

from __future__ import annotations

from spamsift.filter.engine.errors import UsageError

USAGE = """\
usage: spamsift filter [--user NAME ...] [--stdout] [--deliver=innocent,spam,summary]
                       [--classify | --process] [--mode=teft|toe|tum|notrain|unlearn]
                       [--class=spam|innocent --source=error|corpus|inoculation]
                       [--addspam | --falsepositive] [--signature=ID] [--factors]
                       [--home=DIR] [--config=FILE] [--feature=wh,no,tb=N]

Classify the message on standard input for a user and write it to standard output with
X-DSPAM-* headers (maildrop: xfilter "spamsift filter --user $LOGNAME --stdout
--deliver=innocent,spam"), or learn it (--class=X --source=corpus|inoculation), or correct an
earlier classification (--addspam = --class=spam --source=error, --falsepositive =
--class=innocent --source=error) from the signature in the message or --signature.
DSPAM's --client, --nofork, --debug and --profile=NAME are accepted and change nothing.
"""

_CLASSES = {"spam": "spam", "innocent": "innocent", "nonspam": "innocent"}
_SOURCES = ("error", "corpus", "inoculation")
_MODES = ("teft", "toe", "tum", "notrain", "unlearn")
_DELIVER = ("innocent", "nonspam", "spam", "summary", "stdout")



class Options:
    __slots__ = ("users", "stdout", "deliver", "classify", "mode", "klass", "source",
                 "signature", "home", "config", "factors", "whitelist", "corpus_modifier",
                 "help", "version", "mail_from")

    def __init__(self) -> None:
        self.users: list[str] = []
        self.stdout = False
        self.deliver: set[str] | None = None
        self.classify = False
        self.mode: str | None = None
        self.klass: str | None = None
        self.source: str | None = None
        self.signature: str | None = None
        self.home: str | None = None
        self.config: str | None = None
        self.factors = False
        self.whitelist: bool | None = None
        self.corpus_modifier = False
        self.help = False
        self.version = False
        self.mail_from = ""


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    if value.lower() not in allowed:
        raise UsageError(f"{flag} takes {'|'.join(allowed)}, not {value!r}")
    return value.lower()


def parse(argv: list[str]) -> Options:
    """DSPAM's left-to-right parse; `--x=v` and `--x v` both work; unknown flags are errors."""
    opts = Options()
    i = 0
    valued = ("--mode", "--class", "--source", "--deliver", "--signature", "--home",
              "--config", "--feature", "--mail-from", "--profile")
    while i < len(argv):
        arg = argv[i]
        i += 1
        name, eq, value = arg.partition("=")
        if name in valued and not eq:
            if i >= len(argv):
                raise UsageError(f"{name} needs a value")
            value = argv[i]
            i += 1
        if name in ("--user", "--rcpt-to"):
            names = [value] if eq else []
            while i < len(argv) and argv[i] and not argv[i].startswith("-"):
                names.append(argv[i])
                i += 1
            if not names:
                raise UsageError(f"{name} needs at least one name (a name that starts with "
                                 f"- is given as {name}=NAME)")
            if name == "--user":
                opts.users.extend(names)
        elif name == "--stdout":
            opts.stdout = True
        elif name == "--deliver":
            items = [v.strip().lower() for v in value.split(",") if v.strip()]
            bad = [v for v in items if v not in _DELIVER]
            if bad or not items:
                raise UsageError(f"--deliver takes {','.join(_DELIVER)}, not {value!r}")
            opts.deliver = set(items)
            if "nonspam" in opts.deliver:
                opts.deliver.add("innocent")
            if "stdout" in opts.deliver:
                opts.deliver |= {"innocent", "spam"}
                opts.stdout = True
        elif name == "--classify":
            opts.classify = True
        elif name == "--process":
            opts.classify = False
        elif name == "--mode":
            opts.mode = _choice(name, value, _MODES)
        elif name == "--class":
            opts.klass = _CLASSES[_choice(name, value, tuple(_CLASSES))]
        elif name == "--source":
            opts.source = _choice(name, value, _SOURCES)
        elif name in ("--addspam", "--falsepositive"):
            opts.klass = "spam" if name == "--addspam" else "innocent"
            opts.source = opts.source or "error"
        elif name == "--corpus":
            opts.corpus_modifier = True
        elif name in ("--inoculate", "--inoculation"):
            opts.source = "inoculation"
        elif name == "--signature":
            opts.signature = value.strip()
        elif name == "--home":
            opts.home = value
        elif name == "--config":
            opts.config = value
        elif name == "--mail-from":
            opts.mail_from = value
        elif name == "--factors":
            opts.factors = True
        elif name == "--feature":
            for feature in value.lower().split(","):
                # DSPAM matches features by their first two letters.
                if feature[:2] == "wh":
                    opts.whitelist = True
                elif feature[:2] not in ("no", "tb", "ch", "sb"):
                    raise UsageError(f"unknown --feature {feature!r} (wh, no, tb=N)")
        elif name in ("--profile", "--debug", "--nofork", "--client"):
            # Accepted for DSPAM command lines: spamsift has one storage profile, and
            # DSPAM's --client (hand the message to its daemon) is what spamsift's own
            # client does whenever a daemon is running (filter/client.py).
            pass
        elif name in ("-h", "--help"):
            opts.help = True
        elif name == "--version":
            opts.version = True
        else:
            raise UsageError(f"unknown argument {arg[:60]!r} (see spamsift filter --help)")
    if opts.corpus_modifier and opts.klass:
        opts.source = "corpus"  # DSPAM 2.x: --addspam --corpus
    if opts.klass and not opts.source and opts.mode != "unlearn":
        raise UsageError("--class needs --source=error|corpus|inoculation")
    if opts.source and not opts.klass:
        raise UsageError("--source needs --class=spam|innocent")
    if opts.classify and opts.klass:
        raise UsageError("--classify cannot be combined with --class")
    if opts.mode == "unlearn" and opts.klass and opts.source not in (None, "error"):
        raise UsageError("--mode=unlearn works on a signature: use --source=error")
    return opts
