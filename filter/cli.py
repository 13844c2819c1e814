"""``spamsift filter``: the inline filter with DSPAM's command line, for maildrop and aliases.

Reads one message on stdin, classifies and trains it for a user, and writes it to stdout with
``X-DSPAM-*`` headers added (`spamsift.filter.stamping`); or, with ``--class``, learns or
corrects. The command line is DSPAM's (`spamsift.filter.options`).

Exit codes (see `spamsift.filter.engine.exitcodes`): 0 done or passed through; 64 bad command line;
65 bad input (no, unknown or foreign signature; invalid user; empty input); 75 storage
unavailable on a training request, or any internal error with ``on_error = "tempfail"``;
77 an untrusted caller named another user; 78 bad configuration on a training request.

Failure policy for inbound mail: the input is read completely before anything can fail; on
any error the original bytes are written unchanged (exit 0, or 75 with ``on_error =
"tempfail"``) and one line is logged. A user who is not opted in, or a message over
``max_message_size``, gets the original bytes back with no headers, so maildrop can fall back
to another filter.
"""

from __future__ import annotations

import os
import sys
import time

from spamsift.filter.engine import exitcodes
from spamsift.filter.engine.errors import SpamsiftError, UsageError
from spamsift.filter.options import USAGE, Options, parse
from spamsift.filter.stamping import score_text, stamp, summary_line
from spamsift.filter.stdio import write_all

# Set by the `spamsift` console script, which ends the process with os._exit right after
# main() returns. The database is then not closed: closing the last connection to a WAL
# database makes SQLite checkpoint the whole WAL into the file (12 ms a message measured on
# the reference machine, half the budget), and with one process per message every process
# is the last one. Leaving is safe (SQLite is built to survive a process ending at any
# point); the WAL is checkpointed by the autocheckpoint in later commits instead.
FAST_EXIT = False

class Seams:
    """What a caller of `main` may put in place of this process's own: the test seams `clock`
    (returns Unix time) and `make_id` (returns a signature id); `caller` (a `users.Caller`,
    who asks: the daemon's client's peer credentials); `store` (used and left open: the
    daemon keeps one per worker); `commit_inbound` (the daemon's queue to its writer); and
    `run_agent` (argv, message) -> exit status, which runs the delivery agent (the daemon
    records it instead, and its client runs it under the caller's own uid); `observe`
    (kind, label, extra) hears what was done ("message" and its result, "passed_through" and
    the reason, "retrain" and the source: the daemon's metrics; "failed" and the exception
    that ended the request)."""

    __slots__ = ("clock", "make_id", "caller", "store", "commit_inbound", "run_agent",
                 "observe")

    def __init__(self, clock=None, make_id=None, caller=None, store=None,
                 commit_inbound=None, run_agent=None, observe=None) -> None:
        self.clock = clock
        self.make_id = make_id
        self.caller = caller
        self.store = store
        self.commit_inbound = commit_inbound
        self.run_agent = run_agent or run_delivery_agent
        # observe(kind, label, extra): what was done, for the daemon's metrics
        self.observe = observe or _ignore


def main(argv: list[str] | None = None, stdin=None, stdout=None, stderr=None,
         environ=None, clock=None, make_id=None, caller=None, store=None,
         commit_inbound=None, run_agent=None, observe=None) -> int:
    """Run the filter; streams are binary (tests pass BytesIO), stderr is text. The other
    arguments are `Seams`."""
    argv = sys.argv[1:] if argv is None else argv
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr
    environ = os.environ if environ is None else environ
    try:
        opts = parse(argv)
    except UsageError as exc:
        print(f"spamsift filter: {exc}", file=stderr)
        return exitcodes.USAGE
    if opts.help:
        stdout.write(USAGE.encode())
        return exitcodes.OK
    if opts.version:
        from spamsift import __version__

        stdout.write(f"spamsift {__version__}\n".encode())
        return exitcodes.OK
    inbound = opts.klass is None and opts.mode != "unlearn"
    # Read the whole message before anything that can fail, so it can always be passed on.
    raw = b"" if opts.signature and not inbound else stdin.read()
    started = time.perf_counter()
    settings = None
    try:
        from spamsift.filter.engine import config

        settings = config.load(opts.config, environ)
        seams = Seams(clock, make_id, caller, store, commit_inbound, run_agent, observe)
        if inbound:
            return _inbound(opts, raw, settings, stdout, environ, seams, started)
        return _training(opts, raw, settings, stdout, stderr, seams)
    except SpamsiftError as exc:
        return _fail(exc, opts, raw, settings, inbound, stdout, stderr,
                     run_agent or run_delivery_agent, observe or _ignore)
    except Exception as exc:  # noqa: BLE001 - the failure policy: never lose the message
        return _fail(exc, opts, raw, settings, inbound, stdout, stderr,
                     run_agent or run_delivery_agent, observe or _ignore)


class OutputFailed(Exception):
    """Standard output took no message (closed, or the reader went away)."""


class AgentFailed(Exception):
    """The delivery agent could not be run: only a retry by the MTA can deliver now."""


def _fail(exc: BaseException, opts: Options, raw: bytes, settings, inbound: bool,
          stdout, stderr, run_agent, observe) -> int:
    from spamsift.filter.engine import log

    use_syslog = settings.syslog if settings is not None else True
    users = ",".join(opts.users) or "-"
    observe("failed", exc, "")  # the daemon reopens its store after a storage error
    if isinstance(exc, OutputFailed):
        # Writing the original would fail the same way (and could follow a partial write):
        # only a retry by the MTA can deliver now.
        log.error(f"user={users} cannot write the message: {exc}", use_syslog, stderr)
        return exitcodes.TEMPFAIL
    if isinstance(exc, AgentFailed):
        log.error(f"user={users} message tempfailed: {exc}", use_syslog, stderr)
        return exitcodes.TEMPFAIL
    kind = type(exc).__name__
    if not inbound or opts.classify:
        # Nothing to deliver (--classify writes a summary, never the message): the error
        # and its exit code are the answer.
        code = getattr(exc, "exit_code", exitcodes.SOFTWARE)
        detail = str(exc) if isinstance(exc, SpamsiftError) else f"internal error: {kind}: {exc}"
        log.error(f"user={users} {detail}", use_syslog, stderr)
        return code
    if not raw:
        log.error("no message on standard input", use_syslog, stderr)
        return exitcodes.DATAERR
    tempfail = settings is not None and settings.on_error == "tempfail"
    action = "tempfail" if tempfail else "passed through unchanged"
    log.error(f"user={users} message {action}: {kind}: {exc}", use_syslog, stderr)
    _count_unfiltered(settings, opts.users or ["-"], "tempfail" if tempfail else "error",
                      observe)
    if tempfail:
        return exitcodes.TEMPFAIL
    if _to_agent(opts, settings):
        # Standard output is not the delivery here (the MTA runs us as its delivery
        # program): the original goes to the agent for each user, or the MTA must retry.
        if opts.deliver is None or "innocent" not in opts.deliver:
            return exitcodes.OK
        try:
            codes = [_run_agent(raw, user, opts, settings, run_agent)
                     for user in opts.users or [""]]
        except AgentFailed as agent_exc:
            log.error(f"user={users} message tempfailed: {agent_exc}", use_syslog, stderr)
            return exitcodes.TEMPFAIL
        return next((code for code in codes if code), exitcodes.OK)
    if opts.deliver is None or opts.stdout or "innocent" in opts.deliver:
        try:
            write_all(stdout, raw)
        except OSError as out_exc:  # the reader went away: only a retry can deliver now
            log.error(f"user={users} cannot write the message: {out_exc}", use_syslog, stderr)
            return exitcodes.TEMPFAIL
    return exitcodes.OK


def _open_agent(settings, seams):
    from spamsift.filter.engine.agent import Agent
    from spamsift.filter.engine.store.base import open_store

    store = seams.store
    if store is None:
        store = open_store(settings.storage_url, settings.storage_timeout)
    agent = Agent(settings, store, commit_inbound=seams.commit_inbound)
    if seams.clock is not None:
        agent.clock = seams.clock
    if seams.make_id is not None:
        agent.make_id = seams.make_id
    return agent


def _checked_users(opts: Options, settings, caller, allow_none: bool = False) -> list[str]:
    from spamsift.filter.engine import users

    caller = caller or users.this_process()
    # Each name once: "--user me --user me ..." a thousand times made one request do a
    # thousand messages' work.
    names = list(dict.fromkeys(users.validate(u) for u in opts.users))
    if not names and not allow_none:
        names = [users.validate(caller.name)]
    users.authorize(caller, names, settings.trusted_users)
    if not names and not users.is_trusted(caller, settings.trusted_users):
        names = [users.validate(caller.name)]  # an untrusted caller retrains only their own
    return names


def _keep_open(seams: Seams) -> bool:
    return FAST_EXIT or seams.store is not None


def _inbound(opts: Options, raw: bytes, settings, stdout, environ, seams: Seams,
             started) -> int:
    from spamsift.filter.engine import log, users
    from spamsift.filter.engine.errors import MessageError
    from spamsift.filter.engine.message import Message, UnstampableError

    if not raw:
        raise MessageError("no message on standard input")
    names = _checked_users(opts, settings, seams.caller)
    deliver = opts.deliver if opts.deliver is not None else {"innocent", "spam"}
    to_stdout = opts.stdout or opts.deliver is None or not settings.delivery_agent
    if len(names) > 1 and to_stdout and deliver & {"innocent", "spam"} and not opts.classify:
        raise UsageError("several users need --deliver=summary or a delivery_agent, "
                         "not one message on stdout per user")
    if settings.max_message_size and len(raw) > settings.max_message_size:
        log.info(f"user={','.join(names)} size={len(raw)} over max_message_size: passed through",
                 settings.syslog)
        _count_unfiltered(settings, names, "too_big", seams.observe)
        return _deliver(raw, names[0], "innocent", deliver, opts, settings, stdout,
                        seams.run_agent)
    agent = _open_agent(settings, seams)
    try:
        message = Message(raw)
        status = exitcodes.OK
        for name in names:
            ctx = agent.user(name, create=not opts.classify)
            home = users.home_of(name, settings.home_template, opts.home, environ)
            if not users.opted_in(ctx.prefs.get("opt"), settings.opt, home,
                                  settings.opt_in_file, settings.opt_out_file):
                if not opts.classify:  # --classify never delivers: nothing to pass on
                    _count_unfiltered(settings, [name], "not_opted_in", seams.observe)
                    status = _deliver(raw, name, "innocent", deliver, opts, settings,
                                      stdout, seams.run_agent) or status
                continue
            if opts.whitelist is not None:
                ctx.settings = ctx.settings.replace(whitelist=True)
            outcome = agent.process(ctx, raw, opts.mode, opts.classify)
            seams.observe("message", outcome.result, "yes" if outcome.unsure else "no")
            if settings.log_messages:
                log.info(f"user={name} result={outcome.result}"
                         f"{' unsure' if outcome.unsure else ''} "
                         f"score={score_text(outcome.score)} "
                         f"probability={outcome.probability:.4f} "
                         f"confidence={outcome.confidence:.2f} "
                         f"signature={outcome.signature or '-'} size={len(raw)} "
                         f"ms={(time.perf_counter() - started) * 1000:.0f}", settings.syslog)
            if opts.classify or (opts.deliver and "summary" in opts.deliver):
                stdout.write(summary_line(outcome).encode())
            if opts.classify:
                continue
            try:
                stamped = stamp(message, outcome, ctx.settings, opts.factors, agent.clock)
            except UnstampableError as exc:
                log.info(f"user={name} {exc}", settings.syslog)
                _count_unfiltered(settings, [name], "unstampable", seams.observe)
                stamped = raw
            klass = "spam" if outcome.is_spam else "innocent"
            status = _deliver(stamped, name, klass, deliver, opts, settings, stdout,
                              seams.run_agent) or status
        stdout.flush()
        return status
    finally:
        if not _keep_open(seams):
            agent.store.close()


def _ignore(*_what) -> None:
    """The `observe` seam of a filter no one watches."""


def _count_unfiltered(settings, names: list[str], reason: str, observe=_ignore) -> None:
    """Count messages that went on without our headers (or were tempfailed), by user and
    reason, where `spamsift report` finds them even when the database cannot be written
    (`passlog`)."""
    from spamsift.filter.engine import passlog
    from spamsift.filter.engine.config import DEFAULT_HOME

    home = settings.home if settings is not None else os.environ.get("SPAMSIFT_HOME",
                                                                      DEFAULT_HOME)
    for name in names:
        passlog.record(home, name if _printable(name) else "-", reason)
        observe("passed_through", reason, "")


def _printable(name: str) -> bool:
    return 0 < len(name) <= 128 and name.isprintable() and " " not in name


def _deliver(data: bytes, user: str, klass: str, deliver: set[str], opts: Options, settings,
             stdout, run_agent) -> int:
    """Hand a message on: stdout, the delivery agent, or the quarantine for undelivered spam."""
    if klass not in deliver:
        if klass == "spam":
            from spamsift.filter.engine.quarantine import quarantine

            quarantine(settings.home, user, data)
        return exitcodes.OK
    if not _to_agent(opts, settings):
        try:
            write_all(stdout, data)
        except OSError as exc:
            raise OutputFailed(exc) from None
        return exitcodes.OK
    return _run_agent(data, user, opts, settings, run_agent)


def _to_agent(opts: Options, settings) -> bool:
    """Whether messages are delivered by running `delivery_agent` (not written to stdout)."""
    return bool(settings is not None and settings.delivery_agent and opts.deliver is not None
                and not opts.stdout)


def _run_agent(data: bytes, user: str, opts: Options, settings, run_agent) -> int:
    """Run the delivery agent on `data` through `run_agent`; its exit status. AgentFailed
    when it cannot run."""
    import shlex

    try:
        argv = [a.replace("%u", user).replace("%s", opts.mail_from)
                for a in shlex.split(settings.delivery_agent)]
    except ValueError as exc:
        raise AgentFailed(f"delivery_agent {settings.delivery_agent!r}: {exc}") from None
    if not argv:
        raise AgentFailed("delivery_agent is empty")
    return run_agent(argv, data)


def run_delivery_agent(argv: list[str], data: bytes) -> int:
    """Run a delivery agent in this process's name on `data`; its exit status. AgentFailed
    when it cannot run. (The daemon never calls this: its client does, as the caller.)"""
    import subprocess

    try:
        done = subprocess.run(argv, input=data, check=False)
    except OSError as exc:
        raise AgentFailed(f"cannot run delivery_agent {argv[0]}: {exc.strerror}") from None
    return done.returncode


def _training(opts: Options, raw: bytes, settings, stdout, stderr, seams: Seams) -> int:
    from spamsift.filter.engine import log
    from spamsift.filter.engine.errors import MessageError, MissingSignatureError
    from spamsift.filter.engine.message import Message, find_signature

    agent = _open_agent(settings, seams)
    try:
        if opts.source in ("corpus", "inoculation"):
            if not raw:
                raise MessageError("no message on standard input")
            for name in _checked_users(opts, settings, seams.caller):
                ctx = agent.user(name)
                agent.learn(ctx, raw, opts.klass, opts.source)  # type: ignore[arg-type]
                seams.observe("retrain", opts.source, "")
            return exitcodes.OK
        sig = opts.signature or (find_signature(raw, settings.header_prefix + "-Signature")
                                 if raw else None)
        if not sig:
            raise MissingSignatureError(
                "no signature: the message has no X-DSPAM-Signature header or !DSPAM:id! tag "
                "(forward it as an attachment or with full headers), and no --signature")
        names: list[str | None] = [*_checked_users(opts, settings, seams.caller, allow_none=True)]
        names = names or [None]  # None: the signature's owner (trusted callers only)
        outcome = None
        for owner in names:
            outcome = agent.retrain(owner, sig, opts.klass, unlearn=opts.mode == "unlearn")
            seams.observe("retrain", "unlearn" if opts.mode == "unlearn" else "error", "")
            log.info(f"user={outcome.user} signature={sig} {outcome.action} as "
                     f"{outcome.result}", settings.syslog)
        if outcome is not None and opts.deliver and "summary" in opts.deliver:
            stdout.write(summary_line(outcome).encode())
        if outcome is not None and raw and (opts.stdout and opts.deliver is not None
                                            and opts.deliver & {"innocent", "spam"}):
            prefix = settings.header_prefix
            write_all(stdout, Message(raw).stamp([(f"{prefix}-Reclassified", outcome.result),
                                                  (f"{prefix}-Signature", sig)], prefix))
        stdout.flush()
        return exitcodes.OK
    finally:
        if not _keep_open(seams):
            agent.store.close()
