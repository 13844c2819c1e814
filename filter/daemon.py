"""``spamsift daemon``: keep the engine loaded and filter for `spamsift.filter.client` requests.

`daemon_workers` threads, one open store each (reused: no connect, no WAL recovery, warm page
cache); further connections wait in the listen backlog. Each request runs exactly the
in-process filter (`spamsift.filter.cli.main`) with the client's arguments, stdin and the few
environment variables it needs, and with the caller identity the kernel reports for the
connecting process (SO_PEERCRED), never one the client claims.

The socket is world-writable on purpose: every local delivery uid must reach it, so the
daemon is a privilege boundary (docs/daemon.md, "Trust model"). It serves its own
configuration only (a request with --config or other SPAMSIFT_* variables is declined, and the
client filters in its own process with its own privileges), it never runs a program for a
request (the client runs the delivery agent), it looks at a home the client names only when it
is the caller's, and it bounds what one request may cost (max_message_size, the tokenizer's
caps, `daemon_workers`).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time

from spamsift.filter import cli, client, options
from spamsift.filter.writer import SYNC_WAIT, Writer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spamsift.filter.engine.metrics import Metrics
from spamsift.filter.engine import config, exitcodes, log, users
from spamsift.filter.engine.errors import (ConflictError, SpamsiftError, StorageError,
                                           UsageError, command_failed)


MAX_SOCKET_PATH = 107  # bytes of an AF_UNIX path on Linux (sun_path, 108 with its NUL)
LISTEN_BACKLOG = 128  # connections that wait while every worker is busy
REQUEST_TIMEOUT = 30.0  # seconds a client may take to send its request
FRAME_SLACK = 1 << 20  # bytes of a request beyond max_message_size: arguments, environment
DRAIN_LIMIT = 1 << 30  # bytes read and thrown away from a too large request before closing


class _Server:
    """A listening socket and `workers` threads, each taking the next connection and
    filtering it with a store of its own (reused: no connect, no WAL recovery, warm page
    cache). A bounded number of threads bounds memory (each may hold a message of
    max_message_size several times over); further connections wait in the listen backlog.
    """

    def __init__(self, path: str, settings, config_path: str | None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.own_env = {k: v for k, v in os.environ.items() if k.startswith("SPAMSIFT_")
                        and k in client.PASSED_ENV}
        if config_path:
            self.own_env["SPAMSIFT_CONFIG"] = config_path
        self.max_request = (settings.max_message_size + FRAME_SLACK
                            if settings.max_message_size else client.MAX_FRAME)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Made world-writable by bind itself, listening a moment later: every delivery uid
        # can connect as soon as the path exists. A chmod after the writer's start-up left
        # the umask's mode for ~100 ms (more under load), and other uids' deliveries then
        # filtered in-process; a chmod by name could also be turned onto another file
        # through a symlink swapped in where others may write the socket's folder.
        umask = os.umask(0o111)
        try:
            self.listener.bind(path)
        finally:
            os.umask(umask)
        self.listener.listen(LISTEN_BACKLOG)
        self.listener.settimeout(0.5)  # how often an idle worker looks whether to stop
        self.stopping = threading.Event()
        self.writer = Writer(settings)
        self.writer.start()
        self.metrics: Metrics | None = None  # when serving --metrics
        self.workers = [threading.Thread(target=self._work, name=f"spamsift-worker-{n}",
                                         daemon=True)
                        for n in range(max(1, settings.daemon_workers))]
        # Workers one untrusted uid may hold at once (`_admit`): all but one, so that
        # one always serves everybody else.
        self.per_uid = max(1, len(self.workers) - 1)
        self.busy: dict[int, int] = {}  # uid -> workers it holds
        self.lock = threading.Lock()

    def serve(self) -> None:
        for worker in self.workers:
            worker.start()
        while not self.stopping.wait(0.5):
            pass
        for worker in self.workers:
            worker.join()

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.listener.close()
        self.writer.stop()

    def _work(self) -> None:
        store = None
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                log.error(f"daemon: accept: {exc}", self.settings.syslog)
                self.stopping.wait(0.1)
                continue
            caller = self._admit(conn)
            if caller is None:
                conn.close()
                continue
            request = _Request(self, conn, store, caller)
            try:
                store = request.handle()
            except Exception as exc:  # noqa: BLE001 - a request must never stop a worker
                log.error(f"daemon: internal error: {type(exc).__name__}: {exc}",
                          self.settings.syslog)
            finally:
                request.close()
                conn.close()
                with self.lock:
                    self.busy[caller.uid] -= 1
                    if not self.busy[caller.uid]:
                        del self.busy[caller.uid]
        if store is not None:
            store.close()

    def _admit(self, conn: socket.socket) -> users.Caller | None:
        """Who connected (the kernel's word, SO_PEERCRED), once this worker may take them;
        None when not: a caller who is not trusted already holds `per_uid` workers.

        A worker is held by its connection until the request is complete (REQUEST_TIMEOUT):
        one local user's idle connections, one per worker, held every worker at no cost of
        their own. Declined at once, unread (the client then filters in its own process),
        they cost a worker next to nothing; the trusted uids (Courier's, the virtual
        mailboxes') deliver for everyone and may use every worker."""
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            uid = struct.unpack("3i", creds)[1]
        except OSError:
            return None
        caller = users.caller_for_uid(uid)
        trusted = users.is_trusted(caller, self.settings.trusted_users)
        with self.lock:
            held = self.busy.get(uid, 0)
            if not trusted and held >= self.per_uid:
                why = f"busy: this uid has {held} requests in the daemon already"
                admitted = False
            else:
                self.busy[uid] = held + 1
                admitted = True
        if admitted:
            return caller
        try:
            conn.settimeout(1.0)  # a few bytes: always room in a new socket's buffer
            conn.sendall(client.encode([b"decline", why.encode()]))
        except OSError:
            pass
        return None

    def open_store(self):
        from spamsift.filter.engine.store.base import open_store

        try:
            return open_store(self.settings.storage_url, self.settings.storage_timeout)
        except (SpamsiftError, StorageError):
            return None  # cli.main opens (and reports) one itself


class _Request:
    """One connection: read the request, decide whether this daemon may serve it, filter."""

    def __init__(self, server: _Server, sock: socket.socket, store,
                 caller: users.Caller | None = None) -> None:
        self.server = server
        self.sock = sock
        self.store = store
        self.caller = caller  # who connected (SO_PEERCRED); None: read it from `sock`
        self.fds: list[int] = []  # homes opened for this request (`_pin`)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def _read(self) -> bytes | None:
        """The request's bytes; None when it is larger than this daemon filters (then read
        to its end and thrown away, so the client can read the answer)."""
        limit = self.server.max_request
        chunks: list[bytes] = []
        total = 0
        # One deadline for the whole request: a timeout per read let a client that sent a
        # byte every 25 s hold a worker for ever.
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"request not complete within {REQUEST_TIMEOUT:g} s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return b"".join(chunks) if total <= limit else None
            total += len(chunk)
            if total <= limit:
                chunks.append(chunk)
            else:
                chunks.clear()
                if total > DRAIN_LIMIT:
                    raise ValueError(f"request over {DRAIN_LIMIT} bytes")

    def _decline(self, why: str) -> None:
        self.sock.sendall(client.encode([b"decline", why.encode()]))

    def handle(self):
        """Serve the request; the store to keep for the next one (None: reopen)."""
        sock, server = self.sock, self.server
        sock.settimeout(REQUEST_TIMEOUT)
        try:
            caller = self.caller
            if caller is None:
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                caller = users.caller_for_uid(struct.unpack("3i", creds)[1])
            data = self._read()
            if data is None:  # over max_message_size: the client passes it on itself
                self._decline(f"over max_message_size ({server.settings.max_message_size})")
                return self.store
            fields = client.decode(data)
            argc = int(fields[0])
            argv = [f.decode("utf-8", "surrogateescape") for f in fields[1:1 + argc]]
            n_env = int(fields[1 + argc])
            env_fields = fields[2 + argc:2 + argc + 2 * n_env]
            env = {env_fields[i].decode(): env_fields[i + 1].decode("utf-8", "surrogateescape")
                   for i in range(0, len(env_fields), 2)}
            stdin = fields[2 + argc + 2 * n_env]
        except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
            log.error(f"daemon: bad request: {exc}", server.settings.syslog)
            return self.store
        environ, why = self._environment(argv, env, caller)
        if environ is None:
            self._decline(why)
            return self.store
        out, err = io.BytesIO(), io.StringIO()
        deliveries: list[tuple[list[str], bytes]] = []

        def record_delivery(agent_argv: list[str], message: bytes) -> int:
            # The client runs the agent, as the caller: nothing a request says makes this
            # process run a program.
            deliveries.append((agent_argv, message))
            return exitcodes.OK

        if client.is_training(argv) and not server.writer.sync():
            log.error(f"daemon: the writer did not catch up within {SYNC_WAIT:g} s; a "
                      "report of a message answered just now may not find its signature",
                      server.settings.syslog)
        store = self.store if self.store is not None else server.open_store()
        started = time.perf_counter()
        metrics = server.metrics
        failures: list[BaseException] = []

        def observe(kind: str, label, extra: str = "") -> None:
            if kind == "failed":
                failures.append(label)
            elif metrics is not None:
                metrics.observe(kind, label, extra)
        try:
            code = cli.main(argv, stdin=io.BytesIO(stdin), stdout=out, stderr=err,
                            environ=environ, caller=caller, store=store,
                            commit_inbound=server.writer.submit, run_agent=record_delivery,
                            observe=observe)
        except Exception as exc:  # noqa: BLE001 - a request must never take the daemon down
            # The failure policy, as the filter's own: the original on stdout only where
            # stdout delivers (exit 0 with it elsewhere lost it: the delivery agent's turn,
            # which no one then took); else, and for training, a tempfail (the MTA retries).
            settings = server.settings
            tempfail = (client.is_training(argv) or not client.to_stdout(argv)
                        or settings.on_error == "tempfail")
            log.error(f"daemon: internal error: {type(exc).__name__}: {exc}; message "
                      f"{'tempfailed' if tempfail else 'passed through'}", settings.syslog)
            if not client.is_training(argv):
                cli._count_unfiltered(settings, ["-"], "tempfail" if tempfail else "error")
            code, out, deliveries = ((exitcodes.TEMPFAIL, io.BytesIO(), []) if tempfail
                                     else (exitcodes.OK, io.BytesIO(stdin), []))
        if store is not None and any(isinstance(e, StorageError)
                                     and not isinstance(e, ConflictError) for e in failures):
            store.close()  # reopen next time: the database may have been replaced
            store = None
        if metrics is not None:
            metrics.request_seconds.observe(time.perf_counter() - started)
        fields = [str(code).encode(), out.getvalue(), err.getvalue().encode("utf-8", "replace")]
        for agent_argv, message in deliveries:
            fields += [b"\0".join(a.encode("utf-8", "surrogateescape") for a in agent_argv),
                       message]
        try:
            sock.sendall(client.encode(fields))
        except OSError:
            pass
        return store

    def _environment(self, argv: list[str], env: dict[str, str],
                     caller) -> tuple[dict | None, str]:
        """(The environment to filter this request with, or None to decline it; why).

        The daemon serves its own configuration only: a request naming another (--config, or
        SPAMSIFT_* variables unlike the daemon's) is declined, and the client filters in its
        own process with its own privileges. A home given by the client (--home, $HOME) is
        looked at only when it belongs to the caller or the caller is trusted (another --home
        is declined, another $HOME left out): the daemon must not tell anyone whether a
        dotfile exists in a folder they cannot read."""
        server = self.server
        if any(a == "--config" or a.startswith("--config=") for a in argv):
            return None, "--config: the daemon serves its own configuration only"
        wanted = {k: v for k, v in env.items() if k.startswith("SPAMSIFT_")}
        if wanted != server.own_env:
            differ = {k for k, _v in set(wanted.items()) ^ set(server.own_env.items())}
            return None, f"another configuration ({', '.join(sorted(differ))})"
        trusted = users.is_trusted(caller, server.settings.trusted_users)
        try:
            # What the filter will act on, read by the filter's own parser: a scan of argv
            # of our own took '--deliver=spam' given as the value of --mail-from for a
            # --deliver, and the filter, which did not, quarantined as the daemon.
            opts = options.parse(argv)
        except UsageError:
            opts = None  # the filter answers it (exit 64) without touching anything
        if (not trusted and opts is not None and opts.deliver is not None
                and "spam" not in opts.deliver):
            # Spam not delivered goes to the quarantine, which the daemon would fill with
            # files of its own for anyone: the caller's own process does it, as the caller.
            return None, "quarantine: only in the caller's own process"
        homes = [n for n, arg in enumerate(argv) if arg.partition("=")[0] == "--home"]
        if len(homes) > 1 and not trusted:
            # Each is opened and held while the request runs: a megabyte of --home=MINE took
            # every descriptor the daemon may have. The filter uses one (the last).
            return None, "--home given more than once"
        for n in homes:
            _name, eq, value = argv[n].partition("=")
            home = value if eq else (argv[n + 1] if n + 1 < len(argv) else "")
            pinned = self._pin(home, caller.uid, trusted)
            if pinned is None:
                return None, "--home is not the caller's"
            argv[n if eq else n + 1] = f"--home={pinned}" if eq else pinned
        environ = dict(server.own_env)
        environ.update({k: v for k, v in env.items() if k in ("LOGNAME", "USER")})
        # $HOME (maildrop's) stands for the user's home only when it is the caller's: one
        # that is not is left out, as if unset (the passwd entry or home_template decide).
        if "HOME" in env:
            pinned = self._pin(env["HOME"], caller.uid, trusted)
            if pinned is not None:
                environ["HOME"] = pinned
        return environ, ""

    def _pin(self, home: str, uid: int, trusted: bool) -> str | None:
        """`home` opened once, as /proc/self/fd/N (the opened folder itself, whatever its
        path is made to point at later), when it is the caller's or the caller is trusted;
        else None. Checking the path and then using it let a caller swap a symlink in
        between and learn whether a dotfile exists in a folder they cannot read."""
        if trusted:
            return home
        try:
            fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, ValueError):
            return None
        try:
            if os.fstat(fd).st_uid != uid:
                os.close(fd)
                return None
        except OSError:
            os.close(fd)
            return None
        self.fds.append(fd)
        return f"/proc/self/fd/{fd}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spamsift daemon",
        description="Serve `spamsift filter` requests on a UNIX socket so that each message "
                    "does not pay for starting Python and loading the engine.")
    parser.add_argument("--socket", default=os.environ.get("SPAMSIFT_SOCKET",
                                                           client.DEFAULT_SOCKET),
                        help=f"socket path (default $SPAMSIFT_SOCKET or {client.DEFAULT_SOCKET})")
    parser.add_argument("--config", help="configuration file")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
    except SpamsiftError as exc:
        return command_failed("daemon", exc)
    path = args.socket
    if not path:
        print("spamsift daemon: --socket: an empty path", file=sys.stderr)
        return exitcodes.USAGE
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        print(f"spamsift daemon: {path}: longer than a socket path may be "
              f"({MAX_SOCKET_PATH} bytes)", file=sys.stderr)
        return exitcodes.CONFIG
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        mode = os.lstat(path).st_mode if os.path.lexists(path) else None
    except OSError as exc:
        print(f"spamsift daemon: {path}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CONFIG
    if mode is not None and not stat.S_ISSOCK(mode):
        # Only a stale socket is ours to remove: the path may come from $SPAMSIFT_SOCKET, and
        # the daemon runs as root or the mail user.
        print(f"spamsift daemon: {path} exists and is not a socket; not removing it",
              file=sys.stderr)
        return exitcodes.CONFIG
    if mode is not None:
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
            print(f"spamsift daemon: another daemon serves {path}", file=sys.stderr)
            return exitcodes.TEMPFAIL
        except OSError:
            os.unlink(path)  # stale: its daemon is gone
        finally:
            probe.close()
    metrics = None
    if args.metrics:
        from spamsift.filter.engine.metrics import Metrics

        try:
            metrics = Metrics(settings.home)
            metrics.serve(args.metrics)
        except (SpamsiftError, OSError) as exc:
            print(f"spamsift daemon: --metrics: {exc}", file=sys.stderr)
            return exitcodes.USAGE if isinstance(exc, SpamsiftError) else exitcodes.CONFIG
    try:
        server = _Server(path, settings, args.config)
    except OSError as exc:
        print(f"spamsift daemon: {path}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CONFIG
    server.metrics = metrics
    cli.FAST_EXIT = False

    def stop(_signum, _frame):
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(f"daemon listening on {path}", settings.syslog)
    print(f"spamsift daemon: listening on {path} ({len(server.workers)} workers)",
          file=sys.stderr, flush=True)
    try:
        server.serve()
    finally:
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass
    return exitcodes.OK
