"""The thin client: hand `spamsift filter` to a running `spamsift daemon`, else do nothing.

Python needs ~15 ms to start and spamsift's engine another ~20 ms to import before it can
filter a message, more than the 25 ms a message may take. A resident daemon (DSPAM's
``--daemon`` / ``--client``, SpamAssassin's spamd / spamc) pays that once. This module is what
every `spamsift filter` process runs first, so it imports only built-in modules: when the
socket (``$SPAMSIFT_SOCKET``, default `DEFAULT_SOCKET`) does not exist it costs one stat().

Who asks is not taken from the request: the daemon reads the connecting process's uid from
the kernel (SO_PEERCRED), so trust rules hold exactly as in-process.

Wire format (both directions): a 4-byte magic, then fields, each a 4-byte big-endian length
and that many bytes. Request: b"SSF1", argc, argv..., n_env, (key, value)..., stdin.
Reply: b"SSF1", exit code (ASCII), stdout, stderr, then for each message the delivery agent
must take, its argv (NUL-separated) and the message; or the single field b"decline" when the
daemon will not serve the request (another configuration than the daemon's, a home that is
not the caller's, a message over its max_message_size): the client then filters in-process.

The daemon never runs a delivery agent: it says which and on what, and this client runs it,
under the caller's own uid, as the in-process filter would.
"""

import posix  # not os: os costs its own import plus _collections_abc (~1.4 ms a message)

DEFAULT_SOCKET = "/run/spamsift/spamsift.sock"
MAGIC = b"SSF1"
MAX_FRAME = 256 << 20
DECLINE = MAGIC + (7).to_bytes(4, "big") + b"decline"  # how a decline frame starts
TIMEOUT = 60.0
# Environment the daemon needs from its client: the home for dotfiles (maildrop's HOME and
# LOGNAME) and the configuration the client would use, to check it is the daemon's own.
PASSED_ENV = ("HOME", "LOGNAME", "USER", "SPAMSIFT_CONFIG", "SPAMSIFT_HOME", "SPAMSIFT_STORAGE")


def environment() -> dict[str, str]:
    """The process environment as str, read from posix (os.environ without importing os)."""
    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
            for k, v in posix.environ.items()}


def encode(fields: list[bytes]) -> bytes:
    return MAGIC + b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def decode(data: bytes) -> list[bytes]:
    """Split a frame into fields; raises ValueError for anything malformed."""
    if data[:4] != MAGIC:
        raise ValueError("bad magic")
    fields, pos = [], 4
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("truncated length")
        size = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        if pos + size > len(data):
            raise ValueError("truncated field")
        fields.append(data[pos:pos + size])
        pos += size
    return fields


def recv_all(sock) -> bytes:
    """Everything until the peer shuts down its side. A daemon that declines without
    reading the request closes with it unread, and the kernel then resets the connection
    after the decline: a decline before the reset is the answer (nothing else is: a reply
    is only sent once the request was read to its end)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            if not b"".join(chunks).startswith(DECLINE):
                raise
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_FRAME:
            raise ValueError("frame too large")
        chunks.append(chunk)


def is_training(argv: list[str]) -> bool:
    """Whether the call learns or corrects (``--class``, ``--addspam``, ``--falsepositive``,
    ``--mode=unlearn``) rather than filters a delivery."""
    for n, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in ("--class", "--addspam", "--falsepositive"):
            return True
        if name == "--mode":
            if not eq:
                value = argv[n + 1] if n + 1 < len(argv) else ""
            if value.lower() == "unlearn":
                return True
    return False


def deliver_set(argv: list[str]) -> set[str] | None:
    """The --deliver items of a filter command line (None without --deliver)."""
    found = None
    for n, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name == "--deliver":
            value = value if eq else (argv[n + 1] if n + 1 < len(argv) else "")
            found = {v.strip().lower() for v in value.split(",") if v.strip()}
    return found


def to_stdout(argv: list[str]) -> bool:
    """Whether the message is delivered on stdout (--stdout, --deliver=stdout, or no
    --deliver at all), as `spamsift.filter.cli` decides it; otherwise it may go to the
    delivery agent or the quarantine."""
    deliver = deliver_set(argv)
    return "--stdout" in argv or deliver is None or "stdout" in deliver


def wants_stdin(argv: list[str]) -> bool:
    """Whether the filter reads a message: not for a training call naming --signature; the
    same rule as `spamsift.filter.cli.main`, which is not imported here (tests/test_daemon.py
    holds the two together). A --signature on a plain delivery still reads, filters and
    returns the message: answering it with no message would lose the mail."""
    signature = any(arg.partition("=")[0] == "--signature" for arg in argv)
    return not (signature and is_training(argv))


class Fallback:
    """Returned when the daemon is not there: filter in-process, with this stdin."""

    __slots__ = ("stdin",)

    def __init__(self, stdin: bytes | None) -> None:
        self.stdin = stdin


def run(argv: list[str], environ, stdin, stdout, stderr, count: bool = True) -> int | Fallback:
    """Filter through the daemon; a `Fallback` when there is none (or it declines). A
    fallback is counted (`_count`) unless `count` is false (`spamsift doctor`'s probe)."""
    path = environ.get("SPAMSIFT_SOCKET", DEFAULT_SOCKET)
    if not path or any(a == "--config" or a.startswith("--config=") for a in argv):
        return Fallback(None)  # another configuration than the daemon's: filter here
    try:
        posix.stat(path)
    except OSError:
        return Fallback(None)
    raw = stdin.read() if wants_stdin(argv) else b""
    env = [(k, environ[k]) for k in PASSED_ENV if k in environ]
    fields = [str(len(argv)).encode(), *(a.encode("utf-8", "surrogateescape") for a in argv),
              str(len(env)).encode()]
    for key, value in env:
        fields += [key.encode(), value.encode("utf-8", "surrogateescape")]
    fields.append(raw)
    frame = encode(fields)
    import time

    deadline = time.monotonic() + CONNECT_WAIT
    pause = 0.005
    while True:
        sock = _connect(path, deadline)
        if isinstance(sock, str):  # nothing was sent: filter here, and say so
            return _fallback(path, sock, raw, stderr, count)
        try:
            try:
                sock.sendall(frame)
                sock.shutdown(1)  # SHUT_WR
            except OSError as exc:
                # A daemon may decline without reading the request (a uid over its share
                # of workers) and close: its answer is still there to read.
                reply = _declined(sock, exc)
            else:
                reply = decode(recv_all(sock))
            declined = reply[:1] == [b"decline"]
            code = 0 if declined else _exit_code(reply)
        except (OSError, ValueError) as exc:
            return _failed(path, exc, argv, raw, environ, stdout, stderr, count)
        finally:
            sock.close()
        # "busy:": this uid holds all the workers it may; one will be free soon. Wait for
        # it as for a full backlog, rather than filter in-process at once.
        if not (declined and reply[1:2] and reply[1].startswith(b"busy:")
                and time.monotonic() + pause < deadline):
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    if declined:
        why = reply[1].decode("utf-8", "replace") if len(reply) > 1 else "declined"
        return _fallback(path, f"declined the request ({why})", raw, stderr, count)
    if reply[2]:
        stderr.write(reply[2].decode("utf-8", "replace"))
    status = _emit(stdout, reply[1], code, stderr)
    for n in range(3, len(reply), 2):
        code = _run_agent([a.decode("utf-8", "surrogateescape") for a in reply[n].split(b"\0")],
                          reply[n + 1], stderr)
        if code == 75:
            return code
        status = code or status
    return status


def _declined(sock, exc: OSError) -> list[bytes]:
    """The decline waiting on `sock` after sending failed with `exc`, else `exc`. (The
    daemon closed with our request unread, so the kernel resets the connection after its
    answer: read up to that.)"""
    data = b""
    try:
        while len(data) < 1 << 16 and (chunk := sock.recv(1 << 16)):
            data += chunk
    except OSError:
        pass
    try:
        reply = decode(data)
    except ValueError:
        reply = []
    if reply[:1] != [b"decline"]:
        raise exc
    return reply


def _exit_code(reply: list[bytes]) -> int:
    """The exit code of a daemon's reply; ValueError when the frame is not a reply (an exit
    code, stdout, stderr, then pairs of agent argv and message)."""
    if len(reply) < 3 or len(reply) % 2 == 0 or not reply[0].isdigit() or len(reply[0]) > 3:
        raise ValueError(f"not a reply ({len(reply)} fields)")
    return int(reply[0])


def _failed(path: str, exc: Exception, argv: list[str], raw: bytes, environ, stdout,
            stderr, count: bool = True) -> int:
    """The daemon at `path` took the request and failed (or answered no reply): it may or may
    not have processed it, so never process it twice. Inbound mail written to stdout
    (maildrop's xfilter) is passed on untouched (the failure policy); anything else is
    retried by the MTA (75): a training request (corrections are idempotent), and a delivery
    whose message goes to the delivery agent or the quarantine, where a message on stdout
    would be read by no one and lost. Either way counted and logged, as every message that
    goes on unfiltered is: a line on stderr alone, which Courier does not show, was silence."""
    tempfail = is_training(argv) or not to_stdout(argv)
    what = "tempfail, the MTA retries" if tempfail else "message passed through"
    line = f"spamsift: daemon at {path} failed ({exc}); {what}"
    _syslog(line)
    try:
        stderr.write(line + "\n")
    except (OSError, ValueError):
        pass
    if count and not is_training(argv):
        _count("tempfail" if tempfail else "error", environ)
    if tempfail:
        return 75
    return _emit(stdout, raw, 0, stderr)


CONNECT_WAIT = 30.0  # seconds a client waits for a busy daemon's backlog to take it


def _connect(path: str, deadline: float | None = None):
    """A socket connected to the daemon, or why there is none (a str). A daemon whose listen
    backlog is full (every worker busy) answers EAGAIN at once: wait for it, with growing
    pauses, up to CONNECT_WAIT seconds (or `deadline`, a time.monotonic()), instead of
    filtering in-process (which, under load, made every busy moment worse and passed
    unnoticed)."""
    import _socket
    import time

    if deadline is None:
        deadline = time.monotonic() + CONNECT_WAIT
    pause = 0.001
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(path)
        except (BlockingIOError, InterruptedError):
            sock.close()
            if time.monotonic() + pause > deadline:
                return f"was busy for {CONNECT_WAIT:g} s"
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        except OSError as exc:
            sock.close()
            return f"cannot be reached ({exc.strerror or exc})"  # a stale socket, say
        else:
            impostor = _impostor(sock, path)
            if impostor:
                sock.close()
                return impostor
            return sock


def _impostor(sock, path: str) -> str:
    """Why the process serving `path` is not to be trusted with this message, or "".

    The client hands it the message and runs the delivery agent it names, so it must be the
    daemon the administrator started: root, or the owner of the socket's folder (the site
    user, /run/spamsift), or this very uid. A socket in a folder others may write (a
    --socket under /tmp) could otherwise be taken by any local user, who would then read
    every delivery's mail and run programs as each delivery uid."""
    import _socket
    import _struct

    try:
        creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        peer = _struct.unpack("3i", creds)[1]
        folder = path.rpartition("/")[0] or ("/" if path.startswith("/") else ".")
        owner = posix.stat(folder).st_uid
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if peer in (0, owner, posix.geteuid()):
        return ""
    return f"is served by uid {peer}, neither root nor the owner (uid {owner}) of its folder"


def _fallback(path: str, why: str, raw: bytes, stderr, count: bool = True) -> Fallback:
    """Filter in-process because the daemon at `path` did not: one line on stderr and in
    syslog (mail), so that no fallback passes unnoticed."""
    line = f"spamsift: daemon at {path} {why}; filtering in-process"
    if count:
        _count("fallback_busy" if why.startswith("was busy") else "fallback_declined"
               if why.startswith("declined") else "fallback_unreachable")
    _syslog(line)
    try:
        stderr.write(line + "\n")
    except (OSError, ValueError):
        pass
    return Fallback(raw)


def _syslog(line: str) -> None:
    """`line` (which starts with "spamsift: ") to syslog, facility mail, as a warning."""
    try:
        import syslog

        syslog.openlog("spamsift", syslog.LOG_PID, syslog.LOG_MAIL)
        syslog.syslog(syslog.LOG_WARNING, line[len("spamsift: "):].encode(
            "utf-8", "backslashreplace").decode())
    except (ImportError, OSError, ValueError):
        pass


def _count(reason: str, environ=None) -> None:
    """Count a message by `reason` (`spamsift.filter.engine.passlog`), in the home the
    in-process filter would use (the daemon's, or it would have been declined)."""
    try:
        from spamsift.filter.engine import passlog
        from spamsift.filter.engine.config import DEFAULT_HOME

        if environ is None:
            environ = environment()
        passlog.record(environ.get("SPAMSIFT_HOME") or DEFAULT_HOME, "-", reason)
    except Exception:  # noqa: BLE001 - counting must never stop a delivery
        pass


def _run_agent(argv: list[str], message: bytes, stderr) -> int:
    """Run the delivery agent the daemon named, as this process's user; its exit status, or
    75 (the MTA retries) when it cannot be run."""
    import subprocess

    try:
        return subprocess.run(argv, input=message, check=False).returncode
    except OSError as exc:
        stderr.write(f"spamsift: cannot run delivery_agent {argv[0]}: {exc.strerror}; "
                     "message tempfailed\n")
        return 75


def _emit(stdout, data: bytes, status: int, stderr) -> int:
    """Write the message out: `status`, or 75 (the MTA retries) when stdout took not all."""
    from spamsift.filter.stdio import write_all

    try:
        write_all(stdout, data)
    except OSError as exc:
        stderr.write(f"spamsift: cannot write the message: {exc}\n")
        return 75
    return status
